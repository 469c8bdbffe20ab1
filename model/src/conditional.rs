//! Conditional writes (`If-None-Match: *`, `If-Match` on PutObject and
//! CompleteMultipartUpload), atomic however many frontends race.
//!
//! Each object key has a compare-and-swap register (see `cas`) holding the last object a
//! conditional write decided, with its entry timestamp. A conditional writer reads the
//! register, evaluates its condition on the object's current value, then swaps the register
//! from the value it read to its own object; of two racing writers exactly one swap
//! succeeds, and the other is refused (412). The winner then writes the object entry with
//! the decided timestamp, as any PUT does.
//!
//! Between the swap and the entry write, the object table does not yet show the decided
//! value. A conditional writer that finds the register ahead of the table writes the decided
//! value itself first (it is idempotent: same value, same timestamp; for a multipart upload
//! it decides the upload as completed with that object, unless an Abort came first), so it
//! never evaluates its condition on a value that is about to be replaced. It does so only while the decided
//! value is young (half the pending-write grace): later, a writer that died in between has
//! had its data released, and an object deleted since may have lost its tombstone.
//! Unconditional writes do not take part: they are ordered by time against conditional
//! ones, as in S3.

use hangar_common::Result;
use hangar_common::ids::now_ms;
use hangar_proto::model::{ConditionalWrite, Object};

use crate::Store;
use crate::cas::Change;
use crate::client::{Found, stamp};
use crate::multipart::Outcome;
use crate::schema::object_register;

/// How a conditional write's claim ended.
#[derive(Debug)]
pub enum Claim<E> {
    /// The write may proceed: write the object entry with this timestamp.
    Won(u64),
    /// The condition does not hold on the current value.
    Refused(E),
    /// Another conditional write of the key won meanwhile.
    Lost,
}

fn same(a: Option<&ConditionalWrite>, b: Option<&ConditionalWrite>) -> bool {
    let id = |c: Option<&ConditionalWrite>| c.map(|c| (c.timestamp, c.object.as_ref().map(|o| o.version_id.clone())));
    id(a) == id(b)
}

impl Store {
    /// Claims the right to make `obj` the current value of `key` when `check` accepts the
    /// current value (None: no object). `upload_id` is set when `obj` completes that
    /// multipart upload.
    pub async fn claim_object<E>(
        &self,
        bucket_id: &[u8],
        key: &str,
        obj: &Object,
        upload_id: Option<&[u8]>,
        check: impl FnOnce(Option<&Object>) -> std::result::Result<(), E>,
    ) -> Result<Claim<E>> {
        let register = object_register(bucket_id, key);
        let decided: Option<ConditionalWrite> = match self.registers.peek(&register).await {
            Ok(v) => v,
            // An update is under way: take part to learn the committed value.
            Err(hangar_common::Error::Conflict(_)) => {
                self.registers.update::<ConditionalWrite, _>(&register, |c| (Change::Keep, c.cloned())).await?
            }
            Err(e) => return Err(e),
        };
        let mut current = self.object(bucket_id, key).await?;
        if let Some(d) = &decided
            && current.as_ref().is_none_or(|f| f.timestamp < d.timestamp)
            && self.project(bucket_id, key, d).await?
        {
            current = self.object(bucket_id, key).await?;
        }
        if let Err(e) = check(current.as_ref().map(|f: &Found<Object>| &f.value)) {
            return Ok(Claim::Refused(e));
        }
        let after = current.map(|f| f.timestamp).max(decided.as_ref().map(|d| d.timestamp));
        let next = ConditionalWrite {
            object: Some(obj.clone()),
            timestamp: stamp(after),
            upload_id: upload_id.map(|u| u.to_vec().into()).unwrap_or_default(),
        };
        let won = self
            .registers
            .update::<ConditionalWrite, _>(&register, |c| {
                if same(c, decided.as_ref()) {
                    (Change::Set(next.clone()), true)
                } else {
                    // An earlier attempt of this very update may have been accepted before a
                    // competing proposer interrupted it: then the value is ours.
                    (Change::Keep, same(c, Some(&next)))
                }
            })
            .await?;
        Ok(if won { Claim::Won(next.timestamp) } else { Claim::Lost })
    }

    /// Writes a decided value the object table may not show yet; false when it must not be
    /// written (too old to be safe, or an upload that did not complete with it).
    async fn project(&self, bucket_id: &[u8], key: &str, d: &ConditionalWrite) -> Result<bool> {
        let Some(obj) = &d.object else { return Ok(false) };
        let young = now_ms().saturating_sub(obj.last_modified_ms) < self.pending_grace.as_millis() as u64 / 2;
        if !young {
            return Ok(false);
        }
        if !d.upload_id.is_empty() {
            // The winner's upload may not be decided yet: decide it for the winner (an Abort
            // may still have come first), so no later writer evaluates without it.
            let out = self.complete_upload(bucket_id, key, &d.upload_id, obj.clone(), d.timestamp).await?;
            return Ok(matches!(out, Outcome::Completed(o, _) if o.version_id == obj.version_id));
        }
        self.put_object_at(bucket_id, key, obj, d.timestamp).await?;
        Ok(true)
    }
}
