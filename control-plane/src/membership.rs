//! Members of the cluster and when each was last heard from.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hangar_common::ids::now_ms;
use hangar_discovery::{Node, Role};
use hangar_proto::control::membership_service_server::MembershipService;
use hangar_proto::control::{
    HeartbeatReply, HeartbeatRequest, IdentifyReply, IdentifyRequest, NodeInfo, NodeRole, WorkerStatus,
};
use tonic::{Request, Response, Status};

use crate::layout::LayoutManager;

/// A member is failed after missing three heartbeats (they come every 2 s).
pub const FAILURE_AFTER: Duration = Duration::from_secs(7);

/// What the last heartbeat of a member said, and what discovery says of it.
#[derive(Clone)]
pub struct Member {
    pub node: NodeInfo,
    /// The last heartbeat (0: never heard from).
    pub last_seen_ms: u64,
    /// Heartbeating (whatever discovery says).
    pub healthy: bool,
    pub workers: Vec<WorkerStatus>,
    /// `heartbeat` (known by its heartbeats only), the discovery backend that lists it
    /// (`kubernetes`, `consul`), or `gone` once the backend stopped listing it.
    pub discovery: String,
}

/// What the discovery backend lists: each node with when it was first listed, and the
/// nodes it listed before and no longer does.
#[derive(Default)]
struct Listed {
    backend: &'static str,
    nodes: BTreeMap<String, (Node, u64)>,
    gone: BTreeMap<String, (Node, u64)>,
}

pub struct Members {
    seen: Mutex<BTreeMap<String, (HeartbeatRequest, u64)>>,
    listed: Mutex<Listed>,
    /// The id this control plane announces itself with (always healthy to itself).
    me: Mutex<String>,
    /// When this control plane started: before FAILURE_AFTER has passed, a node it has not
    /// heard from may be alive all the same.
    started: std::time::Instant,
}

impl Default for Members {
    fn default() -> Self {
        Self {
            seen: Default::default(),
            listed: Default::default(),
            me: Default::default(),
            started: std::time::Instant::now(),
        }
    }
}

/// A discovered node as the member list shows it.
fn info_of(n: &Node) -> NodeInfo {
    let role = match n.role {
        Role::Control => NodeRole::Control,
        Role::Data => NodeRole::Data,
        Role::Frontend => NodeRole::Frontend,
    };
    NodeInfo {
        id: n.id.clone(),
        hostname: n.hostname.clone(),
        rpc_addr: n.addr(),
        role: role as i32,
        zone: n.zone.clone(),
        capacity: n.capacity,
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
        if let Ok(mut l) = self.listed.lock() {
            l.gone.remove(id);
        }
    }

    /// The id this control plane announces itself with through discovery.
    pub fn set_me(&self, id: &str) {
        *self.me.lock().unwrap_or_else(|e| e.into_inner()) = id.to_string();
    }

    /// Takes in a complete listing of the discovery backend `backend`.
    pub fn set_listing(&self, backend: &'static str, listing: &BTreeMap<String, Node>) {
        let now = now_ms();
        let mut l = self.listed.lock().unwrap_or_else(|e| e.into_inner());
        l.backend = backend;
        let before = std::mem::take(&mut l.nodes);
        for (id, (node, _)) in &before {
            if !listing.contains_key(id) {
                tracing::info!(node = %id, backend, "node gone from discovery");
                l.gone.insert(id.clone(), (node.clone(), now));
            }
        }
        for (id, node) in listing {
            let first = before.get(id).map(|(_, t)| *t).unwrap_or(now);
            if !before.contains_key(id) {
                tracing::info!(node = %id, addr = %node.addr(), role = node.role.as_str(), backend, "node discovered");
            }
            l.gone.remove(id);
            l.nodes.insert(id.clone(), (node.clone(), first));
        }
    }

    /// The nodes discovery lists now, each with its last heartbeat (0: never heard from)
    /// and whether it is healthy.
    pub fn listed(&self) -> Vec<(Node, u64, bool)> {
        let members = self.list();
        let me = self.me.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let l = self.listed.lock().unwrap_or_else(|e| e.into_inner());
        l.nodes
            .values()
            .map(|(n, _)| {
                if n.id == me {
                    return (n.clone(), now_ms(), true);
                }
                let m = members.iter().find(|m| m.node.id == n.id);
                (n.clone(), m.map(|m| m.last_seen_ms).unwrap_or(0), m.is_some_and(|m| m.healthy))
            })
            .collect()
    }

    /// Every member (heartbeating or discovered) with its last heartbeat (ms), whether it
    /// is healthy, its workers and what discovery says of it.
    pub fn list(&self) -> Vec<Member> {
        let now = now_ms();
        let l = self.listed.lock().unwrap_or_else(|e| e.into_inner());
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let discovery = |id: &str| {
            if l.nodes.contains_key(id) {
                l.backend.to_string()
            } else if l.gone.contains_key(id) {
                "gone".to_string()
            } else {
                "heartbeat".to_string()
            }
        };
        let mut out: Vec<Member> = seen
            .values()
            .map(|(hb, seen)| {
                let mut node = hb.node.clone().unwrap_or_default();
                let listed = l.nodes.get(&node.id).or_else(|| l.gone.get(&node.id)).map(|(n, _)| n);
                if let Some(n) = listed.filter(|_| node.zone.is_empty()) {
                    node.zone = n.zone.clone();
                }
                let discovery = discovery(&node.id);
                Member {
                    // Heartbeats decide: a node whose entry vanished while it still answers
                    // (a Consul agent restarted, a resource deleted by hand) is not failed.
                    healthy: now.saturating_sub(*seen) < FAILURE_AFTER.as_millis() as u64,
                    node,
                    last_seen_ms: *seen,
                    workers: hb.workers.clone(),
                    discovery,
                }
            })
            .collect();
        let me = self.me.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (id, (n, _)) in l.nodes.iter().chain(l.gone.iter()) {
            // This control plane is shown apart (`StatusReply.control_plane`).
            if !seen.contains_key(id) && *id != me {
                out.push(Member {
                    node: info_of(n),
                    last_seen_ms: 0,
                    healthy: false,
                    workers: vec![],
                    discovery: discovery(id),
                });
            }
        }
        out
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

/// Publishes the cluster health metrics (`cluster_*`) from heartbeats every few seconds,
/// for as long as the task runs.
pub fn spawn_health_metrics(members: Arc<Members>, layout: Arc<LayoutManager>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let up: std::collections::BTreeSet<Arc<str>> =
                members.list().into_iter().filter(|m| m.healthy).map(|m| Arc::from(m.node.id.as_str())).collect();
            let view = hangar_common::cluster::View::new(layout.history());
            hangar_common::telemetry::metrics().cluster_health(&view, &up);
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        }
    })
}
