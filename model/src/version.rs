//! Data versions: the unit of object data. A data version is an id, a list of blocks
//! (`version_block`) and one reference per block (`block_ref`, stored with the block). A
//! PUT writes one, a multipart upload one per part, a copy shares the source's blocks under
//! new ones.
//!
//! Every data version has a pending entry from before its first block is stored until it
//! is committed (the object or part record points at it) or released. A version whose
//! writer went away (a crashed frontend) or that lost (a failed write, a part not chosen)
//! is thereby never forgotten: the collector worker releases it.
//!
//! Releasing a version drops its block references, then its block list, then its pending
//! entry; each step is idempotent, so releasing twice, or finishing a release another node
//! began, is harmless. A block file goes once no reference is left on any replica.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use hangar_common::hash::BlockHash;
use hangar_common::ids::{now_ms, random_id};
use hangar_common::{Error, Result};
use hangar_proto::metadata::Table;
use hangar_proto::model::{BlockEntry, BlockRef, PendingVersion};
use tokio::task::JoinHandle;

use crate::Store;
use crate::client::{Found, entry, tombstone};
use crate::keys::prefix_end;
use crate::schema::{
    BlockRefs, ID_LEN, PendingVersions, Schema, VersionBlocks, block_ref_key, parse_version_block_key, pending_key,
    version_block_key,
};

/// Blocks being stored at once per writer.
const IN_FLIGHT: usize = 8;
/// How often a writer renews its pending entry while it works, at most.
pub const REFRESH_EVERY: Duration = Duration::from_secs(60);

/// What a data version is written for.
#[derive(Clone, Debug)]
pub enum Owner {
    Object { bucket_id: Vec<u8>, key: String },
    Part { upload_id: Vec<u8>, part_number: u32 },
}

impl Owner {
    fn pending(&self, release: bool) -> PendingVersion {
        let mut p = PendingVersion { refreshed_ms: now_ms(), release, ..Default::default() };
        match self {
            Owner::Object { bucket_id, key } => {
                p.bucket_id = bucket_id.clone().into();
                p.key = key.clone();
            }
            Owner::Part { upload_id, part_number } => {
                p.upload_id = upload_id.clone().into();
                p.part_number = *part_number;
            }
        }
        p
    }

    pub fn of(p: &PendingVersion) -> Owner {
        if p.upload_id.is_empty() {
            Owner::Object { bucket_id: p.bucket_id.to_vec(), key: p.key.clone() }
        } else {
            Owner::Part { upload_id: p.upload_id.to_vec(), part_number: p.part_number }
        }
    }
}

type BlockTask = JoinHandle<Result<BlockEntry>>;

/// Data versions of at most this many blocks have their block list copied into the entry
/// that points at them (`PartData::blocks`): a small object's GET reads its entry and its
/// block, not the list in between. A few entries of 38 bytes keep object entries small.
pub const BLOCKS_IN_ENTRY: usize = 4;

/// A data version whose blocks are all stored.
pub struct Finished {
    pub data_version: Vec<u8>,
    /// Its block list, in order, when it has at most `BLOCKS_IN_ENTRY` blocks; else empty.
    pub blocks: Vec<BlockEntry>,
}

/// Stores the blocks of one new data version, a few at a time. Each block's entry in the
/// block list is written before the block itself, so whatever a crash leaves behind, the
/// list names every block that may hold a reference of the version, and releasing the
/// version finds them all.
pub struct DataWriter {
    store: Store,
    data_version: Vec<u8>,
    owner: Owner,
    in_flight: VecDeque<BlockTask>,
    offset: u64,
    /// Renews the pending entry every minute while the writer lives, however slowly the
    /// body arrives.
    renewer: tokio::task::AbortHandle,
    /// The first writing of the pending entry: no block is sent before it is durable (list
    /// entries are written meanwhile).
    pending: futures::future::Shared<futures::future::BoxFuture<'static, Result<(), String>>>,
    started: std::time::Instant,
    /// The blocks stored so far, in order, while there are at most `BLOCKS_IN_ENTRY`.
    listed: Option<Vec<BlockEntry>>,
}

impl Drop for DataWriter {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

impl Store {
    /// Records that `data_version` is being written for `owner` (before any block of it).
    pub async fn begin_pending(&self, data_version: &[u8], owner: &Owner) -> Result<()> {
        self.tables.put::<PendingVersions>(pending_key(data_version), &owner.pending(false), None).await
    }

