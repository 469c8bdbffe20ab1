//! The versioned cluster layout: operators stage role changes, review the plan, and apply
//! it as the next version. The control plane keeps the history of live versions with what
//! each data node reported (the newest version it enforces, the newest it has synced), in
//! sled, and publishes it to watchers (WatchLayout streams every change).
//!
//! A version is retired once a newer one is synced by every node it names: from then on
//! reads and writes use the newer one only, and nodes drop what they no longer hold.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use hangar_proto::control::{
    Layout, LayoutHistory, LayoutPlan, LayoutVersionInfo, NodeAssignment, NodePlan, PartitionReplicas, StagedRole,
    StagedRoles,
};
use prost::Message;
use tokio::sync::watch;

use crate::ControlError;
use crate::assign::{self, NodeRole};

pub const PARTITIONS: u32 = 256;
const STAGED_KEY: &[u8] = b"staged";
const HISTORY_KEY: &[u8] = b"history";
/// Node ids an operator removed from the layout: automatic layout never assigns them again.
const REMOVED_KEY: &[u8] = b"removed_nodes";

pub struct LayoutManager {
    state: sled::Tree,
    /// Every version applied: version (big-endian) -> LayoutVersionInfo.
    log: sled::Tree,
    db: sled::Db,
    current: watch::Sender<Arc<LayoutHistory>>,
    replication_factor: u32,
    /// Serialises every change of the history and of the staged roles.
    edit: Mutex<()>,
}

/// The layout's partitions as node ids.
fn partition_ids(l: &Layout) -> Vec<Vec<String>> {
    l.partitions
        .iter()
        .map(|p| p.nodes.iter().filter_map(|&i| l.nodes.get(i as usize)).map(|n| n.node_id.clone()).collect())
        .collect()
}

/// Partitions each node (by id) holds.
pub fn counts(l: &Layout) -> BTreeMap<String, u32> {
    let mut c = BTreeMap::new();
    for part in partition_ids(l) {
        for id in part {
            *c.entry(id).or_insert(0) += 1;
        }
    }
    c
}

impl LayoutManager {
    pub fn open(db: sled::Db, replication_factor: u32) -> Result<Self, ControlError> {
        let state = db.open_tree("layout_state")?;
        let history = match state.get(HISTORY_KEY)? {
            Some(v) => LayoutHistory::decode(v.as_ref())?,
            // A control plane from before layout histories kept each version on its own:
            // the last one is the only live one.
            None => match db.open_tree("layout_history")?.last()? {
                Some((_, v)) => LayoutHistory { versions: vec![Layout::decode(v.as_ref())?], ..Default::default() },
                None => LayoutHistory::default(),
            },
        };
        let log = db.open_tree("layout_log")?;
        Ok(Self {
            state,
            log,
            db,
            current: watch::channel(Arc::new(history)).0,
            replication_factor,
            edit: Mutex::new(()),
        })
    }

    /// The current (newest) layout version; an empty layout before the first.
    pub fn current(&self) -> Layout {
        self.current
            .borrow()
            .versions
            .last()
            .cloned()
            .unwrap_or(Layout { replication_factor: self.replication_factor, ..Default::default() })
    }

