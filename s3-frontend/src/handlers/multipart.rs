//! Multipart uploads. An upload's parts are data versions of their own; completing the
//! upload makes an object whose parts point at them, so no data moves.

use hangar_common::ids::{now_ms, random_id};
use hangar_common::meta_client::{Found, prefix_end, successor, tombstone};
use hangar_proto::metadata::Table;
use hangar_proto::model::{Bucket, MultipartUpload as Upload, Object, Part as StoredPart, PartData};
use md5::Digest;
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

use super::Hangar;
use super::common::{StoredHeaders, check_key, etag, object_key, timestamp_ms};
use super::object::{DeclaredChecksums, announced_trailers, copy_source, discard, signed_payload_sha256, verify_body};
use crate::access::Right;
use crate::conditions::Conditions;
use crate::errors::OrS3;
use crate::read_pipeline::object_body;
use crate::write_pipeline::{BodyHashes, StoredData, release_data_version, store};

/// Smallest part but the last, as in AWS.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
pub const MAX_PART_NUMBER: i32 = 10_000;
pub const MAX_PART_SIZE: i64 = 5 * 1024 * 1024 * 1024;

fn upload_key(bucket_id: &[u8], key: &str, upload_id: &str) -> Vec<u8> {
    let mut k = object_key(bucket_id, key);
    k.push(0);
    k.extend_from_slice(upload_id.as_bytes());
    k
}

fn part_key(upload_id: &str, n: u32) -> Vec<u8> {
    let mut k = upload_id.as_bytes().to_vec();
    k.extend_from_slice(&n.to_be_bytes());
    k
}

fn no_such_upload() -> S3Error {
    s3_error!(NoSuchUpload, "the upload does not exist; it may have been completed or aborted")
}

async fn get_upload(h: &Hangar, bucket: &Bucket, key: &str, upload_id: &str) -> S3Result<Found<Upload>> {
    h.backend
        .meta
        .get::<Upload>(Table::MultipartUpload, &upload_key(&bucket.id, key, upload_id))
        .await
        .or_s3()?
        .ok_or_else(no_such_upload)
}

async fn all_parts(h: &Hangar, upload_id: &str) -> S3Result<Vec<Found<StoredPart>>> {
    h.backend.meta.scan_prefix::<StoredPart>(Table::UploadPart, upload_id.as_bytes()).await.or_s3()
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
    let (key, bucket) = h.bucket(req.credentials.as_ref(), &req.input.bucket, Right::Write).await?;
    let i = &req.input;
    check_key(&i.key)?;
    let upload_id = hex::encode(random_id());
    let upload = Upload {
        upload_id: upload_id.clone(),
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
    };
    h.backend
        .meta
        .put(Table::MultipartUpload, upload_key(&bucket.id, &i.key, &upload_id), &upload, None)
        .await
        .or_s3()?;
    Ok(S3Response::new(CreateMultipartUploadOutput {
        bucket: Some(i.bucket.clone()),
        key: Some(i.key.clone()),
        upload_id: Some(upload_id),
        ..Default::default()
    }))
}

/// Records a stored part, replacing (and freeing) an earlier upload of the same number.
async fn record_part(h: &Hangar, upload_id: &str, n: u32, part: &StoredPart) -> S3Result<()> {
    let prev = h.backend.meta.get::<StoredPart>(Table::UploadPart, &part_key(upload_id, n)).await.or_s3()?;
    h.backend
        .meta
        .put(Table::UploadPart, part_key(upload_id, n), part, prev.as_ref().map(|p| p.timestamp))
        .await
        .or_s3()?;
    if let Some(p) = prev {
        release_data_version(&h.backend, &p.value.data_version).await;
    }
    Ok(())
}

