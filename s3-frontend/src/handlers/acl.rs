//! ACLs. Hangar grants access per key and bucket (`hangar bucket allow`), not by ACL: every
//! bucket and object behaves as with the canned ACL `private` (AWS's default, and what AWS
//! enforces on buckets with ACLs disabled). Reading an ACL answers that: the owner with
//! FULL_CONTROL. Setting `private` (or `bucket-owner-full-control`, the same thing here),
//! by header or as a body granting only the owner, is accepted; anything else is refused
//! with AWS's AccessControlListNotSupported rather than silently ignored.

use s3s::dto::*;
use s3s::{S3Error, S3Request, S3Response, S3Result};

use super::Hangar;
use super::common::authorized;
use super::common::check_key;
use crate::errors::custom_error;

/// Canned ACLs that give only the owner access.
const OWNER_ONLY: [&str; 2] = ["private", "bucket-owner-full-control"];

fn not_supported() -> S3Error {
    custom_error(
        "AccessControlListNotSupported",
        400,
        "The bucket does not allow ACLs: Hangar grants access per key (`hangar bucket allow`); \
         only the canned ACL `private` is accepted",
    )
}

/// Refuses any ACL but `private` on a request that may carry one (CreateBucket, PutObject,
/// CopyObject, CreateMultipartUpload, Put*Acl): a canned ACL header and x-amz-grant-*
/// headers.
pub fn only_private(canned: Option<&str>, grants: &[Option<&String>]) -> S3Result<()> {
    if canned.is_some_and(|a| !OWNER_ONLY.contains(&a)) || grants.iter().any(Option::is_some) {
        return Err(not_supported());
    }
    Ok(())
}

/// The ACL every bucket and object has: the caller (as ListBuckets names the owner) with
/// FULL_CONTROL.
fn owner_acl(key: &hangar_proto::model::AccessKey) -> (Owner, Vec<Grant>) {
    let owner = Owner { id: Some(key.id.clone()), display_name: Some(key.name.clone()) };
    let grant = Grant {
        grantee: Some(Grantee {
            display_name: Some(key.name.clone()),
            email_address: None,
            id: Some(key.id.clone()),
            type_: Type::from_static(Type::CANONICAL_USER),
            uri: None,
        }),
        permission: Some(Permission::from_static(Permission::FULL_CONTROL)),
    };
    (owner, vec![grant])
}

/// A policy body is `private` when it grants FULL_CONTROL to the owner and nothing else.
fn body_is_private(p: &AccessControlPolicy, owner_id: &str) -> bool {
    p.grants.as_deref().unwrap_or_default().iter().all(|g| {
        g.permission.as_ref().is_some_and(|p| p.as_str() == Permission::FULL_CONTROL)
            && g.grantee.as_ref().is_some_and(|e| {
                e.type_.as_str() == Type::CANONICAL_USER && e.id.as_deref() == Some(owner_id) && e.uri.is_none()
            })
    })
}

pub async fn get_bucket_acl(req: S3Request<GetBucketAclInput>) -> S3Result<S3Response<GetBucketAclOutput>> {
    let (key, _) = authorized(&req)?;
    let (owner, grants) = owner_acl(&key);
    Ok(S3Response::new(GetBucketAclOutput { owner: Some(owner), grants: Some(grants) }))
}

pub async fn put_bucket_acl(req: S3Request<PutBucketAclInput>) -> S3Result<S3Response<PutBucketAclOutput>> {
    let i = &req.input;
    let (key, _) = authorized(&req)?;
    let grants = [
        i.grant_full_control.as_ref(),
        i.grant_read.as_ref(),
        i.grant_read_acp.as_ref(),
        i.grant_write.as_ref(),
        i.grant_write_acp.as_ref(),
    ];
    only_private(i.acl.as_ref().map(|a| a.as_str()), &grants)?;
    if i.access_control_policy.as_ref().is_some_and(|p| !body_is_private(p, &key.id)) {
        return Err(not_supported());
    }
    Ok(S3Response::new(PutBucketAclOutput {}))
}

pub async fn get_object_acl(h: &Hangar, req: S3Request<GetObjectAclInput>) -> S3Result<S3Response<GetObjectAclOutput>> {
    let i = &req.input;
    let (key, bucket) = authorized(&req)?;
    check_key(&i.key)?;
    h.object_or_404(&bucket, &i.key).await?;
    let (owner, grants) = owner_acl(&key);
    Ok(S3Response::new(GetObjectAclOutput { owner: Some(owner), grants: Some(grants), ..Default::default() }))
}

pub async fn put_object_acl(h: &Hangar, req: S3Request<PutObjectAclInput>) -> S3Result<S3Response<PutObjectAclOutput>> {
    let i = &req.input;
    let (key, bucket) = authorized(&req)?;
    check_key(&i.key)?;
    let grants =
        [i.grant_full_control.as_ref(), i.grant_read.as_ref(), i.grant_read_acp.as_ref(), i.grant_write_acp.as_ref()];
    only_private(i.acl.as_ref().map(|a| a.as_str()), &grants)?;
    if i.access_control_policy.as_ref().is_some_and(|p| !body_is_private(p, &key.id)) {
        return Err(not_supported());
    }
    h.object_or_404(&bucket, &i.key).await?;
    Ok(S3Response::new(PutObjectAclOutput::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_owner_only_acls_pass() {
        assert!(only_private(None, &[None, None]).is_ok());
        assert!(only_private(Some("private"), &[]).is_ok());
        assert!(only_private(Some("bucket-owner-full-control"), &[]).is_ok());
        let g = "uri=\"http://acs.amazonaws.com/groups/global/AllUsers\"".to_string();
        for (acl, grant) in [(Some("public-read"), None), (Some("authenticated-read"), None), (None, Some(&g))] {
            let e = only_private(acl, &[grant]).unwrap_err();
            assert_eq!(e.code().as_str(), "AccessControlListNotSupported");
        }
    }
}
