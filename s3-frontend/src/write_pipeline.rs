//! The write pipeline: reads a request body as it arrives, feeds the hashes the client may
//! have declared, cuts it into blocks and hands each to the model's data writer (a few in
//! flight). Memory per request is a few blocks whatever the object's size. Small bodies
//! stay inline in the object entry.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use hangar_common::config::INLINE_THRESHOLD;
use hangar_model::Store;
use hangar_model::version::{DataWriter, Finished, Owner};
use hangar_proto::model::BlockEntry;
use md5::Digest;
use s3s::{S3Error, s3_error};

use crate::errors::{OrS3, custom_error};
use crate::http_layer::bounded;
use crate::sse_c::CustomerKey;

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
    /// `blocks`: the version's block list when it is short (`version::BLOCKS_IN_ENTRY`).
    Blocks {
        data_version: Vec<u8>,
        blocks: Vec<BlockEntry>,
    },
}

pub struct Stored {
    pub size: u64,
    pub data: StoredData,
    pub owner: Owner,
}

/// The most one PutObject or UploadPart body may hold (AWS's limit).
pub const MAX_REQUEST_BODY: u64 = 5 * 1024 * 1024 * 1024;

/// The S3 error for a body stream that failed. s3s reports what went wrong only in the
/// error's text.
fn body_error(e: &dyn std::fmt::Display) -> S3Error {
    let text = e.to_string();
    if text.contains("SignatureMismatch") {
        s3_error!(SignatureDoesNotMatch, "a chunk signature of the payload does not match")
    } else if text.contains("Sha256Mismatch") {
        custom_error("XAmzContentSHA256Mismatch", 400, "the payload does not match its signed SHA-256")
    } else {
        tracing::info!(error = %bounded(&text), "request body ended early");
        s3_error!(IncompleteBody, "the request body ended before it was complete")
    }
}

/// Streams `body` into storage for `owner`, encrypted with `key` when given (SSE-C). Small
/// bodies stay inline when `allow_inline`. On any failure, the blocks already stored are
/// released. Returns what was stored and the hashes of the body (of the plaintext), to be
/// checked by the caller.
pub async fn store<S, E>(
    store: &Store,
    owner: Owner,
    body: S,
    allow_inline: bool,
    body_timeout: Duration,
    mut hashes: BodyHashes,
    key: Option<&CustomerKey>,
) -> Result<(Stored, BodyHashes), S3Error>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut writer: Option<DataWriter> = None;
    let result = async {
        let mut body = body;
        let mut buf = BytesMut::new();
        let mut size: u64 = 0;
        loop {
            // A client that stops sending must not hold the request (and its blocks) forever.
            let next = tokio::time::timeout(body_timeout, body.next()).await.map_err(|_| {
                s3_error!(RequestTimeout, "no request body data arrived for {} seconds", body_timeout.as_secs())
            })?;
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(|e| body_error(&e))?;
            size += chunk.len() as u64;
            // Checked as the bytes come, for bodies that declared no length (or a false one).
            if size > MAX_REQUEST_BODY {
                return Err(s3_error!(
                    EntityTooLarge,
                    "one request body (a PUT or a part) may hold at most 5 GiB; use multipart upload"
                ));
            }
            hashes.update(&chunk);
            buf.extend_from_slice(&chunk);
            while buf.len() >= store.block_size {
                let block = buf.split_to(store.block_size).freeze();
                push(store, &owner, &mut writer, block, key).await?;
            }
        }
        if allow_inline && writer.is_none() && buf.len() <= INLINE_THRESHOLD {
            let data = match key {
                Some(k) => k.seal(&buf)?,
                None => buf.freeze(),
            };
            return Ok((size, Some(data)));
        }
        if !buf.is_empty() || writer.is_none() {
            push(store, &owner, &mut writer, buf.freeze(), key).await?;
        }
        Ok((size, None))
    }
    .await;
    match result {
        Ok((size, Some(inline))) => Ok((Stored { size, data: StoredData::Inline(inline), owner }, hashes)),
        Ok((size, None)) => {
            let w = writer.ok_or_else(|| s3_error!(InternalError, "no data writer"))?;
            let Finished { data_version, blocks } = w.finish().await.or_s3()?;
            Ok((Stored { size, data: StoredData::Blocks { data_version, blocks }, owner }, hashes))
        }
        Err(e) => {
            if let Some(w) = writer {
                w.abandon().await;
            }
            Err(e)
        }
    }
}

async fn push(
    store: &Store,
    owner: &Owner,
    writer: &mut Option<DataWriter>,
    block: Bytes,
    key: Option<&CustomerKey>,
) -> Result<(), S3Error> {
    if writer.is_none() {
        *writer = Some(store.writer(owner.clone()).await.or_s3()?);
    }
    let Some(w) = writer.as_mut() else { return Err(s3_error!(InternalError, "no data writer")) };
    match key {
        Some(k) => w.push_stored(k.seal(&block)?, block.len() as u32).await.or_s3(),
        None => w.push(block).await.or_s3(),
    }
}

/// Gives up what `store` stored (the request failed after its body was read): its data
/// version is released by the collector.
pub async fn discard(store: &Store, stored: &Stored) {
    if let StoredData::Blocks { data_version, .. } = &stored.data
        && let Err(e) = store.mark_release(data_version, &stored.owner).await
    {
        tracing::debug!(error = %e, "could not ask for a discarded write's release; the collector will");
    }
}
