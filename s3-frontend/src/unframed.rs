//! Object data sent with `Transfer-Encoding: chunked` and no length of any kind: no
//! `Content-Length`, not aws-chunked (so no `x-amz-decoded-content-length`). Clients that
//! stream from a pipe send PutObject and UploadPart this way (presigned URLs, `curl -T -`,
//! SDKs given a stream of unknown length), and Garage accepts them.
//!
//! s3s refuses such a body with 411 MissingContentLength before any handler runs (its SigV4
//! check wants a length for unsigned and signed single-chunk payloads). The body is not part
//! of what SigV4 signs — `x-amz-content-sha256` is, and the handlers check the body against
//! it themselves (`handlers::object::receive`) — so the HTTP layer hands s3s an empty body
//! and keeps the real one in the request's extensions, where `receive` takes it. Nothing
//! else changes: the signature, the payload hash, Content-MD5, checksums and the 5 GiB limit
//! of one request body are checked exactly as for a body with a length.

use std::sync::{Arc, Mutex};

use http::request::Parts;
use hyper::body::Incoming;
use s3s::dto::StreamingBlob;

/// The body s3s did not see, for the handler of the request.
#[derive(Clone)]
pub struct UnframedBody(Arc<Mutex<Option<Incoming>>>);

impl UnframedBody {
    /// Whether a request is an object upload that declares no length. `object_data` says
    /// whether it carries object data (not an XML document); the caller has already found
    /// the body is not aws-chunked (`http_layer::ChunkFraming`).
    pub fn applies(parts: &Parts, object_data: bool) -> bool {
        let h = &parts.headers;
        let chunked = h
            .get(http::header::TRANSFER_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("chunked")));
        parts.method == http::Method::PUT
            && object_data
            && chunked
            && !h.contains_key(http::header::CONTENT_LENGTH)
            && !h.contains_key("x-amz-copy-source")
    }

    pub fn new(body: Incoming) -> UnframedBody {
        UnframedBody(Arc::new(Mutex::new(Some(body))))
    }

    /// The body set aside for this request, if one was (once).
    pub fn take(extensions: &http::Extensions) -> Option<StreamingBlob> {
        let slot = extensions.get::<UnframedBody>()?;
        let body = slot.0.lock().ok()?.take()?;
        Some(StreamingBlob::from(s3s::Body::http_body_unsync(body)))
    }
}
