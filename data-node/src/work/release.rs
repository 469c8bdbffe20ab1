//! Releases the data versions that lost a merge on this node (an overwritten or deleted
//! object's data), from the release queue the merge filled. Before releasing, it asks every
//! holder of the object's partition: while some replica's value still points at the data
//! (a newer value reached only some replicas, and may never reach the others), the newest
//! value is first brought to those replicas; data is released only once no replica uses it.
//! Every replica of the object releases the same versions; releasing is idempotent.

use std::time::Duration;

use hangar_common::ids::now_ms;
use hangar_common::worker::{Step, Worker};
use hangar_model::object::Use;
use hangar_proto::metadata::Table;

use super::Ctx;

/// How long an entry whose replicas could not all be asked waits before the next try.
const RETRY: Duration = Duration::from_secs(30);

pub struct Releaser {
    pub ctx: Ctx,
    pub done: u64,
}

impl Worker for Releaser {
    fn name(&self) -> String {
        "release".into()
    }

    async fn step(&mut self) -> Result<Step, hangar_common::Error> {
        let now = now_ms();
        let due = self.ctx.meta.release_queue.iter().find_map(|r| {
            let (dv, v) = r.ok()?;
            let not_before = u64::from_be_bytes(v.get(..8)?.try_into().ok()?);
            (not_before <= now).then(|| (dv.to_vec(), v[8..].to_vec()))
        });
        let Some((dv, object_key)) = due else { return Ok(Step::Idle(Duration::from_secs(10))) };
        match self.ctx.store.data_version_use(&object_key, &dv).await {
            Ok(Use::Unused) => {
                self.ctx.store.release_version(&dv).await?;
                self.done += 1;
            }
            Ok(Use::Current) => {
                // The value that lost here is the newest elsewhere: this node was behind.
                tracing::debug!(data_version = %hex::encode(&dv), "a released value is still current; kept");
            }
            Ok(Use::Stale(winner, nodes)) => {
                // Bring the newest value to the replicas behind; the next look finds the
                // data unused (or a newer value spread meanwhile).
                self.ctx.store.tables.insert_at(Table::Object, vec![winner], &nodes).await?;
                return Ok(Step::Busy);
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot ask every replica whether data is still used; later");
                let mut v = (now_ms() + RETRY.as_millis() as u64).to_be_bytes().to_vec();
                v.extend_from_slice(&object_key);
                self.ctx.meta.release_queue.insert(&dv, v).map_err(sled_err)?;
                return Ok(Step::Busy);
            }
        }
        self.ctx.meta.release_queue.remove(&dv).map_err(sled_err)?;
        Ok(Step::Busy)
    }

    fn progress(&self) -> (String, u64) {
        (format!("{} data versions released", self.done), self.ctx.meta.release_queue.len() as u64)
    }
}

pub fn sled_err(e: sled::Error) -> hangar_common::Error {
    hangar_common::Error::Config(format!("metadata database: {e}"))
}
