//! Authorization: every request must be signed; per-bucket rights are checked by the
//! handlers, which know which bucket and which right an operation needs.

use hangar_proto::model::{AccessKey, Bucket};
use s3s::access::{S3Access, S3AccessContext};
use s3s::{S3Result, s3_error};

/// Refuses anonymous requests (no public buckets yet).
pub struct AuthenticatedOnly;

#[async_trait::async_trait]
impl S3Access for AuthenticatedOnly {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        match cx.credentials() {
            Some(_) => Ok(()),
            None => Err(s3_error!(AccessDenied, "anonymous access is not allowed")),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Right {
    Read,
    Write,
    Owner,
}

pub fn has_right(key: &AccessKey, bucket: &Bucket, right: Right) -> bool {
    key.buckets.get(&hex::encode(&bucket.id)).is_some_and(|p| match right {
        Right::Read => p.read,
        Right::Write => p.write,
        Right::Owner => p.owner,
    })
}

/// Any right at all: what makes a bucket visible to a key.
pub fn sees(key: &AccessKey, bucket: &Bucket) -> bool {
    key.buckets.get(&hex::encode(&bucket.id)).is_some_and(|p| p.read || p.write || p.owner)
}
