//! Block files on disk, named by their blake2b-256 hash: `<data_dir>/ab/cd/<hash>`.
//!
//! A block is written to a temporary file, fsynced, renamed into place and its directory
//! fsynced; then its owner's reference (a `block_ref` entry) is merged into the metadata
//! store and fsynced; only then is the write acknowledged. The file work runs in two
//! blocking tasks, on buffers received (no copy): the writing and its fsync, before the
//! block's lock is taken (so blocks that share a lock are written at once); then, under
//! the lock, the check whether the block is here already, the rename and the directory's
//! fsync.
//!
//! Every read checks the file's bytes: against the CRC-64 recorded (in `block_sums`) when
//! the block was stored from bytes whose hash was checked, else against the hash itself.
//! A CRC detects what a disk does to a file (flipped bits, torn or zeroed pages) as surely
//! as the hash, at a small fraction of blake2b's cost per byte (blake2b was half of a
//! cached read's CPU); the hash stays the block's name and the scrub's check (`Verify::Hash`).
//! Bytes that match neither are moved to `corrupt/` and never served. A temporary file is
//! removed whenever its block is not committed (an error, a client gone, a crash: the
//! directory is emptied at start).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hangar_common::hash::{BlockHash, DiskSum, Hasher};
use hangar_common::telemetry::metrics;
use hangar_model::schema::block_ref_key;
use hangar_proto::metadata::{Entry, Table};
use hangar_proto::model::BlockRef;
use prost::Message;
use tokio::sync::Mutex;

use crate::DataError;
use crate::meta_store::MetaStore;

/// Largest block accepted: the largest configurable block size, and room for what an
/// encrypted block (SSE-C) adds to it (a nonce and a tag).
pub const MAX_BLOCK: usize = 64 * 1024 * 1024 + 64;

pub struct BlockStore {
    dir: PathBuf,
    pub meta: Arc<MetaStore>,
    /// Serialises placing and deleting the same block (striped by the hash's first byte),
    /// so a block being re-added is never deleted by the garbage collector underneath.
    stripes: Vec<Mutex<()>>,
}

/// Bytes received are held (the buffers they arrived in) until this many are, then written
/// to the temporary file: a block of the default size is written in one go, on commit,
/// and a larger one never takes more memory than this.
const WRITE_AT: usize = 4 * 1024 * 1024;

/// A block being received: its bytes are hashed as they arrive and go to a temporary file.
/// Dropping it without committing removes the file.
pub struct IncomingBlock {
    tmp: TmpFile,
    /// What the bytes are checked against on commit.
    expect: Expect,
    /// The disk checksum of the bytes received, recorded on commit.
    sum: DiskSum,
    len: usize,
}

/// A block's temporary file: created with its first bytes written, removed when dropped
/// unless it was renamed into place. Its methods block: they run in blocking tasks.
struct TmpFile {
    path: PathBuf,
    file: Option<std::fs::File>,
    /// Bytes received and not yet written.
    pending: Vec<Bytes>,
    placed: bool,
}

impl Drop for TmpFile {
    fn drop(&mut self) {
        if self.file.is_some() && !self.placed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl TmpFile {
    fn new(path: PathBuf) -> Self {
        Self { path, file: None, pending: Vec::new(), placed: false }
    }

    /// Stands in while the file is in a blocking task.
    fn none() -> Self {
        Self::new(PathBuf::new())
    }

    /// Writes the pending bytes (creating the file, even for none) and, with `durable`,
    /// fsyncs it.
    fn write_out(&mut self, durable: bool) -> std::io::Result<()> {
        use std::io::Write;
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(std::fs::File::create(&self.path)?),
        };
        for chunk in self.pending.drain(..) {
            file.write_all(&chunk)?;
        }
        if durable {
            file.sync_all()?;
        }
        Ok(())
    }

    /// Puts the block at `path` unless a file is there already (true then; this one is
    /// dropped): made durable first unless `durable` says it is, renamed into place (its
    /// directory created when missing), and the directory fsynced.
    fn place(mut self, path: &Path, durable: bool) -> std::io::Result<bool> {
        if path.try_exists()? {
            return Ok(true);
        }
        if !durable {
            self.write_out(true)?;
        }
        let parent = path.parent().ok_or_else(|| std::io::Error::other("a block path has no parent"))?;
        if let Err(e) = std::fs::rename(&self.path, path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(e);
            }
            std::fs::create_dir_all(parent)?;
            std::fs::rename(&self.path, path)?;
        }
        self.placed = true;
        std::fs::File::open(parent)?.sync_all()?;
        Ok(false)
    }
}

