//! Authorization, once per request, before the handler runs and before any body is read:
//! every request must be signed (s3s checked the signature with `auth::KeyAuth`); the right
//! an operation needs on its bucket comes from one table (`required`); the caller's key, the
//! bucket and the key's rights on it are looked up once (through the frontend's `Lookups`)
//! and handed to the handler in the request's extensions (`Authorized`).

use std::sync::Arc;

use hangar_model::catalog::Rights;
use hangar_proto::model::{AccessKey, Bucket};
use s3s::access::{S3Access, S3AccessContext};
use s3s::path::S3Path;
use s3s::{S3Error, S3Result, s3_error};
use tracing::Instrument;

use crate::errors::OrS3;
use crate::http_layer::OpName;
use crate::lookups::Lookups;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Right {
    /// Any right at all: the caller may know the bucket exists.
    Any,
    Read,
    Write,
    Owner,
}

impl Right {
    pub fn held(self, r: Rights) -> bool {
        match self {
            Right::Any => r.any(),
            Right::Read => r.read,
            Right::Write => r.write,
            Right::Owner => r.owner,
        }
    }
}

/// The right an operation needs on the bucket it names. `None`: no bucket right (ListBuckets
/// and CreateBucket, which the key's own permission governs, and the operations Hangar does
/// not implement, which are answered NotImplemented).
pub fn required(op: &str) -> Option<Right> {
    use Right::*;
    Some(match op {
        "HeadBucket" | "GetBucketLocation" | "GetBucketVersioning" => Any,
        // Objects and uploads.
        "GetObject"
        | "HeadObject"
        | "GetObjectAttributes"
        | "GetObjectAcl"
        | "GetObjectTagging"
        | "ListObjects"
        | "ListObjectsV2"
        | "ListParts"
        | "ListMultipartUploads" => Read,
        "PutObject"
        | "CopyObject"
        | "DeleteObject"
        | "DeleteObjects"
        | "PutObjectAcl"
        | "PutObjectTagging"
        | "DeleteObjectTagging"
        | "CreateMultipartUpload"
        | "UploadPart"
        | "UploadPartCopy"
        | "CompleteMultipartUpload"
        | "AbortMultipartUpload" => Write,
        // Bucket settings: read with the read right, changed by the owner.
        "GetBucketAcl"
        | "GetBucketTagging"
        | "GetBucketCors"
        | "GetBucketWebsite"
        | "GetBucketLifecycleConfiguration"
        | "GetBucketEncryption"
        | "GetBucketPolicy"
        | "GetObjectLockConfiguration"
        | "GetPublicAccessBlock" => Read,
        "DeleteBucket"
        | "PutBucketAcl"
        | "PutBucketTagging"
        | "DeleteBucketTagging"
        | "PutBucketCors"
        | "DeleteBucketCors"
        | "PutBucketWebsite"
        | "DeleteBucketWebsite"
        | "PutBucketLifecycleConfiguration"
        | "DeleteBucketLifecycle"
        | "PutBucketVersioning"
        | "PutBucketEncryption"
        | "PutBucketPolicy" => Owner,
        _ => return None,
    })
}

/// What the access check found: the caller's key, and the bucket the request names, on
/// which the key holds the operation's right.
#[derive(Clone)]
pub struct Authorized {
    pub key: AccessKey,
    pub bucket: Bucket,
}

/// The caller's key (its signature was verified already).
pub async fn caller(lookups: &Lookups, access_key: &str) -> S3Result<AccessKey> {
    match lookups.key(access_key).instrument(tracing::debug_span!("key lookup")).await.or_s3()? {
        Some(k) => Ok(k),
        None => Err(s3_error!(InvalidAccessKeyId)),
    }
}

/// The key, and the bucket `name` when the key holds `right` on it. Requests that change the
/// bucket (the owner's) read the bucket and the rights afresh, so they act on the bucket the
/// name names now; others may take them from the frontend's cache, but rights from the
/// cache that fall short are read again (they may just have been granted).
pub async fn authorize(lookups: &Lookups, access_key: &str, name: &str, right: Right) -> S3Result<Authorized> {
    let key = caller(lookups, access_key).await?;
    let fresh = right == Right::Owner;
    let span = tracing::debug_span!("bucket lookup");
    let bucket = if fresh {
        lookups.fresh_bucket(name).instrument(span).await
    } else {
        lookups.bucket(name).instrument(span).await.map(|(b, _)| b)
    };
    let bucket = bucket.or_s3()?.ok_or_else(|| {
        S3Error::with_message(s3s::S3ErrorCode::NoSuchBucket, format!("bucket `{name}` does not exist"))
    })?;
    let span = tracing::debug_span!("permission check");
    let (mut rights, cached) = if fresh {
        (lookups.fresh_rights(&key, &bucket.id).instrument(span.clone()).await.or_s3()?, false)
    } else {
        lookups.rights(&key, &bucket.id).instrument(span.clone()).await.or_s3()?
    };
    if cached && !right.held(rights) {
        rights = lookups.fresh_rights(&key, &bucket.id).instrument(span).await.or_s3()?;
    }
    if !right.held(rights) {
        return Err(match right {
            Right::Any => s3_error!(AccessDenied),
            _ => s3_error!(AccessDenied, "the key has no {right:?} right on this bucket"),
        });
    }
    Ok(Authorized { key, bucket })
}

/// The access check s3s runs for every request (see the module's comment). Also records
/// which S3 operation the request is and its bucket, for the metrics and the request's span.
pub struct Authorize {
    lookups: Arc<Lookups>,
}

impl Authorize {
    pub fn new(lookups: Arc<Lookups>) -> Self {
        Self { lookups }
    }
}

#[async_trait::async_trait]
impl S3Access for Authorize {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let op = cx.s3_op().name().to_string();
        let bucket = match cx.s3_path() {
            S3Path::Bucket { bucket } | S3Path::Object { bucket, .. } => Some(bucket.to_string()),
            S3Path::Root => None,
        };
        if let Some(slot) = cx.extensions_mut().get::<OpName>() {
            let _ = slot.0.set((op.clone(), bucket.clone()));
        }
        let Some(creds) = cx.credentials() else {
            return Err(s3_error!(AccessDenied, "anonymous access is not allowed"));
        };
        if let (Some(right), Some(bucket)) = (required(&op), bucket) {
            let found = authorize(&self.lookups, &creds.access_key, &bucket, right).await?;
            cx.extensions_mut().insert(found);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every operation the handlers implement (s3s's names, from handlers/mod.rs) has its
    /// right in the table, except the two that name no existing bucket.
    #[test]
    fn every_implemented_operation_that_names_a_bucket_has_a_right() {
        let handlers = include_str!("handlers/mod.rs");
        let implemented: Vec<String> = handlers
            .lines()
            .filter_map(|l| l.trim().strip_prefix("async fn "))
            .filter_map(|l| l.split('(').next())
            .map(|snake| snake.split('_').map(|w| w[..1].to_uppercase() + &w[1..]).collect())
            .collect();
        assert!(implemented.len() > 40, "found {implemented:?}");
        for op in &implemented {
            let exempt = matches!(op.as_str(), "ListBuckets" | "CreateBucket");
            assert_eq!(required(op).is_none(), exempt, "{op}");
        }
    }
}
