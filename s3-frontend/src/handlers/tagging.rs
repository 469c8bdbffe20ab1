//! Object and bucket tags, with AWS's limits: at most 10 tags on an object and 50 on a
//! bucket, keys of 1 to 128 characters and values of at most 256, keys unique and not in
//! the reserved `aws:` namespace.

use hangar_proto::model::{Tag, TagSet};
use percent_encoding::percent_decode_str;
use s3s::dto::*;
use s3s::{S3Error, S3Request, S3Response, S3Result, s3_error};

use super::Hangar;
use super::common::authorized;
use super::common::check_key;
use crate::errors::{OrS3, custom_error};

pub const MAX_OBJECT_TAGS: usize = 10;
pub const MAX_BUCKET_TAGS: usize = 50;
const MAX_TAG_KEY_CHARS: usize = 128;
const MAX_TAG_VALUE_CHARS: usize = 256;

fn invalid_tag(message: String) -> S3Error {
    custom_error("InvalidTag", 400, message)
}

/// Checks a tag set against AWS's limits; `max` is 10 for objects, 50 for buckets.
pub fn validate(tags: &[Tag], max: usize) -> S3Result<()> {
    if tags.len() > max {
        let what = if max == MAX_OBJECT_TAGS { "Object" } else { "Bucket" };
        return Err(custom_error("BadRequest", 400, format!("{what} tags cannot be greater than {max}")));
    }
    let mut seen = std::collections::HashSet::new();
    for t in tags {
        let chars = t.key.chars().count();
        if chars == 0 || chars > MAX_TAG_KEY_CHARS {
            return Err(invalid_tag(format!("a tag key must hold 1 to {MAX_TAG_KEY_CHARS} characters")));
        }
        if t.value.chars().count() > MAX_TAG_VALUE_CHARS {
            return Err(invalid_tag(format!("a tag value may hold at most {MAX_TAG_VALUE_CHARS} characters")));
        }
        if t.key.to_ascii_lowercase().starts_with("aws:") {
            return Err(invalid_tag("tag keys starting with `aws:` are reserved".into()));
        }
        if !seen.insert(t.key.as_str()) {
            return Err(invalid_tag("Cannot provide multiple Tags with the same key".into()));
        }
    }
    Ok(())
}

/// The tags of an `x-amz-tagging` header (`k1=v1&k2=v2`, URL-encoded), checked.
pub fn from_header(header: &str) -> S3Result<Option<TagSet>> {
    let decode = |s: &str| -> S3Result<String> {
        let s = s.replace('+', " ");
        percent_decode_str(&s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| invalid_tag("x-amz-tagging is not valid URL-encoded UTF-8".into()))
    };
    let mut tags = Vec::new();
    for pair in header.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        tags.push(Tag { key: decode(k)?, value: decode(v)? });
    }
    validate(&tags, MAX_OBJECT_TAGS)?;
    Ok((!tags.is_empty()).then_some(TagSet { tags }))
}

/// The tags of a Tagging XML body, checked.
fn from_body(t: &Tagging, max: usize) -> S3Result<Option<TagSet>> {
    let mut tags = Vec::new();
    for t in &t.tag_set {
        let (Some(key), Some(value)) = (&t.key, &t.value) else {
            return Err(s3_error!(MalformedXML, "every Tag needs a Key and a Value"));
        };
        tags.push(Tag { key: key.clone(), value: value.clone() });
    }
    validate(&tags, max)?;
    Ok((!tags.is_empty()).then_some(TagSet { tags }))
}

fn to_dto(tags: Option<&TagSet>) -> Vec<s3s::dto::Tag> {
    tags.map(|t| t.tags.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|t| s3s::dto::Tag { key: Some(t.key.clone()), value: Some(t.value.clone()) })
        .collect()
}

/// The `x-amz-tagging-count` of an object, when it has tags.
pub fn count(tags: Option<&TagSet>) -> Option<i32> {
    tags.filter(|t| !t.tags.is_empty()).map(|t| t.tags.len() as i32)
}

