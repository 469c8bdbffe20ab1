//! Multipart uploads. An upload's parts are data versions of their own; completing the
//! upload makes an object whose parts point at them, so no data moves.

use std::collections::BTreeMap;

use hangar_common::ids::{now_ms, random_id};
use hangar_model::Found;
use hangar_model::keys::{prefix_end, successor};
use hangar_model::multipart::{Outcome, parse_upload_id};
use hangar_model::schema::{MultipartUploads, object_prefix, parse_upload_key, upload_key, upload_prefix};
use hangar_model::version::Owner;
use hangar_proto::model::{Bucket, Header, MultipartUpload as Upload, Object, Part as StoredPart, PartData};
use md5::Digest;
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

use super::Hangar;
use super::acl::only_private;
use super::common::authorized;
use super::common::{StoredHeaders, check_key, etag, timestamp_ms};
use super::object::{
    DeclaredChecksums, body_claims, check_quota_after, check_write_conditions, claim, copy_source, data_etag, receive,
    set_checksums, sse_key, verify_body,
};
use super::tagging;
use crate::checksums;
use crate::conditions::Conditions;
use crate::errors::OrS3;
use crate::quota::Change;
use crate::read_pipeline::object_body;
use crate::sse_c;
use crate::write_pipeline::{BodyHashes, StoredData, discard, store};

/// Smallest part but the last, as in AWS.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
pub const MAX_PART_NUMBER: i32 = 10_000;
pub const MAX_PART_SIZE: i64 = crate::write_pipeline::MAX_REQUEST_BODY as i64;

fn no_such_upload() -> S3Error {
    s3_error!(NoSuchUpload, "the upload does not exist; it may have been completed or aborted")
}

/// The upload `upload_id` of this bucket and key: an id we did not issue, or one of another
/// bucket or key, is not found.
async fn get_upload(h: &Hangar, bucket: &Bucket, key: &str, upload_id: &str) -> S3Result<(Vec<u8>, Found<Upload>)> {
    let id = parse_upload_id(upload_id).ok_or_else(no_such_upload)?;
    let upload = h.store.upload(&bucket.id, key, &id).await.or_s3()?.ok_or_else(no_such_upload)?;
    Ok((id, upload))
}

/// The records of each part number, newest first (a part uploaded again replaces the
/// earlier one, unless a Complete names the earlier one's ETag).
pub fn newest_parts(records: Vec<Found<StoredPart>>) -> BTreeMap<u32, Vec<StoredPart>> {
    let mut by_number: BTreeMap<u32, Vec<StoredPart>> = BTreeMap::new();
    for r in records {
        by_number.entry(r.value.part_number).or_default().push(r.value);
    }
    for v in by_number.values_mut() {
        v.sort_by_key(|p| std::cmp::Reverse(p.last_modified_ms));
    }
    by_number
}

/// The parts a CompleteMultipartUpload request names, as S3 checks them: listed in
/// ascending order, each uploaded (the newest upload, or the newest with the ETag named),
/// all but the last at least 5 MiB. Returns them and the upload's ETag.
pub fn choose_parts(
    listed: &[CompletedPart],
    stored: &BTreeMap<u32, Vec<StoredPart>>,
) -> S3Result<(Vec<PartData>, String)> {
    let mut chosen: Vec<PartData> = Vec::with_capacity(listed.len());
    let mut md5s = md5::Md5::new();
    let mut last_number = 0;
    for (idx, p) in listed.iter().enumerate() {
        let n = p.part_number.ok_or_else(|| s3_error!(MalformedXML, "a part has no PartNumber"))?;
        if n <= last_number {
            return Err(s3_error!(InvalidPartOrder, "parts must be listed in ascending order"));
        }
        last_number = n;
        let candidates = u32::try_from(n)
            .ok()
            .and_then(|n| stored.get(&n))
            .filter(|c| !c.is_empty())
            .ok_or_else(|| S3Error::with_message(S3ErrorCode::InvalidPart, format!("part {n} was not uploaded")))?;
        let sp = match &p.e_tag {
            Some(e) => candidates.iter().find(|c| unquote(e.value()) == c.etag).ok_or_else(|| {
                S3Error::with_message(S3ErrorCode::InvalidPart, format!("part {n}'s ETag does not match"))
            })?,
            None => &candidates[0],
        };
        if idx + 1 < listed.len() && sp.size < MIN_PART_SIZE {
            return Err(S3Error::with_message(
                S3ErrorCode::EntityTooSmall,
                format!("part {n} is smaller than the 5 MiB minimum for all parts but the last"),
            ));
        }
        for (name, want) in checksums::given!(p) {
            if let Some(want) = want
                && !sp.checksums.iter().any(|c| c.name == name && &c.value == want)
            {
                return Err(S3Error::with_message(
                    S3ErrorCode::InvalidPart,
                    format!("part {n}'s {name} does not match the part uploaded"),
                ));
            }
        }
        md5s.update(hex::decode(&sp.etag).unwrap_or_default());
        chosen.push(PartData {
            part_number: sp.part_number,
            data_version: sp.data_version.clone(),
            size: sp.size,
            etag: sp.etag.clone(),
            checksums: sp.checksums.clone(),
            // Parts page through their block lists.
            blocks: vec![],
        });
    }
    let etag = format!("{}-{}", hex::encode(md5s.finalize()), chosen.len());
    Ok((chosen, etag))
}

