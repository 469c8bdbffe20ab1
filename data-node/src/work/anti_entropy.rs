//! Metadata anti-entropy. Every `anti_entropy_interval_secs` (and at start, and on `hangar
//! repair tables`) a data node compares its Merkle trees with every other replica of each
//! partition it holds: first the roots of all shared partitions in one call per peer, then
//! the leaves of the (table, partition) pairs whose roots differ, then it pulls the entries
//! of the leaves that differ and merges them by the tables' rules. Each node pulls from
//! every peer, so what one lacks reaches it whichever side runs first. A block reference
//! that arrives for a block whose file is missing queues the block for resync.
//!
//! A node that lost its directories (it took its old id back) starts **rebuilding**: it
//! refuses reads until one round has reached every peer of every partition in full, since
//! any write acknowledged with its help is on at least one of them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hangar_common::call::Method;
use hangar_common::cluster::{NodeRef, PARTITIONS, block_partition};
use hangar_common::worker::{Step, Worker};
use hangar_model::schema::parse_block_ref_key;
use hangar_proto::metadata::{Entry, LeafEntriesRequest, MerkleLeavesRequest, MerkleRootsRequest, Table};

use super::Ctx;
use super::release::sled_err;

/// (table, partition) pairs exchanged per step.
const PAIRS_PER_STEP: usize = 16;
/// Entries per LeafEntries page.
const PAGE: u32 = 1000;
/// Key of the rebuilding mark in the `node_state` tree.
pub const REBUILDING: &[u8] = b"rebuilding";

pub struct AntiEntropy {
    pub ctx: Ctx,
    /// None: rounds only on command (`anti_entropy_interval_secs = 0`).
    pub interval: Option<Duration>,
    /// Set by `hangar repair tables`: a round now.
    pub force: Arc<AtomicBool>,
    pub rebuilding: Arc<AtomicBool>,
    /// Where the rebuilding mark is kept.
    pub state: sled::Tree,
    round: Option<Round>,
    next_at: Instant,
    report: String,
    pulled: u64,
}

struct Round {
    version: u64,
    peers: VecDeque<(NodeRef, Vec<u8>)>,
    pending: VecDeque<(NodeRef, Table, u8)>,
    /// Every peer answered every question.
    complete: bool,
    peers_total: usize,
    pairs_differing: usize,
    pulled: u64,
    started: Instant,
}

/// "Never" for a schedule (a century ahead).
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 86400)
}

fn bitmap(bits: impl Iterator<Item = usize>) -> Vec<u8> {
    let mut b = vec![0u8; PARTITIONS / 8];
    for i in bits {
        b[i / 8] |= 1 << (i % 8);
    }
    b
}

impl AntiEntropy {
    pub fn new(
        ctx: Ctx,
        interval: Option<Duration>,
        force: Arc<AtomicBool>,
        rebuilding: Arc<AtomicBool>,
        state: sled::Tree,
    ) -> Self {
        // A node rebuilding starts at once, whatever the schedule.
        let next_at =
            if interval.is_some() || rebuilding.load(Ordering::SeqCst) { Instant::now() } else { far_future() };
        Self { ctx, interval, force, rebuilding, state, round: None, next_at, report: String::new(), pulled: 0 }
    }

    fn start_round(&mut self) -> Result<(), hangar_common::Error> {
        let view = self.ctx.cluster.view();
        let mut shared: BTreeMap<NodeRef, Vec<usize>> = BTreeMap::new();
        for p in 0..PARTITIONS {
            let holders = view.holders(p);
            if !holders.iter().any(|n| n.id == self.ctx.node_id) {
                continue;
            }
            for n in holders.into_iter().filter(|n| n.id != self.ctx.node_id) {
                shared.entry(n).or_default().push(p);
            }
        }
        let peers: VecDeque<_> = shared.into_iter().map(|(n, ps)| (n, bitmap(ps.into_iter()))).collect();
        self.round = Some(Round {
            version: view.version(),
            peers_total: peers.len(),
            peers,
            pending: VecDeque::new(),
            complete: true,
            pairs_differing: 0,
            pulled: 0,
            started: Instant::now(),
        });
        Ok(())
    }