async fn set_object_tags(
    h: &Hangar,
    bucket: &hangar_proto::model::Bucket,
    key: &str,
    tags: Option<TagSet>,
) -> S3Result<()> {
    check_key(key)?;
    let found = h.object_or_404(bucket, key).await?;
    if !h.store.set_object_tags(&bucket.id, key, &found, tags).await.or_s3()? {
        // A PUT or DELETE of the key came in between: the tags went with the value they
        // were set on, as if they had been set just before it.
        tracing::debug!("tags were set on a value replaced meanwhile");
    }
    Ok(())
}

pub async fn put_object_tagging(
    h: &Hangar,
    req: S3Request<PutObjectTaggingInput>,
) -> S3Result<S3Response<PutObjectTaggingOutput>> {
    let i = &req.input;
    let tags = from_body(&i.tagging, MAX_OBJECT_TAGS)?;
    set_object_tags(h, &authorized(&req)?.1, &i.key, tags).await?;
    Ok(S3Response::new(PutObjectTaggingOutput::default()))
}

pub async fn delete_object_tagging(
    h: &Hangar,
    req: S3Request<DeleteObjectTaggingInput>,
) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
    let i = &req.input;
    set_object_tags(h, &authorized(&req)?.1, &i.key, None).await?;
    Ok(S3Response::new(DeleteObjectTaggingOutput::default()))
}

pub async fn get_object_tagging(
    h: &Hangar,
    req: S3Request<GetObjectTaggingInput>,
) -> S3Result<S3Response<GetObjectTaggingOutput>> {
    let i = &req.input;
    let (_, bucket) = authorized(&req)?;
    check_key(&i.key)?;
    let found = h.object_or_404(&bucket, &i.key).await?;
    Ok(S3Response::new(GetObjectTaggingOutput { tag_set: to_dto(found.value.tags.as_ref()), version_id: None }))
}

pub async fn put_bucket_tagging(
    h: &Hangar,
    req: S3Request<PutBucketTaggingInput>,
) -> S3Result<S3Response<PutBucketTaggingOutput>> {
    let (_, bucket) = authorized(&req)?;
    let tags = from_body(&req.input.tagging, MAX_BUCKET_TAGS)?;
    h.store.set_bucket_tags(&bucket, tags).await.or_s3()?;
    Ok(S3Response::new(PutBucketTaggingOutput::default()))
}

pub async fn delete_bucket_tagging(
    h: &Hangar,
    req: S3Request<DeleteBucketTaggingInput>,
) -> S3Result<S3Response<DeleteBucketTaggingOutput>> {
    let (_, bucket) = authorized(&req)?;
    h.store.set_bucket_tags(&bucket, None).await.or_s3()?;
    Ok(S3Response::new(DeleteBucketTaggingOutput::default()))
}

pub async fn get_bucket_tagging(req: S3Request<GetBucketTaggingInput>) -> S3Result<S3Response<GetBucketTaggingOutput>> {
    let (_, bucket) = authorized(&req)?;
    match bucket.tags.as_ref().filter(|t| !t.tags.is_empty()) {
        Some(t) => Ok(S3Response::new(GetBucketTaggingOutput { tag_set: to_dto(Some(t)) })),
        None => Err(custom_error("NoSuchTagSet", 404, "The TagSet does not exist")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_tags_decode_and_obey_the_limits() {
        let t = from_header("a=1&b%20c=d+e&empty=").unwrap().unwrap();
        let kv: Vec<_> = t.tags.iter().map(|t| (t.key.as_str(), t.value.as_str())).collect();
        assert_eq!(kv, [("a", "1"), ("b c", "d e"), ("empty", "")]);
        assert!(from_header("").unwrap().is_none());
        let eleven: Vec<String> = (0..11).map(|i| format!("k{i}=v")).collect();
        assert_eq!(from_header(&eleven.join("&")).unwrap_err().code().as_str(), "BadRequest");
        for bad in ["a=1&a=2", "=v", "aws:x=1", &format!("{}=v", "k".repeat(129)), &format!("k={}", "v".repeat(257))] {
            assert_eq!(from_header(bad).unwrap_err().code().as_str(), "InvalidTag", "{bad}");
        }
        // Lengths count characters, not bytes.
        assert!(from_header(&format!("{}=v", "é".repeat(128))).is_ok());
    }
}
