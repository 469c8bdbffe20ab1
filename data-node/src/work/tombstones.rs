//! Tombstone collection. A deletion is a tombstone, so that a replica that missed it cannot
//! bring the old value back through anti-entropy or read repair. Once a tombstone is older
//! than `tombstone_gc_delay_secs` (writes still in flight from before it are long done),
//! the leader of its partition asks every holder of the partition (in every live layout
//! version) for its entry: when all hold exactly this tombstone, each removes it (only if it
//! is still exactly that entry); a holder without it gets it first and the tombstone waits
//! for the next pass; a holder that cannot be asked, or holds something newer, keeps it.

use std::time::Duration;

use hangar_common::call::Method;
use hangar_common::cluster::NodeRef;
use hangar_common::ids::now_ms;
use hangar_common::worker::{Step, Worker};
use hangar_model::schema::{TABLES, partition_of};
use hangar_proto::metadata::{Entry, GetRequest, InsertRequest, Table};

use super::{Ctx, SCAN};

pub struct TombstoneGc {
    pub ctx: Ctx,
    pub delay: Duration,
    /// Position: index in TABLES, key.
    pub table: usize,
    pub cursor: Vec<u8>,
    pub collected: u64,
}

enum Verdict {
    /// Every holder has exactly this tombstone.
    Everywhere,
    /// Some holder lacked it (and was sent it), holds something newer, or did not answer.
    NotYet,
}

impl TombstoneGc {
    async fn check(&self, v: u64, t: Table, e: &Entry, others: &[NodeRef]) -> Verdict {
        let mut verdict = Verdict::Everywhere;
        for n in others {
            let cluster = self.ctx.cluster.clone();
            let Ok(mut c) = cluster.meta(n) else { return Verdict::NotYet };
            let req = GetRequest { table: t as i32, key: e.key.clone() };
            let theirs = match cluster.call(n, Method::Get, v, req, |r| async move { c.get(r).await }).await {
                Ok(r) => r.entry,
                Err(_) => return Verdict::NotYet,
            };
            match theirs {
                Some(x) if x == *e => {}
                Some(x) if (x.timestamp, x.tiebreak) > (e.timestamp, e.tiebreak) => return Verdict::NotYet,
                _ => {
                    // Missing or older there: it gets the tombstone now, and a later pass
                    // removes it everywhere.
                    let Ok(mut c) = cluster.meta(n) else { return Verdict::NotYet };
                    let req = InsertRequest { table: t as i32, entries: vec![e.clone()] };
                    let _ = cluster.call(n, Method::Insert, v, req, |r| async move { c.insert(r).await }).await;
                    verdict = Verdict::NotYet;
                }
            }
        }
        verdict
    }

    /// Removes tombstone `e` from every holder; true when every one was reached.
    async fn drop_everywhere(
        &self,
        v: u64,
        t: Table,
        e: &Entry,
        others: &[NodeRef],
    ) -> Result<bool, hangar_common::Error> {
        let mut all = true;
        for n in others {
            let cluster = self.ctx.cluster.clone();
            let mut c = cluster.meta(n)?;
            let req = InsertRequest { table: t as i32, entries: vec![e.clone()] };
            if cluster
                .call(n, Method::DropTombstones, v, req, |r| async move { c.drop_tombstones(r).await })
                .await
                .is_err()
            {
                all = false;
            }
        }
        // Here last: a holder that missed the removal still has it, and so does this node,
        // which tries again on its next pass.
        if all {
            self.ctx.drop_local(t, &e.key, e)?;
        }
        Ok(all)
    }
}

impl Worker for TombstoneGc {
    fn name(&self) -> String {
        "tombstone_gc".into()
    }

    async fn step(&mut self) -> Result<Step, hangar_common::Error> {
        let view = self.ctx.cluster.view();
        if view.version() == 0 {
            return Ok(Step::Idle(Duration::from_secs(5)));
        }
        let now_us = now_ms() * 1000;
        let delay_us = self.delay.as_micros() as u64;
        for _ in 0..SCAN {
            let Some(&t) = TABLES.get(self.table) else {
                // A full pass is done.
                self.table = 0;
                self.cursor.clear();
                return Ok(Step::Idle((self.delay / 2).clamp(Duration::from_secs(1), Duration::from_secs(300))));
            };
            if t == Table::Register {
                self.table += 1;
                continue;
            }
            let Some((k, e)) = self.ctx.next_local(t, &mut self.cursor)? else {
                self.table += 1;
                continue;
            };
            if !e.tombstone {
                continue;
            }
            let p = partition_of(t, &k);
            // Only the leader at first; the others after twice the delay.
            let wait = if self.ctx.leads(&view, p) { delay_us } else { 2 * delay_us };
            if now_us.saturating_sub(e.timestamp) < wait {
                continue;
            }
            let others: Vec<NodeRef> = view.holders(p).into_iter().filter(|n| n.id != self.ctx.node_id).collect();
            if matches!(self.check(view.version(), t, &e, &others).await, Verdict::Everywhere)
                && self.drop_everywhere(view.version(), t, &e, &others).await?
            {
                self.collected += 1;
            }
            return Ok(Step::Busy);
        }
        Ok(Step::Busy)
    }

    fn progress(&self) -> (String, u64) {
        (format!("{} tombstones collected", self.collected), 0)
    }
}
