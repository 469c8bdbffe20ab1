//! Wraps the S3 service: gives every request an id (the `x-amz-request-id` header and the
//! `<RequestId>` of error bodies), a tracing span, and its metrics.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use hangar_common::telemetry::{NameLabel, OpLabels, metrics};
use http::HeaderValue;
use hyper::body::Incoming;
use s3s::service::S3Service;
use s3s::{Body, HttpError, HttpResponse};
use tracing::Instrument;

#[derive(Clone)]
pub struct RequestIdService {
    inner: Arc<S3Service>,
    peer: SocketAddr,
}

impl RequestIdService {
    pub fn new(inner: Arc<S3Service>, peer: SocketAddr) -> Self {
        Self { inner, peer }
    }
}

pub fn new_request_id() -> String {
    hex::encode_upper(hangar_common::ids::random_id())
}

/// Puts `<RequestId>` into an S3 error body that lacks one (errors raised inside s3s).
fn add_request_id(body: &[u8], id: &str) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(body).ok()?;
    if text.contains("<RequestId>") {
        return None;
    }
    let at = text.rfind("</Error>")?;
    Some(format!("{}<RequestId>{id}</RequestId>{}", &text[..at], &text[at..]).into_bytes())
}

impl hyper::service::Service<http::Request<Incoming>> for RequestIdService {
    type Response = HttpResponse;
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send>>;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        let inner = self.inner.clone();
        let id = new_request_id();
        let method = req.method().as_str().to_string();
        let span = tracing::info_span!("s3_request", request_id = %id, method = %method, path = %req.uri().path(), peer = %self.peer);
        Box::pin(
            async move {
                let start = Instant::now();
                let result = hyper::service::Service::call(&*inner, req).await;
                let mut resp = match result {
                    Ok(r) => r,
                    Err(e) => return Err(e),
                };
                let status = resp.status();
                if status.is_client_error() || status.is_server_error() {
                    if let Some(new) = resp.body().bytes().and_then(|b| add_request_id(&b, &id)) {
                        resp.headers_mut().remove(http::header::CONTENT_LENGTH);
                        *resp.body_mut() = Body::from(new);
                    }
                    tracing::info!(status = status.as_u16(), "request failed");
                }
                if let Ok(v) = HeaderValue::from_str(&id) {
                    resp.headers_mut().insert("x-amz-request-id", v.clone());
                    resp.headers_mut().insert("x-amz-id-2", v);
                }
                let m = metrics();
                m.api_s3_request_counter
                    .get_or_create(&OpLabels { op: method.clone(), status: status.as_u16().to_string() })
                    .inc();
                m.api_s3_request_duration
                    .get_or_create(&NameLabel { name: method })
                    .observe(start.elapsed().as_secs_f64());
                Ok(resp)
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_id_goes_inside_the_error() {
        let body = b"<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code></Error>";
        let out = String::from_utf8(super::add_request_id(body, "ABC").unwrap()).unwrap();
        assert!(out.ends_with("<Code>NoSuchKey</Code><RequestId>ABC</RequestId></Error>"), "{out}");
        assert!(super::add_request_id(out.as_bytes(), "X").is_none());
    }
}
