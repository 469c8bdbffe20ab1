//! Small helpers shared by the test files.

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::RequestId;
use aws_sdk_s3::operation::complete_multipart_upload::builders::CompleteMultipartUploadFluentBuilder;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use md5::{Digest, Md5};

/// Pseudo-random bytes. A SplitMix64 stream seeded from the OS: much faster
/// than a CSPRNG in an unoptimised build, and random enough that two calls
/// never produce the same blocks (which would confuse dedup counting).
pub fn random_bytes(len: usize) -> Vec<u8> {
    splitmix64_bytes(rand::random(), len)
}

/// `len` bytes of the SplitMix64 stream that starts from `state`: cheap
/// deterministic filler (the same state always gives the same bytes).
pub fn splitmix64_bytes(mut state: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

/// The ETag S3 returns for a single PUT: the quoted hex MD5.
pub fn etag_of(data: &[u8]) -> String {
    format!("\"{}\"", md5_hex(data))
}

/// The ETag of a completed multipart upload: hex(md5(concat(md5(part)))) + "-N", quoted.
pub fn multipart_etag(parts: &[&[u8]]) -> String {
    let mut outer = Md5::new();
    for p in parts {
        outer.update(Md5::digest(p));
    }
    format!("\"{}-{}\"", hex::encode(outer.finalize()), parts.len())
}

/// Base64 of the MD5, as sent in Content-MD5.
pub fn content_md5(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(data))
}

/// A bucket name unique enough within one server.
pub fn bucket_name(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

/// SDK config for an S3 endpoint: latest behaviour, path-style addressing.
pub fn s3_config(endpoint: &str, region: &str, credentials: Credentials) -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(region.to_string()))
        .credentials_provider(credentials)
        .force_path_style(true)
}

// ---- S3 operations that must succeed ----------------------------------------

/// Creates a bucket named [`bucket_name`]`(prefix)` and returns its name.
pub async fn new_bucket(s3: &Client, prefix: &str) -> String {
    let bucket = bucket_name(prefix);
    s3.create_bucket().bucket(&bucket).send().await.expect("create bucket");
    bucket
}

