//! The write pipeline: cuts a request body into blocks, sends each to the block service as
//! soon as it is full (a few in flight), and records the data version's block list.
//! Memory per request is a few blocks whatever the object's size.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use hangar_common::config::INLINE_THRESHOLD;
use hangar_common::hash::BlockHash;
use hangar_common::meta_client::{entry, prefix_end, tombstone};
use hangar_proto::block::BlockRef;
use hangar_proto::metadata::Table;
use hangar_proto::model::BlockEntry;
use md5::Digest;
use s3s::{S3Error, s3_error};
use tokio::task::JoinHandle;

use crate::backend::Backend;
use crate::errors::OrS3;

/// Blocks being uploaded at once per request.
const IN_FLIGHT: usize = 4;
/// Longest wait for the next piece of a request body.
const BODY_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// Block-list entries written to metadata per batch.
const ENTRY_BATCH: usize = 256;

/// Hashes computed over the body as it streams through.
pub struct BodyHashes {
    pub md5: md5::Md5,
    pub sha256: Option<sha2::Sha256>,
    pub checksum: s3s::checksum::ChecksumHasher,
}

impl BodyHashes {
    pub fn new(want_sha256: bool, checksum: s3s::checksum::ChecksumHasher) -> Self {
        Self { md5: md5::Md5::new(), sha256: want_sha256.then(sha2::Sha256::new), checksum }
    }

    fn update(&mut self, b: &[u8]) {
        self.md5.update(b);
        if let Some(s) = &mut self.sha256 {
            s.update(b);
        }
        self.checksum.update(b);
    }
}

pub enum StoredData {
    Inline(Bytes),
    Blocks { data_version: Vec<u8> },
}

pub struct Stored {
    pub size: u64,
    pub data: StoredData,
}

type BlockTask = JoinHandle<Result<(BlockHash, u32), S3Error>>;

/// Key of a block-list entry: the data version, then the block's offset.
pub fn version_block_key(data_version: &[u8], offset: u64) -> Vec<u8> {
    let mut k = data_version.to_vec();
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

fn body_error(e: &dyn std::fmt::Display) -> S3Error {
    // s3s reports a bad chunk signature only through the error's text.
    let text = e.to_string();
    if text.contains("SignatureMismatch") {
        s3_error!(SignatureDoesNotMatch, "a chunk signature of the payload does not match")
    } else {
        tracing::info!(error = %text, "request body ended early");
        s3_error!(IncompleteBody, "the request body ended before it was complete")
    }
}

/// Sends one block to its replicas; the task hashes it off the request's task.
fn spawn_put(backend: &Backend, data: Bytes, owner: Vec<u8>) -> BlockTask {
    let blocks = backend.blocks.clone();
    tokio::spawn(async move {
        let hash = BlockHash::of(&data);
        let size = data.len() as u32;
        blocks.put(hash, owner, data).await.map_err(crate::errors::internal)?;
        Ok((hash, size))
    })
}

/// Streams `body` into storage. Small bodies stay inline when `allow_inline`.
/// On any failure, the blocks already stored for this data version are released.
/// Returns what was stored and the hashes of the body, to be checked by the caller.
pub async fn store<S, E>(
    backend: &Backend,
    body: S,
    block_size: usize,
    allow_inline: bool,
    mut hashes: BodyHashes,
) -> Result<(Stored, BodyHashes), S3Error>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let data_version = hangar_common::ids::random_id();
    let mut writer = BlockWriter {
        backend,
        data_version: &data_version,
        in_flight: VecDeque::new(),
        pending: Vec::new(),
        offset: 0,
    };
    let result = async {
        let mut body = body;
        let mut buf = BytesMut::new();
        let mut size: u64 = 0;
        loop {
            // A client that stops sending must not hold the request (and its blocks) forever.
            let next = tokio::time::timeout(BODY_IDLE_TIMEOUT, body.next())
                .await
                .map_err(|_| s3_error!(RequestTimeout, "no request body data arrived for 60 seconds"))?;
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(|e| body_error(&e))?;
            hashes.update(&chunk);
            size += chunk.len() as u64;
            buf.extend_from_slice(&chunk);
            while buf.len() >= block_size {
                writer.push(buf.split_to(block_size).freeze()).await?;
            }
        }
        if allow_inline && writer.offset == 0 && buf.len() <= INLINE_THRESHOLD {
            return Ok((size, Some(buf.freeze())));
        }
        if !buf.is_empty() || writer.offset == 0 {
            writer.push(buf.freeze()).await?;
        }
        writer.finish().await?;
        Ok((size, None))
    }
    .await;
    match result {
        Ok((size, Some(inline))) => Ok((Stored { size, data: StoredData::Inline(inline) }, hashes)),
        Ok((size, None)) => Ok((Stored { size, data: StoredData::Blocks { data_version } }, hashes)),
        Err(e) => {
            writer.abandon().await;
            Err(e)
        }
    }
}

