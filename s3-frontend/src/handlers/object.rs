//! Object operations: PUT, GET, HEAD, DELETE, DeleteObjects, CopyObject.

use std::ops::Range;

use base64::Engine;
use hangar_common::config::INLINE_THRESHOLD;
use hangar_common::ids::{now_ms, random_id};
use hangar_model::Found;
use hangar_model::version::Owner;
use hangar_proto::model::{Bucket, Header, Object, PartData};
use md5::Digest;
use s3s::checksum::ChecksumHasher;
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use super::Hangar;
use super::acl::only_private;
use super::common::authorized;
use super::common::{ObjectHeaders, StoredHeaders, check_key, etag, timestamp_ms};
use super::tagging;
use crate::access::Right;
use crate::conditions::Conditions;
use crate::errors::{OrS3, custom_error};
use crate::http_layer::{ChunkFraming, bounded};
use crate::quota::Change;
use crate::read_pipeline::object_body;
use crate::sse_c::{self, CustomerKey};
use crate::write_pipeline::{BodyHashes, Stored, StoredData, discard, store};
use hangar_model::conditional::Claim;

/// Largest single PUT, as in AWS.
pub const MAX_PUT_SIZE: i64 = crate::write_pipeline::MAX_REQUEST_BODY as i64;

/// Checksums a client declared, in headers or trailers: (header name, base64 value).
pub struct DeclaredChecksums(pub Vec<(&'static str, String)>);

impl DeclaredChecksums {
    /// From the checksums an input gives (`checksums::given!`).
    pub fn new(given: [(&'static str, &Option<String>); 5]) -> Self {
        Self(given.into_iter().filter_map(|(n, v)| v.clone().map(|v| (n, v))).collect())
    }

    /// A hasher for every algorithm that may be declared, in headers now or in trailers later.
    pub fn hasher(&self, algorithm: Option<&ChecksumAlgorithm>, trailer_names: &[String]) -> ChecksumHasher {
        let mut h = ChecksumHasher::default();
        let mut names: Vec<String> = self.0.iter().map(|(n, _)| n.to_string()).collect();
        names.extend(trailer_names.iter().cloned());
        if let Some(a) = algorithm {
            names.push(format!("x-amz-checksum-{}", a.as_str().to_ascii_lowercase()));
        }
        for n in names {
            match n.as_str() {
                "x-amz-checksum-crc32" => h.crc32 = Some(Default::default()),
                "x-amz-checksum-crc32c" => h.crc32c = Some(Default::default()),
                "x-amz-checksum-sha1" => h.sha1 = Some(Default::default()),
                "x-amz-checksum-sha256" => h.sha256 = Some(Default::default()),
                "x-amz-checksum-crc64nvme" => h.crc64nvme = Some(Default::default()),
                _ => {}
            }
        }
        h
    }
}

/// Trailer names announced in `x-amz-trailer`.
pub fn announced_trailers(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .get_all("x-amz-trailer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .collect()
}

/// The hex SHA-256 the client signed the payload with, when it signed the payload itself.
pub fn signed_payload_sha256(headers: &http::HeaderMap) -> Option<String> {
    let v = headers.get("x-amz-content-sha256")?.to_str().ok()?;
    (v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit())).then(|| v.to_ascii_lowercase())
}

/// What a verified body keeps: its MD5 and the checksums the client declared.
pub struct Verified {
    pub md5: [u8; 16],
    pub checksums: Vec<Header>,
}

/// Sets the `checksum_*` fields of an S3 output from stored checksums.
macro_rules! set_checksums {
    ($out:expr, $list:expr) => {
        for c in $list {
            let v = Some(c.value.clone());
            match c.name.as_str() {
                "x-amz-checksum-crc32" => $out.checksum_crc32 = v,
                "x-amz-checksum-crc32c" => $out.checksum_crc32c = v,
                "x-amz-checksum-sha1" => $out.checksum_sha1 = v,
                "x-amz-checksum-sha256" => $out.checksum_sha256 = v,
                _ => $out.checksum_crc64nvme = v,
            }
        }
    };
}
pub(crate) use set_checksums;

/// The computed checksum named `name` (x-amz-checksum-*).
fn computed_value(computed: &s3s::dto::Checksum, name: &str) -> Option<String> {
    match name {
        "x-amz-checksum-crc32" => computed.checksum_crc32.clone(),
        "x-amz-checksum-crc32c" => computed.checksum_crc32c.clone(),
        "x-amz-checksum-sha1" => computed.checksum_sha1.clone(),
        "x-amz-checksum-sha256" => computed.checksum_sha256.clone(),
        "x-amz-checksum-crc64nvme" => computed.checksum_crc64nvme.clone(),
        _ => None,
    }
}

/// Checks the body against what the client declared: Content-MD5, the signed SHA-256 and
/// x-amz-checksum-* (headers and trailers). Returns the checksums to keep with the object:
/// the declared ones, and the one of `algorithm` (computed here when not declared).
pub fn verify_body(
    hashes: BodyHashes,
    content_md5: Option<&str>,
    signed_sha256: Option<&str>,
    mut declared: DeclaredChecksums,
    trailers: Option<http::HeaderMap>,
    algorithm: Option<&ChecksumAlgorithm>,
) -> Result<Verified, S3Error> {
    let md5: [u8; 16] = hashes.md5.finalize().into();
    let sha = hashes.sha256.map(|s| hex::encode(s.finalize()));
    let computed = hashes.checksum.finalize();
    if let Some(want) = content_md5 {
        let ok = base64::engine::general_purpose::STANDARD.decode(want).map(|w| w == md5).unwrap_or(false);
        if !ok {
            return Err(s3_error!(BadDigest, "the Content-MD5 you specified did not match what was received"));
        }
    }
    if let (Some(want), Some(got)) = (signed_sha256, sha.as_deref())
        && want != got
    {
        return Err(custom_error("XAmzContentSHA256Mismatch", 400, "the payload does not match its signed SHA-256"));
    }
    if let Some(t) = trailers {
        for name in [
            "x-amz-checksum-crc32",
            "x-amz-checksum-crc32c",
            "x-amz-checksum-sha1",
            "x-amz-checksum-sha256",
            "x-amz-checksum-crc64nvme",
        ] {
            if let Some(v) = t.get(name).and_then(|v| v.to_str().ok()) {
                declared.0.retain(|(n, _)| *n != name);
                declared.0.push((name, v.to_string()));
            }
        }
    }
    let mut keep = Vec::new();
    for (name, want) in declared.0 {
        if computed_value(&computed, name).as_deref() != Some(want.as_str()) {
            return Err(S3Error::with_message(S3ErrorCode::BadDigest, format!("{name} does not match the data")));
        }
        keep.push(Header { name: name.to_string(), value: want });
    }
    if let Some(a) = algorithm {
        let name = format!("x-amz-checksum-{}", a.as_str().to_ascii_lowercase());
        if !keep.iter().any(|k| k.name == name)
            && let Some(value) = computed_value(&computed, &name)
        {
            keep.push(Header { name, value });
        }
    }
    Ok(Verified { md5, checksums: keep })
}

/// The `BodyClaims` of an upload request (PutObject and UploadPart inputs have the same
/// fields).
macro_rules! body_claims {
    ($input:ident, $headers:ident, $extensions:ident, $trailers:ident) => {
        $crate::handlers::object::BodyClaims {
            headers: &$headers,
            extensions: &$extensions,
            content_md5: $input.content_md5.as_deref(),
            declared: $crate::handlers::object::DeclaredChecksums::new($crate::checksums::given!($input)),
            algorithm: $input.checksum_algorithm.as_ref(),
            trailers: $trailers,
        }
    };
}
pub(crate) use body_claims;

/// The SSE-C key an input's three fields give (`sse_c::CustomerKey::from_headers`).
macro_rules! sse_key {
    ($input:expr, $alg:ident, $key:ident, $md5:ident) => {
        $crate::sse_c::CustomerKey::from_headers($input.$alg.as_deref(), $input.$key.as_deref(), $input.$md5.as_deref())
    };
}
pub(crate) use sse_key;

/// The ETag of data whose MD5 is `md5`: that MD5, or for data encrypted with a customer key,
/// a value keyed with it (`CustomerKey::etag`).
pub fn data_etag(key: Option<&CustomerKey>, md5: &[u8]) -> String {
    match key {
        Some(k) => k.etag(md5),
        None => hex::encode(md5),
    }
}

/// The stored form of what `store` wrote: inline data, or the object's single part.
fn object_data(stored: &Stored, etag_hex: &str) -> (Option<bytes::Bytes>, Vec<PartData>) {
    match &stored.data {
        StoredData::Inline(b) => (Some(b.clone()), vec![]),
        StoredData::Blocks { data_version, blocks } => (
            None,
            vec![PartData {
                part_number: 1,
                data_version: data_version.clone().into(),
                size: stored.size,
                etag: etag_hex.to_string(),
                checksums: vec![],
                blocks: blocks.clone(),
            }],
        ),
    }
}

/// What a request says about its body, besides the body.
pub struct BodyClaims<'a> {
    pub headers: &'a http::HeaderMap,
    pub extensions: &'a http::Extensions,
    pub content_md5: Option<&'a str>,
    pub declared: DeclaredChecksums,
    pub algorithm: Option<&'a ChecksumAlgorithm>,
    pub trailers: Option<s3s::TrailingHeaders>,
}

/// An aws-chunked body must have come whole: its final chunk, the trailers it announced,
/// and exactly the decoded length it declared.
fn check_streaming(claims: &BodyClaims<'_>, received: u64, announced: &[String]) -> S3Result<()> {
    let Some(framing) = claims.extensions.get::<ChunkFraming>() else { return Ok(()) };
    if let Some(why) = framing.incomplete(announced) {
        return Err(S3Error::with_message(S3ErrorCode::IncompleteBody, why));
    }
    let declared = claims
        .headers
        .get("x-amz-decoded-content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared != Some(received) {
        return Err(S3Error::with_message(
            S3ErrorCode::IncompleteBody,
            format!(
                "the body decoded to {received} bytes, x-amz-decoded-content-length says {}",
                declared.map(|d| d.to_string()).unwrap_or_else(|| "nothing".into())
            ),
        ));
    }
    Ok(())
}

/// Streams a request body into storage for `owner` (encrypted with `key`, when given) and
/// checks it against everything the client declared; on a mismatch nothing stored is kept.
pub async fn receive(
    h: &Hangar,
    owner: Owner,
    body: Option<StreamingBlob>,
    allow_inline: bool,
    claims: BodyClaims<'_>,
    key: Option<&CustomerKey>,
) -> S3Result<(Stored, Verified)> {
    let signed_sha = signed_payload_sha256(claims.headers);
    let announced = announced_trailers(claims.headers);
    let hashes = BodyHashes::new(signed_sha.is_some(), claims.declared.hasher(claims.algorithm, &announced));
    // A body sent without any length was set aside for the handler (`unframed`).
    let body = crate::unframed::UnframedBody::take(claims.extensions).or(body);
    let body =
        body.unwrap_or_else(|| StreamingBlob::wrap(futures::stream::empty::<Result<bytes::Bytes, std::io::Error>>()));
    let (stored, hashes) = store(&h.store, owner, body, allow_inline, h.cfg.body_timeout, hashes, key).await?;
    let checked = check_streaming(&claims, stored.size, &announced).and_then(|()| {
        let trailers = claims.trailers.and_then(|t| t.take());
        verify_body(hashes, claims.content_md5, signed_sha.as_deref(), claims.declared, trailers, claims.algorithm)
    });
    match checked {
        Ok(v) => Ok((stored, v)),
        Err(e) => {
            discard(&h.store, &stored).await;
            Err(e)
        }
    }
}

/// Checks what came against the bucket's quotas when no length was announced (or a smaller
/// one); what was stored is released when it does not fit.
pub async fn check_quota_after(
    h: &Hangar,
    bucket: &Bucket,
    stored: &Stored,
    announced: u64,
    replaced: Option<u64>,
) -> S3Result<()> {
    if stored.size <= announced {
        return Ok(());
    }
    if let Err(e) = h.quotas.check(&h.store, bucket, Change { new_size: stored.size, replaced }).await {
        discard(&h.store, stored).await;
        return Err(e);
    }
    Ok(())
}

/// The answer of the read of a PUT's previous value (taken once).
async fn read_previous(
    read: &mut Option<AbortOnDropHandle<hangar_common::Result<Option<Found<Object>>>>>,
) -> S3Result<Option<Found<Object>>> {
    let read = read.take().ok_or_else(|| s3_error!(InternalError, "the previous value was read twice"))?;
    match read.await {
        Ok(r) => r.or_s3(),
        Err(e) => Err(s3_error!(InternalError, "reading the previous value failed: {e}")),
    }
}

pub async fn put_object(h: &Hangar, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
    let (_, bucket) = authorized(&req)?;
    let S3Request { input, headers, trailing_headers, extensions, .. } = req;
    check_key(&input.key)?;
    only_private(
        input.acl.as_ref().map(|a| a.as_str()),
        &[
            input.grant_full_control.as_ref(),
            input.grant_read.as_ref(),
            input.grant_read_acp.as_ref(),
            input.grant_write_acp.as_ref(),
        ],
    )?;
    let tags = input.tagging.as_deref().map(tagging::from_header).transpose()?.flatten();
    let sse = sse_key!(input, sse_customer_algorithm, sse_customer_key, sse_customer_key_md5)?;
    if sse.is_some() && input.server_side_encryption.is_some() {
        return Err(s3_error!(
            InvalidArgument,
            "Server Side Encryption with Customer provided key is incompatible with the encryption method specified"
        ));
    }
    if input.content_length.is_some_and(|l| l > MAX_PUT_SIZE) {
        return Err(s3_error!(EntityTooLarge, "a single PUT may hold at most 5 GiB; use multipart upload"));
    }
    // The value this PUT replaces: its timestamp orders the new one after it, its size counts
    // for quotas. Conditional headers and quotas refuse a PUT before its body is read, so they
    // need it first. Otherwise a body stored in blocks takes three writes, and the read runs
    // beside them; a body small enough to live in its entry is written without it (one round
    // trip in all; `Store::put_inline_object` says how it still orders after the value).
    let conditional = input.if_match.is_some() || input.if_none_match.is_some();
    let quota = bucket.max_size > 0 || bucket.max_objects > 0;
    let inline = !conditional
        && !quota
        && input.content_length.and_then(|l| usize::try_from(l).ok()).is_some_and(|l| l <= INLINE_THRESHOLD);
    let mut previous = (!inline).then(|| {
        let (store, bucket_id, key) = (h.store.clone(), bucket.id.clone(), input.key.clone());
        AbortOnDropHandle::new(tokio::spawn(async move { store.object(&bucket_id, &key).await }.in_current_span()))
    });
    let announced = input.content_length.and_then(|l| u64::try_from(l).ok()).unwrap_or(0);
    let mut prev = None;
    if conditional || quota {
        let p = read_previous(&mut previous).await?;
        check_write_conditions(input.if_match.as_ref(), input.if_none_match.as_ref(), p.as_ref().map(|p| &p.value))?;
        let replaced = p.as_ref().map(|p| p.value.size);
        h.quotas.check(&h.store, &bucket, Change { new_size: announced, replaced }).await?;
        prev = Some(p);
    }
    let claims = body_claims!(input, headers, extensions, trailing_headers);
    let owner = Owner::Object { bucket_id: bucket.id.to_vec(), key: input.key.clone() };
    let (stored, Verified { md5, checksums }) = receive(h, owner, input.body, true, claims, sse.as_ref()).await?;
    let unread = inline && matches!(stored.data, StoredData::Inline(_));
    let prev = match prev {
        Some(p) => p,
        None if unread => None,
        None => {
            let read = match previous {
                Some(_) => read_previous(&mut previous).await,
                // Announced small, stored in blocks: a block_size below the inline bound, or
                // a body longer than announced (refused by then).
                None => h.store.object(&bucket.id, &input.key).await.or_s3(),
            };
            match read {
                Ok(p) => p,
                Err(e) => {
                    discard(&h.store, &stored).await;
                    return Err(e);
                }
            }
        }
    };
    let replaced = prev.as_ref().map(|p| p.value.size);
    check_quota_after(h, &bucket, &stored, announced, replaced).await?;
    let headers = StoredHeaders {
        content_type: input.content_type.as_deref(),
        content_encoding: input.content_encoding.as_deref(),
        content_disposition: input.content_disposition.as_deref(),
        content_language: input.content_language.as_deref(),
        cache_control: input.cache_control.as_deref(),
        expires: input.expires.as_ref(),
        metadata: input.metadata.as_ref(),
    }
    .to_headers();
    let etag_hex = data_etag(sse.as_ref(), &md5);
    let (inline_data, parts) = object_data(&stored, &etag_hex);
    let obj = Object {
        version_id: random_id().into(),
        size: stored.size,
        etag: etag_hex.clone(),
        last_modified_ms: now_ms(),
        headers,
        inline_data,
        parts,
        checksums: checksums.clone(),
        tags,
        tags_ts: 0,
        sse_customer_key_md5: sse.as_ref().map(|k| k.md5.clone()).unwrap_or_default(),
        checksum_type: String::new(),
    };
    let (if_match, if_none_match) = (input.if_match.as_ref(), input.if_none_match.as_ref());
    let written = if if_match.is_some() || if_none_match.is_some() {
        let check = |cur: Option<&Object>| check_write_conditions(if_match, if_none_match, cur);
        match claim(h, &bucket.id, &input.key, &obj, None, check).await {
            Ok(timestamp) => h.store.put_object_at(&bucket.id, &input.key, &obj, timestamp).await.or_s3(),
            Err(e) => Err(e),
        }
    } else if unread {
        h.store.put_inline_object(&bucket.id, &input.key, &obj).await.or_s3()
    } else {
        h.store.put_object(&bucket.id, &input.key, &obj, prev.map(|p| p.timestamp)).await.or_s3()
    };
    if let Err(e) = written {
        if e.code() == &S3ErrorCode::PreconditionFailed || e.code() == &S3ErrorCode::NoSuchKey {
            discard(&h.store, &stored).await;
        }
        return Err(e);
    }
    h.quotas.record(&bucket, Change { new_size: obj.size, replaced });
    let mut out = PutObjectOutput {
        e_tag: Some(etag(&etag_hex)),
        sse_customer_algorithm: sse.as_ref().map(|_| sse_c::ALGORITHM.into()),
        sse_customer_key_md5: sse.map(|k| k.md5),
        ..Default::default()
    };
    set_checksums!(out, &checksums);
    Ok(S3Response::new(out))
}

/// Claims a conditional write of `obj` (see `hangar_model::conditional`): the timestamp to
/// write it with, or the S3 error when the condition fails or another conditional write of
/// the key won meanwhile (412, as AWS answers the loser of such a race).
pub async fn claim(
    h: &Hangar,
    bucket_id: &[u8],
    key: &str,
    obj: &Object,
    upload_id: Option<&[u8]>,
    check: impl FnOnce(Option<&Object>) -> S3Result<()>,
) -> S3Result<u64> {
    match h.store.claim_object(bucket_id, key, obj, upload_id, check).await.or_s3()? {
        Claim::Won(timestamp) => Ok(timestamp),
        Claim::Refused(e) => Err(e),
        Claim::Lost => Err(s3_error!(PreconditionFailed, "a concurrent conditional write of this key won")),
    }
}

/// If-Match / If-None-Match on writes: a write only where the condition holds.
pub fn check_write_conditions(
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    prev: Option<&Object>,
) -> S3Result<()> {
    if let Some(c) = if_none_match
        && let Some(p) = prev
        && (matches!(c, ETagCondition::Any) || c.as_etag().is_some_and(|e| e.value() == p.etag))
    {
        return Err(s3_error!(PreconditionFailed, "the object already exists"));
    }
    if let Some(c) = if_match {
        let Some(p) = prev else { return Err(s3_error!(NoSuchKey, "the object does not exist")) };
        Conditions { if_match: Some(c), ..Default::default() }.check_strict(&p.etag, p.last_modified_ms)?;
    }
    Ok(())
}

/// The byte range a GET or HEAD serves, and its part count when asked by part number.
fn select_range(
    obj: &Object,
    range: Option<&s3s::dto::Range>,
    part_number: Option<i32>,
) -> S3Result<(Range<u64>, bool, Option<i32>)> {
    if let Some(n) = part_number {
        if !(1..=10_000).contains(&n) {
            return Err(custom_error("InvalidPartNumber", 400, "part number must be an integer between 1 and 10000"));
        }
        if range.is_some() {
            return Err(s3_error!(InvalidRequest, "Range and partNumber cannot both be given"));
        }
        if obj.parts.is_empty() {
            return if n == 1 {
                Ok((0..obj.size, false, Some(1)))
            } else {
                Err(custom_error("InvalidPartNumber", 400, "the object has only one part"))
            };
        }
        let mut start = 0;
        for p in &obj.parts {
            if p.part_number as i32 == n {
                return Ok((start..start + p.size, true, Some(obj.parts.len() as i32)));
            }
            start += p.size;
        }
        return Err(custom_error("InvalidPartNumber", 400, format!("the object has {} parts", obj.parts.len())));
    }
    match range {
        None => Ok((0..obj.size, false, None)),
        Some(r) => match r.check(obj.size) {
            Ok(rg) => Ok((rg, true, None)),
            Err(_) => {
                let mut e = S3Error::with_message(S3ErrorCode::InvalidRange, "the requested range is not satisfiable");
                let mut hm = http::HeaderMap::new();
                if let Ok(v) = http::HeaderValue::from_str(&format!("bytes */{}", obj.size)) {
                    hm.insert(http::header::CONTENT_RANGE, v);
                }
                e.set_headers(hm);
                Err(e)
            }
        },
    }
}

fn content_range(r: &Range<u64>, size: u64) -> String {
    if r.is_empty() { format!("bytes */{size}") } else { format!("bytes {}-{}/{size}", r.start, r.end - 1) }
}

fn checksum_of(obj: &Object, name: &str) -> Option<String> {
    obj.checksums.iter().find(|c| c.name == name).map(|c| c.value.clone())
}

macro_rules! object_output {
    ($ty:ident, $obj:expr, $range:expr, $partial:expr, $parts:expr, $with_checksums:expr) => {{
        let obj: &Object = $obj;
        let hd = ObjectHeaders(&obj.headers);
        let r: &Range<u64> = $range;
        let cks = $with_checksums && !$partial;
        $ty {
            accept_ranges: Some("bytes".into()),
            content_length: Some((r.end - r.start) as i64),
            content_range: $partial.then(|| content_range(r, obj.size)),
            content_type: hd.get("content-type"),
            content_encoding: hd.get("content-encoding"),
            content_disposition: hd.get("content-disposition"),
            content_language: hd.get("content-language"),
            cache_control: hd.get("cache-control"),
            expires: hd.expires(),
            metadata: hd.metadata(),
            e_tag: Some(etag(&obj.etag)),
            last_modified: Some(timestamp_ms(obj.last_modified_ms)),
            parts_count: $parts,
            checksum_crc32: if cks { checksum_of(obj, "x-amz-checksum-crc32") } else { None },
            checksum_crc32c: if cks { checksum_of(obj, "x-amz-checksum-crc32c") } else { None },
            checksum_sha1: if cks { checksum_of(obj, "x-amz-checksum-sha1") } else { None },
            checksum_sha256: if cks { checksum_of(obj, "x-amz-checksum-sha256") } else { None },
            checksum_crc64nvme: if cks { checksum_of(obj, "x-amz-checksum-crc64nvme") } else { None },
            sse_customer_algorithm: (!obj.sse_customer_key_md5.is_empty()).then(|| sse_c::ALGORITHM.into()),
            sse_customer_key_md5: (!obj.sse_customer_key_md5.is_empty()).then(|| obj.sse_customer_key_md5.clone()),
            checksum_type: (cks && !obj.checksums.is_empty()).then(|| checksum_type_of(obj)),
            ..Default::default()
        }
    }};
}

/// The checksum type of an object's checksums: FULL_OBJECT for a single PUT's.
fn checksum_type_of(obj: &Object) -> ChecksumType {
    let t = if obj.checksum_type.is_empty() { crate::checksums::FULL_OBJECT } else { obj.checksum_type.as_str() };
    ChecksumType::from(t.to_string())
}

fn checksum_mode(m: Option<&ChecksumMode>) -> bool {
    m.is_some_and(|m| m.as_str().eq_ignore_ascii_case("ENABLED"))
}

pub async fn get_object(h: &Hangar, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
    let (_, bucket) = authorized(&req)?;
    let i = &req.input;
    let found = h.object_or_404(&bucket, &i.key).await?;
    let obj = &found.value;
    let sse = sse_key!(i, sse_customer_algorithm, sse_customer_key, sse_customer_key_md5)?;
    sse_c::check(&obj.sse_customer_key_md5, sse.as_ref())?;
    Conditions {
        if_match: i.if_match.as_ref(),
        if_none_match: i.if_none_match.as_ref(),
        if_modified_since: i.if_modified_since.as_ref(),
        if_unmodified_since: i.if_unmodified_since.as_ref(),
    }
    .check_read(&obj.etag, obj.last_modified_ms)?;
    let (range, partial, parts) = select_range(obj, i.range.as_ref(), i.part_number)?;
    let body = object_body(&h.store, obj, range.clone(), sse.as_ref()).await?;
    let mut out = object_output!(GetObjectOutput, obj, &range, partial, parts, checksum_mode(i.checksum_mode.as_ref()));
    out.body = Some(body);
    out.tag_count = tagging::count(obj.tags.as_ref());
    Ok(S3Response::new(out))
}

pub async fn head_object(h: &Hangar, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
    let (_, bucket) = authorized(&req)?;
    let i = &req.input;
    let found = h.object_or_404(&bucket, &i.key).await?;
    let obj = &found.value;
    let sse = sse_key!(i, sse_customer_algorithm, sse_customer_key, sse_customer_key_md5)?;
    sse_c::check(&obj.sse_customer_key_md5, sse.as_ref())?;
    Conditions {
        if_match: i.if_match.as_ref(),
        if_none_match: i.if_none_match.as_ref(),
        if_modified_since: i.if_modified_since.as_ref(),
        if_unmodified_since: i.if_unmodified_since.as_ref(),
    }
    .check_read(&obj.etag, obj.last_modified_ms)?;
    let (range, partial, parts) = select_range(obj, i.range.as_ref(), i.part_number)?;
    let mut resp = S3Response::new(object_output!(
        HeadObjectOutput,
        obj,
        &range,
        partial,
        parts,
        checksum_mode(i.checksum_mode.as_ref())
    ));
    // s3s's HeadObject output has no field for it; GET and HEAD answer alike.
    if let Some(n) = tagging::count(obj.tags.as_ref()) {
        resp.headers.insert("x-amz-tagging-count", http::HeaderValue::from(n));
    }
    Ok(resp)
}

/// Deletes one object; deleting a missing object succeeds, as in S3. Its data is
/// released by the data nodes.
async fn delete_one(h: &Hangar, bucket: &hangar_proto::model::Bucket, key: &str) -> S3Result<()> {
    check_key(key)?;
    h.store.delete_object(&bucket.id, key).await.or_s3()?;
    Ok(())
}

pub async fn delete_object(h: &Hangar, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
    let (_, bucket) = authorized(&req)?;
    delete_one(h, &bucket, &req.input.key).await?;
    h.quotas.forget(&bucket);
    Ok(S3Response::new(DeleteObjectOutput::default()))
}

/// Most keys one DeleteObjects request may name, as in AWS.
const MAX_DELETE_KEYS: usize = 1000;

pub async fn delete_objects(
    h: &Hangar,
    req: S3Request<DeleteObjectsInput>,
) -> S3Result<S3Response<DeleteObjectsOutput>> {
    let (_, bucket) = authorized(&req)?;
    let objects = &req.input.delete.objects;
    if objects.len() > MAX_DELETE_KEYS {
        return Err(s3_error!(MalformedXML, "at most 1000 keys may be deleted at once"));
    }
    let quiet = req.input.delete.quiet.unwrap_or(false);
    let (mut deleted, mut errors) = (Vec::new(), Vec::new());
    for o in objects {
        match delete_one(h, &bucket, &o.key).await {
            Ok(()) if quiet => {}
            Ok(()) => deleted.push(DeletedObject { key: Some(o.key.clone()), ..Default::default() }),
            Err(e) => errors.push(Error {
                code: Some(e.code().as_str().to_string()),
                key: Some(o.key.clone()),
                message: e.message().map(str::to_string),
                version_id: None,
            }),
        }
    }
    h.quotas.forget(&bucket);
    Ok(S3Response::new(DeleteObjectsOutput { deleted: Some(deleted), errors: Some(errors), ..Default::default() }))
}

/// Resolves `x-amz-copy-source` to a readable object and checks its conditions.
pub async fn copy_source(
    h: &Hangar,
    creds: Option<&s3s::auth::Credentials>,
    src: &CopySource,
    cond: Conditions<'_>,
) -> S3Result<Found<Object>> {
    let CopySource::Bucket { bucket, key, version_id } = src else {
        return Err(s3_error!(NotImplemented, "only bucket/key copy sources are supported"));
    };
    if version_id.is_some() {
        return Err(s3_error!(NotImplemented, "versioning is not supported: a copy source cannot name a version"));
    }
    let b = h.other_bucket(creds, bucket, Right::Read).await?;
    let found = h.object_or_404(&b, key).await?;
    cond.check_strict(&found.value.etag, found.value.last_modified_ms)?;
    Ok(found)
}

pub async fn copy_object(h: &Hangar, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
    let creds = req.credentials.as_ref();
    let i = &req.input;
    let (_, bucket) = authorized(&req)?;
    check_key(&i.key)?;
    only_private(
        i.acl.as_ref().map(|a| a.as_str()),
        &[i.grant_full_control.as_ref(), i.grant_read.as_ref(), i.grant_read_acp.as_ref(), i.grant_write_acp.as_ref()],
    )?;
    let replace_tags = match i.tagging_directive.as_ref().map(|d| d.as_str()) {
        None | Some(TaggingDirective::COPY) => false,
        Some(TaggingDirective::REPLACE) => true,
        Some(other) => {
            return Err(s3_error!(InvalidArgument, "unknown x-amz-tagging-directive `{}`", bounded(other)));
        }
    };
    let new_tags =
        if replace_tags { i.tagging.as_deref().map(tagging::from_header).transpose()?.flatten() } else { None };
    let src = copy_source(
        h,
        creds,
        &i.copy_source,
        Conditions {
            if_match: i.copy_source_if_match.as_ref(),
            if_none_match: i.copy_source_if_none_match.as_ref(),
            if_modified_since: i.copy_source_if_modified_since.as_ref(),
            if_unmodified_since: i.copy_source_if_unmodified_since.as_ref(),
        },
    )
    .await?;
    let replace = i.metadata_directive.as_ref().is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
    // Copying an object onto itself changes something when its metadata or its encryption
    // changes.
    let encryption = i.sse_customer_algorithm.is_some() || i.copy_source_sse_customer_algorithm.is_some();
    if let CopySource::Bucket { bucket: sb, key: sk, .. } = &i.copy_source
        && **sb == *i.bucket
        && **sk == *i.key
        && !replace
        && !encryption
    {
        return Err(s3_error!(
            InvalidRequest,
            "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata."
        ));
    }
    let headers = if replace {
        StoredHeaders {
            content_type: i.content_type.as_deref(),
            content_encoding: i.content_encoding.as_deref(),
            content_disposition: i.content_disposition.as_deref(),
            content_language: i.content_language.as_deref(),
            cache_control: i.cache_control.as_deref(),
            expires: i.expires.as_ref(),
            metadata: i.metadata.as_ref(),
        }
        .to_headers()
    } else {
        src.value.headers.clone()
    };
    let s = &src.value;
    let src_key = sse_key!(
        i,
        copy_source_sse_customer_algorithm,
        copy_source_sse_customer_key,
        copy_source_sse_customer_key_md5
    )?;
    sse_c::check(&s.sse_customer_key_md5, src_key.as_ref())?;
    let dst_key = sse_key!(i, sse_customer_algorithm, sse_customer_key, sse_customer_key_md5)?;
    let prev = h.get_object_entry(&bucket, &i.key).await?;
    let change = Change { new_size: s.size, replaced: prev.as_ref().map(|p| p.value.size) };
    h.quotas.check(&h.store, &bucket, change).await?;
    let owner = Owner::Object { bucket_id: bucket.id.to_vec(), key: i.key.clone() };
    let mut checksums = (s.checksums.clone(), s.checksum_type.clone());
    let (etag_hex, inline_data, parts) = if src_key.is_some() || dst_key.is_some() {
        // Encrypted on either side: the data is decrypted and stored again (encrypted with
        // the destination's key, if any), so the copy has AWS's size limit.
        if s.size > MAX_PUT_SIZE as u64 {
            return Err(s3_error!(
                InvalidRequest,
                "The specified copy source is larger than the maximum allowable size for a copy source: 5368709120"
            ));
        }
        // The copy is one part: a composite checksum of the source's parts no longer applies.
        if s.checksum_type == crate::checksums::COMPOSITE {
            checksums = (vec![], String::new());
        }
        let body = object_body(&h.store, s, 0..s.size, src_key.as_ref()).await?;
        let hashes = BodyHashes::new(false, Default::default());
        let (stored, hashes) =
            store(&h.store, owner.clone(), body, true, h.cfg.body_timeout, hashes, dst_key.as_ref()).await?;
        let md5: [u8; 16] = hashes.md5.finalize().into();
        let etag_hex = data_etag(dst_key.as_ref(), &md5);
        let (inline_data, parts) = object_data(&stored, &etag_hex);
        (etag_hex, inline_data, parts)
    } else {
        // Blocks are content-addressed: the copy shares them under data versions of its own
        // and moves no data.
        let mut parts: Vec<PartData> = Vec::with_capacity(s.parts.len());
        for p in &s.parts {
            let dv = random_id();
            let shared = async {
                h.store.begin_pending(&dv, &owner).await?;
                h.store.share_version(&p.data_version, &dv, p.size).await
            }
            .await;
            // The shared version lists the same blocks: a copy of its list stays true.
            parts.push(PartData { data_version: dv.into(), ..p.clone() });
            if let Err(e) = shared {
                for done in &parts {
                    let _ = h.store.mark_release(&done.data_version, &owner).await;
                }
                return Err(crate::errors::internal(e));
            }
        }
        (s.etag.clone(), s.inline_data.clone(), parts)
    };
    let obj = Object {
        version_id: random_id().into(),
        size: s.size,
        etag: etag_hex,
        last_modified_ms: now_ms(),
        headers,
        inline_data,
        parts,
        checksums: checksums.0,
        tags: if replace_tags { new_tags } else { s.tags.clone() },
        tags_ts: 0,
        sse_customer_key_md5: dst_key.as_ref().map(|k| k.md5.clone()).unwrap_or_default(),
        checksum_type: checksums.1,
    };
    h.store.put_object(&bucket.id, &i.key, &obj, prev.map(|p| p.timestamp)).await.or_s3()?;
    h.quotas.record(&bucket, change);
    Ok(S3Response::new(CopyObjectOutput {
        copy_object_result: Some(CopyObjectResult {
            e_tag: Some(etag(&obj.etag)),
            last_modified: Some(timestamp_ms(obj.last_modified_ms)),
            ..Default::default()
        }),
        sse_customer_algorithm: dst_key.as_ref().map(|_| sse_c::ALGORITHM.into()),
        sse_customer_key_md5: dst_key.map(|k| k.md5),
        ..Default::default()
    }))
}

/// Most parts one GetObjectAttributes answer lists, as in AWS.
const MAX_ATTRIBUTE_PARTS: i32 = 1000;

pub async fn get_object_attributes(
    h: &Hangar,
    req: S3Request<GetObjectAttributesInput>,
) -> S3Result<S3Response<GetObjectAttributesOutput>> {
    let i = &req.input;
    let (_, bucket) = authorized(&req)?;
    check_key(&i.key)?;
    let found = h.object_or_404(&bucket, &i.key).await?;
    let obj = &found.value;
    let sse = sse_key!(i, sse_customer_algorithm, sse_customer_key, sse_customer_key_md5)?;
    sse_c::check(&obj.sse_customer_key_md5, sse.as_ref())?;
    let wanted = |a: &str| i.object_attributes.iter().any(|w| w.as_str() == a);
    let mut out =
        GetObjectAttributesOutput { last_modified: Some(timestamp_ms(obj.last_modified_ms)), ..Default::default() };
    if wanted(ObjectAttributes::ETAG) {
        out.e_tag = Some(etag(&obj.etag));
    }
    if wanted(ObjectAttributes::OBJECT_SIZE) {
        out.object_size = Some(obj.size as i64);
    }
    if wanted(ObjectAttributes::STORAGE_CLASS) {
        out.storage_class = Some(StorageClass::from_static(StorageClass::STANDARD));
    }
    if wanted(ObjectAttributes::CHECKSUM) && !obj.checksums.is_empty() {
        let mut c = Checksum { checksum_type: Some(checksum_type_of(obj)), ..Default::default() };
        set_checksums!(c, &obj.checksums);
        out.checksum = Some(c);
    }
    // Parts are listed for objects made by a multipart upload, as AWS lists them.
    if wanted(ObjectAttributes::OBJECT_PARTS) && obj.etag.contains('-') {
        // 0 (or less) lists nothing and could never move on: it means the default.
        let max = i.max_parts.filter(|m| *m > 0).unwrap_or(MAX_ATTRIBUTE_PARTS).min(MAX_ATTRIBUTE_PARTS) as usize;
        let marker = i.part_number_marker.unwrap_or(0).max(0) as u32;
        let after: Vec<&PartData> = obj.parts.iter().filter(|p| p.part_number > marker).collect();
        let page: Vec<ObjectPart> = after
            .iter()
            .take(max)
            .map(|p| {
                let mut part = ObjectPart {
                    part_number: Some(p.part_number as i32),
                    size: Some(p.size as i64),
                    ..Default::default()
                };
                set_checksums!(part, &p.checksums);
                part
            })
            .collect();
        let truncated = after.len() > page.len();
        out.object_parts = Some(GetObjectAttributesParts {
            is_truncated: Some(truncated),
            max_parts: Some(max as i32),
            next_part_number_marker: page.last().and_then(|p| p.part_number).filter(|_| truncated),
            part_number_marker: Some(marker as i32),
            parts: Some(page),
            total_parts_count: Some(obj.parts.len() as i32),
        });
    }
    Ok(S3Response::new(out))
}
