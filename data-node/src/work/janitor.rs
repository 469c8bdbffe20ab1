//! The upload janitor: finishes multipart uploads whose register was decided (Complete or
//! Abort won) but whose entry is still there because the frontend that decided went away
//! before finishing: writes the object a Complete decided, releases the parts it does not
//! use, removes the records. Open uploads are left alone.

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
                return Ok(Step::Idle(Duration::from_secs(60)));
            };
            if e.tombstone {
                continue;
            }
            let upload = MultipartUpload::decode(e.value.as_ref())?;
            let age = Duration::from_millis(now_ms().saturating_sub(upload.initiated_ms));
            let wait = if self.ctx.leads(&view, key_partition(&k)) { SETTLE } else { 2 * SETTLE };
            if age < wait {
                continue;
            }
            if let Some((bucket_id, key, upload_id)) = parse_upload_key(&k) {
                if self.ctx.store.finish_if_decided(&bucket_id, &key, &upload_id).await? {
                    self.finished += 1;
                    tracing::info!(upload = %hex::encode(&upload_id), "finished a decided upload left half done");
                }
                return Ok(Step::Busy);
            }
        }
        Ok(Step::Busy)
    }

    fn progress(&self) -> (String, u64) {
        (format!("{} uploads finished", self.finished), 0)
    }
}
