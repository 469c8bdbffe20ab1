//! Moving data after a layout change. When the current version v gives this node partitions
//! that some older live version gives to other nodes, it copies them, then tells the control
//! plane it has synced v (heartbeats carry it); reads switch to v's replicas once all of
//! them have.
//!
//! 1. It waits until, for every partition to copy and every older live version, a quorum of
//!    that version's replicas have acknowledged v: they refuse writes made with an older
//!    layout and have finished those they accepted, so what they hold is final.
//! 2. Metadata: every table's entries of those partitions, from each such acknowledged
//!    replica (`SyncRange`), merged here by the tables' rules. A partition is complete once a
//!    quorum of every older version's replicas was copied in full: any acknowledged write was
//!    on a quorum, so on at least one of them.
//! 3. Blocks: every block a live reference here names, in those partitions, that this node
//!    lacks is fetched from a previous holder and checked against its hash.
//!
//! Progress is kept in the metadata database (table cursors, partitions done), so a restart
//! resumes where it stopped. Between steps the worker rests `sync_tranquility` times as long
//! as the step took, so client traffic keeps going.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use hangar_common::call::Method;
use hangar_common::cluster::{NodeRef, PARTITIONS, View, quorum, replica_ids};
use hangar_common::hash::BlockHash;
use hangar_common::worker::{Step, Worker};
use hangar_model::keys::successor;
use hangar_model::schema::{TABLES, parse_block_ref_key};
use hangar_proto::metadata::{Entry, SyncRangeRequest, Table};
use prost::Message;

use super::Ctx;
use super::release::sled_err;

/// Entries per SyncRange page.
const PAGE: u32 = 1000;
/// Blocks fetched per step.
const BLOCKS_PER_STEP: usize = 8;