    /// A writer for a new data version of `owner`.
    pub async fn writer(&self, owner: Owner) -> Result<DataWriter> {
        use futures::FutureExt;
        let data_version = random_id();
        let (store, dv, o) = (self.clone(), data_version.clone(), owner.clone());
        let pending = tracing::Instrument::in_current_span(async move {
            store.begin_pending(&dv, &o).await.map_err(|e| e.to_string())
        })
        .boxed()
        .shared();
        tokio::spawn(pending.clone());
        let (store, dv, o) = (self.clone(), data_version.clone(), owner.clone());
        let every = self.renew_every;
        let renewer = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = store.begin_pending(&dv, &o).await {
                    tracing::debug!(error = %e, "could not renew a pending entry");
                }
            }
        })
        .abort_handle();
        Ok(DataWriter {
            store: self.clone(),
            data_version,
            owner,
            in_flight: VecDeque::new(),
            offset: 0,
            renewer,
            pending,
            started: std::time::Instant::now(),
            listed: Some(Vec::new()),
        })
    }

    /// The version is in use (its object or part record points at it): its pending entry
    /// goes. In the background; if it fails, the collector finds the version in use.
    pub fn committed(&self, data_version: &[u8]) {
        let (this, key) = (self.clone(), pending_key(data_version));
        tokio::spawn(async move {
            if let Err(e) = this.tables.delete::<PendingVersions>(key, None).await {
                tracing::debug!(error = %e, "could not clear a pending entry; the collector will");
            }
        });
    }

    /// Asks for `data_version` to be released soon (it lost or its write failed). Durable
    /// once this returns; the collector worker does the work.
    pub async fn mark_release(&self, data_version: &[u8], owner: &Owner) -> Result<()> {
        self.tables.put::<PendingVersions>(pending_key(data_version), &owner.pending(true), None).await
    }

    /// The blocks of a data version in order, with their offsets and entry timestamps, one
    /// page at a time.
    pub async fn block_page(
        &self,
        data_version: &[u8],
        from_offset: u64,
        limit: u32,
    ) -> Result<(Vec<(u64, Found<BlockEntry>)>, bool)> {
        let (page, more) = self
            .tables
            .range::<VersionBlocks>(version_block_key(data_version, from_offset), prefix_end(data_version), limit)
            .await?;
        Ok((page.into_iter().map(|f| (parse_version_block_key(&f.key).unwrap_or(0), f)).collect(), more))
    }

    /// Drops a data version: its block references, its block list, its pending entry.
    /// Idempotent; a failure leaves the rest for a later attempt.
    pub async fn release_version(&self, data_version: &[u8]) -> Result<()> {
        if data_version.len() != ID_LEN {
            return Err(Error::Invalid("a data version id is 16 bytes".into()));
        }
        loop {
            let (page, more) = self.block_page(data_version, 0, 1000).await?;
            if page.is_empty() {
                break;
            }
            // Deletions newer than the entries they undo, whatever the clocks: a block's
            // reference carries its block list entry's timestamp.
            let refs = page
                .iter()
                .map(|(_, f)| tombstone(block_ref_key(&f.value.hash, data_version), Some(f.timestamp)))
                .collect();
            self.tables.insert(BlockRefs::TABLE, refs).await?;
            let list = page
                .iter()
                .map(|(off, f)| tombstone(version_block_key(data_version, *off), Some(f.timestamp)))
                .collect();
            self.tables.insert(VersionBlocks::TABLE, list).await?;
            if !more {
                break;
            }
        }
        self.tables.delete::<PendingVersions>(pending_key(data_version), None).await
    }

    /// Gives `new_version` the blocks of `old_version` (which holds `size` bytes) without
    /// moving data: references and a block list of its own. Fails when the old version's
    /// block list is not whole (it was released meanwhile, by an overwrite racing the copy).
    pub async fn share_version(&self, old_version: &[u8], new_version: &[u8], size: u64) -> Result<()> {
        let mut next = 0u64;
        loop {
            let (page, more) = self.block_page(old_version, next, 1000).await?;
            for (off, f) in &page {
                if *off != next {
                    return Err(Error::Unavailable("the source's data went away during the copy; retry".into()));
                }
                next += f.value.size as u64;
            }
            if !page.is_empty() {
                let refs = page
                    .iter()
                    .map(|(_, f)| entry(block_ref_key(&f.value.hash, new_version), &BlockRef {}, None))
                    .collect();
                self.tables.insert(Table::BlockRef, refs).await?;
                let list =
                    page.iter().map(|(off, f)| entry(version_block_key(new_version, *off), &f.value, None)).collect();
                self.tables.insert(Table::VersionBlock, list).await?;
            }
            if !more || page.is_empty() {
                break;
            }
        }
        if next != size {
            return Err(Error::Unavailable("the source's data went away during the copy; retry".into()));
        }
        Ok(())
    }
}

