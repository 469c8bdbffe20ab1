//! Members of the cluster and when each was last heard from.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hangar_common::ids::now_ms;
use hangar_proto::control::membership_service_server::MembershipService;
use hangar_proto::control::{HeartbeatReply, HeartbeatRequest, IdentifyReply, IdentifyRequest, NodeInfo, WorkerStatus};
use tonic::{Request, Response, Status};

use crate::layout::LayoutManager;

/// A member is failed after missing three heartbeats (they come every 2 s).
pub const FAILURE_AFTER: Duration = Duration::from_secs(7);

/// What the last heartbeat of a member said.
#[derive(Clone)]
pub struct Member {
    pub node: NodeInfo,
    pub last_seen_ms: u64,
    pub healthy: bool,
    pub workers: Vec<WorkerStatus>,
}

pub struct Members {
    seen: Mutex<BTreeMap<String, (HeartbeatRequest, u64)>>,
    /// When this control plane started: before FAILURE_AFTER has passed, a node it has not
    /// heard from may be alive all the same.
    started: std::time::Instant,
}

impl Default for Members {
    fn default() -> Self {
        Self { seen: Default::default(), started: std::time::Instant::now() }
    }
}

impl Members {
    pub fn heard_from(&self, hb: HeartbeatRequest) {
        let Some(id) = hb.node.as_ref().map(|n| n.id.clone()) else { return };
        if let Ok(mut m) = self.seen.lock() {
            m.insert(id, (hb, now_ms()));
        }
    }

    /// Forgets a member (a node removed for good).
    pub fn forget(&self, id: &str) {
        if let Ok(mut m) = self.seen.lock() {
            m.remove(id);
        }
    }

    /// Every member with its last-seen time (ms), whether it is healthy and its workers.
    pub fn list(&self) -> Vec<Member> {
        let now = now_ms();
        self.seen
            .lock()
            .map(|m| {
                m.values()
                    .map(|(hb, seen)| Member {
                        node: hb.node.clone().unwrap_or_default(),
                        last_seen_ms: *seen,
                        healthy: now.saturating_sub(*seen) < FAILURE_AFTER.as_millis() as u64,
                        workers: hb.workers.clone(),
                    })
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
        let hb = req.into_inner();
        Ok(Response::new(receive(&self.members, &self.layout, hb)?))
    }

    async fn identify(&self, req: Request<IdentifyRequest>) -> Result<Response<IdentifyReply>, Status> {
        let addr = req.into_inner().rpc_addr;
        Ok(Response::new(identify(&self.members, &self.layout, &addr)))
    }
}

/// Takes a heartbeat in: the member list, and for a data node its address and progress in
/// the layout history. Shared by the gRPC service and the embedded server.
pub fn receive(members: &Members, layout: &LayoutManager, hb: HeartbeatRequest) -> Result<HeartbeatReply, Status> {
    let node = hb.node.as_ref().ok_or_else(|| Status::invalid_argument("heartbeat without node"))?;
    if node.id.is_empty() {
        return Err(Status::invalid_argument("node id is empty"));
    }
    if node.role == hangar_proto::control::NodeRole::Data as i32 {
        if let Err(e) = layout.update_address(&node.id, &node.rpc_addr) {
            tracing::warn!(node = %node.id, error = %e, "cannot record a node's new address");
        }
        if let Err(e) = layout.record_progress(&node.id, hb.acked_version, hb.synced_version) {
            tracing::warn!(node = %node.id, error = %e, "cannot record a node's layout progress");
        }
    }
    members.heard_from(hb);
    Ok(HeartbeatReply { layout_version: layout.current().version })
}

/// The id a data node starting with empty directories at `addr` should take back: a node of
/// the current layout at that address that is not heartbeating. Two live nodes cannot share
/// an address, so a silent node's address answering again is that node, with its disks lost.
/// While that node still counts as healthy (it stopped moments ago), the asker waits.
pub fn identify(members: &Members, layout: &LayoutManager, addr: &str) -> IdentifyReply {
    let Some(found) = layout.current().nodes.into_iter().find(|n| !addr.is_empty() && n.rpc_addr == addr) else {
        return IdentifyReply::default();
    };
    let silent_long_enough = members.started.elapsed() >= FAILURE_AFTER;
    if !silent_long_enough || members.list().iter().any(|m| m.node.id == found.node_id && m.healthy) {
        return IdentifyReply { node_id: String::new(), wait: true };
    }
    tracing::warn!(node = %found.node_id, addr, "a node with empty directories took back the id at its address");
    IdentifyReply { node_id: found.node_id, wait: false }
}
