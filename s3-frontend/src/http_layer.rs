//! Wraps the S3 service: gives every request an id (the `x-amz-request-id` header and the
//! `<RequestId>` of error bodies), a tracing span and its metrics, and refuses before s3s
//! sees them the requests s3s would mishandle:
//!
//! - SigV2 signatures (header or presigned URL): only SigV4 is accepted, as in Garage and
//!   in every AWS region opened since 2014; SigV2 has no clock-skew check and presigned
//!   SigV2 URLs carry no expiry limit;
//! - presigned SigV4 URLs valid for more than 7 days (AWS's limit);
//! - POST Object (browser form uploads), which Hangar does not implement: s3s would read
//!   the whole file into memory before any signature or right is checked;
//! - XML bodies above `max_xml_body_bytes` (400 MaxMessageLengthExceeded, before reading);
//! - requests without a Host (400);
//! - a `versionId` other than `null` (404 NoSuchVersion: versioning is never enabled);
//! - what a client would take for done if it were ignored: object locks, appends
//!   (`x-amz-write-offset-bytes`), conditional deletes (501).
//!
//! CORS preflights (`OPTIONS`) never reach s3s: they are unsigned and answered here from the
//! bucket's rules; responses to requests carrying `Origin` get the headers a rule allows.
//!
//! It also watches the raw framing of aws-chunked bodies (`ChunkFraming`), which s3s
//! decodes without telling whether the stream really ended with its final chunk.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use hangar_common::telemetry::metrics::{EndpointLabel, ErrorLabels};
use hangar_common::telemetry::{metrics, traces};
use http::{HeaderValue, StatusCode};
use hyper::body::Incoming;
use s3s::service::S3Service;
use s3s::{Body, HttpError, HttpResponse};
use tracing::Instrument;

use crate::FrontendConfig;
use crate::host::RootDomain;
use crate::lookups::Lookups;
use crate::unframed::UnframedBody;

/// Presigned URLs may be valid for at most this long, as in AWS.
pub const MAX_PRESIGNED_EXPIRY_SECS: u64 = 7 * 24 * 3600;

/// The S3 operation a request turned out to be and its bucket, filled in by the access
/// check.
#[derive(Clone, Default)]
pub struct OpName(pub Arc<OnceLock<(String, Option<String>)>>);

/// What the layer checks against.
pub struct Guard {
    max_xml_body: u64,
    root_domain: Option<RootDomain>,
    region: String,
}

impl Guard {
    pub fn new(cfg: &FrontendConfig) -> Self {
        Self {
            max_xml_body: cfg.max_xml_body,
            root_domain: cfg.root_domain.as_deref().map(RootDomain::new),
            region: cfg.region.clone(),
        }
    }
}

/// The region of a SigV4 credential scope (`AKID/20240101/us-east-1/s3/aws4_request`).
fn scope_region(credential: &str) -> Option<&str> {
    let mut parts = credential.split('/');
    parts.nth(2)
}

#[derive(Clone)]
pub struct RequestIdService {
    inner: Arc<S3Service>,
    guard: Arc<Guard>,
    lookups: Arc<Lookups>,
    peer: SocketAddr,
}

impl RequestIdService {
    pub fn new(inner: Arc<S3Service>, guard: Arc<Guard>, lookups: Arc<Lookups>, peer: SocketAddr) -> Self {
        Self { inner, guard, lookups, peer }
    }
}

/// A request id when traces are not exported: 32 random hex digits, the shape of a trace id.
pub fn new_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Whether the S3 operation `op` changes its bucket's entry (its existence or a setting).
fn changes_bucket(op: &str) -> bool {
    op == "CreateBucket" || op.starts_with("DeleteBucket") || op.starts_with("PutBucket")
}

/// The declared length of a body: `x-amz-decoded-content-length` for aws-chunked uploads
/// (whose handlers check it against the data), else `Content-Length` (0 when absent:
/// chunked responses are not counted).
fn declared_length(headers: &http::HeaderMap) -> u64 {
    let get = |h: &str| headers.get(h).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    match ChunkFraming::applies(headers) {
        Some(_) => get("x-amz-decoded-content-length").unwrap_or(0),
        None => get("content-length").unwrap_or(0),
    }
}

