//! Lifecycle rules: which objects expire and which multipart uploads are aborted, and when.
//! The data nodes' `lifecycle` worker applies them; the S3 frontend checks them when they
//! are set.
//!
//! As in S3, "N days after" means the first midnight (UTC) at least N days after the object
//! was last written or the upload started. A "day" is `lifecycle_day_secs` long (86400
//! unless a test shortens it); midnights are the multiples of a day since the epoch.

use hangar_common::Result;
use hangar_proto::model::{LifecycleConfig, LifecycleRule, Object};

use crate::Store;
use crate::client::{Found, tombstone};
use crate::schema::{Objects, Schema, object_key};

/// When something `days` days after `since_ms` is due: the first midnight at least that late.
pub fn due_ms(since_ms: u64, days: u32, day_ms: u64) -> u64 {
    let day_ms = day_ms.max(1);
    (since_ms + days as u64 * day_ms).div_ceil(day_ms) * day_ms
}

fn filter_matches(r: &LifecycleRule, key: &str, obj: Option<&Object>) -> bool {
    if !r.enabled || !key.starts_with(&r.prefix) {
        return false;
    }
    let Some(obj) = obj else {
        // Uploads: only the prefix applies (rules with tags or sizes never abort uploads).
        return r.tags.is_empty() && r.size_greater_than.is_none() && r.size_less_than.is_none();
    };
    let has = |t: &hangar_proto::model::Tag| {
        obj.tags.as_ref().is_some_and(|set| set.tags.iter().any(|o| o.key == t.key && o.value == t.value))
    };
    r.tags.iter().all(has)
        && r.size_greater_than.is_none_or(|g| obj.size > g)
        && r.size_less_than.is_none_or(|l| obj.size < l)
}

/// Whether a rule of `cfg` expires object `key` at `now_ms`.
pub fn object_expires(cfg: &LifecycleConfig, key: &str, obj: &Object, now_ms: u64, day_ms: u64) -> bool {
    cfg.rules.iter().any(|r| {
        filter_matches(r, key, Some(obj))
            && ((r.expiration_days > 0 && now_ms >= due_ms(obj.last_modified_ms, r.expiration_days, day_ms))
                || r.expiration_date_ms.is_some_and(|d| now_ms >= d))
    })
}

/// Whether a rule of `cfg` aborts the upload of `key` started at `initiated_ms`.
pub fn upload_aborts(cfg: &LifecycleConfig, key: &str, initiated_ms: u64, now_ms: u64, day_ms: u64) -> bool {
    cfg.rules.iter().any(|r| {
        r.abort_incomplete_upload_days > 0
            && filter_matches(r, key, None)
            && now_ms >= due_ms(initiated_ms, r.abort_incomplete_upload_days, day_ms)
    })
}

impl Store {
    /// Deletes the object value `found` because it expired: the deletion is ordered just
    /// after that value (and below any value written with the next timestamp), so a write
    /// of the key made since, however recent, stays.
    pub async fn expire_object(&self, bucket_id: &[u8], key: &str, found: &Found<Object>) -> Result<()> {
        let mut t = tombstone(object_key(bucket_id, key), None);
        t.timestamp = found.timestamp + 1;
        t.tiebreak = 0;
        self.tables.insert(Objects::TABLE, vec![t]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hangar_proto::model::{Tag, TagSet};

    const DAY: u64 = 86_400_000;

    #[test]
    fn days_end_at_the_next_midnight() {
        // Written at 10:00 on day 3: one day later is midnight ending day 4.
        assert_eq!(due_ms(3 * DAY + DAY / 24 * 10, 1, DAY), 5 * DAY);
        assert_eq!(due_ms(3 * DAY, 1, DAY), 4 * DAY);
        assert_eq!(due_ms(1500, 1, 1000), 3000);
    }

    #[test]
    fn filters_and_actions() {
        let rule = LifecycleRule {
            enabled: true,
            prefix: "logs/".into(),
            tags: vec![Tag { key: "tmp".into(), value: "yes".into() }],
            size_greater_than: Some(10),
            expiration_days: 1,
            ..Default::default()
        };
        let cfg = LifecycleConfig { rules: vec![rule.clone()] };
        let obj = |size: u64, tagged: bool| Object {
            size,
            last_modified_ms: 0,
            tags: tagged.then(|| TagSet { tags: vec![Tag { key: "tmp".into(), value: "yes".into() }] }),
            ..Default::default()
        };
        assert!(object_expires(&cfg, "logs/a", &obj(11, true), DAY, DAY));
        assert!(!object_expires(&cfg, "logs/a", &obj(11, true), DAY - 1, DAY), "not yet due");
        assert!(!object_expires(&cfg, "logs/a", &obj(10, true), DAY, DAY), "too small");
        assert!(!object_expires(&cfg, "logs/a", &obj(11, false), DAY, DAY), "untagged");
        assert!(!object_expires(&cfg, "data/a", &obj(11, true), DAY, DAY), "other prefix");
        let off = LifecycleConfig { rules: vec![LifecycleRule { enabled: false, ..rule.clone() }] };
        assert!(!object_expires(&off, "logs/a", &obj(11, true), DAY, DAY), "disabled");
        let dated = LifecycleConfig {
            rules: vec![LifecycleRule { expiration_days: 0, expiration_date_ms: Some(5 * DAY), ..rule }],
        };
        assert!(object_expires(&dated, "logs/a", &obj(11, true), 5 * DAY, DAY));
        assert!(!object_expires(&dated, "logs/a", &obj(11, true), 5 * DAY - 1, DAY));
        let abort = LifecycleConfig {
            rules: vec![LifecycleRule { enabled: true, abort_incomplete_upload_days: 2, ..Default::default() }],
        };
        assert!(upload_aborts(&abort, "any", DAY, 3 * DAY, DAY));
        assert!(!upload_aborts(&abort, "any", DAY, 3 * DAY - 1, DAY));
    }
}
