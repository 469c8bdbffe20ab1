//! The lifecycle worker: once a day (`lifecycle_day_secs`), and when `hangar repair
//! lifecycle` asks, a pass over this node's objects and multipart uploads applies their
//! buckets' lifecycle rules: expired objects are deleted, old uploads aborted. Each entry is
//! handled by the leader of its partition; another replica steps in for what has been due
//! for a day longer, so a dead leader delays expirations and never skips them. The pass's
//! position and the time of the last complete pass are kept in the database: a restart
//! resumes the pass and does not start another before its day.

use std::collections::HashMap;
use std::time::Duration;

use hangar_common::ids::now_ms;
use hangar_common::worker::{Step, Worker};
use hangar_model::lifecycle::{object_expires, upload_aborts};
use hangar_model::schema::{ID_LEN, parse_object_key, parse_upload_key, partition_of};
use hangar_proto::metadata::Table;
use hangar_proto::model::{LifecycleConfig, MultipartUpload, Object};
use prost::Message;

use super::release::sled_err;
use super::{Ctx, SCAN};

/// Key of a pass in progress in the `repair_state` tree: phase (0: objects, 1: uploads) ‖
/// position.
const PASS_KEY: &[u8] = b"lifecycle";
/// Key of the start time (ms, big-endian) of the last complete pass.
const LAST_KEY: &[u8] = b"lifecycle_last";
/// Key of the start time of the pass in progress.
const STARTED_KEY: &[u8] = b"lifecycle_started";
/// Key of a pass asked for (`hangar repair lifecycle`), until the worker starts it: apart
/// from the pass's position, which a step in progress would overwrite.
const REQUESTED_KEY: &[u8] = b"lifecycle_requested";

pub struct Lifecycle {
    pub ctx: Ctx,
    pub state: sled::Tree,
    pub day: Duration,
    /// The rules of the buckets met in this pass (None: the bucket has none or is gone).
    pub rules: HashMap<Vec<u8>, Option<LifecycleConfig>>,
    pub expired: u64,
    pub aborted: u64,
    pub report: String,
}

/// Asks for a pass now (from the start).
pub fn request(state: &sled::Tree) -> Result<(), hangar_common::Error> {
    state.insert(REQUESTED_KEY, vec![1u8]).map_err(sled_err)?;
    state.flush().map_err(sled_err)?;
    Ok(())
}

/// Starts a pass from the beginning.
fn start(state: &sled::Tree) -> Result<(), hangar_common::Error> {
    state.insert(PASS_KEY, vec![0u8]).map_err(sled_err)?;
    Ok(())
}

fn last_pass(state: &sled::Tree) -> Result<u64, hangar_common::Error> {
    let v = state.get(LAST_KEY).map_err(sled_err)?;
    Ok(v.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok()).map(u64::from_be_bytes).unwrap_or(0))
}

impl Lifecycle {
    /// The bucket's rules as this pass last read them: enough to pass over what no rule
    /// touches without a read per entry.
    async fn rules_of(&mut self, bucket_id: &[u8]) -> Result<Option<LifecycleConfig>, hangar_common::Error> {
        if let Some(r) = self.rules.get(bucket_id) {
            return Ok(r.clone());
        }
        self.fresh_rules(bucket_id).await
    }

    /// The bucket's rules as they are now (read before anything is deleted: they may have
    /// changed or gone since the pass began).
    async fn fresh_rules(&mut self, bucket_id: &[u8]) -> Result<Option<LifecycleConfig>, hangar_common::Error> {
        let rules = self.ctx.store.bucket_by_id(bucket_id).await?.and_then(|b| b.lifecycle);
        self.rules.insert(bucket_id.to_vec(), rules.clone());
        Ok(rules)
    }

    /// Handles one local object entry.
    async fn object(
        &mut self,
        k: &[u8],
        e: &hangar_proto::metadata::Entry,
        now: u64,
    ) -> Result<(), hangar_common::Error> {
        let (Some(key), Some(bucket_id)) = (parse_object_key(k), k.get(..ID_LEN)) else { return Ok(()) };
        let Some(rules) = self.rules_of(bucket_id).await? else { return Ok(()) };
        let Ok(obj) = Object::decode(e.value.as_ref()) else {
            tracing::warn!(key = ?key, "an object entry does not decode; the lifecycle pass skips it");
            return Ok(());
        };
        let day = self.day.as_millis() as u64;
        let leads = self.ctx.leads(&self.ctx.cluster.view(), partition_of(Table::Object, k));
        // A replica that does not lead acts on what was due a day earlier already.
        let at = if leads { now } else { now.saturating_sub(day) };
        if !object_expires(&rules, &key, &obj, at, day) {
            return Ok(());
        }
        // Judged again on what a quorum holds, with the rules as they are now: this replica
        // may have missed a tag change, the rules may have changed since the pass began.
        let Some(current) = self.ctx.store.object(bucket_id, &key).await? else { return Ok(()) };
        let Some(rules) = self.fresh_rules(bucket_id).await? else { return Ok(()) };
        if object_expires(&rules, &key, &current.value, at, day) {
            self.ctx.store.expire_object(bucket_id, &key, &current).await?;
            self.expired += 1;
            tracing::info!(key = ?key, "expired an object by its bucket's lifecycle rules");
        }
        Ok(())
    }

