//! Bucket quotas (maximum bytes, maximum objects), checked before a write is accepted.
//!
//! Usage comes from a scan of the bucket's objects, kept per frontend for a few seconds
//! and advanced by this frontend's own writes, so a bucket's usage is not recounted on
//! every PUT. A quota is therefore enforced within what other frontends wrote in the
//! last few seconds: a burst through several frontends at once can overshoot it by that
//! much (as with Garage's quotas, which also count asynchronously), and so can requests
//! racing through one frontend, which are each checked before either is counted.
//! Multipart parts are checked against the size quota as they arrive (an upload cannot
//! fill a full bucket), and the whole object again at completion.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hangar_model::Store;
use hangar_proto::model::Bucket;
use s3s::S3Error;

use crate::errors::{OrS3, custom_error};

/// How long a counted usage is trusted.
const USAGE_TTL: Duration = Duration::from_secs(5);

#[derive(Clone, Copy)]
struct Usage {
    counted: Instant,
    objects: u64,
    bytes: u64,
}

#[derive(Default)]
pub struct Quotas {
    usage: Mutex<HashMap<Vec<u8>, Usage>>,
}

/// What a write would change: the new object's size, and the size of the object it
/// replaces (None when the key is new).
#[derive(Clone, Copy, Debug)]
pub struct Change {
    pub new_size: u64,
    pub replaced: Option<u64>,
}

impl Quotas {
    /// Refuses the write (403 QuotaExceeded) when it would take the bucket past a quota.
    pub async fn check(&self, store: &Store, bucket: &Bucket, change: Change) -> Result<(), S3Error> {
        if bucket.max_size == 0 && bucket.max_objects == 0 {
            return Ok(());
        }
        let usage = self.usage(store, &bucket.id).await?;
        let objects = usage.objects + u64::from(change.replaced.is_none());
        let bytes = (usage.bytes + change.new_size).saturating_sub(change.replaced.unwrap_or(0));
        if bucket.max_objects > 0 && change.replaced.is_none() && objects > bucket.max_objects {
            return Err(custom_error(
                "QuotaExceeded",
                403,
                format!("the bucket holds {} objects, its quota allows {}", usage.objects, bucket.max_objects),
            ));
        }
        if bucket.max_size > 0 && change.new_size > change.replaced.unwrap_or(0) && bytes > bucket.max_size {
            return Err(custom_error(
                "QuotaExceeded",
                403,
                format!(
                    "the bucket holds {} bytes; {} more would pass its quota of {} bytes",
                    usage.bytes, change.new_size, bucket.max_size
                ),
            ));
        }
        Ok(())
    }

    /// Counts a write this frontend made, so the next check sees it before a recount.
    pub fn record(&self, bucket: &Bucket, change: Change) {
        if bucket.max_size == 0 && bucket.max_objects == 0 {
            return;
        }
        if let Ok(mut m) = self.usage.lock()
            && let Some(u) = m.get_mut(bucket.id.as_ref())
        {
            u.objects += u64::from(change.replaced.is_none());
            u.bytes = (u.bytes + change.new_size).saturating_sub(change.replaced.unwrap_or(0));
        }
    }

    /// Forgets the counted usage of a bucket (objects were deleted): the next check
    /// recounts, so a bucket at its quota takes writes again at once.
    pub fn forget(&self, bucket: &Bucket) {
        if bucket.max_size == 0 && bucket.max_objects == 0 {
            return;
        }
        if let Ok(mut m) = self.usage.lock() {
            m.remove(bucket.id.as_ref());
        }
    }

    async fn usage(&self, store: &Store, bucket_id: &[u8]) -> Result<Usage, S3Error> {
        let cached = self.usage.lock().ok().and_then(|m| m.get(bucket_id).copied());
        if let Some(u) = cached.filter(|u| u.counted.elapsed() < USAGE_TTL) {
            return Ok(u);
        }
        let (objects, bytes) = store.bucket_usage(bucket_id).await.or_s3()?;
        let u = Usage { counted: Instant::now(), objects, bytes };
        if let Ok(mut m) = self.usage.lock() {
            m.retain(|_, v| v.counted.elapsed() < USAGE_TTL);
            m.insert(bucket_id.to_vec(), u);
        }
        Ok(u)
    }
}
