//! Block resync: fetches the blocks this node should hold and does not. A block is queued
//! when a live reference to it arrives by anti-entropy or sync without its file, when a
//! reference arrives through `Insert` (dropped at once if the file is there), when a read
//! or the scrub finds its file corrupt, and by `hangar repair blocks`. Each is fetched
//! from another replica of its partition and checked against its hash. A failure is
//! retried with backoff (10 s doubling to an hour); the queue is in the node's database, so
//! it survives restarts, and failing blocks are listed by `hangar block list-errors`.

use std::time::{Duration, Instant};

use hangar_common::cluster::block_partition;
use hangar_common::hash::BlockHash;
use hangar_common::ids::now_ms;
use hangar_common::worker::{Step, Worker};

use super::Ctx;
use super::release::sled_err;
use super::vars::Vars;
use crate::meta_store::ResyncItem;

/// Longest wait between two tries of a failing block.
const MAX_BACKOFF_MS: u64 = 3600 * 1000;
const FIRST_BACKOFF_MS: u64 = 10 * 1000;

pub struct Resync {
    pub ctx: Ctx,
    pub vars: Vars,
    pub fetched: u64,
    /// Queue length and failing blocks, counted at most every COUNT_EVERY (a full scan).
    pub counts: (u64, u64),
    pub counted: Option<Instant>,
}

const COUNT_EVERY: Duration = Duration::from_secs(10);

enum Outcome {
    /// Fetched, present already, or no longer needed here: leaves the queue.
    Done(bool),
    Failed(String),
}

impl Resync {
    async fn resync(&self, hash: BlockHash) -> Outcome {
        let view = self.ctx.cluster.view();
        let p = block_partition(&hash.0);
        if !self.ctx.holds(&view, p) {
            return Outcome::Done(false);
        }
        match self.ctx.meta.live_refs(&hash) {
            Ok(0) => return Outcome::Done(false),
            Ok(_) => {}
            Err(e) => return Outcome::Failed(e.to_string()),
        }
        match self.ctx.blocks.has(&hash).await {
            Ok(true) => return Outcome::Done(false),
            Ok(false) => {}
            Err(e) => return Outcome::Failed(e.to_string()),
        }
        match self.ctx.copy_block(view.version(), &hash, &view.holders(p)).await {
            Ok(true) => Outcome::Done(true),
            Ok(false) => Outcome::Failed("no other replica has it".into()),
            Err(e) => Outcome::Failed(e),
        }
    }
}

impl Worker for Resync {
    fn name(&self) -> String {
        "block_resync".into()
    }

    async fn step(&mut self) -> Result<Step, hangar_common::Error> {
        let started = Instant::now();
        let now = now_ms();
        let want = self.vars.resync_worker_count();
        let mut due = Vec::new();
        let mut soonest = u64::MAX;
        // The first due blocks in hash order; failing ones wait out their backoff.
        for item in self.ctx.meta.resync.iter() {
            let (k, v) = item.map_err(sled_err)?;
            let it = ResyncItem::decode(&v);
            if it.next_try_ms <= now {
                if let Some(h) = BlockHash::from_slice(&k) {
                    due.push((h, it));
                }
                if due.len() == want {
                    break;
                }
            } else {
                soonest = soonest.min(it.next_try_ms);
            }
        }
        if self.counted.is_none_or(|t| t.elapsed() >= COUNT_EVERY) {
            let (mut len, mut failing) = (0, 0);
            for item in self.ctx.meta.resync.iter().values() {
                len += 1;
                failing += u64::from(ResyncItem::decode(&item.map_err(sled_err)?).errors > 0);
            }
            (self.counts, self.counted) = ((len, failing), Some(Instant::now()));
            let m = hangar_common::telemetry::metrics();
            m.block_resync_queue_length.set(len as i64);
            m.block_resync_errored_blocks.set(failing as i64);
        }
        if due.is_empty() {
            let wait = soonest.saturating_sub(now).clamp(200, 10_000);
            return Ok(Step::Idle(Duration::from_millis(wait)));
        }
        let outcomes = futures::future::join_all(due.iter().map(|(h, _)| self.resync(*h))).await;
        hangar_common::telemetry::metrics().block_resync_counter.inc_by(outcomes.len() as u64);
        for ((hash, old), outcome) in due.into_iter().zip(outcomes) {
            match outcome {
                Outcome::Done(fetched) => {
                    let _ = self.ctx.meta.resync.compare_and_swap(hash.0, Some(old.encode()), None::<&[u8]>);
                    if fetched {
                        self.fetched += 1;
                        tracing::debug!(block = %hash, "block fetched from another replica");
                    }
                }
                Outcome::Failed(error) => {
                    let errors = old.errors + 1;
                    let backoff = (FIRST_BACKOFF_MS << (errors - 1).min(20)).min(MAX_BACKOFF_MS);
                    let item = ResyncItem { next_try_ms: now + backoff, errors, last_try_ms: now, last_error: error };
                    tracing::debug!(block = %hash, errors, error = %item.last_error, "block resync failed");
                    let _ = self.ctx.meta.resync.compare_and_swap(hash.0, Some(old.encode()), Some(item.encode()));
                }
            }
        }
        let t = self.vars.resync_tranquility();
        Ok(if t == 0 { Step::Busy } else { Step::Idle(started.elapsed() * t) })
    }

    fn progress(&self) -> (String, u64) {
        (format!("{} blocks fetched, {} failing", self.fetched, self.counts.1), self.counts.0)
    }
}
