//! Block files on disk, named by their blake2b-256 hash: `<data_dir>/ab/cd/<hash>`.
//!
//! A block is written to a temporary file, fsynced, renamed into place and its directory
//! fsynced before its reference is recorded and the write acknowledged. Every read checks
//! the hash; a file that does not match is moved to `corrupt/` and never served.

use std::path::{Path, PathBuf};

use hangar_common::hash::{BlockHash, Hasher};
use hangar_common::telemetry::metrics;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use crate::DataError;
use crate::refs::BlockRefs;

/// Largest block accepted (the largest configurable block size).
pub const MAX_BLOCK: usize = 64 * 1024 * 1024;

pub struct BlockStore {
    dir: PathBuf,
    refs: BlockRefs,
    db: sled::Db,
    /// Serialises placing and deleting the same block (striped by the hash's first byte),
    /// so a block being re-added is never deleted by the garbage collector underneath.
    stripes: Vec<Mutex<()>>,
}

/// A block being received: data goes to a temporary file while it is hashed.
pub struct IncomingBlock {
    tmp: PathBuf,
    file: tokio::fs::File,
    hasher: Hasher,
    len: usize,
}

impl BlockStore {
    pub fn open(dir: &Path, refs: BlockRefs, db: sled::Db) -> Result<Self, DataError> {
        std::fs::create_dir_all(dir.join("tmp"))?;
        std::fs::create_dir_all(dir.join("corrupt"))?;
        // Temporary files left by a crash are never referenced.
        for e in std::fs::read_dir(dir.join("tmp"))?.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        Ok(Self { dir: dir.to_path_buf(), refs, db, stripes: (0..256).map(|_| Mutex::new(())).collect() })
    }

    pub fn path(&self, hash: &BlockHash) -> PathBuf {
        let h = hash.to_hex();
        self.dir.join(&h[0..2]).join(&h[2..4]).join(h)
    }

    pub async fn begin(&self) -> Result<IncomingBlock, DataError> {
        let tmp = self.dir.join("tmp").join(hex::encode(hangar_common::ids::random_id()));
        let file = tokio::fs::File::create(&tmp).await?;
        Ok(IncomingBlock { tmp, file, hasher: Hasher::default(), len: 0 })
    }

    /// Makes the received block durable under its hash and records `owner`'s reference.
    /// Returns true when the block was already stored (deduplicated).
    pub async fn commit(&self, mut inc: IncomingBlock, expected: BlockHash, owner: &[u8]) -> Result<bool, DataError> {
        let got = std::mem::take(&mut inc.hasher).finish();
        if got != expected {
            let _ = tokio::fs::remove_file(&inc.tmp).await;
            return Err(DataError::HashMismatch { expected, got });
        }
        let path = self.path(&expected);
        let _guard = self.stripes[expected.0[0] as usize].lock().await;
        let existed = tokio::fs::try_exists(&path).await?;
        if existed {
            let _ = tokio::fs::remove_file(&inc.tmp).await;
        } else {
            inc.file.sync_all().await?;
            drop(inc.file);
            let parent = path.parent().ok_or_else(|| DataError::Invalid("block path has no parent".into()))?;
            tokio::fs::create_dir_all(parent).await?;
            tokio::fs::rename(&inc.tmp, &path).await?;
            sync_dir(parent).await?;
            metrics().block_bytes_written.inc_by(inc.len as u64);
        }
        self.refs.add(&expected, owner)?;
        crate::error::flush(&self.db).await?;
        Ok(existed)
    }

    /// The whole block, verified against its hash.
    pub async fn read(&self, hash: &BlockHash) -> Result<Vec<u8>, DataError> {
        let path = self.path(hash);
        let data = match tokio::fs::read(&path).await {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(DataError::BlockNotFound(*hash)),
            Err(e) => return Err(e.into()),
        };
        if BlockHash::of(&data) != *hash {
            metrics().block_corruptions.inc();
            tracing::error!(block = %hash, "block content does not match its hash; moving it aside");
            let _ = tokio::fs::rename(&path, self.dir.join("corrupt").join(hash.to_hex())).await;
            return Err(DataError::Corrupt(*hash));
        }
        metrics().block_bytes_read.inc_by(data.len() as u64);
        Ok(data)
    }

    pub async fn has(&self, hash: &BlockHash) -> Result<bool, DataError> {
        Ok(tokio::fs::try_exists(self.path(hash)).await?)
    }

    /// Drops references; blocks left with none are queued for deletion after the delay.
    pub async fn remove_refs(&self, refs: &[(BlockHash, Vec<u8>)]) -> Result<u32, DataError> {
        let mut queued = 0;
        for (hash, owner) in refs {
            let _guard = self.stripes[hash.0[0] as usize].lock().await;
            if self.refs.remove(hash, owner)? {
                queued += 1;
            }
        }
        crate::error::flush(&self.db).await?;
        Ok(queued)
    }

