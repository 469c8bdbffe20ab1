//! ListObjects (v1) and ListObjectsV2.

use base64::Engine;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::Hangar;
use super::common::authorized;
use super::common::{etag, timestamp_ms};
use crate::listing::{ListParams, Listed, Start, list};

/// What `encoding-type=url` leaves alone: unreserved characters and `/`, as AWS does.
const KEEP: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'/');

pub(super) fn encoder(encoding: Option<&EncodingType>) -> S3Result<impl Fn(String) -> String + use<>> {
    let url = match encoding.map(|e| e.as_str()) {
        None => false,
        Some("url") => true,
        Some(other) => return Err(s3_error!(InvalidArgument, "invalid encoding-type `{other}`")),
    };
    Ok(move |s: String| if url { utf8_percent_encode(&s, KEEP).to_string() } else { s })
}

fn max_keys(m: Option<i32>) -> S3Result<usize> {
    match m {
        None => Ok(1000),
        Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "max-keys must not be negative")),
        Some(n) => Ok((n as usize).min(1000)),
    }
}

fn contents(listed: &mut Listed, enc: &impl Fn(String) -> String) -> (Vec<Object>, Vec<CommonPrefix>) {
    let objects = std::mem::take(&mut listed.objects)
        .into_iter()
        .map(|(key, o)| Object {
            key: Some(enc(key)),
            size: Some(o.size as i64),
            e_tag: Some(etag(&o.etag)),
            last_modified: Some(timestamp_ms(o.last_modified_ms)),
            storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
            ..Default::default()
        })
        .collect();
    let prefixes = std::mem::take(&mut listed.common_prefixes)
        .into_iter()
        .map(|p| CommonPrefix { prefix: Some(enc(p)) })
        .collect();
    (objects, prefixes)
}

pub async fn list_objects(h: &Hangar, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
    let (_, bucket) = authorized(&req)?;
    let i = req.input;
    let encoding_type = i.encoding_type.clone();
    let enc = encoder(encoding_type.as_ref())?;
    let prefix = i.prefix.clone().unwrap_or_default();
    // An empty delimiter is no delimiter, as in AWS.
    let delimiter = i.delimiter.clone().filter(|d| !d.is_empty());
    let max = max_keys(i.max_keys)?;
    let start = i.marker.clone().filter(|m| !m.is_empty()).map(Start::After).unwrap_or(Start::Beginning);
    let mut listed = list(
        &h.store,
        &bucket.id,
        ListParams { prefix: &prefix, delimiter: delimiter.as_deref(), start, max_keys: max },
    )
    .await?;
    let (contents, common_prefixes) = contents(&mut listed, &enc);
    Ok(S3Response::new(ListObjectsOutput {
        name: Some(i.bucket),
        prefix: Some(enc(prefix)),
        marker: Some(i.marker.map(&enc).unwrap_or_default()),
        max_keys: Some(max as i32),
        is_truncated: Some(listed.truncated),
        next_marker: if listed.truncated { listed.last.map(&enc) } else { None },
        delimiter: delimiter.map(&enc),
        encoding_type,
        contents: Some(contents),
        common_prefixes: Some(common_prefixes),
        ..Default::default()
    }))
}

pub async fn list_objects_v2(
    h: &Hangar,
    req: S3Request<ListObjectsV2Input>,
) -> S3Result<S3Response<ListObjectsV2Output>> {
    let (_, bucket) = authorized(&req)?;
    let i = req.input;
    let encoding_type = i.encoding_type.clone();
    let enc = encoder(encoding_type.as_ref())?;
    let prefix = i.prefix.clone().unwrap_or_default();
    // An empty delimiter is no delimiter, as in AWS.
    let delimiter = i.delimiter.clone().filter(|d| !d.is_empty());
    let max = max_keys(i.max_keys)?;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    // The continuation token is where the next page starts; it wins over start-after.
    let start = match (&i.continuation_token, &i.start_after) {
        (Some(t), _) => Start::At(
            b64.decode(t)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| s3_error!(InvalidArgument, "invalid continuation token"))?,
        ),
        (None, Some(sa)) if !sa.is_empty() => Start::After(sa.clone()),
        _ => Start::Beginning,
    };
    let mut listed = list(
        &h.store,
        &bucket.id,
        ListParams { prefix: &prefix, delimiter: delimiter.as_deref(), start, max_keys: max },
    )
    .await?;
    let (contents, common_prefixes) = contents(&mut listed, &enc);
    Ok(S3Response::new(ListObjectsV2Output {
        name: Some(i.bucket),
        prefix: Some(enc(prefix)),
        max_keys: Some(max as i32),
        key_count: Some((contents.len() + common_prefixes.len()) as i32),
        continuation_token: i.continuation_token,
        is_truncated: Some(listed.truncated),
        next_continuation_token: listed.next_start.map(|s| b64.encode(s)),
        delimiter: delimiter.map(&enc),
        encoding_type,
        start_after: i.start_after.map(&enc),
        contents: Some(contents),
        common_prefixes: Some(common_prefixes),
        ..Default::default()
    }))
}
