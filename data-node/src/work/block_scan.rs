//! A full check of the blocks this node should hold (`hangar repair blocks`, and at start
//! when the data directory is new while the database is not): every live reference whose
//! block file is missing queues the block for resync; every block file of a held
//! partition that nothing here references goes on the deletion queue (the garbage collector
//! still asks the other replicas before deleting it). The request and the scan's position
//! are kept in the database, so a restart resumes it.

use std::time::Duration;

use hangar_common::cluster::block_partition;
use hangar_common::worker::{Step, Worker};
use hangar_model::keys::successor;
use hangar_model::schema::parse_block_ref_key;
use hangar_proto::metadata::{Entry, Table};
use prost::Message;

use super::release::sled_err;
use super::{Ctx, SCAN};

/// Key of the scan's state in the `repair_state` tree: phase (0: references, 1: files) ‖
/// position.
pub const SCAN_KEY: &[u8] = b"block_scan";

pub struct BlockScan {
    pub ctx: Ctx,
    pub state: sled::Tree,
    pub missing: u64,
    pub unreferenced: u64,
    pub report: String,
}

/// Asks for a scan (from the start).
pub fn request(state: &sled::Tree) -> Result<(), hangar_common::Error> {
    state.insert(SCAN_KEY, vec![0u8]).map_err(sled_err)?;
    state.flush().map_err(sled_err)?;
    Ok(())
}

impl Worker for BlockScan {
    fn name(&self) -> String {
        "block_scan".into()
    }

    async fn step(&mut self) -> Result<Step, hangar_common::Error> {
        let Some(st) = self.state.get(SCAN_KEY).map_err(sled_err)? else {
            return Ok(Step::Idle(Duration::from_secs(5)));
        };
        let err = |e: crate::DataError| hangar_common::Error::Config(e.to_string());
        let view = self.ctx.cluster.view();
        let (phase, pos) = (st.first().copied().unwrap_or(0), st.get(1..).unwrap_or_default().to_vec());
        if phase == 0 {
            if pos.is_empty() {
                (self.missing, self.unreferenced) = (0, 0);
            }
            let tree = self.ctx.meta.tree(Table::BlockRef as i32).map_err(err)?;
            let mut next: Option<Vec<u8>> = None;
            let mut seen = 0;
            for (n, item) in tree.range(pos.clone()..).enumerate() {
                let (k, v) = item.map_err(sled_err)?;
                seen = n + 1;
                if n == SCAN {
                    break;
                }
                next = Some(successor(&k));
                if Entry::decode(v.as_ref())?.tombstone {
                    continue;
                }
                let Some((hash, _)) = parse_block_ref_key(&k) else { continue };
                if self.ctx.holds(&view, block_partition(&hash.0)) && !self.ctx.blocks.has(&hash).await.map_err(err)? {
                    self.ctx.meta.queue_resync(&hash).map_err(err)?;
                    self.missing += 1;
                }
            }
            // A full page means more may follow.
            let state = match next {
                Some(k) if seen > SCAN => [&[0u8][..], &k].concat(),
                _ => vec![1u8, 0],
            };
            self.state.insert(SCAN_KEY, state).map_err(sled_err)?;
            self.report = format!("checking references: {} missing blocks queued", self.missing);
            return Ok(Step::Busy);
        }
        let p = pos.first().copied().unwrap_or(0);
        if self.ctx.holds(&view, p as usize) {
            for hash in self.ctx.blocks.files_of_partition(p) {
                if self.ctx.meta.live_refs(&hash).map_err(err)? == 0 {
                    self.ctx.meta.queue_unreferenced(&hash).map_err(err)?;
                    self.unreferenced += 1;
                }
            }
        }
        if p == 255 {
            self.state.remove(SCAN_KEY).map_err(sled_err)?;
            self.report = format!(
                "last scan: {} missing blocks queued for resync, {} unreferenced files queued for deletion",
                self.missing, self.unreferenced
            );
            tracing::info!(missing = self.missing, unreferenced = self.unreferenced, "block scan finished");
        } else {
            self.state.insert(SCAN_KEY, vec![1u8, p + 1]).map_err(sled_err)?;
            self.report = format!("checking files: partition {}/256", p + 1);
        }
        Ok(Step::Busy)
    }

    fn progress(&self) -> (String, u64) {
        (self.report.clone(), 0)
    }
}