pub async fn upload_part(h: &Hangar, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
    let (_, bucket) = h.bucket(req.credentials.as_ref(), &req.input.bucket, Right::Write).await?;
    let S3Request { input, headers, trailing_headers, .. } = req;
    let n = check_part_number(input.part_number)?;
    if input.content_length.is_some_and(|l| l > MAX_PART_SIZE) {
        return Err(s3_error!(EntityTooLarge, "a part may hold at most 5 GiB"));
    }
    get_upload(h, &bucket, &input.key, &input.upload_id).await?;
    let declared = DeclaredChecksums::new(
        &input.checksum_crc32,
        &input.checksum_crc32c,
        &input.checksum_sha1,
        &input.checksum_sha256,
        &input.checksum_crc64nvme,
    );
    let signed_sha = signed_payload_sha256(&headers);
    let hashes = BodyHashes::new(
        signed_sha.is_some(),
        declared.hasher(input.checksum_algorithm.as_ref(), &announced_trailers(&headers)),
    );
    let body = input
        .body
        .unwrap_or_else(|| StreamingBlob::wrap(futures::stream::empty::<Result<bytes::Bytes, std::io::Error>>()));
    let (stored, hashes) = store(&h.backend, body, h.cfg.block_size, false, hashes).await?;
    let trailers = trailing_headers.and_then(|t| t.take());
    let md5 = match verify_body(hashes, input.content_md5.as_deref(), signed_sha.as_deref(), declared, trailers) {
        Ok(v) => v.md5,
        Err(e) => {
            discard(h, &stored).await;
            return Err(e);
        }
    };
    let StoredData::Blocks { data_version } = stored.data else {
        return Err(s3_error!(InternalError, "part stored inline"));
    };
    let etag_hex = hex::encode(md5);
    let part = StoredPart {
        part_number: n,
        data_version: data_version.into(),
        size: stored.size,
        etag: etag_hex.clone(),
        last_modified_ms: now_ms(),
    };
    // The upload may have been completed or aborted while the part streamed in.
    if get_upload(h, &bucket, &input.key, &input.upload_id).await.is_err() {
        release_data_version(&h.backend, &part.data_version).await;
        return Err(no_such_upload());
    }
    record_part(h, &input.upload_id, n, &part).await?;
    Ok(S3Response::new(UploadPartOutput { e_tag: Some(etag(&etag_hex)), ..Default::default() }))
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
    let (_, bucket) = h.bucket(creds, &i.bucket, Right::Write).await?;
    let n = check_part_number(i.part_number)?;
    get_upload(h, &bucket, &i.key, &i.upload_id).await?;
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
    let range = copy_range(i.copy_source_range.as_deref(), src.value.size)?;
    // The part's ETag is the MD5 of its bytes, so they stream through the write pipeline;
    // blocks the data nodes already hold are deduplicated there.
    let body = object_body(&h.backend, &src.value, range);
    let (stored, hashes) =
        store(&h.backend, body, h.cfg.block_size, false, BodyHashes::new(false, Default::default())).await?;
    let md5 = match verify_body(hashes, None, None, DeclaredChecksums(Vec::new()), None) {
        Ok(v) => v.md5,
        Err(e) => {
            discard(h, &stored).await;
            return Err(e);
        }
    };
    let StoredData::Blocks { data_version } = stored.data else {
        return Err(s3_error!(InternalError, "part stored inline"));
    };
    let etag_hex = hex::encode(md5);
    let part = StoredPart {
        part_number: n,
        data_version: data_version.into(),
        size: stored.size,
        etag: etag_hex.clone(),
        last_modified_ms: now_ms(),
    };
    record_part(h, &i.upload_id, n, &part).await?;
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
    let (_, bucket) = h.bucket(req.credentials.as_ref(), &req.input.bucket, Right::Write).await?;
    let i = &req.input;
    let upload = get_upload(h, &bucket, &i.key, &i.upload_id).await?;
    let listed = i.multipart_upload.as_ref().and_then(|m| m.parts.as_ref()).cloned().unwrap_or_default();
    if listed.is_empty() {
        return Err(s3_error!(MalformedXML, "the request must name at least one part"));
    }
    let stored: std::collections::BTreeMap<u32, StoredPart> =
        all_parts(h, &i.upload_id).await?.into_iter().map(|f| (f.value.part_number, f.value)).collect();
    let mut chosen: Vec<PartData> = Vec::with_capacity(listed.len());
    let mut md5s = md5::Md5::new();
    let mut last_number = 0;
    for (idx, p) in listed.iter().enumerate() {
        let n = p.part_number.ok_or_else(|| s3_error!(MalformedXML, "a part has no PartNumber"))?;
        if n <= last_number {
            return Err(s3_error!(InvalidPartOrder, "parts must be listed in ascending order"));
        }
        last_number = n;
        let sp = u32::try_from(n)
            .ok()
            .and_then(|n| stored.get(&n))
            .ok_or_else(|| S3Error::with_message(S3ErrorCode::InvalidPart, format!("part {n} was not uploaded")))?;
        if let Some(e) = &p.e_tag
            && unquote(e.value()) != sp.etag
        {
            return Err(S3Error::with_message(S3ErrorCode::InvalidPart, format!("part {n}'s ETag does not match")));
        }
        if idx + 1 < listed.len() && sp.size < MIN_PART_SIZE {
            return Err(S3Error::with_message(
                S3ErrorCode::EntityTooSmall,
                format!("part {n} is smaller than the 5 MiB minimum for all parts but the last"),
            ));
        }
        md5s.update(hex::decode(&sp.etag).unwrap_or_default());
        chosen.push(PartData {
            part_number: sp.part_number,
            data_version: sp.data_version.clone(),
            size: sp.size,
            etag: sp.etag.clone(),
        });
    }
    let etag_str = format!("{}-{}", hex::encode(md5s.finalize()), chosen.len());
    let obj = Object {
        version_id: random_id().into(),
        size: chosen.iter().map(|p| p.size).sum(),
        etag: etag_str.clone(),
        last_modified_ms: now_ms(),
        headers: upload.value.headers.clone(),
        inline_data: None,
        parts: chosen,
        checksums: vec![],
    };
    let prev = h.get_object_entry(&bucket, &i.key).await?;
    // The upload goes first: once it is gone, no other request can complete or abort it
    // and free parts the object now uses.
    h.backend
        .meta
        .delete(Table::MultipartUpload, upload_key(&bucket.id, &i.key, &i.upload_id), Some(upload.timestamp))
        .await
        .or_s3()?;
    let write = h
        .backend
        .meta
        .put(Table::Object, object_key(&bucket.id, &i.key), &obj, prev.as_ref().map(|p| p.timestamp))
        .await;
    write.map_err(crate::errors::internal)?;
    if let Some(p) = prev {
        h.release_object(&p.value).await;
    }
    let used: std::collections::HashSet<u32> = obj.parts.iter().map(|p| p.part_number).collect();
    let mut tombs = Vec::new();
    for (n, sp) in &stored {
        if !used.contains(n) {
            release_data_version(&h.backend, &sp.data_version).await;
        }
        tombs.push(tombstone(part_key(&i.upload_id, *n), None));
    }
    if let Err(e) = h.backend.meta.insert(Table::UploadPart, tombs).await {
        tracing::warn!(error = %e, "could not delete part records of a completed upload");
    }
    Ok(S3Response::new(CompleteMultipartUploadOutput {
        bucket: Some(i.bucket.clone()),
        key: Some(i.key.clone()),
        e_tag: Some(etag(&etag_str)),
        location: Some(format!("/{}/{}", i.bucket, i.key)),
        ..Default::default()
    }))
}