/// The `<Code>` of an S3 error body.
fn error_code(body: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(body).ok()?;
    text.split_once("<Code>").and_then(|(_, r)| r.split_once("</Code>")).map(|(c, _)| c)
}

/// Completes an S3 error body raised inside s3s: puts in the `<RequestId>`, and a
/// `<Message>` when the error came without one (clients print "Unknown" otherwise).
fn complete_error(body: &[u8], id: &str) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(body).ok()?;
    let has_id = text.contains("<RequestId>");
    let has_message = text.contains("<Message>");
    if has_id && has_message {
        return None;
    }
    let at = text.rfind("</Error>")?;
    let mut extra = String::new();
    if !has_message {
        let code = error_code(body).unwrap_or("");
        extra.push_str(&format!("<Message>{}</Message>", xml_escape(&default_message(code))));
    }
    if !has_id {
        extra.push_str(&format!("<RequestId>{id}</RequestId>"));
    }
    Some(format!("{}{extra}{}", &text[..at], &text[at..]).into_bytes())
}

/// What an error code means, for errors raised without a message.
fn default_message(code: &str) -> String {
    match code {
        "SignatureDoesNotMatch" => "The request signature we calculated does not match the signature you provided. \
            Check your secret access key and signing method."
            .into(),
        "InvalidAccessKeyId" => "The access key id you provided does not exist.".into(),
        "AccessDenied" => "Access denied.".into(),
        "NoSuchBucket" => "The specified bucket does not exist.".into(),
        "NoSuchKey" => "The specified key does not exist.".into(),
        "NoSuchUpload" => "The specified multipart upload does not exist.".into(),
        "MalformedXML" => "The XML you provided was not well-formed or did not validate.".into(),
        "NotImplemented" => "This operation is not implemented.".into(),
        "InvalidRequest" => "The request is not valid.".into(),
        "InvalidArgument" => "An argument of the request is not valid.".into(),
        "RequestTimeTooSkewed" => "The difference between the request time and the server's time is too large.".into(),
        "" => "The request failed.".into(),
        other => format!("The request failed with {other}."),
    }
}

/// At most the first 200 characters of client-supplied text, for logs.
pub fn bounded(s: &str) -> String {
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}… ({} bytes)", &s[..i], s.len()),
        None => s.to_string(),
    }
}

pub(crate) fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// An S3 error response written here (s3s never saw the request); `extra` goes inside
/// `<Error>`.
fn error_response(status: StatusCode, code: &str, message: &str, id: &str, extra: &str) -> HttpResponse {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{}</Message>{extra}<RequestId>{id}</RequestId></Error>",
        xml_escape(message)
    );
    let mut resp = HttpResponse::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    resp
}

/// The query's parameter names, decoded.
fn query_names(uri: &http::Uri) -> Vec<String> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let name = p.split('=').next().unwrap_or_default().replace('+', " ");
            percent_encoding::percent_decode_str(&name).decode_utf8_lossy().into_owned()
        })
        .collect()
}

fn query_value(uri: &http::Uri, wanted: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        let k = percent_encoding::percent_decode_str(k).decode_utf8_lossy();
        (k == wanted).then(|| percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned())
    })
}

/// A SigV4 request's credential (`AKID/date/region/s3/aws4_request`), from its
/// Authorization header or its presigned query.
fn credential<B>(req: &http::Request<B>) -> Option<String> {
    let auth = req.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
    auth.strip_prefix("AWS4-HMAC-SHA256")
        .and_then(|rest| rest.split(',').find_map(|p| p.trim().strip_prefix("Credential=")))
        .map(str::to_string)
        .or_else(|| query_value(req.uri(), "X-Amz-Credential"))
}

/// Sub-resources whose PUT carries an XML document (every other PUT to a key carries object
/// data).
const XML_SUBRESOURCES: &[&str] = &[
    "accelerate",
    "acl",
    "analytics",
    "cors",
    "encryption",
    "intelligent-tiering",
    "inventory",
    "legal-hold",
    "lifecycle",
    "logging",
    "metrics",
    "notification",
    "object-lock",
    "ownershipControls",
    "policy",
    "publicAccessBlock",
    "replication",
    "requestPayment",
    "retention",
    "tagging",
    "versioning",
    "website",
];