/// The checksum algorithm an upload was created with, if any.
fn upload_algorithm(u: &Upload) -> Option<ChecksumAlgorithm> {
    (!u.checksum_algorithm.is_empty()).then(|| ChecksumAlgorithm::from(u.checksum_algorithm.clone()))
}

/// The checksum of the object an upload becomes (see `checksums`): none when the upload has
/// no algorithm. A whole-object checksum the request gives must match it, and a checksum
/// type the request names must be the upload's.
fn object_checksums(u: &Upload, parts: &[PartData], req: &CompleteMultipartUploadInput) -> S3Result<Vec<Header>> {
    if u.checksum_algorithm.is_empty() {
        if req.checksum_type.is_some() {
            return Err(s3_error!(InvalidRequest, "the upload was created without a checksum algorithm"));
        }
        return Ok(vec![]);
    }
    if let Some(t) = &req.checksum_type
        && t.as_str() != u.checksum_type
    {
        return Err(s3_error!(InvalidRequest, "the upload was created with checksum type {}", u.checksum_type));
    }
    let algorithm = checksums::Algorithm::from_name(&u.checksum_algorithm)?;
    let name = algorithm.header();
    let mut values = Vec::with_capacity(parts.len());
    for p in parts {
        let v = p.checksums.iter().find(|c| c.name == name).ok_or_else(|| {
            S3Error::with_message(S3ErrorCode::InvalidPart, format!("part {} has no {name}", p.part_number))
        })?;
        values.push((v.value.as_str(), p.size));
    }
    let value = checksums::of_parts(algorithm, &u.checksum_type, &values)?;
    for (n, want) in checksums::given!(req) {
        let Some(want) = want else { continue };
        if n != name {
            return Err(s3_error!(InvalidRequest, "the upload was created with the {} checksum", algorithm.name()));
        }
        // A composite value may come with or without its part count; when given, it counts.
        let matches = match (want.rsplit_once('-'), value.rsplit_once('-')) {
            (Some((w, count)), Some((v, ours))) => w == v && count == ours,
            (None, Some((v, _))) => want == v,
            _ => *want == value,
        };
        if !matches {
            return Err(S3Error::with_message(S3ErrorCode::BadDigest, format!("{name} does not match the object")));
        }
    }
    Ok(vec![Header { name: name.to_string(), value }])
}

fn check_part_number(n: i32) -> S3Result<u32> {
    if (1..=MAX_PART_NUMBER).contains(&n) {
        Ok(n as u32)
    } else {
        Err(s3_error!(InvalidArgument, "part number must be an integer between 1 and 10000"))
    }
}