struct BlockWriter<'a> {
    backend: &'a Backend,
    data_version: &'a [u8],
    in_flight: VecDeque<(u64, BlockTask)>,
    pending: Vec<hangar_proto::metadata::Entry>,
    offset: u64,
}

impl BlockWriter<'_> {
    async fn push(&mut self, block: Bytes) -> Result<(), S3Error> {
        let len = block.len() as u64;
        self.in_flight.push_back((self.offset, spawn_put(self.backend, block, self.data_version.to_vec())));
        self.offset += len;
        while self.in_flight.len() >= IN_FLIGHT {
            self.complete_one().await?;
        }
        Ok(())
    }

    async fn complete_one(&mut self) -> Result<(), S3Error> {
        let Some((offset, task)) = self.in_flight.pop_front() else { return Ok(()) };
        let (hash, size) = task.await.map_err(|_| s3_error!(InternalError, "block upload task failed"))??;
        let value = BlockEntry { hash: hash.0.to_vec().into(), size };
        self.pending.push(entry(version_block_key(self.data_version, offset), &value, None));
        if self.pending.len() >= ENTRY_BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), S3Error> {
        let batch = std::mem::take(&mut self.pending);
        self.backend.meta.insert(Table::VersionBlock, batch).await.or_s3()
    }

    async fn finish(&mut self) -> Result<(), S3Error> {
        while !self.in_flight.is_empty() {
            self.complete_one().await?;
        }
        self.flush().await
    }

    /// Records what did get stored, then releases it all.
    async fn abandon(&mut self) {
        while let Some((offset, task)) = self.in_flight.pop_front() {
            if let Ok(Ok((hash, size))) = task.await {
                let value = BlockEntry { hash: hash.0.to_vec().into(), size };
                self.pending.push(entry(version_block_key(self.data_version, offset), &value, None));
            }
        }
        if self.flush().await.is_ok() {
            release_data_version(self.backend, self.data_version).await;
        }
    }
}

/// The blocks of a data version in order, with their offsets, one page at a time.
pub async fn block_page(
    backend: &Backend,
    data_version: &[u8],
    from_offset: u64,
    limit: u32,
) -> Result<(Vec<(u64, BlockEntry)>, bool), S3Error> {
    let (page, more) = backend
        .meta
        .range::<BlockEntry>(
            Table::VersionBlock,
            version_block_key(data_version, from_offset),
            prefix_end(data_version),
            limit,
        )
        .await
        .or_s3()?;
    let items = page
        .into_iter()
        .map(|f| {
            let off = f.key.get(data_version.len()..).and_then(|b| <[u8; 8]>::try_from(b).ok()).map(u64::from_be_bytes);
            (off.unwrap_or(0), f.value)
        })
        .collect();
    Ok((items, more))
}

/// Drops a data version: its block references and its block list. Best effort: a failure
/// leaves unreferenced data behind (logged), never removes data still in use.
pub async fn release_data_version(backend: &Backend, data_version: &[u8]) {
    let mut from = 0;
    loop {
        let (page, more) = match block_page(backend, data_version, from, 1000).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = ?e, "could not list blocks of a released version");
                return;
            }
        };
        let Some(last) = page.last() else { return };
        from = last.0 + 1;
        let refs =
            page.iter().map(|(_, b)| BlockRef { hash: b.hash.clone(), owner: data_version.to_vec().into() }).collect();
        if let Err(e) = backend.blocks.delete_refs(refs).await {
            tracing::warn!(error = %e, "could not drop block references");
            return;
        }
        let tombs = page.iter().map(|(off, _)| tombstone(version_block_key(data_version, *off), None)).collect();
        if let Err(e) = backend.meta.insert(Table::VersionBlock, tombs).await {
            tracing::warn!(error = %e, "could not delete a block list");
            return;
        }
        if !more {
            return;
        }
    }
}

/// Gives `new_version` the same blocks as `old_version` without moving data.
pub async fn share_data_version(backend: &Backend, old_version: &[u8], new_version: &[u8]) -> Result<(), S3Error> {
    let mut from = 0;
    loop {
        let (page, more) = block_page(backend, old_version, from, 1000).await?;
        let Some(last) = page.last() else { return Ok(()) };
        from = last.0 + 1;
        let refs =
            page.iter().map(|(_, b)| BlockRef { hash: b.hash.clone(), owner: new_version.to_vec().into() }).collect();
        let missing = backend.blocks.add_refs(refs).await.or_s3()?;
        if !missing.is_empty() {
            return Err(s3_error!(InternalError, "source object has missing blocks"));
        }
        let entries = page.iter().map(|(off, b)| entry(version_block_key(new_version, *off), b, None)).collect();
        backend.meta.insert(Table::VersionBlock, entries).await.or_s3()?;
        if !more {
            return Ok(());
        }
    }
}
