//! Hangar S3 frontend: the S3 HTTP API. s3s parses requests, verifies SigV4 and writes
//! XML; the handlers here apply S3 semantics over the data nodes' gRPC services, and the
//! read/write pipelines stream object data to and from blocks.

pub mod access;
pub mod auth;
pub mod backend;
pub mod blocks;
pub mod conditions;
pub mod errors;
pub mod handlers;
pub mod host;
pub mod http_layer;
pub mod listing;
pub mod read_pipeline;
pub mod write_pipeline;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;

pub use backend::Backend;

/// What the frontend needs to know beyond the data nodes it talks to.
#[derive(Clone, Debug)]
pub struct FrontendConfig {
    pub region: String,
    pub root_domain: Option<String>,
    pub block_size: usize,
}

/// Builds the S3 service: handlers, authentication, host parsing.
pub fn s3_service(cfg: &FrontendConfig, backend: Backend) -> s3s::service::S3Service {
    let handlers = handlers::Hangar::new(backend.clone(), cfg.clone());
    let mut builder = s3s::service::S3ServiceBuilder::new(handlers);
    builder.set_auth(auth::KeyAuth::new(backend.catalog.clone()));
    builder.set_access(access::AuthenticatedOnly);
    if let Some(domain) = &cfg.root_domain {
        builder.set_host(host::RootDomain::new(domain));
    }
    builder.build()
}

/// Serves S3 on `listener` until `shutdown` resolves, then lets open requests finish.
pub async fn run(listener: TcpListener, cfg: FrontendConfig, backend: Backend, shutdown: impl Future<Output = ()>) {
    let service = Arc::new(s3_service(&cfg, backend));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let svc = http_layer::RequestIdService::new(service.clone(), peer);
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        // A client that never finishes its headers must not hold a connection forever.
        builder.http1().timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(30));
        let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    // Open requests get a bounded time to finish.
    let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
}

/// Runs a frontend on its own (`hangar s3-frontend --config FILE`) until `shutdown`: follows
/// the control plane's layout (kept in memory), announces itself, serves S3 and `/metrics`.
pub async fn run_service(
    cfg: hangar_common::config::Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), hangar_common::Error> {
    use hangar_common::cluster::Cluster;
    use hangar_common::follower::{follow_layout, spawn_heartbeat};
    use hangar_proto::control::{Layout, NodeInfo, NodeRole};

    cfg.require("S3 frontend", &["rpc_secret", "bootstrap_peers"])?;
    // A frontend serves no gRPC; only its clients use the TLS settings.
    hangar_common::tls::configure(cfg.rpc_tls.as_ref())?;
    let secret = cfg.rpc_secret.clone().unwrap_or_default();
    let listener = TcpListener::bind(cfg.s3_api.api_bind_addr).await.map_err(|e| {
        hangar_common::Error::Config(format!(
            "[s3_api] api_bind_addr: cannot listen on {}: {e}",
            cfg.s3_api.api_bind_addr
        ))
    })?;

    let s3_addr = listener.local_addr()?;
    let layout = follow_layout(cfg.bootstrap_peers.clone(), secret.clone(), Layout::default(), |_| {});
    // Frontends keep no state, so a fresh id per start is enough to tell them apart.
    let id = format!("s3-{}", hex::encode(&hangar_common::ids::random_id()[..6]));
    let heartbeat = spawn_heartbeat(
        cfg.bootstrap_peers.clone(),
        secret.clone(),
        NodeInfo {
            id: id.clone(),
            hostname: hangar_common::ids::hostname(),
            rpc_addr: s3_addr.to_string(),
            role: NodeRole::Frontend as i32,
        },
    );
    let admin = hangar_common::admin_http::start(cfg.admin.api_bind_addr).await?;
    tracing::info!(frontend = %id, s3 = %s3_addr, "S3 frontend ready");
    let fcfg = FrontendConfig {
        region: cfg.s3_api.s3_region.clone(),
        root_domain: cfg.s3_api.root_domain.clone(),
        block_size: cfg.block_size,
    };
    run(listener, fcfg, Backend::new(Cluster::new(layout, &secret)), shutdown).await;
    heartbeat.abort();
    admin.stop().await;
    Ok(())
}
