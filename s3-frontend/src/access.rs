//! Authorization: every request must be signed; per-bucket rights are checked by the
//! handlers, which know which bucket and which right an operation needs.

use s3s::access::{S3Access, S3AccessContext};
use s3s::path::S3Path;
use s3s::{S3Result, s3_error};

use crate::http_layer::OpName;

/// Refuses anonymous requests (no public buckets yet). Also records which S3 operation the
/// request is and its bucket, for the metrics and the request's span.
pub struct AuthenticatedOnly;

#[async_trait::async_trait]
impl S3Access for AuthenticatedOnly {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let op = cx.s3_op().name().to_string();
        let bucket = match cx.s3_path() {
            S3Path::Bucket { bucket } | S3Path::Object { bucket, .. } => Some(bucket.to_string()),
            S3Path::Root => None,
        };
        if let Some(slot) = cx.extensions_mut().get::<OpName>() {
            let _ = slot.0.set((op, bucket));
        }
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

impl Right {
    pub fn held(self, r: hangar_model::catalog::Rights) -> bool {
        match self {
            Right::Read => r.read,
            Right::Write => r.write,
            Right::Owner => r.owner,
        }
    }
}