    /// The (table, partition) pairs whose roots differ between `peer` and this node.
    async fn compare_roots(
        &self,
        v: u64,
        peer: &NodeRef,
        parts: &[u8],
    ) -> Result<Vec<(Table, u8)>, hangar_common::Error> {
        let cluster = self.ctx.cluster.clone();
        let mut c = cluster.meta(peer)?;
        let req = MerkleRootsRequest { partitions: parts.to_vec().into() };
        let theirs =
            cluster.call(peer, Method::MerkleRoots, v, req, |r| async move { c.merkle_roots(r).await }).await?;
        let ours: BTreeMap<(i32, u32), Vec<u8>> = self
            .ctx
            .meta
            .merkle_roots(parts.to_vec())
            .await
            .map_err(|e| hangar_common::Error::Config(e.to_string()))?
            .into_iter()
            .map(|r| ((r.table, r.partition), r.hash.to_vec()))
            .collect();
        Ok(theirs
            .roots
            .into_iter()
            .filter(|r| ours.get(&(r.table, r.partition)).is_none_or(|h| h[..] != r.hash[..]))
            .filter_map(|r| Some((Table::try_from(r.table).ok()?, u8::try_from(r.partition).ok()?)))
            .collect())
    }

    /// Pulls from `peer` the entries of the leaves of (t, p) that differ; returns how many
    /// entries changed here.
    async fn exchange(&self, v: u64, peer: &NodeRef, t: Table, p: u8) -> Result<u64, hangar_common::Error> {
        let err = |e: crate::DataError| hangar_common::Error::Config(e.to_string());
        let cluster = self.ctx.cluster.clone();
        let mut c = cluster.meta(peer)?;
        let req = MerkleLeavesRequest { table: t as i32, partition: p as u32 };
        let theirs =
            cluster.call(peer, Method::MerkleLeaves, v, req, |r| async move { c.merkle_leaves(r).await }).await?;
        let ours: BTreeMap<u32, Vec<u8>> = self
            .ctx
            .meta
            .merkle_leaves(t, p)
            .await
            .map_err(err)?
            .into_iter()
            .map(|l| (l.leaf, l.hash.to_vec()))
            .collect();
        let differing: Vec<usize> = theirs
            .leaves
            .iter()
            .filter(|l| ours.get(&l.leaf).is_none_or(|h| h[..] != l.hash[..]))
            .map(|l| l.leaf as usize)
            .collect();
        if differing.is_empty() {
            return Ok(0);
        }
        let leaves = bitmap(differing.into_iter());
        let mut start = Vec::new();
        let mut changed = 0;
        loop {
            let mut c = cluster.meta(peer)?;
            let req = LeafEntriesRequest {
                table: t as i32,
                partition: p as u32,
                leaves: leaves.clone().into(),
                start: start.clone().into(),
                limit: PAGE,
            };
            let page =
                cluster.call(peer, Method::LeafEntries, v, req, |r| async move { c.leaf_entries(r).await }).await?;
            // Only what differs from the local entry is merged.
            let mut new: Vec<Entry> = Vec::new();
            for e in page.entries {
                let same = self.ctx.meta.get(t as i32, &e.key).map_err(err)?.is_some_and(|l| l == e);
                if !same {
                    new.push(e);
                }
            }
            changed += new.len() as u64;
            let refs: Vec<Vec<u8>> = if t == Table::BlockRef {
                new.iter().filter(|e| !e.tombstone).map(|e| e.key.to_vec()).collect()
            } else {
                Vec::new()
            };
            if !new.is_empty() {
                hangar_common::telemetry::metrics().sync_received(t, &peer.id, new.len());
                self.ctx.meta.insert(t as i32, new).await.map_err(err)?;
            }
            self.queue_missing_blocks(&refs).await?;
            if page.next.is_empty() {
                break;
            }
            start = page.next.to_vec();
        }
        Ok(changed)
    }

    /// Queues for resync the blocks of new live references whose file this node lacks.
    async fn queue_missing_blocks(&self, ref_keys: &[Vec<u8>]) -> Result<(), hangar_common::Error> {
        let err = |e: crate::DataError| hangar_common::Error::Config(e.to_string());
        let view = self.ctx.cluster.view();
        for k in ref_keys {
            let Some((hash, _)) = parse_block_ref_key(k) else { continue };
            if self.ctx.holds(&view, block_partition(&hash.0))
                && self.ctx.meta.live_refs(&hash).map_err(err)? > 0
                && !self.ctx.blocks.has(&hash).await.map_err(err)?
            {
                self.ctx.meta.queue_resync(&hash).map_err(err)?;
            }
        }
        Ok(())
    }

