//! The upload janitor: finishes multipart uploads whose register was decided (Complete or
//! Abort won) but whose entry is still there because the frontend that decided went away
//! before finishing: writes the object a Complete decided, releases the parts it does not
//! use, removes the records. Open uploads are left alone, unless they are older than
//! `multipart_max_age_secs`: those are aborted, which releases their parts' blocks.

use std::time::Duration;

use hangar_common::cluster::key_partition;
use hangar_common::ids::now_ms;
use hangar_common::worker::{Step, Worker};
use hangar_model::schema::parse_upload_key;
use hangar_proto::metadata::Table;
use hangar_proto::model::MultipartUpload;
use prost::Message;

use super::{Ctx, SCAN};

/// Uploads younger than this are left to the requests deciding them.
const SETTLE: Duration = Duration::from_secs(120);

pub struct Janitor {
    pub ctx: Ctx,
    pub cursor: Vec<u8>,
    pub finished: u64,
    /// Open uploads older than this are aborted (None: never).
    pub max_age: Option<Duration>,
    pub aborted: u64,
}

impl Worker for Janitor {
    fn name(&self) -> String {
        "upload_janitor".into()
    }

    /// Looks at up to SCAN uploads; finishes the first that is old enough and decided.
    async fn step(&mut self) -> Result<Step, hangar_common::Error> {
        let view = self.ctx.cluster.view();
        for _ in 0..SCAN {
            let Some((k, e)) = self.ctx.next_local(Table::MultipartUpload, &mut self.cursor)? else {
                let rest = self.max_age.map_or(SETTLE / 2, |m| m.clamp(Duration::from_secs(1), SETTLE / 2));
                return Ok(Step::Idle(rest));
            };
            if e.tombstone {
                continue;
            }
            let upload = MultipartUpload::decode(e.value.as_ref())?;
            let age = Duration::from_millis(now_ms().saturating_sub(upload.initiated_ms));
            let leads = self.ctx.leads(&view, key_partition(&k));
            let decided_due = age >= if leads { SETTLE } else { 2 * SETTLE };
            // Only the leader at first; the others one settling period later.
            let expired = self.max_age.is_some_and(|max| age >= if leads { max } else { max + SETTLE });
            if !decided_due && !expired {
                continue;
            }
            if let Some((bucket_id, key, upload_id)) = parse_upload_key(&k) {
                if decided_due && self.ctx.store.finish_if_decided(&bucket_id, &key, &upload_id).await? {
                    self.finished += 1;
                    tracing::info!(upload = %hex::encode(&upload_id), "finished a decided upload left half done");
                } else if expired {
                    self.ctx.store.abort_upload(&bucket_id, &key, &upload_id).await?;
                    self.aborted += 1;
                    tracing::info!(upload = %hex::encode(&upload_id), "aborted an upload older than multipart_max_age_secs");
                }
                return Ok(Step::Busy);
            }
        }
        Ok(Step::Busy)
    }

    fn progress(&self) -> (String, u64) {
        (format!("{} uploads finished, {} expired uploads aborted", self.finished, self.aborted), 0)
    }
}
