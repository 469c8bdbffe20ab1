//! Block references: which owners (data versions) hold each block, and the queue of
//! blocks that lost their last reference. Kept in sled next to the metadata tables.
//!
//! A reference is the key `hash ++ owner`, so adding the same one twice counts once and a
//! retried request cannot inflate a count.

use std::time::Duration;

use hangar_common::hash::BlockHash;
use hangar_common::ids::now_ms;

use crate::DataError;

pub struct BlockRefs {
    refs: sled::Tree,
    /// hash -> deadline (ms, u64 BE) after which the block may be deleted.
    unreferenced: sled::Tree,
    delay: Duration,
}

impl BlockRefs {
    pub fn new(db: &sled::Db, delay: Duration) -> Result<Self, DataError> {
        Ok(Self { refs: db.open_tree("block_refs")?, unreferenced: db.open_tree("block_unreferenced")?, delay })
    }

    pub fn add(&self, hash: &BlockHash, owner: &[u8]) -> Result<(), DataError> {
        let mut k = hash.0.to_vec();
        k.extend_from_slice(owner);
        self.refs.insert(k, &[])?;
        self.unreferenced.remove(hash.0)?;
        Ok(())
    }

    /// Drops one reference; true when it was the block's last and the block is now queued.
    pub fn remove(&self, hash: &BlockHash, owner: &[u8]) -> Result<bool, DataError> {
        let mut k = hash.0.to_vec();
        k.extend_from_slice(owner);
        self.refs.remove(k)?;
        if self.count(hash) == 0 {
            let deadline = now_ms() + self.delay.as_millis() as u64;
            self.unreferenced.insert(hash.0, &deadline.to_be_bytes())?;
            return Ok(true);
        }
        Ok(false)
    }

    pub fn count(&self, hash: &BlockHash) -> usize {
        self.refs.scan_prefix(hash.0).count()
    }

    /// Blocks whose deletion deadline has passed.
    pub fn due(&self) -> Vec<BlockHash> {
        let now = now_ms();
        self.unreferenced
            .iter()
            .filter_map(|r| r.ok())
            .filter(|(_, v)| <[u8; 8]>::try_from(v.as_ref()).map(u64::from_be_bytes).unwrap_or(0) <= now)
            .filter_map(|(k, _)| BlockHash::from_slice(&k))
            .collect()
    }

    pub fn forget_unreferenced(&self, hash: &BlockHash) -> Result<(), DataError> {
        self.unreferenced.remove(hash.0)?;
        Ok(())
    }
}