/// What a received block's bytes are checked against before it is stored.
enum Expect {
    /// Their hash, computed here as they arrive (boxed: the hasher's state is over 200
    /// bytes, the other variants 8).
    Hash(Box<Hasher>),
    /// The sum a sender that hashed these very bytes sent with them.
    Sum(u64),
    /// Nothing: the sender is in this process and hashed these very bytes.
    Caller,
}

/// How a read checks a block file's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// Against the checksum recorded for the block, or its hash when none is.
    Sum,
    /// Against the block's hash, whatever is recorded (the scrub).
    Hash,
}

/// Who references a block being stored.
pub struct Owner<'a> {
    pub data_version: &'a [u8],
    /// The writer's timestamp for the reference; 0 for a read repair, which records the
    /// reference only where the node knows nothing of it.
    pub timestamp: u64,
}

impl BlockStore {
    pub fn open(dir: &Path, meta: Arc<MetaStore>) -> Result<Self, DataError> {
        std::fs::create_dir_all(dir.join("tmp"))?;
        std::fs::create_dir_all(dir.join("corrupt"))?;
        // Temporary files left by a crash are never referenced.
        for e in std::fs::read_dir(dir.join("tmp"))?.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        Ok(Self { dir: dir.to_path_buf(), meta, stripes: (0..256).map(|_| Mutex::new(())).collect() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, hash: &BlockHash) -> PathBuf {
        let h = hash.to_hex();
        self.dir.join(&h[0..2]).join(&h[2..4]).join(h)
    }

    /// A block to receive; its temporary file is created with its first bytes written.
    pub fn begin(&self) -> IncomingBlock {
        let path = self.dir.join("tmp").join(hex::encode(hangar_common::ids::random_id()));
        IncomingBlock { tmp: TmpFile::new(path), expect: Expect::Hash(Box::default()), sum: DiskSum::default(), len: 0 }
    }

    /// Makes the received block durable under its hash and records `owner`'s reference.
    /// Returns true when the block was already stored (deduplicated).
    pub async fn commit(&self, inc: IncomingBlock, expected: BlockHash, owner: Owner<'_>) -> Result<bool, DataError> {
        let existed = self.place(inc, &expected, Some(owner)).await?;
        self.meta.commit.flush().await?;
        Ok(existed)
    }

    /// Checks the received bytes against `expected`, makes them the durable file of that
    /// block and records their sum and `owner`'s reference (not flushed); true when the
    /// block was stored already (the bytes are dropped). The reference is added under the
    /// block's lock, so the collector never deletes the file between its placing and it.
    async fn place(
        &self,
        mut inc: IncomingBlock,
        expected: &BlockHash,
        owner: Option<Owner<'_>>,
    ) -> Result<bool, DataError> {
        inc.check(expected)?;
        let path = self.path(expected);
        let started = Instant::now();
        // The fsync is most of a write's time: it runs before the block's lock is taken,
        // unless the block is here already (deduplicated) and its bytes need not reach the
        // disk. Under the lock, `place` checks again (the collector may have deleted it).
        let (mut tmp, at) = (std::mem::replace(&mut inc.tmp, TmpFile::none()), path.clone());
        let (tmp, durable) = blocking(move || {
            if at.try_exists()? {
                return Ok((tmp, false));
            }
            tmp.write_out(true)?;
            Ok((tmp, true))
        })
        .await?;
        let _guard = self.stripes[expected.0[0] as usize].lock().await;
        let existed = blocking(move || tmp.place(&path, durable)).await?;
        if !existed {
            let m = metrics();
            m.block_bytes_written.inc_by(inc.len as u64);
            m.block_write_duration.observe(started.elapsed().as_secs_f64());
        }
        // Also when the file existed: the same hash is the same content, the same sum.
        self.record_sum(expected, inc.sum.finish())?;
        if let Some(owner) = owner {
            self.add_ref(expected, owner)?;
        }
        Ok(existed)
    }

    /// Merges `owner`'s reference on a block into the block_ref table (not flushed).
    fn add_ref(&self, hash: &BlockHash, owner: Owner<'_>) -> Result<(), DataError> {
        // A repair's reference is the oldest possible entry: any real write of it, live or
        // deleted, wins over it.
        let timestamp = if owner.timestamp == 0 { 1 } else { owner.timestamp };
        let e = Entry {
            key: block_ref_key(&hash.0, owner.data_version).into(),
            value: BlockRef {}.encode_to_vec().into(),
            timestamp,
            tiebreak: 0,
            tombstone: false,
        };
        self.meta.merge_in(Table::BlockRef as i32, vec![e]).map(|_| ())
    }

    /// Records the disk checksum of block `hash`, whose bytes were checked against it (not
    /// flushed: a lost entry only means the next read checks the hash).
    fn record_sum(&self, hash: &BlockHash, sum: u64) -> Result<(), DataError> {
        self.meta.block_sums.insert(hash.0, &sum.to_be_bytes())?;
        Ok(())
    }

    fn recorded_sum(&self, hash: &BlockHash) -> Option<u64> {
        let v = self.meta.block_sums.get(hash.0).ok()??;
        Some(u64::from_be_bytes(v.as_ref().try_into().ok()?))
    }

    /// The whole block, its bytes checked (`Verify::Sum`).
    pub async fn read(&self, hash: &BlockHash) -> Result<Vec<u8>, DataError> {
        self.read_checked(hash, Verify::Sum).await
    }

    /// The whole block, its bytes checked as `how` says. Bytes that fail the recorded sum
    /// are checked against the hash before they are called corrupt (the sum's entry may be
    /// what went wrong); bytes that pass the hash get their sum recorded.
    pub async fn read_checked(&self, hash: &BlockHash, how: Verify) -> Result<Vec<u8>, DataError> {
        let path = self.path(hash);
        let started = Instant::now();
        let data = match tokio::fs::read(&path).await {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(DataError::BlockNotFound(*hash)),
            Err(e) => return Err(e.into()),
        };
        let sum = DiskSum::of(&data);
        if how == Verify::Hash || self.recorded_sum(hash) != Some(sum) {
            if BlockHash::of(&data) != *hash {
                tracing::error!(block = %hash, "block content does not match its hash; moving it aside");
                self.quarantine(hash).await;
                return Err(DataError::Corrupt(*hash));
            }
            if let Err(e) = self.record_sum(hash, sum) {
                tracing::warn!(block = %hash, error = %e, "cannot record a block's checksum");
            }
        }
        let m = metrics();
        m.block_bytes_read.inc_by(data.len() as u64);
        m.block_read_duration.observe(started.elapsed().as_secs_f64());
        Ok(data)
    }

    /// Moves a block file that cannot be trusted (its content does not match, or it cannot
    /// be read) to `corrupt/`, and queues the block for resync: a good copy is fetched from
    /// another replica.
    pub async fn quarantine(&self, hash: &BlockHash) {
        metrics().block_corruptions.inc();
        let _ = tokio::fs::rename(self.path(hash), self.dir.join("corrupt").join(hash.to_hex())).await;
        if let Err(e) = self.meta.queue_resync(hash) {
            tracing::warn!(block = %hash, error = %e, "cannot queue a corrupt block for resync");
        }
    }

    pub async fn has(&self, hash: &BlockHash) -> Result<bool, DataError> {
        Ok(tokio::fs::try_exists(self.path(hash)).await?)
    }

    /// Stores a block fetched from another node (sync), without adding any reference: the
    /// references come with the block_ref table.
    pub async fn store_copy(&self, hash: &BlockHash, data: Bytes) -> Result<(), DataError> {
        let mut inc = self.begin();
        inc.write(data).await?;
        self.place(inc, hash, None).await.map(|_| ())
    }

    /// Deletes a block file if no live reference to it is held here (checked under the
    /// block's lock, so a reference arriving meanwhile keeps it); true when deleted.
    pub async fn delete_if_unreferenced(&self, hash: &BlockHash) -> Result<bool, DataError> {
        let _guard = self.stripes[hash.0[0] as usize].lock().await;
        if self.meta.live_refs(hash)? > 0 {
            return Ok(false);
        }
        let deleted = self.remove(hash).await?;
        if deleted {
            metrics().block_delete_counter.inc();
        }
        Ok(deleted)
    }

    /// Deletes a block file whatever references say (the node no longer holds its
    /// partition); true when deleted.
    pub async fn offload(&self, hash: &BlockHash) -> Result<bool, DataError> {
        let _guard = self.stripes[hash.0[0] as usize].lock().await;
        self.remove(hash).await
    }

    /// Removes a block's file and its recorded sum (under the block's lock); true when
    /// there was a file.
    async fn remove(&self, hash: &BlockHash) -> Result<bool, DataError> {
        let deleted = match tokio::fs::remove_file(self.path(hash)).await {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(e.into()),
        };
        self.meta.block_sums.remove(hash.0)?;
        Ok(deleted)
    }

    /// Up to `n` block files after `after` (from the first when None), in hash order.
    pub fn files_after(&self, after: Option<&BlockHash>, n: usize) -> Vec<BlockHash> {
        let after_hex = after.map(|h| h.to_hex()).unwrap_or_default();
        let sorted_dirs = |d: &Path| -> Vec<(String, PathBuf)> {
            let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(d)
                .map(|rd| {
                    rd.flatten()
                        .filter_map(|e| e.file_name().to_str().map(|s| (s.to_string(), e.path())))
                        .filter(|(s, _)| s.len() == 2 && s.bytes().all(|b| b.is_ascii_hexdigit()))
                        .collect()
                })
                .unwrap_or_default();
            v.sort();
            v
        };
        let mut out = Vec::new();
        for (d1, p1) in sorted_dirs(&self.dir) {
            if !after_hex.is_empty() && d1.as_str() < &after_hex[0..2] {
                continue;
            }
            for (d2, p2) in sorted_dirs(&p1) {
                if !after_hex.is_empty() && format!("{d1}{d2}").as_str() < &after_hex[0..4] {
                    continue;
                }
                let mut files: Vec<String> = std::fs::read_dir(&p2)
                    .map(|rd| rd.flatten().filter_map(|e| e.file_name().to_str().map(str::to_string)).collect())
                    .unwrap_or_default();
                files.sort();
                for f in files {
                    if f.as_str() <= after_hex.as_str() {
                        continue;
                    }
                    if let Some(h) = hex::decode(&f).ok().and_then(|b| BlockHash::from_slice(&b)) {
                        out.push(h);
                        if out.len() == n {
                            return out;
                        }
                    }
                }
            }
        }
        out
    }

    /// The block files whose hash starts with byte `p` (one partition).
    pub fn files_of_partition(&self, p: u8) -> Vec<BlockHash> {
        let dir = self.dir.join(format!("{p:02x}"));
        let mut out = Vec::new();
        let Ok(subs) = std::fs::read_dir(dir) else { return out };
        for sub in subs.flatten() {
            let Ok(files) = std::fs::read_dir(sub.path()) else { continue };
            for f in files.flatten() {
                if let Some(h) =
                    f.file_name().to_str().and_then(|n| hex::decode(n).ok()).and_then(|b| BlockHash::from_slice(&b))
                {
                    out.push(h);
                }
            }
        }
        out.sort();
        out
    }
}

impl IncomingBlock {
    /// Takes the next bytes of the block (held as they are until `WRITE_AT` bytes wait).
    pub async fn write(&mut self, data: Bytes) -> Result<(), DataError> {
        self.len += data.len();
        if self.len > MAX_BLOCK {
            return Err(DataError::Invalid(format!("block larger than {MAX_BLOCK} bytes")));
        }
        if let Expect::Hash(h) = &mut self.expect {
            h.update(&data);
        }
        self.sum.update(&data);
        self.tmp.pending.push(data);
        if self.tmp.pending.iter().map(Bytes::len).sum::<usize>() >= WRITE_AT {
            let mut tmp = std::mem::replace(&mut self.tmp, TmpFile::none());
            self.tmp = blocking(move || tmp.write_out(false).map(|()| tmp)).await?;
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Takes the block's hash as the sender gives it, without hashing the bytes again: only
    /// for a sender in this process that hashed the same bytes in memory itself, so there
    /// is no way between them for the bytes to change.
    pub fn hashed_by_caller(&mut self) {
        self.expect = Expect::Caller;
    }

    /// Checks the bytes against `sum`, the `DiskSum` sent by a sender in another process
    /// that hashed these very bytes, instead of hashing them again: the sum catches what
    /// the way between them can do to the bytes, at a small fraction of a hash's cost.
    /// Call before the first `write`.
    pub fn check_sum_sent(&mut self, sum: u64) {
        self.expect = Expect::Sum(sum);
    }

    /// Whether the bytes received are those of hash `expected`: hashed here, or checked
    /// against the sum sent with them, or on the word of a caller in this process.
    fn check(&mut self, expected: &BlockHash) -> Result<(), DataError> {
        match std::mem::replace(&mut self.expect, Expect::Caller) {
            Expect::Hash(h) => {
                let got = h.finish();
                if got != *expected {
                    return Err(DataError::HashMismatch { expected: *expected, got });
                }
            }
            Expect::Sum(sent) if sent != self.sum.finish() => return Err(DataError::Damaged(*expected)),
            Expect::Sum(_) | Expect::Caller => {}
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Runs file work that blocks on the blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> std::io::Result<T> + Send + 'static) -> Result<T, DataError> {
    Ok(tokio::task::spawn_blocking(f).await.map_err(|e| DataError::Invalid(format!("file task failed: {e}")))??)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn store(dir: &Path) -> BlockStore {
        let meta = Arc::new(MetaStore::open(&dir.join("db"), Duration::ZERO).unwrap());
        BlockStore::open(&dir.join("blocks"), meta).unwrap()
    }

    async fn put(store: &BlockStore, data: &[u8], owner: &[u8]) -> Result<bool, DataError> {
        let mut inc = store.begin();
        inc.write(Bytes::copy_from_slice(data)).await?;
        store.commit(inc, BlockHash::of(data), Owner { data_version: owner, timestamp: 10 }).await
    }

    /// A store in a temporary directory holding `data` (one owner's reference).
    async fn stored(data: &[u8]) -> (tempfile::TempDir, BlockStore, BlockHash) {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        put(&store, data, &[1; 16]).await.unwrap();
        (dir, store, BlockHash::of(data))
    }

    #[tokio::test]
    async fn write_read_dedup_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let data = vec![7u8; 100_000];
        let h = BlockHash::of(&data);
        assert!(!put(&store, &data, &[1; 16]).await.unwrap());
        assert!(put(&store, &data, &[2; 16]).await.unwrap(), "second copy is deduplicated");
        assert!(put(&store, &data, &[2; 16]).await.unwrap());
        assert_eq!(store.meta.live_refs(&h).unwrap(), 2, "same owner twice counts once");
        assert_eq!(store.read(&h).await.unwrap(), data);
        assert!(!store.delete_if_unreferenced(&h).await.unwrap(), "still referenced");
        assert_eq!(store.files_of_partition(h.0[0]), vec![h]);
        assert!(std::fs::read_dir(dir.path().join("blocks/tmp")).unwrap().next().is_none(), "no temporary file left");
    }

    #[tokio::test]
    async fn uncommitted_blocks_leave_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let tmp_files = || std::fs::read_dir(dir.path().join("blocks/tmp")).unwrap().count();
        let mut inc = store.begin();
        inc.write(Bytes::from_static(b"abc")).await.unwrap();
        let err = store.commit(inc, BlockHash::of(b"abd"), Owner { data_version: &[1; 16], timestamp: 1 }).await;
        assert!(matches!(err, Err(DataError::HashMismatch { .. })));
        // Larger than what is held in memory: written out as it arrives, then refused.
        let piece = Bytes::from(vec![6u8; WRITE_AT / 2 + 1]);
        let mut inc = store.begin();
        for _ in 0..3 {
            inc.write(piece.clone()).await.unwrap();
        }
        assert_eq!(tmp_files(), 1, "the first bytes are in a temporary file");
        let err = store.commit(inc, BlockHash::of(b"abd"), Owner { data_version: &[1; 16], timestamp: 1 }).await;
        assert!(matches!(err, Err(DataError::HashMismatch { .. })));
        let mut inc = store.begin();
        for _ in 0..2 {
            inc.write(piece.clone()).await.unwrap();
        }
        drop(inc);
        assert_eq!(tmp_files(), 0);
    }

    /// A block found stored before the lock and gone under it (the collector deleted it in
    /// between) has its bytes written and fsynced then, not dropped.
    #[test]
    fn a_block_gone_since_the_first_check_is_written_when_placed() {
        let dir = tempfile::tempdir().unwrap();
        let mut tmp = TmpFile::new(dir.path().join("tmp-block"));
        tmp.pending.push(Bytes::from_static(b"block bytes"));
        let path = dir.path().join("ab").join("cd").join("block");
        assert!(!tmp.place(&path, false).unwrap(), "not there: placed");
        assert_eq!(std::fs::read(&path).unwrap(), b"block bytes");
        assert!(!dir.path().join("tmp-block").exists());
    }

    #[tokio::test]
    async fn a_block_larger_than_what_is_held_is_stored_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let data: Vec<u8> = (0..WRITE_AT * 2 + 12345).map(|i| (i % 251) as u8).collect();
        let h = BlockHash::of(&data);
        let mut inc = store.begin();
        for piece in data.chunks(1 << 20) {
            inc.write(Bytes::copy_from_slice(piece)).await.unwrap();
        }
        assert!(!store.commit(inc, h, Owner { data_version: &[1; 16], timestamp: 1 }).await.unwrap());
        assert_eq!(std::fs::read(store.path(&h)).unwrap(), data);
        assert_eq!(store.read_checked(&h, Verify::Hash).await.unwrap(), data);
        assert_eq!(std::fs::read_dir(dir.path().join("blocks/tmp")).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn corruption_is_detected_and_moved_aside() {
        let data = vec![1u8; 5000];
        let (_dir, store, h) = stored(&data).await;
        std::fs::write(store.path(&h), vec![2u8; 5000]).unwrap();
        assert!(matches!(store.read(&h).await, Err(DataError::Corrupt(_))));
        assert!(!store.has(&h).await.unwrap(), "corrupt file moved aside");
    }

    #[tokio::test]
    async fn a_block_sent_with_its_sum_is_checked_against_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let data = vec![4u8; 300_000];
        let h = BlockHash::of(&data);
        let owner = Owner { data_version: &[1; 16], timestamp: 3 };
        // Damaged on the way: one bit differs from what the sender summed.
        let mut damaged = data.clone();
        damaged[123_456] ^= 4;
        let mut inc = store.begin();
        inc.check_sum_sent(DiskSum::of(&data));
        inc.write(Bytes::from(damaged)).await.unwrap();
        assert!(matches!(store.commit(inc, h, owner).await, Err(DataError::Damaged(_))));
        assert!(!store.has(&h).await.unwrap(), "nothing stored");
        // Whole: stored without being hashed here, its sum recorded for reads.
        let mut inc = store.begin();
        inc.check_sum_sent(DiskSum::of(&data));
        inc.write(Bytes::copy_from_slice(&data[..1000])).await.unwrap();
        inc.write(Bytes::copy_from_slice(&data[1000..])).await.unwrap();
        assert!(!store.commit(inc, h, Owner { data_version: &[1; 16], timestamp: 3 }).await.unwrap());
        assert_eq!(store.recorded_sum(&h), Some(DiskSum::of(&data)));
        assert_eq!(store.read_checked(&h, Verify::Hash).await.unwrap(), data);
    }

    /// Flips one bit of a block's file in place.
    fn flip_bit(store: &BlockStore, h: &BlockHash, at: usize) {
        let mut bytes = std::fs::read(store.path(h)).unwrap();
        bytes[at] ^= 0x10;
        std::fs::write(store.path(h), bytes).unwrap();
    }

    #[tokio::test]
    async fn one_flipped_bit_fails_the_recorded_sum_and_the_hash() {
        let data: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 7 + i / 4096) as u8).collect();
        let (_dir, store, h) = stored(&data).await;
        assert_eq!(store.recorded_sum(&h), Some(DiskSum::of(&data)), "the sum is recorded with the block");
        flip_bit(&store, &h, 700_001);
        assert!(matches!(store.read(&h).await, Err(DataError::Corrupt(_))));
        assert!(!store.has(&h).await.unwrap(), "corrupt file moved aside");
        assert_eq!(store.meta.resync.len(), 1, "queued to be fetched again");
    }

    #[tokio::test]
    async fn a_block_without_a_sum_is_checked_by_its_hash_and_gets_one() {
        let data = vec![3u8; 70_000];
        let (_dir, store, h) = stored(&data).await;
        // As a block stored before sums were recorded, or whose entry was lost.
        store.meta.block_sums.remove(h.0).unwrap();
        assert_eq!(store.read(&h).await.unwrap(), data);
        assert_eq!(store.recorded_sum(&h), Some(DiskSum::of(&data)));
        // A wrong entry makes the read check the hash, which passes, and puts it right.
        store.record_sum(&h, 12345).unwrap();
        assert_eq!(store.read(&h).await.unwrap(), data, "good bytes are served whatever the entry says");
        assert_eq!(store.recorded_sum(&h), Some(DiskSum::of(&data)));
        flip_bit(&store, &h, 0);
        assert!(matches!(store.read(&h).await, Err(DataError::Corrupt(_))));
    }

    #[tokio::test]
    async fn the_scrub_check_does_not_trust_the_sum() {
        let data = vec![5u8; 10_000];
        let (_dir, store, h) = stored(&data).await;
        // Other bytes under this name, with their own sum recorded: only the hash can tell.
        let other = vec![6u8; 10_000];
        std::fs::write(store.path(&h), &other).unwrap();
        store.record_sum(&h, DiskSum::of(&other)).unwrap();
        assert_eq!(store.read(&h).await.unwrap(), other, "a read trusts a matching sum");
        assert!(matches!(store.read_checked(&h, Verify::Hash).await, Err(DataError::Corrupt(_))));
    }

    #[tokio::test]
    async fn a_deleted_block_leaves_no_sum() {
        let data = vec![9u8; 1000];
        let (_dir, store, h) = stored(&data).await;
        assert!(store.offload(&h).await.unwrap());
        assert_eq!(store.recorded_sum(&h), None);
        // Stored again (a copy from another node), it is recorded again.
        store.store_copy(&h, Bytes::from(data.clone())).await.unwrap();
        assert_eq!(store.recorded_sum(&h), Some(DiskSum::of(&data)));
    }
}
