//! Lifecycle configuration: Put/Get/DeleteBucketLifecycleConfiguration. The rules are kept
//! with the bucket and applied by the data nodes' lifecycle worker (`hangar_model::
//! lifecycle`). Expiration by days or date and aborting incomplete multipart uploads are
//! supported, with filters on prefix, tags and size; transitions, noncurrent versions and
//! delete markers have no meaning in Hangar (one storage class, no versioning) and are
//! refused rather than ignored.

use hangar_proto::model::{LifecycleConfig, LifecycleRule as StoredRule, Tag as StoredTag};
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use super::Hangar;
use super::common::authorized;
use crate::errors::{OrS3, custom_error};

/// Most rules a configuration may hold, as in AWS.
const MAX_RULES: usize = 1000;
const DAY_MS: u64 = 86_400_000;

fn invalid(m: &str) -> S3Error {
    S3Error::with_message(S3ErrorCode::InvalidArgument, m.to_string())
}

fn malformed(m: &str) -> S3Error {
    S3Error::with_message(S3ErrorCode::MalformedXML, m.to_string())
}

fn not_implemented(m: &str) -> S3Error {
    S3Error::with_message(S3ErrorCode::NotImplemented, m.to_string())
}

fn size(v: Option<i64>) -> S3Result<Option<u64>> {
    v.map(|n| u64::try_from(n).map_err(|_| invalid("object size filters must not be negative"))).transpose()
}

fn tag(t: &Tag) -> S3Result<StoredTag> {
    match (&t.key, &t.value) {
        (Some(key), Some(value)) => Ok(StoredTag { key: key.clone(), value: value.clone() }),
        _ => Err(malformed("every Tag needs a Key and a Value")),
    }
}

fn rule_from_dto(r: &LifecycleRule) -> S3Result<StoredRule> {
    if r.transitions.as_ref().is_some_and(|t| !t.is_empty())
        || r.noncurrent_version_transitions.as_ref().is_some_and(|t| !t.is_empty())
    {
        return Err(not_implemented("Hangar has one storage class: lifecycle transitions are not supported"));
    }
    if r.noncurrent_version_expiration.is_some() {
        return Err(not_implemented(
            "Hangar does not keep noncurrent versions: NoncurrentVersionExpiration is not supported",
        ));
    }
    let id = r.id.clone().unwrap_or_default();
    if id.len() > 255 {
        return Err(invalid("ID length should not exceed allowed limit of 255"));
    }
    let mut out = StoredRule { id, enabled: r.status.as_str() == ExpirationStatus::ENABLED, ..Default::default() };
    if !out.enabled && r.status.as_str() != ExpirationStatus::DISABLED {
        return Err(malformed("Status must be Enabled or Disabled"));
    }
    match (&r.filter, &r.prefix) {
        (Some(_), Some(_)) => return Err(malformed("a rule has either a Filter or a Prefix")),
        (None, Some(p)) => out.prefix = p.clone(),
        (None, None) => {}
        (Some(f), None) => {
            let given = [
                f.and.is_some(),
                f.prefix.is_some(),
                f.tag.is_some(),
                f.object_size_greater_than.is_some(),
                f.object_size_less_than.is_some(),
            ];
            if given.iter().filter(|g| **g).count() > 1 {
                return Err(malformed("a Filter holds one condition; combine several with And"));
            }
            out.prefix = f.prefix.clone().unwrap_or_default();
            out.tags = f.tag.iter().map(tag).collect::<S3Result<_>>()?;
            out.size_greater_than = size(f.object_size_greater_than)?;
            out.size_less_than = size(f.object_size_less_than)?;
            if let Some(and) = &f.and {
                out.prefix = and.prefix.clone().unwrap_or_default();
                out.tags = and.tags.iter().flatten().map(tag).collect::<S3Result<_>>()?;
                out.size_greater_than = size(and.object_size_greater_than)?;
                out.size_less_than = size(and.object_size_less_than)?;
            }
        }
    }
    if let (Some(g), Some(l)) = (out.size_greater_than, out.size_less_than)
        && g >= l
    {
        return Err(invalid("ObjectSizeGreaterThan must be less than ObjectSizeLessThan"));
    }
    if let Some(e) = &r.expiration {
        if e.expired_object_delete_marker == Some(true) {
            return Err(not_implemented("Hangar has no delete markers: ExpiredObjectDeleteMarker is not supported"));
        }
        match (e.days, &e.date) {
            (Some(_), Some(_)) => return Err(malformed("Expiration has either Days or Date")),
            (Some(d), None) => {
                out.expiration_days = u32::try_from(d)
                    .ok()
                    .filter(|d| *d > 0)
                    .ok_or_else(|| invalid("'Days' for Expiration action must be a positive integer"))?;
            }
            (None, Some(date)) => {
                let t = time::OffsetDateTime::from(date.clone());
                let ms = u64::try_from(t.unix_timestamp_nanos() / 1_000_000)
                    .map_err(|_| invalid("'Date' is before 1970"))?;
                if ms % DAY_MS != 0 {
                    return Err(invalid("'Date' must be at midnight GMT"));
                }
                out.expiration_date_ms = Some(ms);
            }
            (None, None) => {}
        }
    }
    if let Some(a) = &r.abort_incomplete_multipart_upload {
        let days = a.days_after_initiation.unwrap_or(0);
        out.abort_incomplete_upload_days = u32::try_from(days).ok().filter(|d| *d > 0).ok_or_else(|| {
            invalid("'DaysAfterInitiation' for AbortIncompleteMultipartUpload action must be a positive integer")
        })?;
        if !out.tags.is_empty() || out.size_greater_than.is_some() || out.size_less_than.is_some() {
            return Err(invalid("AbortIncompleteMultipartUpload cannot be specified with Tags or object size filters"));
        }
    }
    if out.expiration_days == 0 && out.expiration_date_ms.is_none() && out.abort_incomplete_upload_days == 0 {
        return Err(custom_error("InvalidRequest", 400, "At least one action needs to be specified in a rule"));
    }
    Ok(out)
}

