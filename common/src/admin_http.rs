//! The admin HTTP endpoint: `/health`, `/ready`, `/live` and `/metrics` (Prometheus text
//! format).
//!
//! `/health` (and `/ready`, its name for readiness probes) answers 200 `ok` when the
//! component can do its job, or 503 with one line per problem a component reported (a
//! frontend without a layout or without a quorum of some partition, a data disk below its
//! free-space reserve, ...): what an operator reads first. `/live` answers 200 whenever
//! the process answers at all (a liveness probe must not restart a process that only
//! waits for its peers). All three are always open. `/metrics` is open too unless `[admin] metrics_token` is
//! set: then it answers 401 to requests without `Authorization: Bearer <token>`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpListener;

use crate::http_server::{Limits, serve as serve_http};

/// Problems components report for `/health`, by name.
static PROBLEMS: Mutex<BTreeMap<&'static str, String>> = Mutex::new(BTreeMap::new());

/// Reports (Some) or clears (None) a problem shown by `/health`.
pub fn set_problem(name: &'static str, problem: Option<String>) {
    let mut p = PROBLEMS.lock().unwrap_or_else(|e| e.into_inner());
    match problem {
        Some(text) => {
            p.insert(name, text);
        }
        None => {
            p.remove(name);
        }
    }
}

fn health() -> (StatusCode, String) {
    let p = PROBLEMS.lock().unwrap_or_else(|e| e.into_inner());
    if p.is_empty() {
        (StatusCode::OK, "ok\n".into())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, p.values().map(|v| format!("{v}\n")).collect())
    }
}

/// How the admin endpoint serves: its listener's limits and the token `/metrics` requires.
/// `AdminConfig::limits()` gives it from the `[admin]` section.
#[derive(Clone)]
pub struct Options {
    pub limits: Limits,
    /// When set, `/metrics` answers only requests with `Authorization: Bearer <token>`.
    pub metrics_token: Option<String>,
}

impl From<Limits> for Options {
    /// Limits alone: `/metrics` is open.
    fn from(limits: Limits) -> Self {
        Options { limits, metrics_token: None }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("limits", &self.limits)
            .field("metrics_token", &self.metrics_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Whether `headers` carry `Authorization: Bearer <token>` (the token compared in constant time).
fn authorized(headers: &http::HeaderMap, token: &str) -> bool {
    let Some(value) = headers.get(http::header::AUTHORIZATION).map(http::HeaderValue::as_bytes) else {
        return false;
    };
    // The scheme is case-insensitive (RFC 9110).
    match value.split_at_checked(7) {
        Some((scheme, given)) if scheme.eq_ignore_ascii_case(b"bearer ") => constant_time_eq(given, token.as_bytes()),
        _ => false,
    }
}

/// Compares without stopping at the first difference (the length is not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    std::hint::black_box(a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y))) == 0
}

async fn handle(req: Request<Incoming>, metrics_token: Option<Arc<str>>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, ctype, body) = match req.uri().path() {
        "/health" | "/ready" => {
            let (s, b) = health();
            (s, "text/plain", b)
        }
        "/live" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/metrics" if metrics_token.as_deref().is_some_and(|t| !authorized(req.headers(), t)) => {
            let mut resp = Response::new(Full::new(Bytes::from_static(b"missing or wrong metrics token\n")));
            *resp.status_mut() = StatusCode::UNAUTHORIZED;
            let headers = resp.headers_mut();
            headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
            headers.insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
            return Ok(resp);
        }
        "/metrics" => (StatusCode::OK, "text/plain; version=0.0.4", super::telemetry::metrics().encode()),
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".to_string()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(ctype));
    Ok(resp)
}

/// Serves the admin endpoint on `listener` until `shutdown` resolves. `options` is an
/// [`Options`] (`AdminConfig::limits()`) or bare [`Limits`] (`/metrics` open).
pub async fn serve(listener: TcpListener, options: impl Into<Options>, shutdown: impl Future<Output = ()>) {
    let Options { limits, metrics_token } = options.into();
    let metrics_token: Option<Arc<str>> = metrics_token.map(Into::into);
    let make = move |_| {
        let token = metrics_token.clone();
        hyper::service::service_fn(move |req| handle(req, token.clone()))
    };
    serve_http(listener, limits, make, shutdown).await
}

/// A running admin endpoint.
pub struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// Binds `addr` (the error names the `[admin] api_bind_addr` key) and serves in the background.
/// `options` as for [`serve`].
pub async fn start(addr: std::net::SocketAddr, options: impl Into<Options>) -> Result<Running, crate::Error> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| crate::Error::Config(format!("[admin] api_bind_addr: cannot listen on {addr}: {e}")))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, options.into(), async {
        let _ = stopped.await;
    }));
    Ok(Running { stop, task })
}

impl Running {
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits() -> Limits {
        let s = std::time::Duration::from_secs(5);
        Limits { max_connections: 8, header_timeout: s, idle_timeout: s, send_timeout: s }
    }

    /// The status of `GET path` (HTTP/1.1), with an Authorization header if given.
    async fn status(addr: std::net::SocketAddr, path: &str, authorization: Option<&str>) -> u16 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let auth = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).await.unwrap();
        resp.get(9..12).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status in {resp:?}"))
    }

    async fn server(options: Options) -> (std::net::SocketAddr, Running) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, options, async {
            let _ = stopped.await;
        }));
        (addr, Running { stop, task })
    }

    #[tokio::test]
    async fn metrics_require_the_token_when_one_is_set() {
        let (addr, running) = server(Options { limits: limits(), metrics_token: Some("s3cret".into()) }).await;
        assert_eq!(status(addr, "/metrics", None).await, 401);
        assert_eq!(status(addr, "/metrics", Some("Bearer wrong!")).await, 401);
        assert_eq!(status(addr, "/metrics", Some("Bearer s3cret2")).await, 401);
        assert_eq!(status(addr, "/metrics", Some("s3cret")).await, 401);
        assert_eq!(status(addr, "/metrics", Some("Basic s3cret")).await, 401);
        assert_eq!(status(addr, "/metrics", Some("Bearer s3cret")).await, 200);
        assert_eq!(status(addr, "/metrics", Some("bearer s3cret")).await, 200);
        // /health stays open.
        assert_ne!(status(addr, "/health", None).await, 401);
        running.stop().await;

        // No token: /metrics is open.
        let (addr, running) = server(limits().into()).await;
        assert_eq!(status(addr, "/metrics", None).await, 200);
        running.stop().await;
    }
}
