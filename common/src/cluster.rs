//! Placement over the layout history: which data nodes hold an entry or a block, where a
//! write must land and where a read may look, and clients to reach them.
//!
//! Every table entry and every block belongs to one of 256 partitions; each layout version
//! maps each partition to `replication_factor` data nodes. While data moves after a layout
//! change, several versions are live: a write needs a quorum of *every* live version's
//! replicas (its write sets), and a read asks the replicas of the newest version whose
//! nodes have all synced it (its read set). Older versions are retired by the control plane
//! once a newer one is synced everywhere.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hangar_proto::control::{Layout, LayoutHistory};
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::local::{BlockClient, LocalNode, MetaClient};
use crate::rpc::{AddHeader, AuthChannel, add_secret, lazy_channel, meta_client};

pub const PARTITIONS: usize = 256;

/// The partition of a block: its hash's first byte (the hash is already uniform).
pub fn block_partition(hash: &[u8]) -> usize {
    hash.first().copied().unwrap_or(0) as usize
}

/// The partition of a table entry, from the hash of its partition key.
pub fn key_partition(partition_key: &[u8]) -> usize {
    crate::hash::BlockHash::of(partition_key).0[0] as usize
}

/// Quorum of `n` replicas: a strict majority, so any read quorum meets any write quorum.
pub fn quorum(n: usize) -> usize {
    n / 2 + 1
}

/// A data node as the layout names it. Cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeRef {
    pub id: Arc<str>,
    pub addr: Arc<str>,
}

impl NodeRef {
    pub fn new(id: &str, addr: &str) -> Self {
        Self { id: id.into(), addr: addr.into() }
    }
}

/// What the history says, worked out once per change: per partition, the write sets (one
/// per distinct live replica set) and the read set.
pub struct View {
    pub history: Arc<LayoutHistory>,
    nodes: Vec<NodeRef>,
    /// Per partition: indexes into `nodes`, one list per distinct live replica set.
    write_sets: Vec<Vec<Vec<usize>>>,
    /// Per partition: indexes into `nodes`.
    read_set: Vec<Vec<usize>>,
    /// Per partition: the layout version of the read set.
    read_version: Vec<u64>,
}

/// A layout version's replicas of partition `p`, as node ids.
pub fn replica_ids(layout: &Layout, p: usize) -> Vec<&str> {
    layout
        .partitions
        .get(p)
        .map(|part| {
            part.nodes.iter().filter_map(|&i| layout.nodes.get(i as usize)).map(|n| n.node_id.as_str()).collect()
        })
        .unwrap_or_default()
}

impl View {
    pub fn new(history: Arc<LayoutHistory>) -> Self {
        // The newest address a node has in any live version.
        let mut addrs: HashMap<&str, &str> = HashMap::new();
        for l in &history.versions {
            for n in &l.nodes {
                addrs.insert(&n.node_id, &n.rpc_addr);
            }
        }
        let mut ids: Vec<&str> = addrs.keys().copied().collect();
        ids.sort();
        let nodes: Vec<NodeRef> = ids.iter().map(|id| NodeRef::new(id, addrs[id])).collect();
        let index: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let usable: Vec<&Layout> = history.versions.iter().filter(|l| l.partitions.len() == PARTITIONS).collect();
        let synced = |id: &str| history.synced.get(id).copied().unwrap_or(0);
        let (mut write_sets, mut read_set, mut read_version) = (Vec::new(), Vec::new(), Vec::new());
        for p in 0..PARTITIONS {
            let sets: Vec<(u64, Vec<usize>)> = usable
                .iter()
                .map(|l| (l.version, replica_ids(l, p).iter().filter_map(|id| index.get(id).copied()).collect()))
                .collect();
            let mut distinct: Vec<Vec<usize>> = Vec::new();
            for (_, s) in &sets {
                let mut sorted = s.clone();
                sorted.sort();
                if !distinct.iter().any(|d| {
                    let mut d = d.clone();
                    d.sort();
                    d == sorted
                }) {
                    distinct.push(s.clone());
                }
            }
            // The newest version all of whose replicas of p have synced it; the oldest live
            // version when none has (its data is in place by definition: older ones retired).
            let read = sets
                .iter()
                .rev()
                .find(|(v, s)| s.iter().all(|&i| synced(&nodes[i].id) >= *v))
                .or(sets.first())
                .cloned()
                .unwrap_or_default();
            write_sets.push(distinct);
            read_version.push(read.0);
            read_set.push(read.1);
        }
        Self { history, nodes, write_sets, read_set, read_version }
    }