    /// Every live version and the nodes' progress.
    pub fn history(&self) -> Arc<LayoutHistory> {
        self.current.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<LayoutHistory>> {
        self.current.subscribe()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, ()>, ControlError> {
        self.edit.lock().map_err(|_| ControlError::Invalid("layout lock poisoned".into()))
    }

    /// Records what a data node reported: the newest version it enforces and the newest it
    /// has synced. Retires versions that a newer, fully synced one makes useless.
    pub fn record_progress(&self, node_id: &str, acked: u64, synced: u64) -> Result<(), ControlError> {
        let _guard = self.lock()?;
        let mut h = self.history().as_ref().clone();
        let known = h.versions.iter().any(|l| l.nodes.iter().any(|n| n.node_id == node_id));
        if !known {
            return Ok(());
        }
        let (a, s) = (h.acked.get(node_id).copied().unwrap_or(0), h.synced.get(node_id).copied().unwrap_or(0));
        if acked <= a && synced <= s {
            return Ok(());
        }
        h.acked.insert(node_id.to_string(), acked.max(a));
        h.synced.insert(node_id.to_string(), synced.max(s));
        retire(&mut h);
        self.store_and_send(h)
    }

    /// Makes the first layout of a single-node cluster: one node holds every partition.
    /// Does nothing when a layout exists already.
    pub fn init_single_node(&self, node: NodeAssignment) -> Result<Layout, ControlError> {
        let _guard = self.lock()?;
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
        self.publish(layout.clone())?;
        Ok(layout)
    }

    /// Records a node's current rpc address (a restarted node may listen elsewhere). The
    /// version does not change: addresses are not placement.
    pub fn update_address(&self, node_id: &str, addr: &str) -> Result<(), ControlError> {
        let _guard = self.lock()?;
        let mut h = self.history().as_ref().clone();
        let mut changed = false;
        for n in h.versions.iter_mut().flat_map(|l| l.nodes.iter_mut()) {
            if n.node_id == node_id && n.rpc_addr != addr {
                n.rpc_addr = addr.to_string();
                changed = true;
            }
        }
        if changed { self.store_and_send(h) } else { Ok(()) }
    }

    /// Keeps `h` as the history (fsynced), with a new revision, and publishes it.
    fn store_and_send(&self, mut h: LayoutHistory) -> Result<(), ControlError> {
        h.revision += 1;
        self.state.insert(HISTORY_KEY, h.encode_to_vec())?;
        self.db.flush()?;
        self.current.send_replace(Arc::new(h));
        Ok(())
    }

    /// Adds `layout` as the newest live version.
    fn publish(&self, layout: Layout) -> Result<(), ControlError> {
        if layout.version != self.current().version + 1 {
            return Err(ControlError::Invalid(format!(
                "layout version {} does not follow {}",
                layout.version,
                self.current().version
            )));
        }
        self.state.remove(STAGED_KEY)?;
        let mut zones: Vec<&str> = layout.nodes.iter().map(|n| n.zone.as_str()).collect();
        zones.sort();
        zones.dedup();
        let info = LayoutVersionInfo {
            version: layout.version,
            replication_factor: layout.replication_factor,
            nodes: layout.nodes.len() as u32,
            applied_ms: hangar_common::ids::now_ms(),
            zones: zones.join(","),
            ..Default::default()
        };
        self.log.insert(layout.version.to_be_bytes(), info.encode_to_vec())?;
        let mut h = self.history().as_ref().clone();
        h.versions.push(layout);
        retire(&mut h);
        self.store_and_send(h)
    }

    pub fn staged(&self) -> Result<StagedRoles, ControlError> {
        Ok(match self.state.get(STAGED_KEY)? {
            Some(v) => StagedRoles::decode(v.as_ref())?,
            None => StagedRoles::default(),
        })
    }

    fn store_staged(&self, staged: &StagedRoles) -> Result<(), ControlError> {
        self.state.insert(STAGED_KEY, staged.encode_to_vec())?;
        self.db.flush()?;
        Ok(())
    }

    /// The replication factor of the current layout (the configured one before the first).
    fn current_factor(&self) -> u32 {
        let cur = self.current();
        if cur.version > 0 { cur.replication_factor } else { self.replication_factor }
    }

    /// The replication factor the configuration gives the first layout.
    pub fn configured_factor(&self) -> u32 {
        self.replication_factor
    }

    /// Stages a new replication factor for the next version.
    pub fn stage_replication_factor(&self, factor: u32) -> Result<(), ControlError> {
        let _guard = self.lock()?;
        if !(1..=7).contains(&factor) {
            return Err(ControlError::Invalid(format!("replication factor {factor} is outside 1..=7")));
        }
        let mut staged = self.staged()?;
        staged.replication_factor = if factor == self.current_factor() { 0 } else { factor };
        self.store_staged(&staged)
    }

    /// Every version applied, oldest first, with its state now.
    pub fn versions(&self) -> Result<Vec<LayoutVersionInfo>, ControlError> {
        let h = self.history();
        let current = h.versions.last().map(|l| l.version).unwrap_or(0);
        let mut out = Vec::new();
        for item in self.log.iter() {
            let (_, v) = item?;
            let mut info = LayoutVersionInfo::decode(v.as_ref())?;
            info.state = if info.version == current {
                "current"
            } else if h.versions.iter().any(|l| l.version == info.version) {
                "live"
            } else {
                "retired"
            }
            .into();
            out.push(info);
        }
        // Live versions applied before versions were logged.
        let logged: Vec<u64> = out.iter().map(|i| i.version).collect();
        for l in h.versions.iter().filter(|l| !logged.contains(&l.version)) {
            out.push(LayoutVersionInfo {
                version: l.version,
                replication_factor: l.replication_factor,
                nodes: l.nodes.len() as u32,
                state: if l.version == current { "current" } else { "live" }.into(),
                ..Default::default()
            });
        }
        out.sort_by_key(|i| i.version);
        Ok(out)
    }

    /// Stages a change; `known` are the node ids that may be named (members and layout nodes).
    pub fn stage(&self, mut change: StagedRole, known: &[String]) -> Result<(), ControlError> {
        let _guard = self.lock()?;
        let matches: Vec<&String> = known.iter().filter(|id| id.starts_with(&change.node_id)).collect();
        change.node_id = match matches.as_slice() {
            [one] => (*one).clone(),
            [] => {
                return Err(ControlError::Invalid(format!(
                    "no known node has an id starting with `{}`",
                    change.node_id
                )));
            }
            _ => {
                return Err(ControlError::Invalid(format!(
                    "`{}` names more than one node; give more of the id",
                    change.node_id
                )));
            }
        };
        if !change.remove {
            if change.zone.is_empty() {
                return Err(ControlError::Invalid("a role needs a zone (--zone)".into()));
            }
            if change.capacity == 0 {
                return Err(ControlError::Invalid("a role needs a capacity above zero (--capacity)".into()));
            }
        } else if !self.current().nodes.iter().any(|n| n.node_id == change.node_id) {
            return Err(ControlError::Invalid(format!("node {} has no role to remove", change.node_id)));
        }
        let mut staged = self.staged()?;
        staged.roles.retain(|s| s.node_id != change.node_id);
        staged.roles.push(change);
        self.store_staged(&staged)
    }

    pub fn revert(&self) -> Result<(), ControlError> {
        self.state.remove(STAGED_KEY)?;
        self.db.flush()?;
        Ok(())
    }

    /// The roles after the staged changes, in node id order.
    fn proposed_roles(&self, cur: &Layout, staged: &[StagedRole]) -> Vec<NodeAssignment> {
        let mut roles: BTreeMap<String, NodeAssignment> =
            cur.nodes.iter().map(|n| (n.node_id.clone(), n.clone())).collect();
        for s in staged {
            if s.remove {
                roles.remove(&s.node_id);
            } else {
                let e = roles
                    .entry(s.node_id.clone())
                    .or_insert_with(|| NodeAssignment { node_id: s.node_id.clone(), ..Default::default() });
                e.zone = s.zone.clone();
                e.capacity = s.capacity;
                e.tags = s.tags.clone();
            }
        }
        roles.into_values().collect()
    }

    /// What applying the staged changes would give: the new layout, or why it cannot be.
    fn propose(&self, cur: &Layout, staged: &StagedRoles) -> Result<Layout, ControlError> {
        let nodes = self.proposed_roles(cur, &staged.roles);
        let factor = if staged.replication_factor > 0 { staged.replication_factor } else { self.current_factor() };
        let roles: Vec<NodeRole> = nodes
            .iter()
            .map(|n| NodeRole { id: n.node_id.clone(), zone: n.zone.clone(), capacity: n.capacity })
            .collect();
        let parts = assign::assign(&roles, factor as usize, &partition_ids(cur))
            .map_err(|e| ControlError::Invalid(e.to_string()))?;
        Ok(Layout {
            version: cur.version + 1,
            replication_factor: factor,
            nodes,
            partitions: parts
                .into_iter()
                .map(|p| PartitionReplicas { nodes: p.into_iter().map(|i| i as u32).collect() })
                .collect(),
        })
    }

    /// The plan for review (`hangar layout show`): the current roles, the staged changes
    /// and the roles after them.
    pub fn plan(&self) -> Result<LayoutPlan, ControlError> {
        let cur = self.current();
        let staged = self.staged()?;
        let has_changes = !staged.roles.is_empty() || staged.replication_factor > 0;
        let now = counts(&cur);
        let (next, error) = if !has_changes {
            (None, String::new())
        } else {
            match self.propose(&cur, &staged) {
                Ok(l) => (Some(l), String::new()),
                Err(e) => (None, e.to_string()),
            }
        };
        let h = self.history();
        let addr_of = |id: &str| cur.nodes.iter().find(|c| c.node_id == id).map(|c| c.rpc_addr.clone());
        let node_plan = |n: &NodeAssignment, partitions_now: u32, partitions_after: u32| NodePlan {
            node_id: n.node_id.clone(),
            zone: n.zone.clone(),
            capacity: n.capacity,
            tags: n.tags.clone(),
            partitions_now,
            partitions_after,
            rpc_addr: addr_of(&n.node_id).unwrap_or_default(),
            synced_version: h.synced.get(&n.node_id).copied().unwrap_or(0),
            ..Default::default()
        };
        let after_counts = next.as_ref().map(counts).unwrap_or_default();
        let nodes = cur
            .nodes
            .iter()
            .map(|n| {
                let now = now.get(&n.node_id).copied().unwrap_or(0);
                node_plan(n, now, if has_changes { after_counts.get(&n.node_id).copied().unwrap_or(0) } else { now })
            })
            .collect();
        let after = if has_changes {
            let roles =
                next.as_ref().map(|l| l.nodes.clone()).unwrap_or_else(|| self.proposed_roles(&cur, &staged.roles));
            roles
                .iter()
                .map(|n| {
                    node_plan(
                        n,
                        now.get(&n.node_id).copied().unwrap_or(0),
                        after_counts.get(&n.node_id).copied().unwrap_or(0),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        let moving = next.as_ref().map(|l| assign::moved(&partition_ids(&cur), &partition_ids(l))).unwrap_or(0);
        Ok(LayoutPlan {
            version: cur.version,
            replication_factor: self.current_factor(),
            staged: staged.roles,
            nodes,
            partitions_moving: moving as u32,
            error,
            live_versions: h.versions.iter().map(|l| l.version).collect(),
            after,
            staged_replication_factor: staged.replication_factor,
        })
    }

    /// Applies the staged changes as `version`; `addr_of` gives the rpc address members reported.
    pub fn apply(&self, version: u64, addr_of: impl Fn(&str) -> Option<String>) -> Result<Layout, ControlError> {
        let _guard = self.lock()?;
        let cur = self.current();
        if version != cur.version + 1 {
            return Err(ControlError::Invalid(format!(
                "the next layout version is {}; `apply --version {version}` refers to another one (review with `hangar layout show`)",
                cur.version + 1
            )));
        }
        let staged = self.staged()?;
        if staged.roles.is_empty() && staged.replication_factor == 0 {
            return Err(ControlError::Invalid("no staged changes to apply".into()));
        }
        let next = self.next_with_addresses(&cur, &staged, addr_of)?;
        // Removals are remembered (automatic layout leaves those nodes alone); a role given
        // by hand again lifts that.
        let mut removed = self.removed()?;
        for r in &staged.roles {
            if r.remove {
                removed.insert(r.node_id.clone());
            } else {
                removed.remove(&r.node_id);
            }
        }
        self.state.insert(REMOVED_KEY, removed.into_iter().collect::<Vec<_>>().join("\n").into_bytes())?;
        self.publish(next.clone())?;
        Ok(next)
    }

    fn next_with_addresses(
        &self,
        cur: &Layout,
        staged: &StagedRoles,
        addr_of: impl Fn(&str) -> Option<String>,
    ) -> Result<Layout, ControlError> {
        let mut next = self.propose(cur, staged)?;
        for n in &mut next.nodes {
            if let Some(a) = addr_of(&n.node_id) {
                n.rpc_addr = a;
            }
            if n.rpc_addr.is_empty() {
                return Err(ControlError::Invalid(format!("node {} has not reported its address yet", n.node_id)));
            }
        }
        Ok(next)
    }

    /// The node ids an operator removed from the layout.
    fn removed(&self) -> Result<std::collections::BTreeSet<String>, ControlError> {
        let raw = self.state.get(REMOVED_KEY)?.map(|v| v.to_vec()).unwrap_or_default();
        Ok(String::from_utf8_lossy(&raw).lines().filter(|l| !l.is_empty()).map(str::to_string).collect())
    }

    /// Automatic layout, checked and applied under the layout lock (so an operator staging
    /// at the same moment is neither swept in nor wiped): gives `roles` to their nodes as the
    /// next version, only if a single version is live and nothing is staged. Roles of nodes
    /// an operator removed are left out. None: nothing to do now.
    pub fn auto_assign(
        &self,
        roles: Vec<StagedRole>,
        addr_of: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Layout>, ControlError> {
        let _guard = self.lock()?;
        if self.history().versions.len() > 1 {
            return Ok(None);
        }
        let staged = self.staged()?;
        if !staged.roles.is_empty() || staged.replication_factor != 0 {
            return Err(ControlError::Invalid("an operator has changes staged; apply or revert them first".into()));
        }
        let removed = self.removed()?;
        let roles: Vec<StagedRole> = roles.into_iter().filter(|r| !removed.contains(&r.node_id)).collect();
        if roles.is_empty() {
            return Ok(None);
        }
        let cur = self.current();
        let next = self.next_with_addresses(&cur, &StagedRoles { roles, replication_factor: 0 }, addr_of)?;
        self.publish(next.clone())?;
        Ok(Some(next))
    }
}

/// Drops the versions older than the newest one that every node it names has synced.
fn retire(h: &mut LayoutHistory) {
    let synced = |id: &str, v: u64| h.synced.get(id).copied().unwrap_or(0) >= v;
    let newest_synced = h.versions.iter().rposition(|l| l.nodes.iter().all(|n| synced(&n.node_id, l.version)));
    if let Some(i) = newest_synced.filter(|&i| i > 0) {
        let gone: Vec<u64> = h.versions.drain(..i).map(|l| l.version).collect();
        tracing::info!(retired = ?gone, "layout versions retired");
    }
    // Progress of nodes no live version names is of no use.
    let live: std::collections::BTreeSet<String> =
        h.versions.iter().flat_map(|l| l.nodes.iter().map(|n| n.node_id.clone())).collect();
    h.acked.retain(|id, _| live.contains(id));
    h.synced.retain(|id, _| live.contains(id));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(id: &str, zone: &str) -> StagedRole {
        StagedRole { node_id: id.into(), zone: zone.into(), capacity: 100, ..Default::default() }
    }

    /// Opens a database again after its handles were dropped: sled's flusher thread lets go
    /// of the directory's lock a moment later.
    fn reopen(path: &std::path::Path) -> sled::Db {
        for _ in 0..100 {
            if let Ok(db) = sled::open(path) {
                return db;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        sled::open(path).unwrap()
    }

    #[test]
    fn single_node_layout_persists() {
        let dir = tempfile::tempdir().unwrap();
        {
            let m = LayoutManager::open(sled::open(dir.path()).unwrap(), 1).unwrap();
            let node = NodeAssignment { node_id: "n1".into(), ..Default::default() };
            let l = m.init_single_node(node.clone()).unwrap();
            assert_eq!(l.version, 1);
            assert_eq!(counts(&m.current()).get("n1"), Some(&PARTITIONS));
            assert_eq!(m.init_single_node(node).unwrap().version, 1, "second init keeps the layout");
        }
        let m = LayoutManager::open(reopen(dir.path()), 1).unwrap();
        assert_eq!(m.current().version, 1);
        assert_eq!(m.current().nodes[0].node_id, "n1");
    }

    #[test]
    fn stage_review_apply_revert() {
        let dir = tempfile::tempdir().unwrap();
        let m = LayoutManager::open(sled::open(dir.path()).unwrap(), 3).unwrap();
        let known: Vec<String> = ["aaa1", "bbb2", "ccc3", "ddd4"].iter().map(|s| s.to_string()).collect();
        let addr = |id: &str| Some(format!("{id}:3901"));
        for (id, z) in [("aaa", "a"), ("bbb", "b")] {
            m.stage(role(id, z), &known).unwrap();
        }
        let plan = m.plan().unwrap();
        assert!(plan.error.contains("at least 3 nodes"), "{}", plan.error);
        assert!(m.apply(1, addr).is_err());
        m.stage(role("ccc", "c"), &known).unwrap();
        let plan = m.plan().unwrap();
        assert!(plan.error.is_empty(), "{}", plan.error);
        assert_eq!(plan.partitions_moving, 768);
        assert!(plan.after.iter().all(|n| n.partitions_after == 256));
        assert!(plan.nodes.is_empty(), "no current roles before the first version");
        assert!(m.apply(2, addr).is_err(), "wrong version is refused");
        let l = m.apply(1, addr).unwrap();
        assert_eq!(l.version, 1);
        assert_eq!(l.nodes[0].rpc_addr, "aaa1:3901");
        assert!(m.plan().unwrap().staged.is_empty());

        m.stage(role("d", "d"), &known).unwrap();
        assert!(m.plan().unwrap().partitions_moving > 0);
        m.revert().unwrap();
        assert!(m.plan().unwrap().staged.is_empty());
        assert!(m.stage(role("zzz", "z"), &known).is_err(), "unknown node");
        assert!(m.stage(StagedRole { node_id: "d".into(), remove: true, ..Default::default() }, &known).is_err());

        // History survives a restart.
        drop(m);
        let m = LayoutManager::open(reopen(dir.path()), 3).unwrap();
        assert_eq!(m.current().version, 1);
    }

    #[test]
    fn automatic_layout_waits_for_staged_changes_and_transitions_and_leaves_removed_nodes_alone() {
        let dir = tempfile::tempdir().unwrap();
        let m = LayoutManager::open(sled::open(dir.path()).unwrap(), 3).unwrap();
        let known: Vec<String> = ["a", "b", "c", "d", "e"].iter().map(|s| s.to_string()).collect();
        let addr = |id: &str| Some(format!("{id}:3901"));
        let roles = |ids: &[&str]| ids.iter().map(|id| role(id, id)).collect::<Vec<_>>();

        let v1 = m.auto_assign(roles(&["a", "b", "c"]), addr).unwrap().expect("first layout");
        assert_eq!(v1.version, 1);

        // An operator's staged change holds it off, and is neither applied nor dropped.
        m.stage(role("d", "d"), &known).unwrap();
        let e = m.auto_assign(roles(&["e"]), addr).unwrap_err();
        assert!(e.to_string().contains("staged"), "{e}");
        assert_eq!(m.staged().unwrap().roles.len(), 1);
        assert_eq!(m.current().version, 1);
        let v2 = m.apply(2, addr).unwrap();
        assert_eq!(v2.nodes.len(), 4);

        // While version 1 is still live (d has not synced), nothing happens.
        assert!(m.history().versions.len() > 1);
        assert!(m.auto_assign(roles(&["e"]), addr).unwrap().is_none());
        for id in ["a", "b", "c", "d"] {
            m.record_progress(id, 2, 2).unwrap();
        }
        assert_eq!(m.history().versions.len(), 1, "version 1 retired");

        // A node the operator removed is not given a role again; a new one is.
        m.stage(StagedRole { node_id: "d".into(), remove: true, ..Default::default() }, &known).unwrap();
        m.apply(3, addr).unwrap();
        for id in ["a", "b", "c"] {
            m.record_progress(id, 3, 3).unwrap();
        }
        assert_eq!(m.history().versions.len(), 1);
        assert!(m.auto_assign(roles(&["d"]), addr).unwrap().is_none(), "d was removed by hand");
        let v4 = m.auto_assign(roles(&["d", "e"]), addr).unwrap().expect("e joins");
        assert!(v4.nodes.iter().any(|n| n.node_id == "e") && !v4.nodes.iter().any(|n| n.node_id == "d"));
    }
}
