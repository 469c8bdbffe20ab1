//! Bucket features Hangar does not have, answered as AWS answers for a bucket where they
//! were never set, so clients that ask before they act (s3fs, rclone, Terraform, the
//! consoles) proceed; setting them is refused with a message that says why.

use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use super::common::authorized;
use crate::errors::custom_error;

fn not_implemented(what: &str) -> S3Error {
    S3Error::with_message(S3ErrorCode::NotImplemented, format!("Hangar does not support {what}"))
}

/// Versioning: only "never enabled" exists. Suspended is what an unversioned bucket
/// already does for new writes, so it is accepted and changes nothing.
pub async fn put_bucket_versioning(
    req: S3Request<PutBucketVersioningInput>,
) -> S3Result<S3Response<PutBucketVersioningOutput>> {
    authorized(&req)?;
    match req.input.versioning_configuration.status.as_ref().map(|s| s.as_str()) {
        Some(BucketVersioningStatus::ENABLED) => {
            Err(not_implemented("object versioning: objects have one current version and a DELETE removes it"))
        }
        _ if req.input.versioning_configuration.mfa_delete.is_some() => Err(not_implemented("MFA delete")),
        _ => Ok(S3Response::new(PutBucketVersioningOutput::default())),
    }
}

pub async fn get_bucket_encryption(
    req: S3Request<GetBucketEncryptionInput>,
) -> S3Result<S3Response<GetBucketEncryptionOutput>> {
    authorized(&req)?;
    Err(custom_error(
        "ServerSideEncryptionConfigurationNotFoundError",
        404,
        "The server side encryption configuration was not found",
    ))
}

pub async fn put_bucket_encryption(
    req: S3Request<PutBucketEncryptionInput>,
) -> S3Result<S3Response<PutBucketEncryptionOutput>> {
    authorized(&req)?;
    Err(not_implemented("default bucket encryption (SSE-S3, SSE-KMS): encrypt the disks the data nodes use"))
}

pub async fn get_bucket_policy(req: S3Request<GetBucketPolicyInput>) -> S3Result<S3Response<GetBucketPolicyOutput>> {
    authorized(&req)?;
    Err(custom_error("NoSuchBucketPolicy", 404, "The bucket policy does not exist"))
}

pub async fn put_bucket_policy(req: S3Request<PutBucketPolicyInput>) -> S3Result<S3Response<PutBucketPolicyOutput>> {
    authorized(&req)?;
    Err(not_implemented("bucket policies: grant access per key with `hangar bucket allow`"))
}

pub async fn get_object_lock_configuration(
    req: S3Request<GetObjectLockConfigurationInput>,
) -> S3Result<S3Response<GetObjectLockConfigurationOutput>> {
    authorized(&req)?;
    Err(custom_error(
        "ObjectLockConfigurationNotFoundError",
        404,
        "Object Lock configuration does not exist for this bucket",
    ))
}

pub async fn get_public_access_block(
    req: S3Request<GetPublicAccessBlockInput>,
) -> S3Result<S3Response<GetPublicAccessBlockOutput>> {
    authorized(&req)?;
    Err(custom_error(
        "NoSuchPublicAccessBlockConfiguration",
        404,
        "The public access block configuration was not found",
    ))
}