    /// Adds references to blocks already stored; returns the blocks that are not.
    pub async fn add_refs(&self, refs: &[(BlockHash, Vec<u8>)]) -> Result<Vec<BlockHash>, DataError> {
        let mut missing = Vec::new();
        for (hash, owner) in refs {
            let _guard = self.stripes[hash.0[0] as usize].lock().await;
            if tokio::fs::try_exists(self.path(hash)).await? {
                self.refs.add(hash, owner)?;
            } else {
                missing.push(*hash);
            }
        }
        crate::error::flush(&self.db).await?;
        Ok(missing)
    }

    pub fn ref_count(&self, hash: &BlockHash) -> usize {
        self.refs.count(hash)
    }

    /// Deletes the files of blocks that stayed unreferenced past the delay.
    pub async fn collect_garbage(&self) -> Result<usize, DataError> {
        let mut deleted = 0;
        for hash in self.refs.due() {
            let _guard = self.stripes[hash.0[0] as usize].lock().await;
            if self.refs.count(&hash) == 0 {
                match tokio::fs::remove_file(self.path(&hash)).await {
                    Ok(()) => {
                        deleted += 1;
                        metrics().block_deleted.inc();
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
            self.refs.forget_unreferenced(&hash)?;
        }
        if deleted > 0 {
            tracing::debug!(deleted, "deleted unreferenced blocks");
        }
        Ok(deleted)
    }
}

impl IncomingBlock {
    pub async fn write(&mut self, data: &[u8]) -> Result<(), DataError> {
        self.len += data.len();
        if self.len > MAX_BLOCK {
            let _ = tokio::fs::remove_file(&self.tmp).await;
            return Err(DataError::Invalid(format!("block larger than {MAX_BLOCK} bytes")));
        }
        self.hasher.update(data);
        self.file.write_all(data).await?;
        Ok(())
    }

    /// Removes the temporary file of a block that will not be committed.
    pub async fn abandon(self) {
        let _ = tokio::fs::remove_file(&self.tmp).await;
    }
}

async fn sync_dir(dir: &Path) -> Result<(), DataError> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
        .await
        .map_err(|e| DataError::Invalid(format!("fsync task failed: {e}")))??;
    Ok(())
}

/// The store for tests: a fresh directory and database.
#[cfg(test)]
pub(crate) fn test_store(dir: &Path, delay: std::time::Duration) -> std::sync::Arc<BlockStore> {
    let db = sled::open(dir.join("db")).unwrap();
    let refs = BlockRefs::new(&db, delay).unwrap();
    std::sync::Arc::new(BlockStore::open(&dir.join("blocks"), refs, db).unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn put(store: &BlockStore, data: &[u8], owner: &[u8]) -> Result<bool, DataError> {
        let mut inc = store.begin().await?;
        inc.write(data).await?;
        store.commit(inc, BlockHash::of(data), owner).await
    }

    #[tokio::test]
    async fn write_read_dedup_and_refcount() {
        let dir = tempfile::tempdir().unwrap();
        let store = test_store(dir.path(), Duration::ZERO);
        let data = vec![7u8; 100_000];
        let h = BlockHash::of(&data);
        assert!(!put(&store, &data, b"v1").await.unwrap());
        assert!(put(&store, &data, b"v2").await.unwrap(), "second copy is deduplicated");
        assert!(put(&store, &data, b"v2").await.unwrap());
        assert_eq!(store.ref_count(&h), 2, "same owner twice counts once");
        assert_eq!(store.read(&h).await.unwrap(), data);

        assert_eq!(store.remove_refs(&[(h, b"v1".to_vec())]).await.unwrap(), 0);
        assert_eq!(store.collect_garbage().await.unwrap(), 0);
        assert_eq!(store.remove_refs(&[(h, b"v2".to_vec())]).await.unwrap(), 1);
        assert_eq!(store.collect_garbage().await.unwrap(), 1);
        assert!(matches!(store.read(&h).await, Err(DataError::BlockNotFound(_))));
    }

    #[tokio::test]
    async fn readded_block_survives_gc() {
        let dir = tempfile::tempdir().unwrap();
        let store = test_store(dir.path(), Duration::ZERO);
        let data = b"hello block".repeat(1000);
        let h = BlockHash::of(&data);
        put(&store, &data, b"a").await.unwrap();
        store.remove_refs(&[(h, b"a".to_vec())]).await.unwrap();
        put(&store, &data, b"b").await.unwrap();
        assert_eq!(store.collect_garbage().await.unwrap(), 0);
        assert_eq!(store.read(&h).await.unwrap(), data);
    }

    #[tokio::test]
    async fn wrong_hash_is_refused_and_corruption_detected() {
        let dir = tempfile::tempdir().unwrap();
        let store = test_store(dir.path(), Duration::from_secs(600));
        let mut inc = store.begin().await.unwrap();
        inc.write(b"abc").await.unwrap();
        let err = store.commit(inc, BlockHash::of(b"abd"), b"o").await.unwrap_err();
        assert!(matches!(err, DataError::HashMismatch { .. }));

        let data = vec![1u8; 5000];
        let h = BlockHash::of(&data);
        put(&store, &data, b"o").await.unwrap();
        std::fs::write(store.path(&h), vec![2u8; 5000]).unwrap();
        assert!(matches!(store.read(&h).await, Err(DataError::Corrupt(_))));
        assert!(!store.has(&h).await.unwrap(), "corrupt file moved aside");
    }
}