pub struct Sync {
    pub ctx: Ctx,
    pub tranquility: u32,
    /// Progress: the sync_state tree of the metadata database.
    pub state: sled::Tree,
    /// What the current step found, for `progress`.
    pub report: String,
    pub nudge: std::sync::Arc<tokio::sync::Notify>,
    pub synced: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

const SYNCED: &[u8] = b"synced";

/// The synced version kept in `state`.
pub fn synced_version(state: &sled::Tree) -> u64 {
    state
        .get(SYNCED)
        .ok()
        .flatten()
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

/// What version v asks of this node.
struct Plan {
    version: u64,
    /// Partitions to copy.
    gained: Vec<usize>,
    /// Per partition, per older live version: its replicas.
    older: BTreeMap<usize, Vec<Vec<NodeRef>>>,
}

fn bitmap(parts: &BTreeSet<usize>) -> Vec<u8> {
    let mut b = vec![0u8; PARTITIONS / 8];
    for &p in parts {
        b[p / 8] |= 1 << (p % 8);
    }
    b
}

fn key(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(&b"/"[..])
}

impl Sync {
    fn plan(&self, view: &View) -> Plan {
        let h = &view.history;
        let version = view.version();
        let me = &*self.ctx.node_id;
        let (mut gained, mut older) = (Vec::new(), BTreeMap::new());
        let Some(cur) = h.versions.last() else { return Plan { version, gained, older } };
        for p in 0..PARTITIONS {
            if !replica_ids(cur, p).contains(&me) {
                continue;
            }
            let olds: Vec<&hangar_proto::control::Layout> =
                h.versions[..h.versions.len() - 1].iter().filter(|l| !replica_ids(l, p).contains(&me)).collect();
            if olds.is_empty() {
                continue;
            }
            gained.push(p);
            older.insert(
                p,
                olds.iter().map(|l| replica_ids(l, p).into_iter().filter_map(|id| view.node(id)).collect()).collect(),
            );
        }
        Plan { version, gained, older }
    }

    fn acked(view: &View, n: &NodeRef, v: u64) -> bool {
        view.history.acked.get(&*n.id).copied().unwrap_or(0) >= v
    }

    fn mark_synced(&mut self, v: u64) -> Result<(), hangar_common::Error> {
        self.state.insert(SYNCED, &v.to_be_bytes()).map_err(sled_err)?;
        // Progress of older targets is of no use any more.
        let prefix = b"v/".to_vec();
        for k in self.state.scan_prefix(&prefix).keys().flatten() {
            self.state.remove(k).map_err(sled_err)?;
        }
        self.ctx.meta.db.flush().map_err(sled_err)?;
        self.synced.store(v, std::sync::atomic::Ordering::SeqCst);
        self.nudge.notify_one();
        tracing::info!(version = v, "layout version synced");
        Ok(())
    }

    /// Copies one page of `table` from `source`; true when that source's table is done.
    async fn pull_page(
        &self,
        v: u64,
        source: &NodeRef,
        parts: &BTreeSet<usize>,
        table: Table,
    ) -> Result<bool, hangar_common::Error> {
        let vs = v.to_string();
        let cursor_key = key(&[b"v", vs.as_bytes(), b"cursor", source.id.as_bytes(), table.as_str_name().as_bytes()]);
        let done_key = key(&[b"v", vs.as_bytes(), b"done", source.id.as_bytes(), table.as_str_name().as_bytes()]);
        if self.state.contains_key(&done_key).map_err(sled_err)? {
            return Ok(true);
        }
        let start = self.state.get(&cursor_key).map_err(sled_err)?.map(|c| c.to_vec()).unwrap_or_default();
        let req = SyncRangeRequest {
            table: table as i32,
            partitions: bitmap(parts).into(),
            start: start.into(),
            limit: PAGE,
        };
        let cluster = self.ctx.cluster.clone();
        let mut c = cluster.meta(source)?;
        let r = cluster.call(source, Method::SyncRange, v, req, |r| async move { c.sync_range(r).await }).await?;
        let last = r.entries.last().map(|e: &Entry| successor(&e.key));
        if !r.entries.is_empty() {
            hangar_common::telemetry::metrics().sync_received(table, &source.id, r.entries.len());
            self.ctx
                .meta
                .insert(table as i32, r.entries)
                .await
                .map_err(|e| hangar_common::Error::Config(e.to_string()))?;
        }
        if r.more {
            if let Some(next) = last {
                self.state.insert(cursor_key, next).map_err(sled_err)?;
            }
            Ok(false)
        } else {
            self.state.insert(done_key, &[]).map_err(sled_err)?;
            Ok(true)
        }
    }

    /// Fetches up to BLOCKS_PER_STEP missing blocks of partition `p`; true when none is left.
    async fn pull_blocks(&self, v: u64, p: usize, sources: &[NodeRef]) -> Result<bool, hangar_common::Error> {
        let vs = v.to_string();
        let ps = p.to_string();
        let cursor_key = key(&[b"v", vs.as_bytes(), b"blocks", ps.as_bytes()]);
        let start = self.state.get(&cursor_key).map_err(sled_err)?.map(|c| c.to_vec()).unwrap_or_else(|| vec![p as u8]);
        let tree =
            self.ctx.meta.tree(Table::BlockRef as i32).map_err(|e| hangar_common::Error::Config(e.to_string()))?;
        let mut fetched = 0;
        let mut cursor = start;
        for item in tree.range(cursor.clone()..) {
            let (k, val) = item.map_err(sled_err)?;
            if k.first().copied() != Some(p as u8) {
                break;
            }
            cursor = successor(&k);
            if Entry::decode(val.as_ref())?.tombstone {
                continue;
            }
            let Some((hash, _)) = parse_block_ref_key(&k) else { continue };
            if self.ctx.blocks.has(&hash).await.map_err(|e| hangar_common::Error::Config(e.to_string()))? {
                continue;
            }
            self.fetch(v, &hash, sources).await?;
            fetched += 1;
            if fetched >= BLOCKS_PER_STEP {
                self.state.insert(cursor_key, cursor).map_err(sled_err)?;
                return Ok(false);
            }
        }
        self.state.insert(key(&[b"v", vs.as_bytes(), b"blocksdone", ps.as_bytes()]), &[]).map_err(sled_err)?;
        Ok(true)
    }

    /// Copies one block from the first previous holder that has it. When every holder
    /// answered that it has none (the block was lost, or written after they left), the
    /// references stay and the block resync keeps looking for it; any other failure fails
    /// the step, which is retried: the version is not reported synced with a block missing.
    async fn fetch(&self, v: u64, hash: &BlockHash, sources: &[NodeRef]) -> Result<(), hangar_common::Error> {
        match self.ctx.copy_block(v, hash, sources).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                tracing::warn!(block = %hash, "no previous holder has a referenced block");
                self.ctx.meta.queue_resync(hash).map_err(|e| hangar_common::Error::Config(e.to_string()))
            }
            Err(e) => Err(hangar_common::Error::Unavailable(format!("cannot copy block {hash}: {e}"))),
        }
    }
}