pub async fn create(
    h: &Hangar,
    req: S3Request<CreateMultipartUploadInput>,
) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
    let (key, bucket) = authorized(&req)?;
    let i = &req.input;
    check_key(&i.key)?;
    only_private(
        i.acl.as_ref().map(|a| a.as_str()),
        &[i.grant_full_control.as_ref(), i.grant_read.as_ref(), i.grant_read_acp.as_ref(), i.grant_write_acp.as_ref()],
    )?;
    let tags = i.tagging.as_deref().map(tagging::from_header).transpose()?.flatten();
    let sse = sse_key!(i, sse_customer_algorithm, sse_customer_key, sse_customer_key_md5)?;
    let (checksum_algorithm, checksum_type) = match &i.checksum_algorithm {
        Some(a) => {
            let a = checksums::Algorithm::from_name(a.as_str())?;
            (a.name(), checksums::upload_type(a, i.checksum_type.as_ref().map(|t| t.as_str()))?)
        }
        None if i.checksum_type.is_some() => {
            return Err(s3_error!(InvalidRequest, "x-amz-checksum-type needs x-amz-checksum-algorithm"));
        }
        None => ("", ""),
    };
    let upload = Upload {
        upload_id: String::new(),
        key: i.key.clone(),
        initiated_ms: now_ms(),
        headers: StoredHeaders {
            content_type: i.content_type.as_deref(),
            content_encoding: i.content_encoding.as_deref(),
            content_disposition: i.content_disposition.as_deref(),
            content_language: i.content_language.as_deref(),
            cache_control: i.cache_control.as_deref(),
            expires: i.expires.as_ref(),
            metadata: i.metadata.as_ref(),
        }
        .to_headers(),
        initiator_key_id: key.id,
        tags,
        sse_customer_key_md5: sse.as_ref().map(|k| k.md5.clone()).unwrap_or_default(),
        checksum_algorithm: checksum_algorithm.to_string(),
        checksum_type: checksum_type.to_string(),
    };
    let id = h.store.create_upload(&bucket.id, &i.key, upload).await.or_s3()?;
    Ok(S3Response::new(CreateMultipartUploadOutput {
        bucket: Some(i.bucket.clone()),
        key: Some(i.key.clone()),
        upload_id: Some(hex::encode(id)),
        sse_customer_algorithm: sse.as_ref().map(|_| sse_c::ALGORITHM.into()),
        sse_customer_key_md5: sse.map(|k| k.md5),
        checksum_algorithm: (!checksum_algorithm.is_empty()).then(|| checksum_algorithm.to_string().into()),
        checksum_type: (!checksum_type.is_empty()).then(|| checksum_type.to_string().into()),
        ..Default::default()
    }))
}

/// Records a stored part; NoSuchUpload when the upload was decided meanwhile without it
/// (its data is then released).
async fn record_part(h: &Hangar, upload_id: &[u8], part: &StoredPart) -> S3Result<()> {
    if h.store.record_part(upload_id, part).await.or_s3()? { Ok(()) } else { Err(no_such_upload()) }
}

pub async fn upload_part(h: &Hangar, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
    let (_, bucket) = authorized(&req)?;
    let S3Request { input, headers, trailing_headers, extensions, .. } = req;
    let n = check_part_number(input.part_number)?;
    if input.content_length.is_some_and(|l| l > MAX_PART_SIZE) {
        return Err(s3_error!(EntityTooLarge, "a part may hold at most 5 GiB"));
    }
    let (upload_id, upload) = get_upload(h, &bucket, &input.key, &input.upload_id).await?;
    let sse = sse_key!(input, sse_customer_algorithm, sse_customer_key, sse_customer_key_md5)?;
    sse_c::check(&upload.value.sse_customer_key_md5, sse.as_ref())?;
    let announced = input.content_length.and_then(|l| u64::try_from(l).ok()).unwrap_or(0);
    h.quotas.check(&h.store, &bucket, Change { new_size: announced, replaced: Some(0) }).await?;
    let mut claims = body_claims!(input, headers, extensions, trailing_headers);
    // The upload's algorithm: every part keeps that checksum (computed when not sent).
    let upload_algorithm = upload_algorithm(&upload.value);
    if upload_algorithm.is_some() {
        claims.algorithm = upload_algorithm.as_ref();
    }
    let owner = Owner::Part { upload_id: upload_id.clone(), part_number: n };
    let (stored, verified) = receive(h, owner, input.body, false, claims, sse.as_ref()).await?;
    check_quota_after(h, &bucket, &stored, announced, Some(0)).await?;
    let StoredData::Blocks { data_version, .. } = stored.data else {
        return Err(s3_error!(InternalError, "part stored inline"));
    };
    let etag_hex = data_etag(sse.as_ref(), &verified.md5);
    let part = StoredPart {
        part_number: n,
        data_version: data_version.into(),
        size: stored.size,
        etag: etag_hex.clone(),
        last_modified_ms: now_ms(),
        checksums: verified.checksums,
    };
    record_part(h, &upload_id, &part).await?;
    let mut out = UploadPartOutput { e_tag: Some(etag(&etag_hex)), ..Default::default() };
    set_checksums!(out, &part.checksums);
    Ok(S3Response::new(out))
}