/// Checks and converts the rules of a PutBucketLifecycleConfiguration body.
pub fn from_dto(rules: &[LifecycleRule]) -> S3Result<LifecycleConfig> {
    if rules.is_empty() {
        return Err(malformed("a lifecycle configuration needs at least one Rule"));
    }
    if rules.len() > MAX_RULES {
        return Err(malformed("a lifecycle configuration holds at most 1000 rules"));
    }
    let rules = rules.iter().map(rule_from_dto).collect::<S3Result<Vec<_>>>()?;
    let mut ids = std::collections::HashSet::new();
    if rules.iter().any(|r| !r.id.is_empty() && !ids.insert(r.id.as_str())) {
        return Err(invalid("Rule ID must be unique. Found same ID for more than one rule"));
    }
    Ok(LifecycleConfig { rules })
}

fn to_dto(cfg: &LifecycleConfig) -> Vec<LifecycleRule> {
    cfg.rules
        .iter()
        .map(|r| {
            let tags: Vec<Tag> =
                r.tags.iter().map(|t| Tag { key: Some(t.key.clone()), value: Some(t.value.clone()) }).collect();
            let conditions = usize::from(!r.prefix.is_empty())
                + tags.len()
                + usize::from(r.size_greater_than.is_some())
                + usize::from(r.size_less_than.is_some());
            let as_i64 = |v: Option<u64>| v.map(|n| n as i64);
            let filter = if conditions > 1 {
                LifecycleRuleFilter {
                    and: Some(LifecycleRuleAndOperator {
                        prefix: (!r.prefix.is_empty()).then(|| r.prefix.clone()),
                        tags: (!tags.is_empty()).then_some(tags),
                        object_size_greater_than: as_i64(r.size_greater_than),
                        object_size_less_than: as_i64(r.size_less_than),
                    }),
                    ..Default::default()
                }
            } else {
                LifecycleRuleFilter {
                    prefix: Some(r.prefix.clone()).filter(|p| !p.is_empty() || conditions == 0),
                    tag: tags.into_iter().next(),
                    object_size_greater_than: as_i64(r.size_greater_than),
                    object_size_less_than: as_i64(r.size_less_than),
                    ..Default::default()
                }
            };
            let expiration = (r.expiration_days > 0 || r.expiration_date_ms.is_some()).then(|| LifecycleExpiration {
                days: (r.expiration_days > 0).then_some(r.expiration_days as i32),
                date: r.expiration_date_ms.map(super::common::timestamp_ms),
                expired_object_delete_marker: None,
            });
            LifecycleRule {
                id: (!r.id.is_empty()).then(|| r.id.clone()),
                status: ExpirationStatus::from_static(if r.enabled {
                    ExpirationStatus::ENABLED
                } else {
                    ExpirationStatus::DISABLED
                }),
                filter: Some(filter),
                expiration,
                abort_incomplete_multipart_upload: (r.abort_incomplete_upload_days > 0).then_some(
                    AbortIncompleteMultipartUpload {
                        days_after_initiation: Some(r.abort_incomplete_upload_days as i32),
                    },
                ),
                noncurrent_version_expiration: None,
                noncurrent_version_transitions: None,
                prefix: None,
                transitions: None,
            }
        })
        .collect()
}

pub async fn put_bucket_lifecycle_configuration(
    h: &Hangar,
    req: S3Request<PutBucketLifecycleConfigurationInput>,
) -> S3Result<S3Response<PutBucketLifecycleConfigurationOutput>> {
    let (_, bucket) = authorized(&req)?;
    let Some(cfg) = &req.input.lifecycle_configuration else {
        return Err(malformed("the request has no LifecycleConfiguration"));
    };
    let cfg = from_dto(&cfg.rules)?;
    h.store.set_bucket_lifecycle(&bucket, Some(cfg)).await.or_s3()?;
    Ok(S3Response::new(PutBucketLifecycleConfigurationOutput::default()))
}

pub async fn get_bucket_lifecycle_configuration(
    req: S3Request<GetBucketLifecycleConfigurationInput>,
) -> S3Result<S3Response<GetBucketLifecycleConfigurationOutput>> {
    let (_, bucket) = authorized(&req)?;
    match bucket.lifecycle.as_ref().filter(|c| !c.rules.is_empty()) {
        Some(c) => {
            Ok(S3Response::new(GetBucketLifecycleConfigurationOutput { rules: Some(to_dto(c)), ..Default::default() }))
        }
        None => Err(custom_error("NoSuchLifecycleConfiguration", 404, "The lifecycle configuration does not exist")),
    }
}

pub async fn delete_bucket_lifecycle(
    h: &Hangar,
    req: S3Request<DeleteBucketLifecycleInput>,
) -> S3Result<S3Response<DeleteBucketLifecycleOutput>> {
    let (_, bucket) = authorized(&req)?;
    h.store.set_bucket_lifecycle(&bucket, None).await.or_s3()?;
    Ok(S3Response::new(DeleteBucketLifecycleOutput::default()))
}
