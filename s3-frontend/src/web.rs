//! The static website endpoint (`[s3_web]`, port 3902 by default): buckets with a website
//! configuration served anonymously over plain HTTP, as S3's website endpoints serve them.
//!
//! The Host header names the bucket: `<bucket><root_domain>`, or else a bucket named like
//! the whole host name (`www.example.com`), as in Garage. Only GET, HEAD and OPTIONS (CORS
//! preflight) are answered; a bucket without a website configuration is never served. A
//! key ending in `/` (or the root) gets the index document appended; a key that is missing
//! while `key/` + index exists is redirected there (302); routing rules redirect on a key
//! prefix before the lookup or on an error status after it; the error document is served
//! with the error's status. Range and conditional GETs work as on the S3 endpoint.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use hangar_common::http_server::Limits;
use hangar_common::telemetry::metrics::{self, MethodErrorLabels, MethodLabel};
use hangar_model::Store;
use hangar_proto::model::{Bucket, Object, Redirect, WebsiteConfig};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use hyper::body::Incoming;
use s3s::dto::{ETagCondition, Timestamp, TimestampFormat};
use s3s::{Body, HttpResponse};
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::conditions::{Conditions, Outcome, validators};
use crate::cors;
use crate::handlers::check_key;
use crate::host::RootDomain;
use crate::lookups::Lookups;
use crate::read_pipeline::object_body;

type Response = http::Response<Body>;

/// What the website endpoint needs.
#[derive(Clone)]
pub struct Web {
    store: Store,
    /// Buckets by name, kept as the S3 endpoint keeps them (`lookups`).
    lookups: Arc<Lookups>,
    root_domain: Option<Arc<RootDomain>>,
    /// The index document of websites whose configuration names none.
    default_index: String,
}

impl Web {
    pub fn new(lookups: Arc<Lookups>, root_domain: Option<&str>, default_index: &str) -> Self {
        Self {
            store: lookups.store().clone(),
            lookups,
            root_domain: root_domain.map(|d| Arc::new(RootDomain::new(d))),
            default_index: default_index.to_string(),
        }
    }

    fn bucket_name(&self, host: &str) -> String {
        bucket_name(self.root_domain.as_deref(), host)
    }
}

/// The bucket a Host header names: `<bucket><root_domain>`, else the whole host name.
fn bucket_name(root_domain: Option<&RootDomain>, host: &str) -> String {
    match root_domain.and_then(|d| d.bucket_of(host)) {
        Some(b) => b.to_ascii_lowercase(),
        None => crate::host::without_port(host).to_ascii_lowercase(),
    }
}

/// Serves the website endpoint on `listener` until `shutdown` resolves.
pub async fn run(listener: TcpListener, web: Web, limits: Limits, shutdown: impl std::future::Future<Output = ()>) {
    let web = Arc::new(web);
    hangar_common::http_server::serve(listener, limits, move |peer| WebService { web: web.clone(), peer }, shutdown)
        .await
}

struct WebService {
    web: Arc<Web>,
    peer: SocketAddr,
}

impl hyper::service::Service<http::Request<Incoming>> for WebService {
    type Response = HttpResponse;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<HttpResponse, Self::Error>> + Send>>;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        let web = self.web.clone();
        let span =
            tracing::info_span!("web.request", http.request.method = %req.method(), client.address = %self.peer.ip());
        Box::pin(
            async move {
                let start = Instant::now();
                let method = req.method().clone();
                let resp = web.answer(req).await;
                let m = metrics::metrics();
                // Labels from a fixed set: a client may send any method name.
                let name = match method {
                    Method::GET | Method::HEAD | Method::OPTIONS | Method::POST | Method::PUT | Method::DELETE => {
                        method.as_str()
                    }
                    _ => "other",
                };
                let label = MethodLabel { method: name.to_string() };
                m.web_request_counter.get_or_create(&label).inc();
                m.web_request_duration.get_or_create(&label).observe(start.elapsed().as_secs_f64());
                let status = resp.status();
                if status.is_client_error() || status.is_server_error() {
                    let labels = MethodErrorLabels { method: label.method, status_code: status.as_u16().to_string() };
                    m.web_error_counter.get_or_create(&labels).inc();
                }
                Ok(resp)
            }
            .instrument(span),
        )
    }
}