/// Parses `bytes=first-last` of x-amz-copy-source-range against the source size.
fn copy_range(header: Option<&str>, size: u64) -> S3Result<std::ops::Range<u64>> {
    let Some(h) = header else { return Ok(0..size) };
    let bad = || s3_error!(InvalidArgument, "x-amz-copy-source-range must be bytes=first-last");
    let spec = h.strip_prefix("bytes=").ok_or_else(bad)?;
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let (first, last): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if first > last || last >= size {
        return Err(s3_error!(InvalidRange, "the copy source range is not satisfiable"));
    }
    Ok(first..last + 1)
}

pub async fn upload_part_copy(
    h: &Hangar,
    req: S3Request<UploadPartCopyInput>,
) -> S3Result<S3Response<UploadPartCopyOutput>> {
    let creds = req.credentials.as_ref();
    let i = &req.input;
    let (_, bucket) = authorized(&req)?;
    let n = check_part_number(i.part_number)?;
    let (upload_id, upload) = get_upload(h, &bucket, &i.key, &i.upload_id).await?;
    let dst_key = sse_key!(i, sse_customer_algorithm, sse_customer_key, sse_customer_key_md5)?;
    sse_c::check(&upload.value.sse_customer_key_md5, dst_key.as_ref())?;
    let src_key = sse_key!(
        i,
        copy_source_sse_customer_algorithm,
        copy_source_sse_customer_key,
        copy_source_sse_customer_key_md5
    )?;
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
    sse_c::check(&src.value.sse_customer_key_md5, src_key.as_ref())?;
    let range = copy_range(i.copy_source_range.as_deref(), src.value.size)?;
    // The part's ETag is the MD5 of its bytes, so they stream through the write pipeline;
    // blocks the data nodes already hold are deduplicated there.
    let body = object_body(&h.store, &src.value, range, src_key.as_ref()).await?;
    let owner = Owner::Part { upload_id: upload_id.clone(), part_number: n };
    let upload_algorithm = upload_algorithm(&upload.value);
    let hashes = BodyHashes::new(false, DeclaredChecksums(Vec::new()).hasher(upload_algorithm.as_ref(), &[]));
    let (stored, hashes) = store(&h.store, owner, body, false, h.cfg.body_timeout, hashes, dst_key.as_ref()).await?;
    let verified = verify_body(hashes, None, None, DeclaredChecksums(Vec::new()), None, upload_algorithm.as_ref());
    let (md5, checksums) = match verified {
        Ok(v) => (v.md5, v.checksums),
        Err(e) => {
            discard(&h.store, &stored).await;
            return Err(e);
        }
    };
    let StoredData::Blocks { data_version, .. } = stored.data else {
        return Err(s3_error!(InternalError, "part stored inline"));
    };
    let etag_hex = data_etag(dst_key.as_ref(), &md5);
    let part = StoredPart {
        part_number: n,
        data_version: data_version.into(),
        size: stored.size,
        etag: etag_hex.clone(),
        last_modified_ms: now_ms(),
        checksums,
    };
    record_part(h, &upload_id, &part).await?;
    Ok(S3Response::new(UploadPartCopyOutput {
        copy_part_result: Some(CopyPartResult {
            e_tag: Some(etag(&etag_hex)),
            last_modified: Some(timestamp_ms(part.last_modified_ms)),
            ..Default::default()
        }),
        ..Default::default()
    }))
}

fn unquote(s: &str) -> &str {
    s.trim_matches('"')
}