    fn finish_round(&mut self, round: Round) -> Result<(), hangar_common::Error> {
        let took = round.started.elapsed();
        if round.complete && self.rebuilding.load(Ordering::SeqCst) {
            self.state.remove(REBUILDING).map_err(sled_err)?;
            self.state.flush().map_err(sled_err)?;
            self.rebuilding.store(false, Ordering::SeqCst);
            tracing::info!(entries = round.pulled, ?took, "rebuilt from the other replicas; serving reads again");
        }
        self.report = format!(
            "last round {}: {} peers, {} tables' partitions differed, {} entries pulled, took {:.1}s; {} entries pulled in all",
            if round.complete { "complete" } else { "incomplete (some peers did not answer)" },
            round.peers_total,
            round.pairs_differing,
            round.pulled,
            took.as_secs_f64(),
            self.pulled
        );
        // An incomplete round is tried again soon, not a whole interval later; a node still
        // rebuilding tries again even when rounds are otherwise only on command.
        let retry = Duration::from_secs(30);
        self.next_at = match (self.interval, round.complete) {
            (Some(i), true) => Instant::now() + i,
            (Some(i), false) => Instant::now() + i.min(retry),
            (None, false) if self.rebuilding.load(Ordering::SeqCst) => Instant::now() + retry,
            (None, _) => far_future(),
        };
        Ok(())
    }
}

impl Worker for AntiEntropy {
    fn name(&self) -> String {
        "anti_entropy".into()
    }

    async fn step(&mut self) -> Result<Step, hangar_common::Error> {
        let Some(mut round) = self.round.take() else {
            let forced = self.force.swap(false, Ordering::SeqCst);
            if !forced && Instant::now() < self.next_at {
                return Ok(Step::Idle((self.next_at - Instant::now()).min(Duration::from_secs(5))));
            }
            if self.ctx.cluster.view().version() == 0 {
                return Ok(Step::Idle(Duration::from_secs(1)));
            }
            self.start_round()?;
            return Ok(Step::Busy);
        };
        if !round.pending.is_empty() {
            for _ in 0..PAIRS_PER_STEP {
                let Some((peer, t, p)) = round.pending.pop_front() else { break };
                // A partition given up meanwhile is left to the offload worker: pulling it
                // back would keep entries nobody maintains any more.
                let view = self.ctx.cluster.view();
                if !view.holders(p as usize).iter().any(|n| n.id == peer.id) || !self.ctx.holds(&view, p as usize) {
                    continue;
                }
                match self.exchange(round.version, &peer, t, p).await {
                    Ok(n) => {
                        round.pulled += n;
                        self.pulled += n;
                    }
                    Err(e) => {
                        tracing::debug!(peer = %peer.id, error = %e, "anti-entropy exchange failed");
                        round.complete = false;
                        // The rest of this peer waits for the next round.
                        round.pending.retain(|(n, _, _)| n.id != peer.id);
                    }
                }
            }
        } else if let Some((peer, parts)) = round.peers.pop_front() {
            match self.compare_roots(round.version, &peer, &parts).await {
                Ok(pairs) => {
                    round.pairs_differing += pairs.len();
                    round.pending.extend(pairs.into_iter().map(|(t, p)| (peer.clone(), t, p)));
                }
                Err(e) => {
                    tracing::debug!(peer = %peer.id, error = %e, "anti-entropy cannot compare with a peer");
                    round.complete = false;
                }
            }
        } else {
            self.finish_round(round)?;
            return Ok(Step::Busy);
        }
        self.report = format!(
            "round running: {}/{} peers compared, {} tables' partitions to exchange, {} entries pulled",
            round.peers_total - round.peers.len(),
            round.peers_total,
            round.pending.len(),
            round.pulled
        );
        self.round = Some(round);
        Ok(Step::Busy)
    }

    fn progress(&self) -> (String, u64) {
        let mut text = self.report.clone();
        if self.rebuilding.load(Ordering::SeqCst) {
            text = format!("rebuilding (reads refused until a complete round); {text}");
        }
        let queue = self.round.as_ref().map(|r| (r.pending.len() + r.peers.len()) as u64).unwrap_or(0);
        (text, queue)
    }
}