impl DataWriter {
    pub fn data_version(&self) -> &[u8] {
        &self.data_version
    }

    /// Bytes pushed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Stores one block, in a task of its own: hashes it, records it in the block list,
    /// then sends it (with the version's reference, stamped like the list entry) to its
    /// replicas.
    pub async fn push(&mut self, block: Bytes) -> Result<()> {
        let len = block.len() as u32;
        self.push_stored(block, len).await
    }

    /// Stores `stored`, the encrypted form of the next `plain_len` bytes of the version: the
    /// block list records the plaintext length, so offsets stay those of the data.
    pub async fn push_stored(&mut self, block: Bytes, plain_len: u32) -> Result<()> {
        let (store, dv, offset, pending) =
            (self.store.clone(), self.data_version.clone(), self.offset, self.pending.clone());
        self.offset += plain_len as u64;
        // In the request's span, so its trace shows the block writes.
        self.in_flight.push_back(tokio::spawn(tracing::Instrument::in_current_span(async move {
            let hash = BlockHash::of(&block);
            let value = BlockEntry { hash: hash.0.to_vec().into(), size: plain_len };
            let e = entry(version_block_key(&dv, offset), &value, None);
            let timestamp = e.timestamp;
            let (listed, pending) = futures::join!(store.tables.insert(Table::VersionBlock, vec![e]), pending);
            listed?;
            pending.map_err(Error::Unavailable)?;
            store.blocks.put(hash, dv, timestamp, block).await?;
            Ok(value)
        })));
        while self.in_flight.len() >= IN_FLIGHT {
            self.complete_one().await?;
        }
        Ok(())
    }

    /// Waits for the oldest block in flight (blocks complete in the order they were pushed).
    async fn complete_one(&mut self) -> Result<()> {
        let Some(task) = self.in_flight.pop_front() else { return Ok(()) };
        let block = task.await.map_err(|e| Error::Invalid(format!("block upload task failed: {e}")))??;
        if let Some(listed) = &mut self.listed {
            listed.push(block);
            if listed.len() > BLOCKS_IN_ENTRY {
                self.listed = None;
            }
        }
        Ok(())
    }

    /// Waits for every block; the data version and, when short, its block list. Fails when
    /// the version was collected meanwhile (its writer was frozen longer than the grace
    /// period): committing it would point an object at released data.
    pub async fn finish(mut self) -> Result<Finished> {
        let mut r = Ok(());
        while !self.in_flight.is_empty() {
            r = r.and(self.complete_one().await);
        }
        // A writer younger than half the grace period cannot have been collected (its pending
        // entry is younger than that); an older one, perhaps frozen for long, checks.
        if r.is_ok() && self.started.elapsed() >= 2 * self.store.renew_every {
            let pending = self.store.tables.get::<PendingVersions>(&pending_key(&self.data_version)).await;
            r = match pending {
                Ok(Some(p)) if !p.value.release => Ok(()),
                Ok(_) => Err(Error::Unavailable("the write took too long and its data was collected; retry".into())),
                Err(e) => Err(e),
            };
        }
        match r {
            Ok(()) => Ok(Finished {
                data_version: std::mem::take(&mut self.data_version),
                blocks: self.listed.take().unwrap_or_default(),
            }),
            Err(e) => {
                self.abandon().await;
                Err(e)
            }
        }
    }

    /// Waits for the blocks in flight, then asks for all of the version to be released.
    pub async fn abandon(mut self) {
        while let Some(task) = self.in_flight.pop_front() {
            let _ = task.await;
        }
        if let Err(e) = self.store.mark_release(&self.data_version, &self.owner).await {
            // The pending entry still names the version: the collector releases it after
            // the grace period.
            tracing::debug!(error = %e, "could not ask for an abandoned write's release");
        }
    }
}