pub async fn abort(
    h: &Hangar,
    req: S3Request<AbortMultipartUploadInput>,
) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
    let (_, bucket) = h.bucket(req.credentials.as_ref(), &req.input.bucket, Right::Write).await?;
    let i = &req.input;
    let upload = get_upload(h, &bucket, &i.key, &i.upload_id).await?;
    h.backend
        .meta
        .delete(Table::MultipartUpload, upload_key(&bucket.id, &i.key, &i.upload_id), Some(upload.timestamp))
        .await
        .or_s3()?;
    let parts = all_parts(h, &i.upload_id).await?;
    let mut tombs = Vec::new();
    for p in &parts {
        release_data_version(&h.backend, &p.value.data_version).await;
        tombs.push(tombstone(p.key.clone(), Some(p.timestamp)));
    }
    h.backend.meta.insert(Table::UploadPart, tombs).await.or_s3()?;
    Ok(S3Response::new(AbortMultipartUploadOutput::default()))
}

pub async fn list_parts(h: &Hangar, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
    let (_, bucket) = h.bucket(req.credentials.as_ref(), &req.input.bucket, Right::Read).await?;
    let i = &req.input;
    get_upload(h, &bucket, &i.key, &i.upload_id).await?;
    let max = i.max_parts.unwrap_or(1000).clamp(0, 1000) as u32;
    let marker = u32::try_from(i.part_number_marker.unwrap_or(0))
        .map_err(|_| s3_error!(InvalidArgument, "invalid part-number-marker"))?;
    let start = part_key(&i.upload_id, marker.saturating_add(1));
    let (page, more) = h
        .backend
        .meta
        .range::<StoredPart>(Table::UploadPart, start, prefix_end(i.upload_id.as_bytes()), max.max(1))
        .await
        .or_s3()?;
    let page = if max == 0 { Vec::new() } else { page };
    let next = page.last().map(|p| p.value.part_number as i32);
    let parts = page
        .into_iter()
        .map(|f| Part {
            part_number: Some(f.value.part_number as i32),
            e_tag: Some(etag(&f.value.etag)),
            size: Some(f.value.size as i64),
            last_modified: Some(timestamp_ms(f.value.last_modified_ms)),
            ..Default::default()
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
    let (_, bucket) = h.bucket(req.credentials.as_ref(), &req.input.bucket, Right::Read).await?;
    let i = &req.input;
    let max = i.max_uploads.unwrap_or(1000).clamp(1, 1000) as usize;
    let prefix = i.prefix.clone().unwrap_or_default();
    let delimiter = i.delimiter.clone().filter(|d| !d.is_empty());
    let mut start = object_key(&bucket.id, &prefix);
    if let Some(km) = &i.key_marker {
        let after = match &i.upload_id_marker {
            Some(u) => successor(&upload_key(&bucket.id, km, u)),
            // Past every upload of the marker key.
            None => prefix_end(&[object_key(&bucket.id, km), vec![0]].concat()),
        };
        start = start.max(after);
    }
    let end = match prefix_end(prefix.as_bytes()) {
        e if e.is_empty() => prefix_end(&bucket.id),
        e => object_key(&bucket.id, std::str::from_utf8(&e).unwrap_or_default()),
    };
    let (mut uploads, mut prefixes) = (Vec::new(), Vec::<String>::new());
    let mut truncated = false;
    let mut cursor = start;
    'pages: loop {
        let (page, more) =
            h.backend.meta.range::<Upload>(Table::MultipartUpload, cursor.clone(), end.clone(), 1000).await.or_s3()?;
        if page.is_empty() {
            break;
        }
        for f in page {
            if uploads.len() + prefixes.len() == max {
                truncated = true;
                break 'pages;
            }
            let u = f.value;
            if let Some(d) = &delimiter
                && let Some(pos) = u.key[prefix.len().min(u.key.len())..].find(d.as_str())
            {
                let cp = u.key[..prefix.len() + pos + d.len()].to_string();
                cursor = prefix_end(&object_key(&bucket.id, &cp));
                prefixes.push(cp);
                continue 'pages;
            }
            cursor = successor(&f.key);
            uploads.push(MultipartUpload {
                key: Some(u.key.clone()),
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
        prefix: i.prefix.clone(),
        delimiter,
        key_marker: i.key_marker.clone(),
        upload_id_marker: i.upload_id_marker.clone(),
        max_uploads: Some(max as i32),
        is_truncated: Some(truncated),
        next_key_marker: if truncated { last.as_ref().and_then(|l| l.0.clone()) } else { None },
        next_upload_id_marker: if truncated { last.and_then(|l| l.1) } else { None },
        uploads: Some(uploads),
        common_prefixes: Some(prefixes.into_iter().map(|p| CommonPrefix { prefix: Some(p) }).collect()),
        ..Default::default()
    }))
}