/// A small HTML page for an error without an error document.
fn page(status: StatusCode, code: &str, message: &str) -> Response {
    let title = format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or(""));
    let html = format!(
        "<html>\n<head><title>{title}</title></head>\n<body>\n<h1>{title}</h1>\n<ul>\n<li>Code: {code}</li>\n<li>Message: {}</li>\n</ul>\n</body>\n</html>\n",
        crate::http_layer::xml_escape(message)
    );
    let mut r = http::Response::new(Body::from(html));
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    r
}

fn redirect_to(location: &str, status: StatusCode) -> Response {
    let mut r = http::Response::new(Body::empty());
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(http::header::LOCATION, v);
    }
    r
}

/// Percent-encodes a key for a Location header (slashes kept).
fn encode_key(key: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'/').remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    percent_encoding::utf8_percent_encode(key, KEEP).to_string()
}

/// Where a redirect rule sends a request for `key` (the rule's condition prefix, if any, is
/// what ReplaceKeyPrefixWith replaces); without a protocol, `http`, the endpoint's own (a
/// header a client sends, such as X-Forwarded-Proto, is not trusted to choose it).
fn location(r: &Redirect, prefix: Option<&str>, key: &str, host: &str) -> (String, StatusCode) {
    let protocol = if r.protocol.is_empty() { "http" } else { r.protocol.as_str() };
    let host = if r.host_name.is_empty() { host } else { r.host_name.as_str() };
    let new_key = match (&r.replace_key_with, &r.replace_key_prefix_with) {
        (Some(k), _) => k.clone(),
        (None, Some(p)) => format!("{p}{}", key.strip_prefix(prefix.unwrap_or("")).unwrap_or(key)),
        (None, None) => key.to_string(),
    };
    let status = StatusCode::from_u16(if r.http_redirect_code == 0 { 301 } else { r.http_redirect_code as u16 })
        .unwrap_or(StatusCode::MOVED_PERMANENTLY);
    (format!("{protocol}://{host}/{}", encode_key(&new_key)), status)
}

