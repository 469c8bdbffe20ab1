//! The admin HTTP endpoint: `/health` and `/metrics` (Prometheus text format).
//!
//! `/health` answers 200 `ok`, or 503 with one line per problem a component reported (a
//! data disk below its free-space reserve, ...): a readiness signal, and what an operator
//! reads first.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Mutex;

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

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, ctype, body) = match req.uri().path() {
        "/health" => {
            let (s, b) = health();
            (s, "text/plain", b)
        }
        "/metrics" => (StatusCode::OK, "text/plain; version=0.0.4", super::telemetry::metrics().encode()),
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".to_string()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(ctype));
    Ok(resp)
}

/// Serves the admin endpoint on `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, limits: Limits, shutdown: impl Future<Output = ()>) {
    serve_http(listener, limits, |_| hyper::service::service_fn(handle), shutdown).await
}

/// A running admin endpoint.
pub struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// Binds `addr` (the error names the `[admin] api_bind_addr` key) and serves in the background.
pub async fn start(addr: std::net::SocketAddr, limits: Limits) -> Result<Running, crate::Error> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| crate::Error::Config(format!("[admin] api_bind_addr: cannot listen on {addr}: {e}")))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, limits, async {
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