impl Worker for Sync {
    fn name(&self) -> String {
        "sync".into()
    }

    async fn step(&mut self) -> Result<Step, hangar_common::Error> {
        let started = Instant::now();
        let view = self.ctx.cluster.view();
        let synced = synced_version(&self.state);
        self.synced.store(synced, std::sync::atomic::Ordering::SeqCst);
        let plan = self.plan(&view);
        if plan.version == 0 || synced >= plan.version {
            self.report = if synced > 0 { format!("version {synced} synced") } else { String::new() };
            return Ok(Step::Idle(Duration::from_secs(2)));
        }
        if plan.gained.is_empty() {
            self.mark_synced(plan.version)?;
            return Ok(Step::Busy);
        }
        let v = plan.version;
        // 1. Every older set of every gained partition needs a quorum of acknowledgements.
        let waiting = plan
            .older
            .values()
            .flatten()
            .any(|set| set.iter().filter(|n| Self::acked(&view, n, v)).count() < quorum(set.len()));
        if waiting {
            self.report = format!("version {v}: waiting for the old replicas to acknowledge it");
            return Ok(Step::Idle(Duration::from_secs(1)));
        }
        // 2. Metadata, from every acknowledged previous holder.
        let mut by_source: BTreeMap<NodeRef, BTreeSet<usize>> = BTreeMap::new();
        for (p, sets) in &plan.older {
            for n in sets.iter().flatten() {
                if Self::acked(&view, n, v) && n.id != self.ctx.node_id {
                    by_source.entry(n.clone()).or_default().insert(*p);
                }
            }
        }
        let mut complete: BTreeSet<NodeRef> = BTreeSet::new();
        let mut failed = Vec::new();
        for (source, parts) in &by_source {
            let mut all = true;
            for &t in TABLES {
                match self.pull_page(v, source, parts, t).await {
                    Ok(true) => {}
                    Ok(false) => {
                        self.report = format!("version {v}: copying metadata from {}", source.id);
                        return Ok(self.rest(started));
                    }
                    Err(e) => {
                        failed.push(format!("{}: {e}", source.id));
                        all = false;
                        break;
                    }
                }
            }
            if all {
                complete.insert(source.clone());
            }
        }
        let short: Vec<usize> = plan
            .older
            .iter()
            .filter(|(_, sets)| {
                sets.iter().any(|s| s.iter().filter(|n| complete.contains(*n)).count() < quorum(s.len()))
            })
            .map(|(p, _)| *p)
            .collect();
        if !short.is_empty() {
            self.report = format!("version {v}: {} partitions wait for previous holders", short.len());
            return Err(hangar_common::Error::Unavailable(format!(
                "cannot copy {} partitions yet: {}",
                short.len(),
                failed.join("; ")
            )));
        }
        // 3. Blocks.
        let vs = v.to_string();
        let mut done = 0;
        for (p, sets) in &plan.older {
            let ps = p.to_string();
            if self.state.contains_key(key(&[b"v", vs.as_bytes(), b"blocksdone", ps.as_bytes()])).map_err(sled_err)? {
                done += 1;
                continue;
            }
            let sources: Vec<NodeRef> = sets.iter().flatten().filter(|n| complete.contains(*n)).cloned().collect();
            if !self.pull_blocks(v, *p, &sources).await? {
                self.report = format!("version {v}: {done}/{} partitions' blocks copied", plan.gained.len());
                return Ok(self.rest(started));
            }
        }
        self.mark_synced(v)?;
        self.report = format!("version {v} synced");
        Ok(Step::Busy)
    }

    fn progress(&self) -> (String, u64) {
        (self.report.clone(), 0)
    }
}

impl Sync {
    /// Busy, after resting `tranquility` times the step's duration.
    fn rest(&self, started: Instant) -> Step {
        if self.tranquility == 0 { Step::Busy } else { Step::Idle(started.elapsed() * self.tranquility) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmaps_name_their_partitions() {
        let b = bitmap(&[0usize, 9, 255].into_iter().collect());
        assert_eq!(b.len(), 32);
        assert_eq!(b[0], 1);
        assert_eq!(b[1], 2);
        assert_eq!(b[31], 128);
    }
}
