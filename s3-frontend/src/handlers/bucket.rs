//! Bucket operations.

use hangar_common::Error;
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

use super::Hangar;
use super::common::timestamp_ms;
use crate::access::{Right, has_right, sees};
use crate::errors::OrS3;

pub async fn list_buckets(h: &Hangar, req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
    let key = h.caller(req.credentials.as_ref()).await?;
    let buckets = h
        .backend
        .catalog
        .list_buckets()
        .await
        .or_s3()?
        .into_iter()
        .filter(|b| sees(&key, b))
        .map(|b| Bucket {
            name: Some(b.name),
            creation_date: Some(timestamp_ms(b.created_ms)),
            bucket_region: Some(h.cfg.region.clone()),
        })
        .collect();
    let owner = Owner { id: Some(key.id.clone()), display_name: Some(key.name.clone()) };
    Ok(S3Response::new(ListBucketsOutput { buckets: Some(buckets), owner: Some(owner), ..Default::default() }))
}

pub async fn create_bucket(h: &Hangar, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
    let key = h.caller(req.credentials.as_ref()).await?;
    let name = &req.input.bucket;
    if let Some(loc) = req.input.create_bucket_configuration.as_ref().and_then(|c| c.location_constraint.as_ref())
        && !loc.as_str().is_empty()
        && loc.as_str() != h.cfg.region
    {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidLocationConstraint,
            format!("this endpoint serves region `{}`", h.cfg.region),
        ));
    }
    if let Some(existing) = h.backend.catalog.bucket_by_name(name).await.or_s3()? {
        return Err(if has_right(&key, &existing, Right::Owner) {
            s3_error!(BucketAlreadyOwnedByYou)
        } else {
            s3_error!(BucketAlreadyExists)
        });
    }
    if !key.allow_create_bucket {
        return Err(s3_error!(AccessDenied, "this key may not create buckets"));
    }
    match h.backend.catalog.create_bucket(name, Some(&key.id)).await {
        Ok(_) => Ok(S3Response::new(CreateBucketOutput { location: Some(format!("/{name}")) })),
        Err(Error::Invalid(m)) => Err(S3Error::with_message(S3ErrorCode::InvalidBucketName, m)),
        Err(Error::Conflict(_)) => Err(s3_error!(BucketAlreadyExists)),
        Err(e) => Err(crate::errors::internal(e)),
    }
}

pub async fn head_bucket(h: &Hangar, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
    let key = h.caller(req.credentials.as_ref()).await?;
    let bucket =
        h.backend.catalog.bucket_by_name(&req.input.bucket).await.or_s3()?.ok_or_else(|| s3_error!(NoSuchBucket))?;
    if !sees(&key, &bucket) {
        return Err(s3_error!(AccessDenied));
    }
    Ok(S3Response::new(HeadBucketOutput { bucket_region: Some(h.cfg.region.clone()), ..Default::default() }))
}

pub async fn delete_bucket(h: &Hangar, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
    let (_, bucket) = h.bucket(req.credentials.as_ref(), &req.input.bucket, Right::Owner).await?;
    match h.backend.catalog.delete_bucket(&bucket).await {
        Ok(()) => Ok(S3Response::new(DeleteBucketOutput {})),
        Err(Error::Conflict(_)) => Err(s3_error!(BucketNotEmpty)),
        Err(e) => Err(crate::errors::internal(e)),
    }
}

pub async fn get_bucket_location(
    h: &Hangar,
    req: S3Request<GetBucketLocationInput>,
) -> S3Result<S3Response<GetBucketLocationOutput>> {
    let key = h.caller(req.credentials.as_ref()).await?;
    let bucket =
        h.backend.catalog.bucket_by_name(&req.input.bucket).await.or_s3()?.ok_or_else(|| s3_error!(NoSuchBucket))?;
    if !sees(&key, &bucket) {
        return Err(s3_error!(AccessDenied));
    }
    // AWS answers an empty constraint for us-east-1.
    let location_constraint =
        (h.cfg.region != "us-east-1").then(|| BucketLocationConstraint::from(h.cfg.region.clone()));
    Ok(S3Response::new(GetBucketLocationOutput { location_constraint }))
}
