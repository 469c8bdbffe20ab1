//! Placement and quorums: which data nodes hold an entry or a block under the current
//! layout, clients to reach them, and the quorum sizes of reads and writes.
//!
//! Every table entry and every block belongs to one of 256 partitions; the layout maps each
//! partition to `replication_factor` data nodes. A write is acknowledged once a write quorum
//! of its replicas holds it durably; a read asks a read quorum and merges the answers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hangar_proto::control::Layout;
use hangar_proto::metadata::Table;
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::hash::BlockHash;
use crate::rpc::{BlockGrpc, MetaGrpc, block_client, lazy_channel, meta_client};

pub const PARTITIONS: usize = 256;

/// The partition of a table entry: from the hash of its partition key.
pub fn entry_partition(table: Table, key: &[u8]) -> usize {
    BlockHash::of(partition_key(table, key)).0[0] as usize
}

/// The partition of a block: its hash's first byte (the hash is already uniform).
pub fn block_partition(hash: &[u8]) -> usize {
    hash.first().copied().unwrap_or(0) as usize
}

/// The part of a key that decides its partition. Entries that are range-scanned together
/// (a data version's blocks, an upload's parts) share one partition key.
pub fn partition_key(table: Table, key: &[u8]) -> &[u8] {
    match table {
        // data version id (16 bytes) ++ offset
        Table::VersionBlock => &key[..key.len().min(16)],
        // upload id (32 hex characters) ++ part number
        Table::UploadPart => &key[..key.len().min(32)],
        // bucket id ++ object key ++ 0x00 ++ upload id: the object's partition
        Table::MultipartUpload => &key[..key.len().saturating_sub(33)],
        _ => key,
    }
}

/// Whether range scans of a table stay within one partition (the start key's), or must
/// ask every node because consecutive keys are spread over all partitions.
pub fn range_is_partitioned(table: Table) -> bool {
    matches!(table, Table::VersionBlock | Table::UploadPart)
}

/// Quorum of `n` replicas: a strict majority, so any read quorum meets any write quorum.
pub fn quorum(n: usize) -> usize {
    n / 2 + 1
}

/// A data node as the layout names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeRef {
    pub id: String,
    pub addr: String,
}

/// The layout in force and clients to the nodes it names.
#[derive(Clone)]
pub struct Cluster {
    layout: watch::Receiver<Arc<Layout>>,
    secret: String,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("no cluster layout yet: the control plane has not published one")]
    NoLayout,
}

impl Cluster {
    pub fn new(layout: watch::Receiver<Arc<Layout>>, secret: &str) -> Self {
        Self { layout, secret: secret.to_string(), channels: Default::default() }
    }

    pub fn layout(&self) -> Arc<Layout> {
        self.layout.borrow().clone()
    }

    /// The replicas of a partition, in the layout's order.
    pub fn replicas(&self, partition: usize) -> Result<Vec<NodeRef>, ClusterError> {
        let l = self.layout();
        let part = l.partitions.get(partition).ok_or(ClusterError::NoLayout)?;
        Ok(part
            .nodes
            .iter()
            .filter_map(|&i| l.nodes.get(i as usize))
            .map(|n| NodeRef { id: n.node_id.clone(), addr: n.rpc_addr.clone() })
            .collect())
    }

    /// Every data node of the layout.
    pub fn all_nodes(&self) -> Vec<NodeRef> {
        self.layout().nodes.iter().map(|n| NodeRef { id: n.node_id.clone(), addr: n.rpc_addr.clone() }).collect()
    }

    /// For each partition, the indexes (into `all_nodes`) of its replicas.
    pub fn partition_members(&self) -> Vec<Vec<usize>> {
        self.layout().partitions.iter().map(|p| p.nodes.iter().map(|&i| i as usize).collect()).collect()
    }

    fn channel(&self, addr: &str) -> Result<Channel, crate::Error> {
        let mut map = self.channels.lock().map_err(|_| crate::Error::Config("channel cache poisoned".into()))?;
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let c = lazy_channel(addr)?;
        map.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    pub fn meta(&self, node: &NodeRef) -> Result<MetaGrpc, crate::Error> {
        meta_client(self.channel(&node.addr)?, &self.secret)
    }

    pub fn blocks(&self, node: &NodeRef) -> Result<BlockGrpc, crate::Error> {
        block_client(self.channel(&node.addr)?, &self.secret)
    }
}

/// A layout that never changes (receivers keep the value after the sender is gone).
pub fn fixed_layout(layout: Layout) -> watch::Receiver<Arc<Layout>> {
    watch::channel(Arc::new(layout)).1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn related_entries_share_a_partition() {
        let dv = [7u8; 16];
        let a = [&dv[..], &0u64.to_be_bytes()].concat();
        let b = [&dv[..], &99u64.to_be_bytes()].concat();
        assert_eq!(entry_partition(Table::VersionBlock, &a), entry_partition(Table::VersionBlock, &b));
        let upload = b"0123456789abcdef0123456789abcdef";
        let obj = [&[1u8; 16][..], b"photos/cat.jpg"].concat();
        let up_key = [&obj[..], &[0], upload].concat();
        assert_eq!(entry_partition(Table::MultipartUpload, &up_key), entry_partition(Table::Object, &obj));
        assert_eq!(quorum(1), 1);
        assert_eq!(quorum(3), 2);
        assert_eq!(quorum(5), 3);
    }
}