impl Guard {
    /// The bucket a request names (by its Host under the root domain, else by its path).
    fn bucket_of(&self, req: &http::Request<Incoming>) -> Option<String> {
        let host = req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
        if let Some(b) = self.root_domain.as_ref().and_then(|d| d.bucket_of(host)) {
            return Some(b.to_string());
        }
        let path = req.uri().path().trim_start_matches('/');
        let first = path.split('/').next().unwrap_or_default();
        let name = percent_encoding::percent_decode_str(first).decode_utf8().ok()?;
        (!name.is_empty()).then(|| name.into_owned())
    }

    /// Whether the request carries an XML body (everything that has a body except object
    /// data: PutObject and UploadPart).
    fn xml_body(&self, req: &http::Request<Incoming>) -> bool {
        match *req.method() {
            http::Method::POST => true,
            http::Method::PUT => {
                let subresource = query_names(req.uri()).iter().any(|n| XML_SUBRESOURCES.contains(&n.as_str()));
                if subresource {
                    return true;
                }
                // No key: CreateBucket.
                let path = req.uri().path().trim_start_matches('/');
                let host = req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
                let virtual_bucket = self.root_domain.as_ref().and_then(|d| d.bucket_of(host)).is_some();
                let key = if virtual_bucket { path } else { path.split_once('/').map(|(_, k)| k).unwrap_or("") };
                key.is_empty()
            }
            _ => false,
        }
    }

    /// Why the request must not reach s3s, if it must not.
    fn check(&self, req: &http::Request<Incoming>) -> Option<Refusal> {
        let headers = req.headers();
        if headers.get(http::header::HOST).is_none() && req.uri().authority().is_none() {
            return Some(Refusal::from((
                StatusCode::BAD_REQUEST,
                "InvalidRequest",
                "the request has no Host header".into(),
            )));
        }
        let sigv2 = "the authorization mechanism you have provided is not supported; use AWS4-HMAC-SHA256 (SigV4)";
        if headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("AWS ") || v == "AWS")
        {
            return Some(Refusal::from((StatusCode::BAD_REQUEST, "InvalidRequest", sigv2.into())));
        }
        let names = query_names(req.uri());
        let has = |n: &str| names.iter().any(|m| m == n);
        if has("Signature") || has("AWSAccessKeyId") {
            return Some(Refusal::from((StatusCode::BAD_REQUEST, "InvalidRequest", sigv2.into())));
        }
        // A request signed for another region is refused, as AWS does, naming the region
        // to sign for.
        let auth = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let signed_region = credential(req);
        // GetBucketLocation is how clients (minio-go, mc) find the region: they sign it for
        // us-east-1 whatever the region is, as AWS allows.
        let locating = req.method() == http::Method::GET && names.iter().any(|n| n == "location");
        if let Some(credential) = &signed_region
            && !locating
            && let Some(region) = scope_region(credential)
            && region != self.region
        {
            let code =
                if auth.is_empty() { "AuthorizationQueryParametersError" } else { "AuthorizationHeaderMalformed" };
            return Some(Refusal::in_region(
                (
                    StatusCode::BAD_REQUEST,
                    code,
                    format!(
                        "the authorization header is malformed; the region '{}' is wrong; expecting '{}'",
                        bounded(region),
                        self.region
                    ),
                ),
                &self.region,
            ));
        }
        if let Some(expires) = query_value(req.uri(), "X-Amz-Expires") {
            match expires.parse::<u64>() {
                Ok(s) if s <= MAX_PRESIGNED_EXPIRY_SECS => {}
                _ => {
                    return Some(Refusal::from((
                        StatusCode::BAD_REQUEST,
                        "AuthorizationQueryParametersError",
                        "X-Amz-Expires must be a number of seconds of at most 604800 (7 days)".into(),
                    )));
                }
            }
        }
        if let Some(refusal) = unsupported_promise(req.method(), headers) {
            return Some(refusal);
        }
        // Versioning is never enabled: only the current version exists, named "null".
        if let Some(v) = query_value(req.uri(), "versionId")
            && v != "null"
        {
            return Some(Refusal::from((
                StatusCode::NOT_FOUND,
                "NoSuchVersion",
                "versioning is not enabled on any bucket: only the current version (\"null\") exists".into(),
            )));
        }
        let content_type = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        if req.method() == http::Method::POST
            && content_type.trim_start().to_ascii_lowercase().starts_with("multipart/form-data")
        {
            return Some(Refusal::from((
                StatusCode::NOT_IMPLEMENTED,
                "NotImplemented",
                "POST Object (browser form uploads) is not supported; use PutObject or a presigned PUT URL".into(),
            )));
        }
        if self.xml_body(req) {
            let len = headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if len.is_some_and(|l| l > self.max_xml_body) {
                return Some(Refusal::from((
                    StatusCode::BAD_REQUEST,
                    "MaxMessageLengthExceeded",
                    format!("your request was too big: XML bodies may hold at most {} bytes", self.max_xml_body),
                )));
            }
        }
        None
    }
}