/// PUTs `data` and returns the ETag.
pub async fn put_bytes(s3: &Client, bucket: &str, key: &str, data: &[u8]) -> String {
    let out = s3
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(data.to_vec()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {bucket}/{key}: {e:?}"));
    out.e_tag().expect("PUT returns an ETag").to_string()
}

/// GETs a whole object's body.
pub async fn get_bytes(s3: &Client, bucket: &str, key: &str) -> Vec<u8> {
    let out = s3.get_object().bucket(bucket).key(key).send().await.unwrap_or_else(|e| panic!("get {key}: {e:?}"));
    body_bytes(out.body).await
}

/// Names of the buckets ListBuckets returns, in its order.
pub async fn bucket_names(s3: &Client) -> Vec<String> {
    s3.list_buckets()
        .send()
        .await
        .expect("list buckets")
        .buckets()
        .iter()
        .filter_map(|b| b.name().map(str::to_string))
        .collect()
}

/// Asserts that HEAD of `bucket/key` is a 404: nothing is stored there.
pub async fn assert_no_object(s3: &Client, bucket: &str, key: &str) {
    expect_s3_error(s3.head_object().bucket(bucket).key(key).send().await, 404, None);
}

// ---- multipart uploads --------------------------------------------------------

/// Starts a multipart upload, checks the echoed bucket and key, returns the upload id.
pub async fn create_upload(s3: &Client, bucket: &str, key: &str) -> String {
    let out = s3.create_multipart_upload().bucket(bucket).key(key).send().await.expect("create multipart upload");
    assert_eq!(out.bucket(), Some(bucket));
    assert_eq!(out.key(), Some(key));
    out.upload_id().expect("upload id").to_string()
}

/// Uploads part `n`, checks that its ETag is the part's MD5, returns the ETag.
pub async fn upload_part(s3: &Client, bucket: &str, key: &str, upload_id: &str, n: i32, data: &[u8]) -> String {
    let out = s3
        .upload_part()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .part_number(n)
        .body(ByteStream::from(data.to_vec()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("upload part {n}: {e:?}"));
    let etag = out.e_tag().expect("part ETag").to_string();
    assert_eq!(etag, etag_of(data), "part ETag is the part's MD5");
    etag
}

/// The CompleteMultipartUpload body listing `(part number, ETag)` in the given order.
pub fn completed_upload(parts: &[(i32, &str)]) -> CompletedMultipartUpload {
    CompletedMultipartUpload::builder()
        .set_parts(Some(
            parts.iter().map(|(n, etag)| CompletedPart::builder().part_number(*n).e_tag(*etag).build()).collect(),
        ))
        .build()
}

/// A CompleteMultipartUpload request for `parts`, ready to `send()`.
pub fn complete_upload(
    s3: &Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
    parts: &[(i32, &str)],
) -> CompleteMultipartUploadFluentBuilder {
    s3.complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .multipart_upload(completed_upload(parts))
}

// ---- raw HTTP responses --------------------------------------------------------

/// (status, body text) of a raw response.
pub async fn status_and_body(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

/// (status, S3 error code) of a raw response; an unreadable body has no code.
pub async fn status_and_code(resp: reqwest::Response) -> (u16, Option<String>) {
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    (status, xml_value(&body, "Code"))
}

/// Collects an SDK body.
pub async fn body_bytes(body: ByteStream) -> Vec<u8> {
    body.collect().await.expect("read body").into_bytes().to_vec()
}

/// S3 error code of a failed SDK call, if the response carried one.
pub fn err_code<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> Option<String> {
    err.code().map(str::to_string)
}

/// HTTP status of a failed SDK call, if a response was received.
pub fn err_status<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

/// Asserts a call failed with the given HTTP status and S3 error code
/// (`None` for HEAD requests, whose error responses have no body), and that
/// an error response (>= 400) carries a request id. Returns the error for further checks.
#[track_caller]
pub fn expect_s3_error<T, E>(
    result: Result<T, SdkError<E, HttpResponse>>,
    status: u16,
    code: Option<&str>,
) -> SdkError<E, HttpResponse>
where
    T: Debug,
    E: ProvideErrorMetadata + Debug,
{
    let err = match result {
        Ok(v) => panic!("expected {status} {code:?}, but the call succeeded: {v:?}"),
        Err(e) => e,
    };
    assert_eq!(err_status(&err), Some(status), "wrong status (wanted {status} {code:?}); error: {err:?}");
    if let Some(code) = code {
        assert_eq!(err_code(&err).as_deref(), Some(code), "wrong error code; error: {err:?}");
    }
    if status >= 400 {
        assert!(err.request_id().is_some_and(|id| !id.is_empty()), "error response has no x-amz-request-id: {err:?}");
    }
    err
}

/// Polls `check` every 250 ms until it returns true or `timeout` elapses.
/// Returns whether it became true.
pub async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Decodes a `application/x-www-form-urlencoded`-style string (`+` is a space).
/// S3's `encoding-type=url` output is decoded this way by boto too, so this
/// accepts either `%20` or `+` for spaces.
pub fn url_decode(s: &str) -> String {
    let plus_as_space = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_as_space).decode_utf8().expect("decoded key is UTF-8").into_owned()
}

/// Text between the first `<tag>` and `</tag>` of an XML document.
pub fn xml_value(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&close)? + start;
    Some(xml[start..end].to_string())
}

// ---- processes ---------------------------------------------------------------------

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`, ...).
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Whether the peer of `stream` closed it within `timeout` (reads until EOF, dropping
/// whatever arrives).
pub async fn closed_by_peer(stream: &mut tokio::net::TcpStream, timeout: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 64 * 1024];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(timeout, read_all).await.is_ok()
}

/// How long a frontend trusts the access keys, buckets and rights it read (`[s3_api]
/// catalog_cache_ms`, 1 s by default), and a margin: what the CLI or another frontend
/// deletes, revokes or changes is seen by every frontend once this has passed.
pub const CATALOG_SETTLES: std::time::Duration = std::time::Duration::from_millis(1300);

/// Waits until every frontend sees a catalog change made elsewhere (see [`CATALOG_SETTLES`]).
pub async fn catalog_settles() {
    tokio::time::sleep(CATALOG_SETTLES).await;
}
