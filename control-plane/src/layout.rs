//! The versioned cluster layout: every version kept in sled, the current one published to
//! watchers. This layouts are single-node; multi-node assignment comes with the
//! distributed data plane.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use hangar_proto::control::layout_service_server::LayoutService;
use hangar_proto::control::{GetLayoutRequest, Layout, NodeAssignment, PartitionReplicas};
use prost::Message;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::ControlError;

pub const PARTITIONS: u32 = 256;

pub struct LayoutManager {
    history: sled::Tree,
    db: sled::Db,
    current: watch::Sender<Arc<Layout>>,
}

impl LayoutManager {
    pub fn open(db: sled::Db) -> Result<Self, ControlError> {
        let history = db.open_tree("layout_history")?;
        let current = match history.last()? {
            Some((_, v)) => Layout::decode(v.as_ref())?,
            None => Layout::default(),
        };
        Ok(Self { history, db, current: watch::channel(Arc::new(current)).0 })
    }

    pub fn current(&self) -> Layout {
        self.current.borrow().as_ref().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Layout>> {
        self.current.subscribe()
    }

    /// Makes the first layout of a single-node cluster: one node holds every partition.
    /// Does nothing when a layout exists already.
    pub fn init_single_node(&self, node: NodeAssignment) -> Result<Layout, ControlError> {
        let cur = self.current();
        if cur.version > 0 {
            return Ok(cur);
        }
        let layout = Layout {
            version: 1,
            replication_factor: 1,
            nodes: vec![node],
            partitions: (0..PARTITIONS).map(|_| PartitionReplicas { nodes: vec![0] }).collect(),
        };
        self.apply(layout.clone())?;
        Ok(layout)
    }

    /// Records a node's current rpc address (a restarted node may listen elsewhere). The
    /// version does not change: addresses are not placement.
    pub fn update_address(&self, node_id: &str, addr: &str) -> Result<(), ControlError> {
        let mut layout = self.current();
        let Some(n) = layout.nodes.iter_mut().find(|n| n.node_id == node_id && n.rpc_addr != addr) else {
            return Ok(());
        };
        n.rpc_addr = addr.to_string();
        self.history.insert(layout.version.to_be_bytes(), layout.encode_to_vec())?;
        self.db.flush()?;
        self.current.send_replace(Arc::new(layout));
        Ok(())
    }

    fn apply(&self, layout: Layout) -> Result<(), ControlError> {
        if layout.version != self.current().version + 1 {
            return Err(ControlError::Invalid(format!(
                "layout version {} does not follow {}",
                layout.version,
                self.current().version
            )));
        }
        self.history.insert(layout.version.to_be_bytes(), layout.encode_to_vec())?;
        self.db.flush()?;
        self.current.send_replace(Arc::new(layout));
        Ok(())
    }

    /// How many partitions each node (by index) holds in the current layout.
    pub fn partitions_per_node(&self) -> Vec<u32> {
        let l = self.current();
        let mut counts = vec![0u32; l.nodes.len()];
        for p in &l.partitions {
            for &n in &p.nodes {
                if let Some(c) = counts.get_mut(n as usize) {
                    *c += 1;
                }
            }
        }
        counts
    }
}

pub struct LayoutRpc {
    pub manager: Arc<LayoutManager>,
}

type LayoutStream = Pin<Box<dyn Stream<Item = Result<Layout, Status>> + Send>>;

#[tonic::async_trait]
impl LayoutService for LayoutRpc {
    async fn get_layout(&self, _: Request<GetLayoutRequest>) -> Result<Response<Layout>, Status> {
        Ok(Response::new(self.manager.current()))
    }

    type WatchLayoutStream = LayoutStream;

    async fn watch_layout(&self, _: Request<GetLayoutRequest>) -> Result<Response<LayoutStream>, Status> {
        let rx = self.manager.subscribe();
        let stream = futures::stream::unfold((rx, true), |(mut rx, first)| async move {
            if !first && rx.changed().await.is_err() {
                return None;
            }
            let l = rx.borrow_and_update().as_ref().clone();
            Some((Ok(l), (rx, false)))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_node_layout_persists() {
        let dir = tempfile::tempdir().unwrap();
        {
            let m = LayoutManager::open(sled::open(dir.path()).unwrap()).unwrap();
            let node = NodeAssignment { node_id: "n1".into(), ..Default::default() };
            let l = m.init_single_node(node.clone()).unwrap();
            assert_eq!(l.version, 1);
            assert_eq!(m.partitions_per_node(), vec![PARTITIONS]);
            assert_eq!(m.init_single_node(node).unwrap().version, 1, "second init keeps the layout");
        }
        let m = LayoutManager::open(sled::open(dir.path()).unwrap()).unwrap();
        assert_eq!(m.current().version, 1);
        assert_eq!(m.current().nodes[0].node_id, "n1");
    }
}
