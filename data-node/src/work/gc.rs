//! Block garbage collection. A block enters the deletion queue when its last live
//! reference on this node goes; once the deletion delay has passed, it is deleted only if
//! it still has none here and no other holder of its partition has one either (their
//! references are merged in first, so a reference this node missed is learned, not
//! ignored). When a holder cannot be asked, the block waits for a later round.

use std::time::Duration;

use hangar_common::call::Method;
use hangar_common::cluster::block_partition;
use hangar_common::hash::BlockHash;
use hangar_common::ids::now_ms;
use hangar_common::worker::{Step, Worker};
use hangar_model::keys::{prefix_end, successor};
use hangar_proto::metadata::{RangeRequest, Table};

use super::Ctx;
use super::release::sled_err;

/// How long a block whose holders could not all be asked waits before the next try.
const RETRY: Duration = Duration::from_secs(60);

pub struct BlockGc {
    pub ctx: Ctx,
    pub deleted: u64,
}

impl BlockGc {
    /// Merges every other holder's references to `hash` into this node's table (all of
    /// them, page by page); false when some holder could not be asked.
    async fn learn_refs(&self, hash: &BlockHash) -> Result<bool, hangar_common::Error> {
        let view = self.ctx.cluster.view();
        let mut all_answered = true;
        for n in view.holders(block_partition(&hash.0)) {
            if n.id == self.ctx.node_id {
                continue;
            }
            let mut start = hash.0.to_vec();
            loop {
                let req = RangeRequest {
                    table: Table::BlockRef as i32,
                    start: start.clone().into(),
                    end: prefix_end(&hash.0).into(),
                    limit: 10_000,
                    include_tombstones: true,
                    summaries: false,
                };
                let cluster = self.ctx.cluster.clone();
                let answer = async {
                    let mut c = cluster.meta(&n)?;
                    cluster.call(&n, Method::Range, view.version(), req, |r| async move { c.range(r).await }).await
                }
                .await;
                match answer {
                    Ok(r) => {
                        let next = r.entries.last().map(|e| successor(&e.key));
                        self.ctx
                            .meta
                            .insert(Table::BlockRef as i32, r.entries)
                            .await
                            .map_err(|e| hangar_common::Error::Config(format!("merging references: {e}")))?;
                        match next {
                            Some(k) if r.more => start = k,
                            _ => break,
                        }
                    }
                    Err(e) => {
                        tracing::debug!(node = %n.id, error = %e, "cannot ask a holder about a block's references");
                        all_answered = false;
                        break;
                    }
                }
            }
        }
        Ok(all_answered)
    }
}

impl Worker for BlockGc {
    fn name(&self) -> String {
        "block_gc".into()
    }

    async fn step(&mut self) -> Result<Step, hangar_common::Error> {
        let now = now_ms();
        let due = self.ctx.meta.unreferenced.iter().find_map(|r| {
            let (k, v) = r.ok()?;
            let deadline = <[u8; 8]>::try_from(v.as_ref()).map(u64::from_be_bytes).unwrap_or(0);
            (deadline <= now).then(|| BlockHash::from_slice(&k)).flatten()
        });
        let Some(hash) = due else { return Ok(Step::Idle(Duration::from_secs(5))) };
        let view = self.ctx.cluster.view();
        if !self.ctx.holds(&view, block_partition(&hash.0)) {
            // Not ours any more: the offload worker deletes it.
            self.ctx.meta.unreferenced.remove(hash.0).map_err(sled_err)?;
            return Ok(Step::Busy);
        }
        let live = |ctx: &Ctx| ctx.meta.live_refs(&hash).map_err(|e| hangar_common::Error::Config(e.to_string()));
        if live(&self.ctx)? == 0 {
            if !self.learn_refs(&hash).await? {
                let later = now_ms() + RETRY.as_millis() as u64;
                self.ctx.meta.unreferenced.insert(hash.0, &later.to_be_bytes()).map_err(sled_err)?;
                return Ok(Step::Busy);
            }
            // Under the block's lock: a reference learned or arrived meanwhile keeps it.
            let deleted = self
                .ctx
                .blocks
                .delete_if_unreferenced(&hash)
                .await
                .map_err(|e| hangar_common::Error::Config(e.to_string()))?;
            if deleted {
                self.deleted += 1;
                tracing::debug!(block = %hash, "deleted an unreferenced block");
            }
        }
        // Referenced again, or gone: either way it leaves the queue (a reference dropped
        // later puts it back).
        self.ctx.meta.unreferenced.remove(hash.0).map_err(sled_err)?;
        Ok(Step::Busy)
    }

    fn progress(&self) -> (String, u64) {
        (format!("{} blocks deleted", self.deleted), self.ctx.meta.unreferenced.len() as u64)
    }
}
