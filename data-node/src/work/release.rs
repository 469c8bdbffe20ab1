//! Releases the data versions that lost a merge on this node (an overwritten or deleted
//! object's data), from the release queue the merge filled. Every replica of the object
//! releases the same versions; releasing is idempotent.

use std::time::Duration;

use hangar_common::worker::{Step, Worker};

use super::Ctx;

pub struct Releaser {
    pub ctx: Ctx,
    pub done: u64,
}

impl Worker for Releaser {
    fn name(&self) -> String {
        "release".into()
    }

    async fn step(&mut self) -> Result<Step, hangar_common::Error> {
        let Some((dv, _)) = self.ctx.meta.release_queue.first().map_err(sled_err)? else {
            return Ok(Step::Idle(Duration::from_secs(10)));
        };
        self.ctx.store.release_version(&dv).await?;
        self.ctx.meta.release_queue.remove(&dv).map_err(sled_err)?;
        self.done += 1;
        Ok(Step::Busy)
    }

    fn progress(&self) -> (String, u64) {
        (format!("{} data versions released", self.done), self.ctx.meta.release_queue.len() as u64)
    }
}

pub fn sled_err(e: sled::Error) -> hangar_common::Error {
    hangar_common::Error::Config(format!("metadata database: {e}"))
}
