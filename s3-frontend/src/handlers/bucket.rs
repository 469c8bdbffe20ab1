//! Bucket operations.

use hangar_common::Error;
use hangar_model::catalog::Created;
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

use super::Hangar;
use super::common::authorized;
use super::common::timestamp_ms;
use crate::access::Right;
use crate::errors::OrS3;

pub async fn list_buckets(h: &Hangar, req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
    let key = h.caller(req.credentials.as_ref()).await?;
    // Every name of every bucket the key may use (the root key: every bucket); a bucket
    // with several names is listed once per name, as each is a bucket to S3 clients.
    let visible: std::collections::HashSet<Vec<u8>> = if key.root {
        h.store.list_buckets().await.or_s3()?.into_iter().map(|b| b.id.to_vec()).collect()
    } else {
        h.store.grants_of(&key.id).await.or_s3()?.into_iter().map(|(id, _)| id).collect()
    };
    let mut buckets = Vec::new();
    for (name, id) in h.store.all_aliases().await.or_s3()? {
        if !visible.contains(&id) {
            continue;
        }
        if let Some(b) = h.store.bucket_by_id(&id).await.or_s3()? {
            buckets.push(Bucket {
                name: Some(name),
                creation_date: Some(timestamp_ms(b.created_ms)),
                bucket_region: Some(h.cfg.region.clone()),
            });
        }
    }
    buckets.sort_by(|a, b| a.name.cmp(&b.name));
    let owner = Owner { id: Some(key.id.clone()), display_name: Some(key.name.clone()) };
    Ok(S3Response::new(ListBucketsOutput { buckets: Some(buckets), owner: Some(owner), ..Default::default() }))
}

pub async fn create_bucket(h: &Hangar, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
    let key = h.caller(req.credentials.as_ref()).await?;
    let name = &req.input.bucket;
    let i = &req.input;
    super::acl::only_private(
        i.acl.as_ref().map(|a| a.as_str()),
        &[
            i.grant_full_control.as_ref(),
            i.grant_read.as_ref(),
            i.grant_read_acp.as_ref(),
            i.grant_write.as_ref(),
            i.grant_write_acp.as_ref(),
        ],
    )?;
    if let Some(loc) = req.input.create_bucket_configuration.as_ref().and_then(|c| c.location_constraint.as_ref())
        && !loc.as_str().is_empty()
        && loc.as_str() != h.cfg.region
    {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidLocationConstraint,
            format!("this endpoint serves region `{}`", h.cfg.region),
        ));
    }
    let taken = |owned: bool| if owned { s3_error!(BucketAlreadyOwnedByYou) } else { s3_error!(BucketAlreadyExists) };
    if let Some(existing) = h.store.bucket_by_name(name).await.or_s3()? {
        let owned = Right::Owner.held(h.store.key_rights(&key, &existing.id).await.or_s3()?);
        return Err(taken(owned));
    }
    // A refusal is never answered from the cache: the permission may just have been given.
    let allowed =
        key.allow_create_bucket || h.lookups.fresh_key(&key.id).await.or_s3()?.is_some_and(|k| k.allow_create_bucket);
    if !allowed {
        return Err(s3_error!(AccessDenied, "this key may not create buckets"));
    }
    match h.store.create_bucket(name, Some(&key.id)).await {
        Ok(Created::New(_)) => Ok(S3Response::new(CreateBucketOutput { location: Some(format!("/{name}")) })),
        Ok(Created::Taken(winner)) => {
            let owned = Right::Owner.held(h.store.key_rights(&key, &winner.id).await.or_s3()?);
            Err(taken(owned))
        }
        Err(Error::Invalid(m)) => Err(S3Error::with_message(S3ErrorCode::InvalidBucketName, m)),
        Err(e) => Err(crate::errors::internal(e)),
    }
}

pub async fn head_bucket(h: &Hangar, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
    authorized(&req)?;
    Ok(S3Response::new(HeadBucketOutput { bucket_region: Some(h.cfg.region.clone()), ..Default::default() }))
}

pub async fn delete_bucket(h: &Hangar, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
    let (_, bucket) = authorized(&req)?;
    // S3 clients see each name of a bucket as a bucket: deleting one of several names
    // removes that name only (as Garage does), and the objects stay under the others.
    if h.store.aliases_of(&bucket.id).await.or_s3()?.len() > 1 {
        return match h.store.remove_alias(&bucket, &req.input.bucket).await {
            Ok(()) => Ok(S3Response::new(DeleteBucketOutput {})),
            Err(e) => Err(crate::errors::internal(e)),
        };
    }
    match h.store.delete_bucket(&bucket).await {
        Ok(()) => Ok(S3Response::new(DeleteBucketOutput {})),
        Err(Error::Conflict(_)) => Err(s3_error!(BucketNotEmpty)),
        Err(e) => Err(crate::errors::internal(e)),
    }
}

/// Versioning was never enabled on any bucket: an empty configuration, as S3 answers for a
/// bucket that never had it (clients such as rclone and s3fs ask before deleting).
pub async fn get_bucket_versioning(
    req: S3Request<GetBucketVersioningInput>,
) -> S3Result<S3Response<GetBucketVersioningOutput>> {
    authorized(&req)?;
    Ok(S3Response::new(GetBucketVersioningOutput::default()))
}

pub async fn get_bucket_location(
    h: &Hangar,
    req: S3Request<GetBucketLocationInput>,
) -> S3Result<S3Response<GetBucketLocationOutput>> {
    authorized(&req)?;
    // AWS answers an empty constraint for us-east-1.
    let location_constraint =
        (h.cfg.region != "us-east-1").then(|| BucketLocationConstraint::from(h.cfg.region.clone()));
    Ok(S3Response::new(GetBucketLocationOutput { location_constraint }))
}
