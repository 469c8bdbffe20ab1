//! The collector of data versions: walks this node's pending entries (in the partitions it
//! leads) and releases the versions whose release was asked for (a failed write, a part
//! not chosen), and those whose writer went away: not renewed, on any replica, within the
//! grace period (`pending_write_grace_secs`, far longer than a live writer's silence: writers
//! renew every minute, or every quarter of the grace period) and used by nothing. A version found in use only loses its pending
//! entry.
//!
//! "Used" is judged so that nothing a reader may still be sent to is released: for an
//! object, no holder of its partition may point at the version, not even one behind the
//! others (a value only some replicas got may still spread); for a part, neither a part
//! record nor the upload's decision names it. When that cannot be told (a holder does not
//! answer), the version waits.

use std::time::Duration;

use hangar_common::cluster::key_partition;
use hangar_common::ids::now_ms;
use hangar_common::worker::{Step, Worker};
use hangar_model::multipart::Outcome;
use hangar_model::object::Use;
use hangar_model::schema::{PendingVersions, object_key, pending_key};
use hangar_model::version::Owner;
use hangar_proto::metadata::Table;
use hangar_proto::model::PendingVersion;
use prost::Message;

use super::{Ctx, SCAN};

pub struct Collector {
    pub ctx: Ctx,
    pub grace: Duration,
    /// Where the current pass is.
    pub cursor: Vec<u8>,
    pub released: u64,
}

impl Collector {
    /// Whether `dv` is used by its owner; None when that cannot be told now.
    async fn in_use(&self, dv: &[u8], owner: &Owner) -> Result<Option<bool>, hangar_common::Error> {
        match owner {
            Owner::Object { bucket_id, key } => {
                Ok(match self.ctx.store.data_version_use(&object_key(bucket_id, key), dv).await {
                    Ok(Use::Unused) => Some(false),
                    Ok(Use::Current | Use::Stale(..)) => Some(true),
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot ask every replica whether a data version is used");
                        None
                    }
                })
            }
            Owner::Part { upload_id, part_number } => {
                let (page, _) = self.ctx.store.part_page(upload_id, *part_number, 1000).await?;
                if page.iter().any(|r| r.value.part_number == *part_number && r.value.data_version == dv) {
                    return Ok(Some(true));
                }
                // After a Complete the records are gone: the decision says what was chosen.
                Ok(Some(match self.ctx.store.upload_outcome(upload_id).await? {
                    Some(Outcome::Completed(obj, _)) => obj.parts.iter().any(|p| p.data_version == dv),
                    _ => false,
                }))
            }
        }
    }

    /// How long this node waits before acting: leaders act at once on a release and after the
    /// grace period otherwise; the other replicas wait one grace period longer (the leader
    /// may be down).
    fn wait(&self, leader: bool) -> Duration {
        if leader { Duration::ZERO } else { self.grace }
    }

    /// Whether the entry as this node holds it may call for action (checked again, merged
    /// with the other replicas, before anything is done).
    fn due(&self, local: &PendingVersion, leader: bool) -> bool {
        let age = Duration::from_millis(now_ms().saturating_sub(local.refreshed_ms));
        let wait = self.wait(leader);
        (local.release && age >= wait) || age >= self.grace + wait
    }

    async fn handle(&mut self, dv: &[u8], leader: bool) -> Result<(), hangar_common::Error> {
        let wait = self.wait(leader);
        let age = |p: &PendingVersion| Duration::from_millis(now_ms().saturating_sub(p.refreshed_ms));
        // What this node holds may be behind: the merged entry of a read quorum has the
        // latest sign of life.
        let Some(p) = self.ctx.store.tables.get::<PendingVersions>(&pending_key(dv)).await? else { return Ok(()) };
        let p = p.value;
        if p.release && age(&p) >= wait {
            self.ctx.store.release_version(dv).await?;
            self.released += 1;
        } else if age(&p) >= self.grace + wait {
            match self.in_use(dv, &Owner::of(&p)).await? {
                Some(true) => self.ctx.store.tables.delete::<PendingVersions>(pending_key(dv), None).await?,
                Some(false) => {
                    tracing::info!(data_version = %hex::encode(dv), "releasing a data version its writer left behind");
                    self.ctx.store.release_version(dv).await?;
                    self.released += 1;
                }
                None => {}
            }
        }
        Ok(())
    }
}

impl Worker for Collector {
    fn name(&self) -> String {
        "collect".into()
    }

    /// Looks at up to SCAN entries; acts on the first that is due.
    async fn step(&mut self) -> Result<Step, hangar_common::Error> {
        let view = self.ctx.cluster.view();
        for _ in 0..SCAN {
            let Some((k, e)) = self.ctx.next_local(Table::PendingVersion, &mut self.cursor)? else {
                // A pass is over; the next one starts later from the beginning.
                return Ok(Step::Idle(Duration::from_secs(10)));
            };
            if e.tombstone {
                // Every write leaves one of these behind: once older than the grace period it
                // is dropped here (a live entry arriving late is handled like any other).
                let age = Duration::from_micros(hangar_common::ids::next_timestamp().saturating_sub(e.timestamp));
                if age > self.grace {
                    self.ctx.drop_local(Table::PendingVersion, &k, &e)?;
                }
                continue;
            }
            let leader = self.ctx.leads(&view, key_partition(&k));
            if self.due(&PendingVersion::decode(e.value.as_ref())?, leader) {
                self.handle(&k, leader).await?;
                return Ok(Step::Busy);
            }
        }
        Ok(Step::Busy)
    }

    fn progress(&self) -> (String, u64) {
        (format!("{} data versions released", self.released), 0)
    }
}
