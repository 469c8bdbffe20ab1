//! Multipart uploads.
//!
//! An upload is an entry (bucket, key, upload id) while it is open, part records (upload
//! id, part number, data version: one per UploadPart call, so a re-uploaded part never
//! overwrites the data a racing Complete may have chosen), and a register that is decided
//! exactly once: Completed (with the object it became) or Aborted. Complete and Abort race
//! only on that register, so exactly one of them wins, everywhere.
//!
//! Which data versions to release is decided from the register, never from a check made
//! earlier: after the decision, the decider releases every recorded part that is not in
//! the object; a part recorded after that listing is released by its own UploadPart, which
//! reads the decision after writing its record. Either way no chosen part is ever released
//! and no part is forgotten. Finishing a decided upload (writing its object, releasing the
//! rest, removing the records and the upload entry) is idempotent; the upload janitor
//! finishes what a crashed frontend left half done.

use hangar_common::ids::random_id;
use hangar_common::{Error, Result};
use hangar_proto::metadata::Table;
use hangar_proto::model::upload_decision::State;
use hangar_proto::model::{MultipartUpload, Object, Part, UploadDecision};

use crate::Store;
use crate::cas::Change;
use crate::client::{Found, tombstone};
use crate::keys::prefix_end;
use crate::schema::{ID_LEN, MultipartUploads, UploadParts, part_key, upload_key, upload_register};
use crate::version::Owner;

/// Upload ids are 16 random bytes, sent as 32 lowercase hex digits; anything else is not
/// an id we issued.
pub fn parse_upload_id(s: &str) -> Option<Vec<u8>> {
    if s.len() != 2 * ID_LEN || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    hex::decode(s).ok()
}

/// How an upload ended, as its register says.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Complete won: the object the upload became, and its write timestamp.
    Completed(Box<Object>, u64),
    Aborted,
}

fn outcome(d: &UploadDecision) -> Option<Outcome> {
    match d.state() {
        State::Uploading => None,
        State::Completed => Some(Outcome::Completed(Box::new(d.object.clone().unwrap_or_default()), d.timestamp)),
        State::Aborted => Some(Outcome::Aborted),
    }
}

impl Store {
    /// Opens an upload; its id.
    pub async fn create_upload(&self, bucket_id: &[u8], key: &str, mut upload: MultipartUpload) -> Result<Vec<u8>> {
        let id = random_id();
        upload.upload_id = hex::encode(&id);
        upload.key = key.to_string();
        self.tables.put::<MultipartUploads>(upload_key(bucket_id, key, &id), &upload, None).await?;
        Ok(id)
    }

    /// The open upload `upload_id` of this bucket and key (an upload of another bucket or
    /// key is not found, whatever its id).
    pub async fn upload(
        &self,
        bucket_id: &[u8],
        key: &str,
        upload_id: &[u8],
    ) -> Result<Option<Found<MultipartUpload>>> {
        self.tables.get::<MultipartUploads>(&upload_key(bucket_id, key, upload_id)).await
    }

    /// Every part record of an upload (several per part number when a part was uploaded
    /// again), in part number order.
    pub async fn part_records(&self, upload_id: &[u8]) -> Result<Vec<Found<Part>>> {
        self.tables.scan_prefix::<UploadParts>(upload_id).await
    }

    /// One page of part records from part number `from`.
    pub async fn part_page(&self, upload_id: &[u8], from: u32, limit: u32) -> Result<(Vec<Found<Part>>, bool)> {
        self.tables
            .range::<UploadParts>(crate::schema::part_number_prefix(upload_id, from), prefix_end(upload_id), limit)
            .await
    }

    /// The upload's decision, read through its register (linearizable): None while open.
    pub async fn upload_outcome(&self, upload_id: &[u8]) -> Result<Option<Outcome>> {
        let d = self
            .registers
            .update::<UploadDecision, _>(&upload_register(upload_id), |cur| {
                (Change::Keep, cur.cloned().unwrap_or_default())
            })
            .await?;
        Ok(outcome(&d))
    }

    /// Records a stored part. True when it counts: the upload is still open, or it was
    /// completed with this very part. False when the upload was decided without it: then
    /// its data version is released and the caller answers NoSuchUpload.
    pub async fn record_part(&self, upload_id: &[u8], part: &Part) -> Result<bool> {
        let key = part_key(upload_id, part.part_number, &part.data_version);
        self.tables.put::<UploadParts>(key.clone(), part, None).await?;
        let counts = match self.upload_outcome(upload_id).await? {
            None => true,
            Some(Outcome::Completed(obj, _)) => obj.parts.iter().any(|p| p.data_version == part.data_version),
            Some(Outcome::Aborted) => false,
        };
        if counts {
            self.committed(&part.data_version);
        } else {
            let owner = Owner::Part { upload_id: upload_id.to_vec(), part_number: part.part_number };
            self.mark_release(&part.data_version, &owner).await?;
            self.tables.delete::<UploadParts>(key, None).await?;
        }
        Ok(counts)
    }

