//! The data node's background workers (all run by `hangar_common::worker::Workers`):
//!
//! - `gc`: deletes block files whose references have been gone for the deletion delay, on
//!   this node and on every other holder of the block's partition;
//! - `release`: releases the data versions that lost a merge here (overwritten or deleted
//!   objects), from the persistent release queue;
//! - `collect`: releases data versions whose release was asked for, or whose writer went
//!   away (a pending entry not renewed within the grace period and used by nothing);
//! - `janitor`: finishes multipart uploads that were decided but left half done;
//! - `lifecycle`: once a day, expires objects and aborts uploads as their buckets' lifecycle
//!   rules say;
//! - `sync`: copies the partitions this node gains in a new layout version from their
//!   previous holders (metadata, then blocks), then reports the version synced;
//! - `offload`: deletes what this node holds of partitions it lost, once no live layout
//!   version gives them to it any more;
//! - `anti_entropy`: compares Merkle trees with every other replica of this node's
//!   partitions and pulls the entries that differ;
//! - `tombstone_gc`: removes tombstones once every replica holds them;
//! - `block_resync`: fetches the blocks this node should hold and lacks;
//! - `block_scan`: on demand, finds missing and unreferenced block files;
//! - `scrub`: reads every block file, checks its hash, replaces corrupt ones.

pub mod anti_entropy;
pub mod block_scan;
pub mod collect;
pub mod gc;
pub mod janitor;
pub mod lifecycle;
pub mod offload;
pub mod release;
pub mod resync;
pub mod scrub;
pub mod sync;
pub mod tombstones;
pub mod vars;

use std::sync::Arc;

use hangar_common::cluster::{Cluster, PARTITIONS, View};
use hangar_model::Store;

use crate::block_store::BlockStore;
use crate::meta_store::MetaStore;

/// Local entries a walking worker looks at per step, at most.
pub const SCAN: usize = 256;

/// What every worker of a node works with.
#[derive(Clone)]
pub struct Ctx {
    pub node_id: Arc<str>,
    pub cluster: Cluster,
    pub store: Store,
    pub meta: Arc<MetaStore>,
    pub blocks: Arc<BlockStore>,
}

impl Ctx {
    /// The next entry of local `table` at or after `cursor` (live or not), moving the cursor
    /// past it; None at the end of the table (the cursor goes back to the start).
    pub fn next_local(
        &self,
        table: hangar_proto::metadata::Table,
        cursor: &mut Vec<u8>,
    ) -> Result<Option<(Vec<u8>, hangar_proto::metadata::Entry)>, hangar_common::Error> {
        use prost::Message;
        let tree = self.meta.tree(table as i32).map_err(|e| hangar_common::Error::Config(e.to_string()))?;
        let Some(item) = tree.range(cursor.clone()..).next() else {
            cursor.clear();
            return Ok(None);
        };
        let (k, v) = item.map_err(release::sled_err)?;
        *cursor = hangar_model::keys::successor(&k);
        Ok(Some((k.to_vec(), hangar_proto::metadata::Entry::decode(v.as_ref())?)))
    }

    /// Removes entry `e` of local `table`, unless it changed since it was read.
    pub fn drop_local(
        &self,
        table: hangar_proto::metadata::Table,
        key: &[u8],
        e: &hangar_proto::metadata::Entry,
    ) -> Result<(), hangar_common::Error> {
        self.meta.remove_if(table, key, e).map_err(|e| hangar_common::Error::Config(e.to_string()))?;
        Ok(())
    }

    /// Whether this node leads partition `p` for background chores: it is the first of the
    /// partition's read set. Others step in for entries older than twice the usual wait,
    /// so a dead leader delays the chores, never skips them.
    pub fn leads(&self, view: &View, p: usize) -> bool {
        view.read_set(p).ok().and_then(|s| s.first().map(|n| n.id == self.node_id)).unwrap_or(false)
    }

    /// Copies block `hash` from the first of `sources` that has it, checking its hash.
    /// Ok(false) when every source answered that it has none; Err lists the failures.
    pub async fn copy_block(
        &self,
        version: u64,
        hash: &hangar_common::hash::BlockHash,
        sources: &[hangar_common::cluster::NodeRef],
    ) -> Result<bool, String> {
        let mut failures = Vec::new();
        for n in sources.iter().filter(|n| n.id != self.node_id) {
            match self.store.blocks.get_from(n, version, &hash.0).await {
                Ok(data) => {
                    return self
                        .blocks
                        .store_copy(hash, data)
                        .await
                        .map(|_| true)
                        .map_err(|e| format!("storing it: {e}"));
                }
                Err(e) if e.code() == Some(tonic::Code::NotFound) => {}
                Err(e) => failures.push(format!("{}: {e}", n.id)),
            }
        }
        if failures.is_empty() { Ok(false) } else { Err(failures.join("; ")) }
    }

    /// Whether this node holds partition `p` in some live version.
    pub fn holds(&self, view: &View, p: usize) -> bool {
        view.holders(p).iter().any(|n| n.id == self.node_id)
    }

    /// The partitions this node holds in some live version, as a 256-bit map.
    pub fn held(&self, view: &View) -> Vec<bool> {
        held_by(&self.node_id, view)
    }
}

/// The partitions node `id` holds in some live version of `view`.
pub fn held_by(id: &str, view: &View) -> Vec<bool> {
    (0..PARTITIONS).map(|p| view.holders(p).iter().any(|n| &*n.id == id)).collect()
}