pub async fn complete(
    h: &Hangar,
    req: S3Request<CompleteMultipartUploadInput>,
) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
    let (_, bucket) = authorized(&req)?;
    let i = &req.input;
    let (upload_id, upload) = get_upload(h, &bucket, &i.key, &i.upload_id).await?;
    let listed = i.multipart_upload.as_ref().and_then(|m| m.parts.as_ref()).cloned().unwrap_or_default();
    if listed.is_empty() {
        return Err(s3_error!(MalformedXML, "the request must name at least one part"));
    }
    let stored = newest_parts(h.store.part_records(&upload_id).await.or_s3()?);
    let (chosen, etag_str) = match choose_parts(&listed, &stored) {
        Ok(c) => c,
        Err(e) => {
            // A racing Abort (or Complete) decides the upload's register before it removes
            // the part records: parts gone since the upload was read mean it is gone.
            if h.store.upload_outcome(&upload_id).await.or_s3()?.is_some() {
                return Err(no_such_upload());
            }
            return Err(e);
        }
    };
    let checksums = object_checksums(&upload.value, &chosen, i)?;
    let obj = Object {
        version_id: random_id().into(),
        size: chosen.iter().map(|p| p.size).sum(),
        etag: etag_str,
        last_modified_ms: now_ms(),
        headers: upload.value.headers.clone(),
        inline_data: None,
        parts: chosen,
        checksums,
        tags: upload.value.tags.clone(),
        tags_ts: 0,
        sse_customer_key_md5: upload.value.sse_customer_key_md5.clone(),
        checksum_type: upload.value.checksum_type.clone(),
    };
    let prev = h.get_object_entry(&bucket, &i.key).await?;
    let (if_match, if_none_match) = (i.if_match.as_ref(), i.if_none_match.as_ref());
    check_write_conditions(if_match, if_none_match, prev.as_ref().map(|p| &p.value))?;
    let change = Change { new_size: obj.size, replaced: prev.as_ref().map(|p| p.value.size) };
    h.quotas.check(&h.store, &bucket, change).await?;
    let timestamp = if if_match.is_some() || if_none_match.is_some() {
        let check = |cur: Option<&Object>| check_write_conditions(if_match, if_none_match, cur);
        claim(h, &bucket.id, &i.key, &obj, Some(&upload_id), check).await?
    } else {
        hangar_model::client::stamp(prev.map(|p| p.timestamp))
    };
    // Complete and Abort race on the upload's register: exactly one wins.
    let done = match h.store.complete_upload(&bucket.id, &i.key, &upload_id, obj, timestamp).await.or_s3()? {
        Outcome::Completed(o, _) => o,
        Outcome::Aborted => return Err(no_such_upload()),
    };
    h.quotas.record(&bucket, change);
    let mut out = CompleteMultipartUploadOutput {
        bucket: Some(i.bucket.clone()),
        key: Some(i.key.clone()),
        e_tag: Some(etag(&done.etag)),
        location: Some(format!("/{}/{}", i.bucket, i.key)),
        checksum_type: (!done.checksum_type.is_empty()).then(|| done.checksum_type.clone().into()),
        ..Default::default()
    };
    set_checksums!(out, &done.checksums);
    Ok(S3Response::new(out))
}

pub async fn abort(
    h: &Hangar,
    req: S3Request<AbortMultipartUploadInput>,
) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
    let (_, bucket) = authorized(&req)?;
    let i = &req.input;
    let (upload_id, _) = get_upload(h, &bucket, &i.key, &i.upload_id).await?;
    match h.store.abort_upload(&bucket.id, &i.key, &upload_id).await.or_s3()? {
        Outcome::Aborted => Ok(S3Response::new(AbortMultipartUploadOutput::default())),
        // Complete won the race: the upload is an object now.
        Outcome::Completed(..) => Err(no_such_upload()),
    }
}

pub async fn list_parts(h: &Hangar, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
    let (_, bucket) = authorized(&req)?;
    let i = &req.input;
    let (upload_id, upload) = get_upload(h, &bucket, &i.key, &i.upload_id).await?;
    // The parts' checksums are of the plaintext: an encrypted upload shows them only to a
    // request with its key, as AWS does.
    let sse = sse_key!(i, sse_customer_algorithm, sse_customer_key, sse_customer_key_md5)?;
    let show_checksums = upload.value.sse_customer_key_md5.is_empty()
        || sse.as_ref().is_some_and(|k| k.md5 == upload.value.sse_customer_key_md5);
    let max = i.max_parts.unwrap_or(1000).clamp(0, 1000) as usize;
    let marker = u32::try_from(i.part_number_marker.unwrap_or(0))
        .map_err(|_| s3_error!(InvalidArgument, "invalid part-number-marker"))?;
    // Records of one number sit together; gather the newest of each, one page at a time.
    let mut parts: BTreeMap<u32, StoredPart> = BTreeMap::new();
    let mut from = marker.saturating_add(1);
    let mut more = false;
    loop {
        let (page, page_more) = h.store.part_page(&upload_id, from, 1000).await.or_s3()?;
        let Some(last) = page.last().map(|r| r.value.part_number) else { break };
        for r in page {
            let p = r.value;
            let newer = parts.get(&p.part_number).is_none_or(|cur| p.last_modified_ms > cur.last_modified_ms);
            if newer {
                parts.insert(p.part_number, p);
            }
        }
        if parts.len() > max || !page_more {
            more = parts.len() > max;
            break;
        }
        // Part `last` may go on in the next page (unless the whole page was that part).
        from = if last == from { last.saturating_add(1) } else { last };
    }
    let page: Vec<StoredPart> = parts.into_values().take(max).collect();
    let next = page.last().map(|p| p.part_number as i32);
    let parts = page
        .into_iter()
        .map(|p| {
            let mut part = Part {
                part_number: Some(p.part_number as i32),
                e_tag: Some(etag(&p.etag)),
                size: Some(p.size as i64),
                last_modified: Some(timestamp_ms(p.last_modified_ms)),
                ..Default::default()
            };
            if show_checksums {
                set_checksums!(part, &p.checksums);
            }
            part
        })
        .collect();
    Ok(S3Response::new(ListPartsOutput {
        bucket: Some(i.bucket.clone()),
        key: Some(i.key.clone()),
        upload_id: Some(i.upload_id.clone()),
        max_parts: Some(max as i32),
        part_number_marker: i.part_number_marker,
        next_part_number_marker: if more { next } else { None },
        is_truncated: Some(more),
        parts: Some(parts),
        storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
        ..Default::default()
    }))
}