/// A request asking for something Hangar does not do and whose client would take silence
/// for done — an object lock, an append, a conditional delete — is refused rather than
/// carried out without it.
fn unsupported_promise(method: &http::Method, headers: &http::HeaderMap) -> Option<Refusal> {
    let has = |n: &str| headers.contains_key(n);
    let conditional_delete = method == http::Method::DELETE
        && (has("if-match") || has("x-amz-if-match-last-modified-time") || has("x-amz-if-match-size"));
    let what = if conditional_delete {
        "conditional deletes (If-Match on DeleteObject)"
    } else if has("x-amz-write-offset-bytes") {
        "appending to objects (x-amz-write-offset-bytes)"
    } else if has("x-amz-object-lock-mode") || has("x-amz-object-lock-retain-until-date") {
        "object lock retention"
    } else if headers.get("x-amz-object-lock-legal-hold").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"ON")) {
        "object lock legal holds"
    } else if headers
        .get("x-amz-bucket-object-lock-enabled")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"))
    {
        "object lock"
    } else {
        return None;
    };
    Some(Refusal::from((StatusCode::NOT_IMPLEMENTED, "NotImplemented", format!("Hangar does not support {what}"))))
}

/// Why a request must not reach s3s: the S3 error to answer.
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Set for a request signed for another region: the one to sign for.
    region: Option<String>,
}

