//! Automatic layout (`[layout] auto_assign = true`): data nodes that discovery or their
//! heartbeats make known get a role, one layout change at a time, each only once the
//! previous transition has finished (a single live version) and only when no operator
//! has changes staged (checked and applied under the layout's lock). A node an operator
//! removed is not given a role again unless the operator does it. A node that disappears
//! is never removed automatically: that takes `hangar node remove`; until then it shows
//! as failed.

use std::sync::Arc;
use std::time::Duration;

use hangar_common::config::LayoutConfig;
use hangar_proto::control::{NodeRole, StagedRole};

use crate::layout::LayoutManager;
use crate::membership::Members;

/// How often the control plane looks for nodes without a role.
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// The zone of a node that announces none, when the config names none either.
const FALLBACK_ZONE: &str = "dc1";

pub fn spawn(cfg: LayoutConfig, layout: Arc<LayoutManager>, members: Arc<Members>) -> tokio::task::JoinHandle<()> {
    let capacity = cfg.default_capacity.as_deref().and_then(|c| hangar_common::config::parse_size(c).ok());
    tokio::spawn(async move {
        let mut last_problem = String::new();
        loop {
            tokio::time::sleep(CHECK_EVERY).await;
            let outcome = step(&cfg, capacity, &layout, &members);
            match outcome {
                Ok(Some(version)) => {
                    tracing::info!(version, "automatic layout applied a new version");
                    last_problem.clear();
                }
                Ok(None) => {}
                // Said once, not every round.
                Err(p) if p != last_problem => {
                    tracing::warn!(problem = %p, "automatic layout cannot assign the new nodes yet");
                    last_problem = p;
                }
                Err(_) => {}
            }
        }
    })
}

/// One look: assigns every healthy data node without a role, if the layout may change now.
fn step(
    cfg: &LayoutConfig,
    capacity: Option<u64>,
    layout: &LayoutManager,
    members: &Members,
) -> Result<Option<u64>, String> {
    let current = layout.current();
    let all = members.list();
    let new: Vec<_> = all
        .iter()
        .filter(|m| m.node.role == NodeRole::Data as i32 && m.healthy)
        .filter(|m| !current.nodes.iter().any(|n| n.node_id == m.node.id))
        .collect();
    if new.is_empty() {
        return Ok(None);
    }
    let factor = if current.version > 0 { current.replication_factor } else { layout.configured_factor() };
    if current.nodes.len() + new.len() < factor as usize {
        return Err(format!(
            "{} data node(s) known, the first layout needs {factor} (the replication factor)",
            new.len()
        ));
    }
    let mut roles = Vec::new();
    for m in &new {
        let zone = [m.node.zone.as_str(), cfg.default_zone.as_deref().unwrap_or_default(), FALLBACK_ZONE]
            .into_iter()
            .find(|z| !z.is_empty())
            .unwrap_or(FALLBACK_ZONE)
            .to_string();
        let Some(capacity) = capacity.or((m.node.capacity > 0).then_some(m.node.capacity)) else {
            return Err(format!("node {} announces no capacity; set [layout] default_capacity", m.node.id));
        };
        roles.push(StagedRole { node_id: m.node.id.clone(), zone, capacity, tags: vec![], remove: false });
    }
    let addr_of = |id: &str| all.iter().find(|m| m.node.id == id).map(|m| m.node.rpc_addr.clone());
    match layout.auto_assign(roles, addr_of) {
        Ok(applied) => Ok(applied.map(|l| l.version)),
        Err(e) => Err(e.to_string()),
    }
}
