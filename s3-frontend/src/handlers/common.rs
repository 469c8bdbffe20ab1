//! What the handlers share: who is calling, which bucket, object keys, stored headers.

use hangar_common::meta_client::Found;
use hangar_proto::metadata::Table;
use hangar_proto::model::{AccessKey, Bucket, Header, Object};
use s3s::auth::Credentials;
use s3s::dto::{ETag, Metadata, Timestamp, TimestampFormat};
use s3s::{S3Error, S3Result, s3_error};

use super::Hangar;
use crate::access::{Right, has_right};
use crate::errors::OrS3;
use crate::write_pipeline::release_data_version;

/// Longest object key S3 accepts, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

pub fn object_key(bucket_id: &[u8], key: &str) -> Vec<u8> {
    [bucket_id, key.as_bytes()].concat()
}

pub fn check_key(key: &str) -> S3Result<()> {
    if key.is_empty() {
        return Err(s3_error!(InvalidArgument, "object key must not be empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(s3_error!(KeyTooLongError, "object key is longer than 1024 bytes"));
    }
    Ok(())
}

pub fn timestamp_ms(ms: u64) -> Timestamp {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    Timestamp::from(t)
}

pub fn etag(s: &str) -> ETag {
    ETag::Strong(s.to_string())
}

impl Hangar {
    /// The calling key (s3s verified its signature already).
    pub(super) async fn caller(&self, creds: Option<&Credentials>) -> S3Result<AccessKey> {
        let id = creds.map(|c| c.access_key.as_str()).ok_or_else(|| s3_error!(AccessDenied))?;
        match self.backend.catalog.get_key(id).await.or_s3()? {
            Some(k) => Ok(k.value),
            None => Err(s3_error!(InvalidAccessKeyId)),
        }
    }

    /// The bucket, when the caller holds `right` on it.
    pub(super) async fn bucket(
        &self,
        creds: Option<&Credentials>,
        name: &str,
        right: Right,
    ) -> S3Result<(AccessKey, Bucket)> {
        let key = self.caller(creds).await?;
        let bucket = self.backend.catalog.bucket_by_name(name).await.or_s3()?.ok_or_else(|| {
            S3Error::with_message(s3s::S3ErrorCode::NoSuchBucket, format!("bucket `{name}` does not exist"))
        })?;
        if !has_right(&key, &bucket, right) {
            return Err(s3_error!(AccessDenied, "the key has no {right:?} right on this bucket"));
        }
        Ok((key, bucket))
    }

    pub(super) async fn get_object_entry(&self, bucket: &Bucket, key: &str) -> S3Result<Option<Found<Object>>> {
        self.backend.meta.get::<Object>(Table::Object, &object_key(&bucket.id, key)).await.or_s3()
    }

    pub(super) async fn object_or_404(&self, bucket: &Bucket, key: &str) -> S3Result<Found<Object>> {
        self.get_object_entry(bucket, key).await?.ok_or_else(|| s3_error!(NoSuchKey, "the object does not exist"))
    }

    /// Frees an object's data once nothing points to it any more.
    pub(super) async fn release_object(&self, obj: &Object) {
        for p in &obj.parts {
            release_data_version(&self.backend, &p.data_version).await;
        }
    }
}

/// Headers an object keeps, from the request that wrote it.
#[derive(Default)]
pub struct StoredHeaders<'a> {
    pub content_type: Option<&'a str>,
    pub content_encoding: Option<&'a str>,
    pub content_disposition: Option<&'a str>,
    pub content_language: Option<&'a str>,
    pub cache_control: Option<&'a str>,
    pub expires: Option<&'a Timestamp>,
    pub metadata: Option<&'a Metadata>,
}

impl StoredHeaders<'_> {
    pub fn to_headers(&self) -> Vec<Header> {
        let mut h = Vec::new();
        let mut add = |n: &str, v: Option<&str>| {
            if let Some(v) = v {
                h.push(Header { name: n.to_string(), value: v.to_string() });
            }
        };
        add("content-type", self.content_type);
        add("content-encoding", self.content_encoding);
        add("content-disposition", self.content_disposition);
        add("content-language", self.content_language);
        add("cache-control", self.cache_control);
        let expires = self.expires.and_then(|t| {
            let mut buf = Vec::new();
            t.format(TimestampFormat::HttpDate, &mut buf).ok()?;
            String::from_utf8(buf).ok()
        });
        add("expires", expires.as_deref());
        if let Some(m) = self.metadata {
            let mut meta: Vec<_> = m.iter().collect();
            meta.sort();
            for (k, v) in meta {
                h.push(Header { name: format!("x-amz-meta-{}", k.to_ascii_lowercase()), value: v.clone() });
            }
        }
        h
    }
}

/// Read access to the headers an object keeps.
pub struct ObjectHeaders<'a>(pub &'a [Header]);

impl ObjectHeaders<'_> {
    pub fn get(&self, name: &str) -> Option<String> {
        self.0.iter().find(|h| h.name == name).map(|h| h.value.clone())
    }

    pub fn expires(&self) -> Option<Timestamp> {
        self.get("expires").and_then(|v| Timestamp::parse(TimestampFormat::HttpDate, &v).ok())
    }

    pub fn metadata(&self) -> Option<Metadata> {
        let m: Metadata = self
            .0
            .iter()
            .filter_map(|h| h.name.strip_prefix("x-amz-meta-").map(|k| (k.to_string(), h.value.clone())))
            .collect();
        (!m.is_empty()).then_some(m)
    }
}