    /// The current (newest) layout version; 0 before the first layout.
    pub fn version(&self) -> u64 {
        self.history.versions.last().map(|l| l.version).unwrap_or(0)
    }

    pub fn current(&self) -> Option<&Layout> {
        self.history.versions.last()
    }

    fn refs(&self, idx: &[usize]) -> Vec<NodeRef> {
        idx.iter().map(|&i| self.nodes[i].clone()).collect()
    }

    /// One replica set per live layout version (identical sets once).
    pub fn write_sets(&self, partition: usize) -> Result<Vec<Vec<NodeRef>>, ClusterError> {
        let sets = self.write_sets.get(partition).filter(|s| !s.is_empty()).ok_or(ClusterError::NoLayout)?;
        Ok(sets.iter().map(|s| self.refs(s)).collect())
    }

    /// Where reads of `partition` go.
    pub fn read_set(&self, partition: usize) -> Result<Vec<NodeRef>, ClusterError> {
        let set = self.read_set.get(partition).filter(|s| !s.is_empty()).ok_or(ClusterError::NoLayout)?;
        Ok(self.refs(set))
    }

    /// The layout version reads of `partition` use.
    pub fn read_version(&self, partition: usize) -> u64 {
        self.read_version.get(partition).copied().unwrap_or(0)
    }

    /// Every node of every live version.
    pub fn all_nodes(&self) -> &[NodeRef] {
        &self.nodes
    }

    /// The distinct read sets of all partitions: a listing across partitions needs a read
    /// quorum of each.
    pub fn distinct_read_sets(&self) -> Vec<Vec<NodeRef>> {
        let sets: BTreeSet<&Vec<usize>> = self.read_set.iter().collect();
        sets.into_iter().map(|s| self.refs(s)).collect()
    }

    /// Every node that holds `partition` in some live version (the union of its write sets).
    pub fn holders(&self, partition: usize) -> Vec<NodeRef> {
        let idx: BTreeSet<usize> =
            self.write_sets.get(partition).map(|s| s.iter().flatten().copied().collect()).unwrap_or_default();
        idx.into_iter().map(|i| self.nodes[i].clone()).collect()
    }

    /// The node id's address in the live versions.
    pub fn node(&self, id: &str) -> Option<NodeRef> {
        self.nodes.iter().find(|n| &*n.id == id).cloned()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("no cluster layout yet: the control plane has not published one")]
    NoLayout,
}

/// How internal calls are made: the cluster secret, and the time any one call (or one
/// message of a stream) may take.
#[derive(Clone)]
pub struct RpcOptions {
    pub secret: String,
    pub timeout: Duration,
}

/// The layout history in force, the view worked out from it, and clients to the nodes it
/// names (the data node of this process, if any, is called in-process). Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    history: watch::Receiver<Arc<LayoutHistory>>,
    view: Arc<Mutex<Option<Arc<View>>>>,
    pub(crate) opts: Arc<RpcOptions>,
    auth: AddHeader,
    channels: Arc<Mutex<HashMap<Arc<str>, Channel>>>,
    local: Option<LocalNode>,
}

impl Cluster {
    pub fn new(history: watch::Receiver<Arc<LayoutHistory>>, opts: RpcOptions) -> Result<Self, crate::Error> {
        let auth = add_secret(&opts.secret)?;
        Ok(Self {
            history,
            view: Default::default(),
            opts: Arc::new(opts),
            auth,
            channels: Default::default(),
            local: None,
        })
    }

    /// The view of the current history (recomputed only when the history changed).
    pub fn view(&self) -> Arc<View> {
        let history = self.history.borrow().clone();
        let mut cached = self.view.lock().unwrap_or_else(|p| p.into_inner());
        match &*cached {
            Some(v) if Arc::ptr_eq(&v.history, &history) => v.clone(),
            _ => {
                let v = Arc::new(View::new(history));
                *cached = Some(v.clone());
                v
            }
        }
    }

    /// Calls to `node` (the data node of this process) go to its services directly.
    pub fn with_local(mut self, node: LocalNode) -> Self {
        self.local = Some(node);
        self
    }

    fn local(&self, node: &NodeRef) -> Option<&LocalNode> {
        self.local.as_ref().filter(|l| l.id == node.id)
    }