    /// Decides the upload as Completed with `obj` (written with `timestamp`), unless it was
    /// decided already; then finishes it. Returns how the upload ended: `obj` itself, the
    /// object of an earlier Complete (a retried request), or Aborted.
    pub async fn complete_upload(
        &self,
        bucket_id: &[u8],
        key: &str,
        upload_id: &[u8],
        obj: Object,
        timestamp: u64,
    ) -> Result<Outcome> {
        let completed = UploadDecision { state: State::Completed as i32, object: Some(obj), timestamp };
        self.decide_upload(bucket_id, key, upload_id, completed).await
    }

    /// Decides the upload as Aborted unless it was decided already; then finishes it.
    pub async fn abort_upload(&self, bucket_id: &[u8], key: &str, upload_id: &[u8]) -> Result<Outcome> {
        let aborted = UploadDecision { state: State::Aborted as i32, ..Default::default() };
        self.decide_upload(bucket_id, key, upload_id, aborted).await
    }

    /// Sets the upload's register to `decision` unless it holds one already (the first
    /// decision stands), then carries out whichever stands.
    async fn decide_upload(
        &self,
        bucket_id: &[u8],
        key: &str,
        upload_id: &[u8],
        decision: UploadDecision,
    ) -> Result<Outcome> {
        let d = self
            .registers
            .update::<UploadDecision, _>(&upload_register(upload_id), |cur| match cur {
                Some(c) if c.state() != State::Uploading => (Change::Keep, c.clone()),
                _ => (Change::Set(decision.clone()), decision.clone()),
            })
            .await?;
        let out = outcome(&d).ok_or_else(|| Error::Invalid("upload decision lost".into()))?;
        self.finish_upload(bucket_id, key, upload_id, &out).await?;
        Ok(out)
    }

    /// Carries out a decision (idempotent): writes the object a Complete decided, asks for
    /// the release of every recorded part it does not use, removes the part records, and
    /// last the upload entry.
    pub async fn finish_upload(&self, bucket_id: &[u8], key: &str, upload_id: &[u8], out: &Outcome) -> Result<()> {
        let chosen: Vec<&[u8]> = match out {
            Outcome::Completed(obj, ts) => {
                self.put_object_at(bucket_id, key, obj, *ts).await?;
                obj.parts.iter().map(|p| p.data_version.as_ref()).collect()
            }
            Outcome::Aborted => Vec::new(),
        };
        let records = self.part_records(upload_id).await?;
        for r in &records {
            if !chosen.contains(&r.value.data_version.as_ref()) {
                let owner = Owner::Part { upload_id: upload_id.to_vec(), part_number: r.value.part_number };
                self.mark_release(&r.value.data_version, &owner).await?;
            }
        }
        let tombs = records.iter().map(|r| tombstone(r.key.clone(), Some(r.timestamp))).collect();
        self.tables.insert(Table::UploadPart, tombs).await?;
        if let Some(u) = self.upload(bucket_id, key, upload_id).await? {
            self.tables.delete::<MultipartUploads>(u.key, Some(u.timestamp)).await?;
        }
        Ok(())
    }

    /// Finishes an upload whose entry is still there although its register was decided (a
    /// frontend died between the two): what the upload janitor calls. Does nothing to an
    /// open upload, or when the replicas do not agree yet.
    pub async fn finish_if_decided(&self, bucket_id: &[u8], key: &str, upload_id: &[u8]) -> Result<bool> {
        match self.registers.peek::<UploadDecision>(&upload_register(upload_id)).await {
            Ok(Some(d)) => match outcome(&d) {
                Some(out) => {
                    self.finish_upload(bucket_id, key, upload_id, &out).await?;
                    Ok(true)
                }
                None => Ok(false),
            },
            Ok(None) | Err(Error::Conflict(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_upload_id;

    #[test]
    fn only_ids_we_issue_parse() {
        assert_eq!(parse_upload_id(&"ab".repeat(16)).unwrap().len(), 16);
        for bad in ["", "x", &"AB".repeat(16), &"ab".repeat(17), &format!("{}\0{}", "a".repeat(16), "b".repeat(15))] {
            assert!(parse_upload_id(bad).is_none(), "{bad:?}");
        }
    }
}