fn header(h: &HeaderMap, name: http::header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

impl Web {
    async fn answer(&self, req: http::Request<Incoming>) -> Response {
        let headers = req.headers().clone();
        let host = header(&headers, http::header::HOST).or(req.uri().authority().map(|a| a.as_str())).unwrap_or("");
        let host = host.to_string();
        let name = self.bucket_name(&host);
        let method = req.method().clone();
        // A bucket kept without a website is read again: serving may just have been allowed.
        let bucket = match self.lookups.bucket(&name).await {
            Ok((Some(b), true)) if b.website.is_none() => self.lookups.fresh_bucket(&name).await,
            other => other.map(|(b, _)| b),
        };
        let bucket = match bucket {
            Ok(Some(b)) => b,
            Ok(None) => return page(StatusCode::NOT_FOUND, "NoSuchBucket", "The specified bucket does not exist"),
            Err(e) => {
                tracing::warn!(error = %e, "website request: storage unavailable");
                return page(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", "Please retry later");
            }
        };
        let Some(website) = bucket.website.clone() else {
            return page(
                StatusCode::NOT_FOUND,
                "NoSuchWebsiteConfiguration",
                "The specified bucket does not have a website configuration",
            );
        };
        if method == Method::OPTIONS {
            return match cors::preflight(bucket.cors.as_ref(), &headers) {
                Ok(h) => {
                    let mut r = http::Response::new(Body::empty());
                    *r.headers_mut() = h;
                    r
                }
                Err(refused) => page(refused.status, refused.code, refused.message),
            };
        }
        let mut resp = if method == Method::GET || method == Method::HEAD {
            self.serve(&bucket, &website, req.uri().path(), &host, &headers, method == Method::HEAD).await
        } else {
            let mut r = page(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "The specified method is not allowed");
            r.headers_mut().insert(http::header::ALLOW, HeaderValue::from_static("GET, HEAD, OPTIONS"));
            r
        };
        if let Some(origin) = header(&headers, http::header::ORIGIN) {
            cors::decorate(bucket.cors.as_ref(), origin, method.as_str(), resp.headers_mut());
        }
        if method == Method::HEAD {
            *resp.body_mut() = Body::empty();
        }
        resp
    }

    async fn serve(
        &self,
        bucket: &Bucket,
        w: &WebsiteConfig,
        path: &str,
        host: &str,
        headers: &HeaderMap,
        head: bool,
    ) -> Response {
        let Ok(key) = percent_encoding::percent_decode_str(path.trim_start_matches('/')).decode_utf8() else {
            return page(StatusCode::BAD_REQUEST, "InvalidURI", "Couldn't parse the specified URI.");
        };
        let key = key.into_owned();
        if let Some(all) = &w.redirect_all {
            let (loc, status) = location(all, None, &key, host);
            return redirect_to(&loc, status);
        }
        // Rules on the key alone redirect before any lookup.
        for r in w.routing_rules.iter().filter(|r| r.http_error_code_returned_equals == 0) {
            if let (Some(red), true) = (&r.redirect, key.starts_with(r.key_prefix_equals.as_deref().unwrap_or(""))) {
                let (loc, status) = location(red, r.key_prefix_equals.as_deref(), &key, host);
                return redirect_to(&loc, status);
            }
        }
        let index = if w.index_document.is_empty() { &self.default_index } else { &w.index_document };
        let wanted = if key.is_empty() || key.ends_with('/') { format!("{key}{index}") } else { key.clone() };
        let found = if check_key(&wanted).is_ok() { self.store.object(&bucket.id, &wanted).await } else { Ok(None) };
        let error = match found {
            Ok(Some(obj)) => return self.object_response(&obj.value, headers, StatusCode::OK, head, true).await,
            Ok(None) => StatusCode::NOT_FOUND,
            Err(e) => {
                tracing::warn!(error = %e, "website request: storage unavailable");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        // A "directory" without its trailing slash.
        if error == StatusCode::NOT_FOUND && !key.is_empty() && !key.ends_with('/') {
            let dir_index = format!("{key}/{index}");
            if check_key(&dir_index).is_ok() && matches!(self.store.object(&bucket.id, &dir_index).await, Ok(Some(_))) {
                return redirect_to(&format!("/{}/", encode_key(&key)), StatusCode::FOUND);
            }
        }
        for r in w.routing_rules.iter().filter(|r| r.http_error_code_returned_equals == error.as_u16() as u32) {
            if let (Some(red), true) = (&r.redirect, key.starts_with(r.key_prefix_equals.as_deref().unwrap_or(""))) {
                let (loc, status) = location(red, r.key_prefix_equals.as_deref(), &key, host);
                return redirect_to(&loc, status);
            }
        }
        if error == StatusCode::NOT_FOUND
            && !w.error_document.is_empty()
            && let Ok(Some(doc)) = self.store.object(&bucket.id, &w.error_document).await
        {
            return self.object_response(&doc.value, &HeaderMap::new(), error, head, false).await;
        }
        match error {
            StatusCode::NOT_FOUND => page(error, "NoSuchKey", "The specified key does not exist."),
            _ => page(error, "ServiceUnavailable", "Please retry later"),
        }
    }

    /// An object as a website response with `status`; with `conditional`, Range and the
    /// conditional headers apply.
    async fn object_response(
        &self,
        obj: &Object,
        req: &HeaderMap,
        status: StatusCode,
        head: bool,
        conditional: bool,
    ) -> Response {
        // Encrypted with a customer key: nobody can read it here.
        if !obj.sse_customer_key_md5.is_empty() {
            return page(StatusCode::FORBIDDEN, "AccessDenied", "The object is encrypted with a customer key.");
        }
        let mut range = 0..obj.size;
        let mut status = status;
        if conditional {
            let etag = |n| header(req, n).and_then(|v| ETagCondition::parse_http_header(v.as_bytes()).ok());
            let date = |n| header(req, n).and_then(|v| Timestamp::parse(TimestampFormat::HttpDate, v).ok());
            let (im, inm) = (etag(http::header::IF_MATCH), etag(http::header::IF_NONE_MATCH));
            let (ims, ius) = (date(http::header::IF_MODIFIED_SINCE), date(http::header::IF_UNMODIFIED_SINCE));
            let cond = Conditions {
                if_match: im.as_ref(),
                if_none_match: inm.as_ref(),
                if_modified_since: ims.as_ref(),
                if_unmodified_since: ius.as_ref(),
            };
            match cond.evaluate(&obj.etag, obj.last_modified_ms) {
                Outcome::Proceed => {}
                Outcome::NotModified => {
                    let mut r = http::Response::new(Body::empty());
                    *r.status_mut() = StatusCode::NOT_MODIFIED;
                    validators(&obj.etag, obj.last_modified_ms, r.headers_mut());
                    return r;
                }
                Outcome::Failed => {
                    return page(
                        StatusCode::PRECONDITION_FAILED,
                        "PreconditionFailed",
                        "At least one of the preconditions you specified did not hold.",
                    );
                }
            }
            if let Some(r) = header(req, http::header::RANGE).and_then(|v| s3s::dto::Range::parse(v).ok()) {
                match r.check(obj.size) {
                    Ok(rg) => {
                        range = rg;
                        status = StatusCode::PARTIAL_CONTENT;
                    }
                    Err(_) => {
                        let mut p = page(
                            StatusCode::RANGE_NOT_SATISFIABLE,
                            "InvalidRange",
                            "The requested range is not satisfiable",
                        );
                        if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", obj.size)) {
                            p.headers_mut().insert(http::header::CONTENT_RANGE, v);
                        }
                        return p;
                    }
                }
            }
        }
        let body = if head {
            Body::empty()
        } else {
            match object_body(&self.store, obj, range.clone(), None).await {
                Ok(b) => Body::from(b),
                Err(e) => {
                    tracing::warn!(error = %e, "website request: object data unreadable");
                    return page(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", "Please retry later");
                }
            }
        };
        let mut r = http::Response::new(body);
        *r.status_mut() = status;
        let h = r.headers_mut();
        validators(&obj.etag, obj.last_modified_ms, h);
        h.insert(http::header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(range.end - range.start));
        if status == StatusCode::PARTIAL_CONTENT
            && let Ok(v) =
                HeaderValue::from_str(&format!("bytes {}-{}/{}", range.start, range.end.saturating_sub(1), obj.size))
        {
            h.insert(http::header::CONTENT_RANGE, v);
        }
        let mut has_type = false;
        for stored in &obj.headers {
            has_type |= stored.name == "content-type";
            if let (Ok(n), Ok(v)) =
                (http::header::HeaderName::from_bytes(stored.name.as_bytes()), HeaderValue::from_str(&stored.value))
            {
                h.insert(n, v);
            }
        }
        if !has_type {
            h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("binary/octet-stream"));
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_replace_what_the_rule_says() {
        let r = Redirect { replace_key_prefix_with: Some("new/".into()), ..Default::default() };
        assert_eq!(
            location(&r, Some("old/"), "old/a b.html", "site.test"),
            ("http://site.test/new/a%20b.html".into(), StatusCode::MOVED_PERMANENTLY)
        );
        let r = Redirect {
            host_name: "example.com".into(),
            protocol: "https".into(),
            replace_key_with: Some("gone.html".into()),
            http_redirect_code: 302,
            ..Default::default()
        };
        assert_eq!(location(&r, None, "x", "site.test"), ("https://example.com/gone.html".into(), StatusCode::FOUND));
    }

    #[test]
    fn hosts_name_buckets() {
        let d = RootDomain::new(".web.test");
        assert_eq!(bucket_name(Some(&d), "blog.web.test:3902"), "blog");
        assert_eq!(bucket_name(Some(&d), "www.Example.com"), "www.example.com");
        assert_eq!(bucket_name(None, "www.example.com:3902"), "www.example.com");
    }
}