    /// Moves the data node of this process, when it is among `nodes`, to the front (the
    /// others keep their order): a read that asks one replica at a time asks it first, and
    /// its answer crosses no socket.
    pub fn local_first(&self, nodes: &mut [NodeRef]) {
        if let Some(i) = nodes.iter().position(|n| self.local(n).is_some()) {
            nodes[..=i].rotate_right(1);
        }
    }

    /// A receiver that sees every new history.
    pub fn watch(&self) -> watch::Receiver<Arc<LayoutHistory>> {
        self.history.clone()
    }

    pub fn timeout(&self) -> Duration {
        self.opts.timeout
    }

    fn channel(&self, addr: &Arc<str>) -> Result<Channel, crate::Error> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let c = lazy_channel(addr)?;
        map.insert(addr.clone(), c.clone());
        Ok(c)
    }

    pub fn meta(&self, node: &NodeRef) -> Result<MetaClient, crate::Error> {
        Ok(match self.local(node) {
            Some(l) => MetaClient::Local(l.meta.clone()),
            None => MetaClient::Remote(meta_client(self.channel(&node.addr)?, self.auth.clone())),
        })
    }

    pub fn blocks(&self, node: &NodeRef) -> Result<BlockClient, crate::Error> {
        Ok(match self.local(node) {
            Some(l) => BlockClient::Local(l.blocks.clone()),
            None => BlockClient::Remote(AuthChannel::new(self.channel(&node.addr)?, self.auth.clone())),
        })
    }

    /// The layout service of a data node (the history it follows): also a cheap ping.
    pub fn layout(&self, node: &NodeRef) -> Result<crate::rpc::LayoutGrpc, crate::Error> {
        Ok(hangar_proto::control::layout_service_client::LayoutServiceClient::with_interceptor(
            self.channel(&node.addr)?,
            self.auth.clone(),
        ))
    }

    /// The repair and worker commands of a data node (cluster secret).
    pub fn node_admin(&self, node: &NodeRef) -> Result<crate::rpc::NodeAdminGrpc, crate::Error> {
        Ok(hangar_proto::control::node_admin_service_client::NodeAdminServiceClient::with_interceptor(
            self.channel(&node.addr)?,
            self.auth.clone(),
        ))
    }
}

/// A history that never changes (receivers keep the value after the sender is gone).
pub fn fixed_history(history: LayoutHistory) -> watch::Receiver<Arc<LayoutHistory>> {
    watch::channel(Arc::new(history)).1
}

#[cfg(test)]
mod tests {
    use super::*;
    use hangar_proto::control::{NodeAssignment, PartitionReplicas};

    fn layout(version: u64, ids: &[&str]) -> Layout {
        Layout {
            version,
            replication_factor: ids.len() as u32,
            nodes: ids
                .iter()
                .map(|id| NodeAssignment { node_id: id.to_string(), rpc_addr: format!("{id}:1"), ..Default::default() })
                .collect(),
            partitions: (0..PARTITIONS).map(|_| PartitionReplicas { nodes: (0..ids.len() as u32).collect() }).collect(),
        }
    }

    #[test]
    fn writes_go_to_every_live_set_and_reads_to_the_newest_synced() {
        let mut h = LayoutHistory {
            versions: vec![layout(1, &["a", "b", "c"]), layout(2, &["a", "b", "d"])],
            ..Default::default()
        };
        let v = View::new(Arc::new(h.clone()));
        assert_eq!(v.write_sets(7).unwrap().len(), 2);
        let ids = |s: Vec<NodeRef>| s.iter().map(|n| n.id.to_string()).collect::<Vec<_>>();
        assert_eq!(ids(v.read_set(7).unwrap()), ["a", "b", "c"], "nobody synced v2 yet");
        for id in ["a", "b"] {
            h.synced.insert(id.into(), 2);
        }
        let v = View::new(Arc::new(h.clone()));
        assert_eq!(ids(v.read_set(7).unwrap()), ["a", "b", "c"], "d has not synced");
        h.synced.insert("d".into(), 2);
        let v = View::new(Arc::new(h.clone()));
        assert_eq!(ids(v.read_set(7).unwrap()), ["a", "b", "d"]);
        assert_eq!(v.read_version(7), 2);
        assert_eq!(v.holders(0).len(), 4);
    }

    #[test]
    fn same_sets_count_once() {
        let h = LayoutHistory {
            versions: vec![layout(1, &["a", "b", "c"]), layout(2, &["a", "b", "c"])],
            ..Default::default()
        };
        assert_eq!(View::new(Arc::new(h)).write_sets(0).unwrap().len(), 1);
    }
}
