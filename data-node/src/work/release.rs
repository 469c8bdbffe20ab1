//! Releases the data versions that lost a merge on this node (an overwritten or deleted
//! object's data), from the release queue the merge filled. Before releasing, it asks every
//! holder of the object's partition: while some replica's value still points at the data
//! (a newer value reached only some replicas, and may never reach the others), the newest
//! value is first brought to those replicas; data is released only once no replica uses it.
//! Every replica of the object releases the same versions; releasing is idempotent.
//!
//! The replica that leads the object's partition releases at once; the others put their
//! release off by the grace period (`pending_write_grace_secs`) and do it then, by which
//! time the leader's release has left them little to do. Each release asks every replica
//! and writes to all of them, so three at once would triple the work an overwrite leaves
//! on the nodes clients are waiting on; putting it off only delays freeing space, and a
//! value that lost on a follower only (the leader never held it) is still released, later.

use std::time::Duration;

use hangar_common::ids::now_ms;
use hangar_common::worker::{Step, Worker};
use hangar_model::object::Use;
use hangar_model::schema::partition_of;
use hangar_proto::metadata::Table;

use super::Ctx;

/// How long an entry whose replicas could not all be asked waits before the next try.
const RETRY: Duration = Duration::from_secs(30);

pub struct Releaser {
    pub ctx: Ctx,
    pub done: u64,
    /// How long a replica that does not lead the object's partition puts a release off.
    pub follower_wait: Duration,
}

impl Releaser {
    /// The next release due: from the queue the merges fill, else the first put off whose
    /// time has come (with its key in `release_later`).
    fn next_due(&self, now: u64) -> Result<Option<Due>, hangar_common::Error> {
        let queued = self.ctx.meta.release_queue.iter().find_map(|r| {
            let (dv, v) = r.ok()?;
            // Merges queue with the current time; a later one only in a queue an older
            // release of Hangar left (its retries).
            let not_before = u64::from_be_bytes(v.get(..8)?.try_into().ok()?);
            (not_before <= now).then(|| Due { dv: dv.to_vec(), object_key: v[8..].to_vec(), put_off: None })
        });
        if queued.is_some() {
            return Ok(queued);
        }
        let Some((k, v)) = self.ctx.meta.release_later.first().map_err(sled_err)? else { return Ok(None) };
        let Some(due) = k.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes) else {
            // Not a key this node wrote; nothing to do with it.
            self.ctx.meta.release_later.remove(&k).map_err(sled_err)?;
            return Ok(None);
        };
        Ok((due <= now).then(|| Due { dv: k[8..].to_vec(), object_key: v.to_vec(), put_off: Some(k.to_vec()) }))
    }

    /// Whether this node leads the partition of the object `object_key`.
    fn leads(&self, object_key: &[u8]) -> bool {
        self.ctx.leads(&self.ctx.cluster.view(), partition_of(Table::Object, object_key))
    }

    /// Puts `due` off until `at` (ms), in `release_later`.
    fn put_off(&self, due: &Due, at: u64) -> Result<(), hangar_common::Error> {
        self.ctx.meta.release_later.insert(later_key(at, &due.dv), due.object_key.as_slice()).map_err(sled_err)?;
        self.done_with(due)
    }

    /// Takes a handled release off its queue.
    fn done_with(&self, due: &Due) -> Result<(), hangar_common::Error> {
        match &due.put_off {
            Some(k) => self.ctx.meta.release_later.remove(k).map_err(sled_err)?,
            None => self.ctx.meta.release_queue.remove(&due.dv).map_err(sled_err)?,
        };
        Ok(())
    }
}

/// A release to do: the data version, the object that used it, and the entry's key in
/// `release_later` when this node had put it off.
struct Due {
    dv: Vec<u8>,
    object_key: Vec<u8>,
    put_off: Option<Vec<u8>>,
}

/// The key of a put-off release: due time, then the data version.
fn later_key(due: u64, dv: &[u8]) -> Vec<u8> {
    let mut k = due.to_be_bytes().to_vec();
    k.extend_from_slice(dv);
    k
}

impl Worker for Releaser {
    fn name(&self) -> String {
        "release".into()
    }

    async fn step(&mut self) -> Result<Step, hangar_common::Error> {
        let now = now_ms();
        let Some(due) = self.next_due(now)? else { return Ok(Step::Idle(Duration::from_secs(10))) };
        let (dv, object_key) = (&due.dv, &due.object_key);
        if due.put_off.is_none() && !self.leads(object_key) {
            self.put_off(&due, now + self.follower_wait.as_millis() as u64)?;
            return Ok(Step::Busy);
        }
        match self.ctx.store.data_version_use(object_key, dv).await {
            Ok(Use::Unused) => {
                self.ctx.store.release_version(dv).await?;
                self.done += 1;
            }
            Ok(Use::Current) => {
                // The value that lost here is the newest elsewhere: this node was behind.
                tracing::debug!(data_version = %hex::encode(dv), "a released value is still current; kept");
            }
            Ok(Use::Stale(winner, nodes)) => {
                // Bring the newest value to the replicas behind; the next look finds the
                // data unused (or a newer value spread meanwhile).
                self.ctx.store.tables.insert_at(Table::Object, vec![winner], &nodes).await?;
                return Ok(Step::Busy);
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot ask every replica whether data is still used; later");
                self.put_off(&due, now_ms() + RETRY.as_millis() as u64)?;
                return Ok(Step::Busy);
            }
        }
        self.done_with(&due)?;
        Ok(Step::Busy)
    }

    fn progress(&self) -> (String, u64) {
        let waiting = self.ctx.meta.release_queue.len() + self.ctx.meta.release_later.len();
        (format!("{} data versions released", self.done), waiting as u64)
    }
}

pub fn sled_err(e: sled::Error) -> hangar_common::Error {
    hangar_common::Error::Config(format!("metadata database: {e}"))
}
