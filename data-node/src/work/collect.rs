//! The collector of data versions: walks this node's pending entries (in the partitions it
//! leads) and releases the versions whose release was asked for, and those whose writer
//! went away: not renewed within the grace period (`pending_write_grace_secs`, far longer
//! than a writer's silence can be, since writers renew every minute) and used by nothing
//! (neither the object it was written for nor a part record points at it). A version
//! found in use only loses its pending entry.

use std::time::Duration;

use hangar_common::cluster::key_partition;
use hangar_common::ids::now_ms;
use hangar_common::worker::{Step, Worker};
use hangar_model::Found;
use hangar_model::schema::{PendingVersions, pending_key};
use hangar_model::version::Owner;
use hangar_proto::metadata::Table;
use hangar_proto::model::PendingVersion;
use prost::Message;

use super::Ctx;

pub struct Collector {
    pub ctx: Ctx,
    pub grace: Duration,
    /// Where the current pass is.
    pub cursor: Vec<u8>,
    pub released: u64,
}

impl Collector {
    /// Whether `dv` is what its owner points at now.
    async fn in_use(&self, dv: &[u8], owner: &Owner) -> Result<bool, hangar_common::Error> {
        match owner {
            Owner::Object { bucket_id, key } => Ok(self
                .ctx
                .store
                .object(bucket_id, key)
                .await?
                .is_some_and(|o| o.value.parts.iter().any(|p| p.data_version == dv))),
            Owner::Part { upload_id, part_number } => {
                let (page, _) = self.ctx.store.part_page(upload_id, *part_number, 1000).await?;
                Ok(page.iter().any(|r: &Found<_>| r.value.part_number == *part_number && r.value.data_version == dv))
            }
        }
    }

    async fn handle(&mut self, dv: &[u8], p: &PendingVersion, leader: bool) -> Result<(), hangar_common::Error> {
        let age = Duration::from_millis(now_ms().saturating_sub(p.refreshed_ms));
        // Leaders act at once on a release and after the grace period otherwise; the other
        // replicas only after twice as long (the leader may be down).
        let wait = if leader { Duration::ZERO } else { self.grace };
        if p.release && age >= wait {
            self.ctx.store.release_version(dv).await?;
            self.released += 1;
        } else if age >= self.grace + wait {
            if self.in_use(dv, &Owner::of(p)).await? {
                self.ctx.store.tables.delete::<PendingVersions>(pending_key(dv), None).await?;
            } else {
                tracing::info!(data_version = %hex::encode(dv), "releasing a data version its writer left behind");
                self.ctx.store.release_version(dv).await?;
                self.released += 1;
            }
        }
        Ok(())
    }
}

impl Worker for Collector {
    fn name(&self) -> String {
        "collect".into()
    }

    async fn step(&mut self) -> Result<Step, hangar_common::Error> {
        let Some((k, e)) = self.ctx.next_local(Table::PendingVersion, &mut self.cursor)? else {
            // A pass is over; the next one starts later from the beginning.
            return Ok(Step::Idle(Duration::from_secs(10)));
        };
        if e.tombstone {
            return Ok(Step::Busy);
        }
        let view = self.ctx.cluster.view();
        let pending = PendingVersion::decode(e.value.as_ref())?;
        let leader = self.ctx.leads(&view, key_partition(&k));
        self.handle(&k, &pending, leader).await?;
        Ok(Step::Busy)
    }

    fn progress(&self) -> (String, u64) {
        (format!("{} data versions released", self.released), 0)
    }
}