impl From<(StatusCode, &'static str, String)> for Refusal {
    fn from((status, code, message): (StatusCode, &'static str, String)) -> Self {
        Refusal { status, code, message, region: None }
    }
}

impl Refusal {
    fn in_region((status, code, message): (StatusCode, &'static str, String), region: &str) -> Self {
        Refusal { status, code, message, region: Some(region.to_string()) }
    }

    fn response(&self, id: &str) -> HttpResponse {
        let extra = self.region.as_deref().map(|r| format!("<Region>{}</Region>", xml_escape(r))).unwrap_or_default();
        let mut resp = error_response(self.status, self.code, &self.message, id, &extra);
        // Clients that follow region redirects read the region from here.
        if let Some(v) = self.region.as_deref().and_then(|r| HeaderValue::from_str(r).ok()) {
            resp.headers_mut().insert("x-amz-bucket-region", v);
        }
        resp
    }
}

impl hyper::service::Service<http::Request<Incoming>> for RequestIdService {
    type Response = HttpResponse;
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send>>;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        let inner = self.inner.clone();
        let method = req.method().clone();
        // Named for its operation once s3s has recognised it; the request id is the trace
        // id, so a client's failing request can be found in the tracing backend. A request
        // not sampled gets the same span under a target that is never exported.
        macro_rules! request_span {
            ($target:expr) => {
                tracing::info_span!(
                    target: $target,
                    traces::REQUEST_SPAN,
                    otel.kind = "server",
                    trace_id = tracing::field::Empty,
                    http.request.method = %method,
                    client.address = %self.peer.ip(),
                    bucket = tracing::field::Empty,
                    http.response.status_code = tracing::field::Empty,
                    http.request.body.size = tracing::field::Empty,
                    http.response.body.size = tracing::field::Empty,
                    otel.status_code = tracing::field::Empty,
                )
            };
        }
        let span = if traces::enabled() && !traces::sample() {
            request_span!(traces::UNTRACED_TARGET)
        } else {
            request_span!(module_path!())
        };
        let id = traces::trace_id(&span).unwrap_or_else(new_request_id);
        span.record("trace_id", tracing::field::display(&id));
        // A CORS preflight is answered from the bucket's rules, unsigned, as S3 does.
        let preflight = (req.method() == http::Method::OPTIONS).then(|| self.guard.bucket_of(&req));
        let refused = if preflight.is_some() { None } else { self.guard.check(&req) };
        let origin = req.headers().get(http::header::ORIGIN).and_then(|v| v.to_str().ok()).map(str::to_string);
        let lookups = self.lookups.clone();
        let headers_for_preflight = preflight.as_ref().map(|_| req.headers().clone());
        let received = declared_length(req.headers());
        let object_data = !self.guard.xml_body(&req);
        let access_key = credential(&req).and_then(|c| c.split('/').next().map(str::to_string));
        Box::pin(
            async move {
                let start = Instant::now();
                let op = OpName::default();
                let mut resp = match (preflight, refused) {
                    (Some(bucket), _) => {
                        let _ = op.0.set(("PreflightRequest".into(), bucket.clone()));
                        let rules = match &bucket {
                            Some(b) => crate::cors::rules(&lookups, b).await,
                            None => None,
                        };
                        match crate::cors::preflight(rules.as_ref(), &headers_for_preflight.unwrap_or_default()) {
                            Ok(h) => {
                                let mut r = HttpResponse::new(Body::empty());
                                *r.headers_mut() = h;
                                r
                            }
                            Err(e) => error_response(e.status, e.code, e.message, &id, ""),
                        }
                    }
                    (None, Some(r)) => r.response(&id),
                    (None, None) => {
                        let (mut parts, body) = req.into_parts();
                        parts.extensions.insert(op.clone());
                        let body = match ChunkFraming::applies(&parts.headers) {
                            None if UnframedBody::applies(&parts, object_data) => {
                                parts.extensions.insert(UnframedBody::new(body));
                                Body::empty()
                            }
                            Some(framing) => {
                                parts.extensions.insert(framing.clone());
                                Body::http_body_unsync(FramedBody { inner: body, framing })
                            }
                            None => Body::from(body),
                        };
                        S3Service::call(&inner, http::Request::from_parts(parts, body)).await?
                    }
                };
                let status = resp.status();
                if status.is_client_error() || status.is_server_error() {
                    if let Some(new) = resp.body().bytes().and_then(|b| complete_error(&b, &id)) {
                        resp.headers_mut().remove(http::header::CONTENT_LENGTH);
                        *resp.body_mut() = Body::from(new);
                    }
                    // Client errors are the client's business: INFO, never ERROR.
                    if status == StatusCode::NOT_IMPLEMENTED {
                        // The client asked for something Hangar does not do: not a failure.
                        tracing::info!(status = status.as_u16(), "request refused: not implemented");
                    } else if status.is_server_error() {
                        tracing::warn!(status = status.as_u16(), "request failed");
                    } else {
                        tracing::info!(status = status.as_u16(), "request refused");
                    }
                }
                if let Ok(v) = HeaderValue::from_str(&id) {
                    resp.headers_mut().insert("x-amz-request-id", v.clone());
                    resp.headers_mut().insert("x-amz-id-2", v);
                }
                // Labels from fixed sets: the S3 operation s3s recognised (or "unknown"),
                // and the status code.
                let (op, bucket) = op.0.get().cloned().unwrap_or_else(|| ("unknown".into(), None));
                // A secret that does not match the key kept may be a rotated one: read the key
                // again for the next request.
                if status == StatusCode::FORBIDDEN
                    && let Some(k) = &access_key
                    && resp.body().bytes().is_some_and(|b| error_code(&b) == Some("SignatureDoesNotMatch"))
                {
                    lookups.forget_key(k).await;
                }
                // A bucket changed through this frontend is read again by its next request.
                if bucket.is_some() && changes_bucket(&op) {
                    lookups.forget_buckets();
                }
                // A browser's actual request gets the CORS headers its bucket's rules allow.
                if let (Some(origin), Some(b)) = (&origin, &bucket)
                    && op != "PreflightRequest"
                {
                    let rules = crate::cors::rules(&lookups, b).await;
                    crate::cors::decorate(rules.as_ref(), origin, method.as_str(), resp.headers_mut());
                }
                let sent = declared_length(resp.headers());
                let span = tracing::Span::current();
                span.record("http.response.status_code", status.as_u16());
                span.record("http.request.body.size", received);
                span.record("http.response.body.size", sent);
                if let Some(b) = &bucket {
                    span.record("bucket", b.as_str());
                }
                if status.is_server_error() {
                    span.record("otel.status_code", "ERROR");
                }
                traces::rename(&span, op.clone());
                traces::end(&span);
                let m = metrics();
                let label = EndpointLabel { api_endpoint: op };
                m.api_s3_request_counter.get_or_create(&label).inc();
                m.api_s3_request_duration.get_or_create(&label).observe(start.elapsed().as_secs_f64());
                // A body's declared length is checked against what came only when the
                // request succeeded: a failed one counts nothing.
                if status.is_success() {
                    m.api_s3_request_bytes_received.get_or_create(&label).inc_by(received);
                }
                m.api_s3_response_bytes_sent.get_or_create(&label).inc_by(sent);
                if status.is_client_error() || status.is_server_error() {
                    let labels =
                        ErrorLabels { api_endpoint: label.api_endpoint, status_code: status.as_u16().to_string() };
                    m.api_s3_error_counter.get_or_create(&labels).inc();
                }
                Ok(resp)
            }
            .instrument(span),
        )
    }
}

/// The raw framing of an aws-chunked body, followed as the bytes go to s3s's decoder: did
/// the final (zero-length) chunk come, did the trailer section end, which trailers came.
/// s3s treats a stream that stops at a chunk boundary as complete; the handlers use this
/// to refuse such truncated uploads.
#[derive(Clone, Default)]
pub struct ChunkFraming(Arc<Mutex<Framing>>);

#[derive(Default)]
struct Framing {
    state: FrameState,
    line: Vec<u8>,
    trailers: Vec<String>,
    malformed: bool,
}

#[derive(Default, PartialEq, Eq)]
enum FrameState {
    #[default]
    Header,
    Data(u64),
    DataEnd(u8),
    Trailers,
    Done,
}

/// Longest chunk header or trailer line followed.
const MAX_LINE: usize = 16 * 1024;

impl ChunkFraming {
    /// A tracker for requests whose body is aws-chunked.
    fn applies(headers: &http::HeaderMap) -> Option<Self> {
        let sha = headers.get("x-amz-content-sha256")?.to_str().ok()?;
        sha.starts_with("STREAMING-").then(Self::default)
    }

    fn feed(&self, mut data: &[u8]) {
        let mut f = self.0.lock().unwrap_or_else(|p| p.into_inner());
        while !data.is_empty() && !f.malformed {
            match f.state {
                FrameState::Header | FrameState::Trailers => {
                    let Some(pos) = data.iter().position(|&b| b == b'\n') else {
                        f.line.extend_from_slice(data);
                        f.malformed |= f.line.len() > MAX_LINE;
                        return;
                    };
                    f.line.extend_from_slice(&data[..pos]);
                    data = &data[pos + 1..];
                    let line = std::mem::take(&mut f.line);
                    let line = line.strip_suffix(b"\r").unwrap_or(&line);
                    if f.state == FrameState::Header {
                        let size = std::str::from_utf8(line)
                            .ok()
                            .map(|l| l.split(';').next().unwrap_or_default().trim())
                            .and_then(|s| u64::from_str_radix(s, 16).ok());
                        f.state = match size {
                            Some(0) => FrameState::Trailers,
                            Some(n) => FrameState::Data(n),
                            None => {
                                f.malformed = true;
                                return;
                            }
                        };
                    } else if line.is_empty() {
                        f.state = FrameState::Done;
                    } else if let Some((name, _)) = std::str::from_utf8(line).ok().and_then(|l| l.split_once(':')) {
                        f.trailers.push(name.trim().to_ascii_lowercase());
                    }
                }
                FrameState::Data(n) => {
                    let take = (n as usize).min(data.len());
                    data = &data[take..];
                    let left = n - take as u64;
                    f.state = if left == 0 { FrameState::DataEnd(2) } else { FrameState::Data(left) };
                }
                FrameState::DataEnd(k) => {
                    data = &data[1..];
                    f.state = if k == 1 { FrameState::Header } else { FrameState::DataEnd(k - 1) };
                }
                FrameState::Done => {
                    // Bytes after the end of the chunked body.
                    f.malformed = true;
                }
            }
        }
    }

    /// Why the body was not a complete aws-chunked stream, if it was not; `announced`
    /// lists the trailers `x-amz-trailer` promised.
    pub fn incomplete(&self, announced: &[String]) -> Option<String> {
        let f = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if f.malformed {
            return Some("the aws-chunked body is malformed".into());
        }
        match f.state {
            FrameState::Done => {}
            FrameState::Trailers if announced.is_empty() && f.line.is_empty() => {
                // Without trailers, a body may end right after the final chunk's line.
            }
            FrameState::Trailers => return Some("the aws-chunked body ended inside its trailers".into()),
            _ => return Some("the aws-chunked body ended before its final chunk".into()),
        }
        for a in announced {
            if !f.trailers.contains(a) {
                return Some(format!("the announced trailer `{}` did not come", bounded(a)));
            }
        }
        None
    }
}

/// A request body that shows its bytes to a `ChunkFraming` on their way.
struct FramedBody {
    inner: Incoming,
    framing: ChunkFraming,
}

impl hyper::body::Body for FramedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    self.framing.feed(d);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_scopes_name_their_region() {
        assert_eq!(super::scope_region("AKID/20240101/eu-west-1/s3/aws4_request"), Some("eu-west-1"));
        assert_eq!(super::scope_region("garbage"), None);
    }

    #[test]
    fn request_id_goes_inside_the_error() {
        let body = b"<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code></Error>";
        let out = String::from_utf8(complete_error(body, "ABC").unwrap()).unwrap();
        assert!(
            out.ends_with(
                "<Code>NoSuchKey</Code><Message>The specified key does not exist.</Message><RequestId>ABC</RequestId></Error>"
            ),
            "{out}"
        );
        assert!(complete_error(out.as_bytes(), "X").is_none());
    }

    fn framing(pieces: &[&[u8]]) -> ChunkFraming {
        let f = ChunkFraming::default();
        for p in pieces {
            f.feed(p);
        }
        f
    }

    #[test]
    fn complete_streams_pass() {
        let sig = "0".repeat(64);
        let body = format!("5;chunk-signature={sig}\r\nhello\r\n0;chunk-signature={sig}\r\n\r\n");
        // Fed byte by byte, too.
        let bytes = body.as_bytes();
        let one: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(framing(&[bytes]).incomplete(&[]), None);
        assert_eq!(framing(&one).incomplete(&[]), None);
        let trailer = b"5\r\nhello\r\n0\r\nx-amz-checksum-crc32:NhCmhg==\r\n\r\n";
        assert_eq!(framing(&[trailer]).incomplete(&["x-amz-checksum-crc32".into()]), None);
    }

    #[test]
    fn truncated_or_unframed_streams_are_caught() {
        assert!(framing(&[b"hello world"]).incomplete(&[]).is_some(), "not chunk-encoded");
        assert!(framing(&[b"5\r\nhello\r\n"]).incomplete(&[]).is_some(), "no final chunk");
        assert!(framing(&[b"5\r\nhel"]).incomplete(&[]).is_some(), "cut inside a chunk");
        assert!(
            framing(&[b"5\r\nhello\r\n0\r\n\r\n"]).incomplete(&["x-amz-checksum-crc32".into()]).is_some(),
            "announced trailer missing"
        );
        assert!(framing(&[b"zz\r\n"]).incomplete(&[]).is_some(), "bad size");
    }

    #[test]
    fn log_lines_are_bounded() {
        let long = "x".repeat(10_000);
        assert!(bounded(&long).len() < 300);
        assert_eq!(bounded("short"), "short");
    }
}
