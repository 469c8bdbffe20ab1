//! Members of the cluster and when each was last heard from.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hangar_common::ids::now_ms;
use hangar_proto::control::membership_service_server::MembershipService;
use hangar_proto::control::{HeartbeatReply, HeartbeatRequest, NodeInfo};
use tonic::{Request, Response, Status};

use crate::layout::LayoutManager;

/// A member is failed after missing three heartbeats (they come every 2 s).
pub const FAILURE_AFTER: Duration = Duration::from_secs(7);

#[derive(Default)]
pub struct Members {
    seen: Mutex<BTreeMap<String, (NodeInfo, u64)>>,
}

impl Members {
    pub fn heard_from(&self, node: NodeInfo) {
        if let Ok(mut m) = self.seen.lock() {
            m.insert(node.id.clone(), (node, now_ms()));
        }
    }

    /// Every member with its last-seen time (ms) and whether it is healthy.
    pub fn list(&self) -> Vec<(NodeInfo, u64, bool)> {
        let now = now_ms();
        self.seen
            .lock()
            .map(|m| {
                m.values()
                    .map(|(n, seen)| (n.clone(), *seen, now.saturating_sub(*seen) < FAILURE_AFTER.as_millis() as u64))
                    .collect()
            })
            .unwrap_or_default()
    }
}

pub struct MembershipRpc {
    pub members: Arc<Members>,
    pub layout: Arc<LayoutManager>,
}

#[tonic::async_trait]
impl MembershipService for MembershipRpc {
    async fn heartbeat(&self, req: Request<HeartbeatRequest>) -> Result<Response<HeartbeatReply>, Status> {
        let node = req.into_inner().node.ok_or_else(|| Status::invalid_argument("heartbeat without node"))?;
        if node.id.is_empty() {
            return Err(Status::invalid_argument("node id is empty"));
        }
        if node.role == hangar_proto::control::NodeRole::Data as i32
            && let Err(e) = self.layout.update_address(&node.id, &node.rpc_addr)
        {
            tracing::warn!(node = %node.id, error = %e, "cannot record a node's new address");
        }
        self.members.heard_from(node);
        Ok(Response::new(HeartbeatReply { layout_version: self.layout.current().version }))
    }
}
