//! What the handlers share: who is calling, which bucket, object keys, stored headers.

use hangar_model::Found;
use hangar_proto::model::{AccessKey, Bucket, Header, Object};
use s3s::auth::Credentials;
use s3s::dto::{ETag, Metadata, Timestamp, TimestampFormat};
use s3s::{S3Request, S3Result, s3_error};

use super::Hangar;
use crate::access::{self, Authorized, Right};
use crate::errors::OrS3;

/// Longest object key S3 accepts, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// Whether XML 1.0 can carry `c`: keys holding characters it cannot would make every
/// listing that returns them unparseable, so they are refused (tab, line feed and carriage
/// return are fine; listings with `encoding-type=url` carry them percent-encoded).
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

pub fn check_key(key: &str) -> S3Result<()> {
    if key.is_empty() {
        return Err(s3_error!(InvalidArgument, "object key must not be empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(s3_error!(KeyTooLongError, "object key is longer than 1024 bytes"));
    }
    if let Some(c) = key.chars().find(|c| !xml_char(*c)) {
        return Err(s3_error!(
            InvalidArgument,
            "object keys may not contain control characters XML cannot carry (found U+{:04X})",
            c as u32
        ));
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

/// The caller's key and the request's bucket, as the access check found them (the right
/// the operation needs is in `access::required`).
pub(super) fn authorized<T>(req: &S3Request<T>) -> S3Result<(AccessKey, Bucket)> {
    match req.extensions.get::<Authorized>() {
        Some(a) => Ok((a.key.clone(), a.bucket.clone())),
        None => Err(s3_error!(InternalError, "the access check did not run for this operation")),
    }
}

/// The access key id a signed request carries (anonymous requests never reach a handler).
fn key_id(creds: Option<&Credentials>) -> S3Result<&str> {
    creds.map(|c| c.access_key.as_str()).ok_or_else(|| s3_error!(AccessDenied))
}

impl Hangar {
    /// The calling key (s3s verified its signature already).
    pub(super) async fn caller(&self, creds: Option<&Credentials>) -> S3Result<AccessKey> {
        access::caller(&self.lookups, key_id(creds)?).await
    }

    /// A bucket other than the request's (a copy's source), when the caller holds `right`
    /// on it.
    pub(super) async fn other_bucket(&self, creds: Option<&Credentials>, name: &str, right: Right) -> S3Result<Bucket> {
        Ok(access::authorize(&self.lookups, key_id(creds)?, name, right).await?.bucket)
    }

    pub(super) async fn get_object_entry(&self, bucket: &Bucket, key: &str) -> S3Result<Option<Found<Object>>> {
        self.store.object(&bucket.id, key).await.or_s3()
    }

    pub(super) async fn object_or_404(&self, bucket: &Bucket, key: &str) -> S3Result<Found<Object>> {
        self.get_object_entry(bucket, key).await?.ok_or_else(|| s3_error!(NoSuchKey, "the object does not exist"))
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

#[cfg(test)]
mod tests {
    use super::check_key;

    #[test]
    fn keys_xml_cannot_carry_are_refused() {
        for ok in ["a", "dir/file.txt", "tab\there", "line\nfeed", "cr\rhere", "ünïcødé 🚀", &"k".repeat(1024)] {
            assert!(check_key(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", "x\0y", "bell\u{7}", "esc\u{1b}", "\u{fffe}", &"k".repeat(1025)] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
    }
}