    /// Handles one local upload entry.
    async fn upload(
        &mut self,
        k: &[u8],
        e: &hangar_proto::metadata::Entry,
        now: u64,
    ) -> Result<(), hangar_common::Error> {
        let Some((bucket_id, key, upload_id)) = parse_upload_key(k) else { return Ok(()) };
        let Some(rules) = self.rules_of(&bucket_id).await? else { return Ok(()) };
        let Ok(upload) = MultipartUpload::decode(e.value.as_ref()) else {
            tracing::warn!(key = ?key, "an upload entry does not decode; the lifecycle pass skips it");
            return Ok(());
        };
        let day = self.day.as_millis() as u64;
        let leads = self.ctx.leads(&self.ctx.cluster.view(), partition_of(Table::MultipartUpload, k));
        let at = if leads { now } else { now.saturating_sub(day) };
        if !upload_aborts(&rules, &key, upload.initiated_ms, at, day) {
            return Ok(());
        }
        let Some(rules) = self.fresh_rules(&bucket_id).await? else { return Ok(()) };
        if upload_aborts(&rules, &key, upload.initiated_ms, at, day) {
            self.ctx.store.abort_upload(&bucket_id, &key, &upload_id).await?;
            self.aborted += 1;
            tracing::info!(upload = %hex::encode(&upload_id), "aborted an upload by its bucket's lifecycle rules");
        }
        Ok(())
    }
}

impl Worker for Lifecycle {
    fn name(&self) -> String {
        "lifecycle".into()
    }

    async fn step(&mut self) -> Result<Step, hangar_common::Error> {
        let now = now_ms();
        if self.state.remove(REQUESTED_KEY).map_err(sled_err)?.is_some() {
            start(&self.state)?;
        }
        let Some(st) = self.state.get(PASS_KEY).map_err(sled_err)? else {
            let next = last_pass(&self.state)? + self.day.as_millis() as u64;
            if now < next {
                return Ok(Step::Idle(Duration::from_millis(next - now).min(Duration::from_secs(60))));
            }
            start(&self.state)?;
            return Ok(Step::Busy);
        };
        let (phase, pos) = (st.first().copied().unwrap_or(0), st.get(1..).unwrap_or_default().to_vec());
        if phase == 0 && pos.is_empty() {
            (self.expired, self.aborted) = (0, 0);
            self.rules.clear();
            // The next pass is due a day after this one started.
            self.state.insert(STARTED_KEY, &now.to_be_bytes()).map_err(sled_err)?;
        }
        let table = if phase == 0 { Table::Object } else { Table::MultipartUpload };
        let mut cursor = pos;
        for _ in 0..SCAN {
            let Some((k, e)) = self.ctx.next_local(table, &mut cursor)? else {
                if phase == 0 {
                    self.state.insert(PASS_KEY, vec![1u8]).map_err(sled_err)?;
                    return Ok(Step::Busy);
                }
                let started = self.state.get(STARTED_KEY).map_err(sled_err)?;
                let started = started.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok()).unwrap_or(now.to_be_bytes());
                self.state.insert(LAST_KEY, &started).map_err(sled_err)?;
                self.state.remove(PASS_KEY).map_err(sled_err)?;
                self.report = format!(
                    "last pass {}: {} objects expired, {} uploads aborted",
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + Duration::from_millis(u64::from_be_bytes(started))
                    ),
                    self.expired,
                    self.aborted
                );
                return Ok(Step::Busy);
            };
            if e.tombstone {
                continue;
            }
            if phase == 0 {
                self.object(&k, &e, now).await?;
            } else {
                self.upload(&k, &e, now).await?;
            }
        }
        let mut st = vec![phase];
        st.extend_from_slice(&cursor);
        self.state.insert(PASS_KEY, st).map_err(sled_err)?;
        Ok(Step::Busy)
    }

    fn progress(&self) -> (String, u64) {
        let running = self.state.get(PASS_KEY).ok().flatten().is_some();
        let now = if running {
            format!("pass running: {} objects expired, {} uploads aborted so far", self.expired, self.aborted)
        } else {
            String::new()
        };
        let text = match (self.report.is_empty(), now.is_empty()) {
            (true, true) => "no pass yet".to_string(),
            (false, true) => self.report.clone(),
            (true, false) => now,
            (false, false) => format!("{now}; {}", self.report),
        };
        (text, 0)
    }
}