pub async fn list_uploads(
    h: &Hangar,
    req: S3Request<ListMultipartUploadsInput>,
) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
    let (_, bucket) = authorized(&req)?;
    let i = &req.input;
    let enc = super::list::encoder(i.encoding_type.as_ref())?;
    let max = i.max_uploads.unwrap_or(1000).clamp(1, 1000) as usize;
    let prefix = i.prefix.clone().unwrap_or_default();
    let delimiter = i.delimiter.clone().filter(|d| !d.is_empty());
    let first = object_prefix(&bucket.id, &prefix);
    let end = prefix_end(&first);
    let mut cursor = first.clone();
    if let Some(km) = i.key_marker.as_deref().filter(|k| !k.is_empty()) {
        let after = match i.upload_id_marker.as_deref().and_then(parse_upload_id) {
            Some(u) => successor(&upload_key(&bucket.id, km, &u)),
            // Past every upload of the marker key.
            None => prefix_end(&upload_prefix(&bucket.id, km)),
        };
        cursor = cursor.max(after);
    }
    let (mut uploads, mut prefixes) = (Vec::new(), Vec::<String>::new());
    let mut truncated = false;
    'pages: loop {
        let (page, more) = h.store.tables.range::<MultipartUploads>(cursor.clone(), end.clone(), 1000).await.or_s3()?;
        if page.is_empty() {
            break;
        }
        for f in page {
            let Some((_, key, _)) = parse_upload_key(&f.key) else { continue };
            if uploads.len() + prefixes.len() == max {
                truncated = true;
                break 'pages;
            }
            let u = f.value;
            if let Some(d) = &delimiter
                && let Some(pos) = key.get(prefix.len()..).and_then(|rest| rest.find(d.as_str()))
            {
                let cp = key[..prefix.len() + pos + d.len()].to_string();
                cursor = prefix_end(&object_prefix(&bucket.id, &cp));
                prefixes.push(cp);
                continue 'pages;
            }
            cursor = successor(&f.key);
            uploads.push(MultipartUpload {
                key: Some(enc(key)),
                upload_id: Some(u.upload_id.clone()),
                initiated: Some(timestamp_ms(u.initiated_ms)),
                initiator: Some(Initiator { id: Some(u.initiator_key_id.clone()), display_name: None }),
                storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
                ..Default::default()
            });
        }
        if !more {
            break;
        }
    }
    let last = uploads.last().map(|u: &MultipartUpload| (u.key.clone(), u.upload_id.clone()));
    Ok(S3Response::new(ListMultipartUploadsOutput {
        bucket: Some(i.bucket.clone()),
        prefix: i.prefix.clone().map(&enc),
        delimiter: delimiter.map(&enc),
        key_marker: i.key_marker.clone().map(&enc),
        upload_id_marker: i.upload_id_marker.clone(),
        max_uploads: Some(max as i32),
        is_truncated: Some(truncated),
        next_key_marker: if truncated { last.as_ref().and_then(|l| l.0.clone()) } else { None },
        next_upload_id_marker: if truncated { last.and_then(|l| l.1) } else { None },
        uploads: Some(uploads),
        common_prefixes: Some(prefixes.into_iter().map(|p| CommonPrefix { prefix: Some(enc(p)) }).collect()),
        encoding_type: i.encoding_type.clone(),
        ..Default::default()
    }))
}
