//! Hangar S3 frontend: the S3 HTTP API. s3s parses requests, verifies SigV4 and writes
//! XML; `http_layer` refuses what must never reach s3s (see there); the handlers apply S3
//! semantics through the model layer, and the read/write pipelines stream object data to
//! and from blocks.

pub mod access;
pub mod auth;
pub mod checksums;
pub mod conditions;
pub mod cors;
pub mod errors;
pub mod handlers;
pub mod host;
pub mod http_layer;
pub mod listing;
pub mod lookups;
pub mod quota;
pub mod read_pipeline;
pub mod readiness;
pub mod sse_c;
pub mod unframed;
pub mod web;
pub mod write_pipeline;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hangar_common::http_server::Limits;
use hangar_model::Store;
use tokio::net::TcpListener;

/// What the frontend needs to know beyond the data nodes it talks to.
#[derive(Clone, Debug)]
pub struct FrontendConfig {
    pub region: String,
    pub root_domain: Option<String>,
    pub block_size: usize,
    /// Longest wait for the next piece of a request body.
    pub body_timeout: Duration,
    /// Largest XML request body.
    pub max_xml_body: u64,
    /// The website index document of configurations that name none (`[s3_web] index`).
    pub web_index: String,
    /// How long keys, buckets and rights read are trusted (`lookups`).
    pub catalog_cache: Duration,
}

impl FrontendConfig {
    pub fn from_config(cfg: &hangar_common::config::Config) -> Self {
        Self {
            region: cfg.s3_api.s3_region.clone(),
            root_domain: cfg.s3_api.root_domain.clone(),
            block_size: cfg.block_size,
            body_timeout: Duration::from_secs(cfg.s3_api.body_timeout_secs),
            max_xml_body: cfg.s3_api.max_xml_body_bytes,
            web_index: cfg.s3_web.index.clone(),
            catalog_cache: Duration::from_millis(cfg.s3_api.catalog_cache_ms),
        }
    }
}

/// Builds the S3 service: handlers, authentication, host parsing.
pub fn s3_service(cfg: &FrontendConfig, lookups: Arc<lookups::Lookups>) -> s3s::service::S3Service {
    let handlers = handlers::Hangar::new(lookups.clone(), cfg.clone());
    let mut builder = s3s::service::S3ServiceBuilder::new(handlers);
    // The same XML limit as `http_layer` checks up front (for bodies whose length it could
    // not see), and tiny form limits: form uploads are refused before s3s anyway.
    let mut s3s_cfg = s3s::config::S3Config::default();
    s3s_cfg.xml_max_body_size = cfg.max_xml_body as usize;
    s3s_cfg.post_object_max_file_size = 0;
    s3s_cfg.form_max_fields_size = 64 * 1024;
    s3s_cfg.form_max_field_size = 16 * 1024;
    builder.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(s3s_cfg))));
    builder.set_auth(auth::KeyAuth::new(lookups.clone()));
    builder.set_access(access::Authorize::new(lookups.clone()));
    if let Some(domain) = &cfg.root_domain {
        builder.set_host(host::RootDomain::new(domain));
    }
    builder.build()
}

/// Serves S3 on `listener` with `limits` until `shutdown` resolves, then lets open
/// requests finish.
pub async fn run(
    listener: TcpListener,
    cfg: FrontendConfig,
    lookups: Arc<lookups::Lookups>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let service = Arc::new(s3_service(&cfg, lookups.clone()));
    let guard = Arc::new(http_layer::Guard::new(&cfg));
    hangar_common::http_server::serve(
        listener,
        limits,
        move |peer| http_layer::RequestIdService::new(service.clone(), guard.clone(), lookups.clone(), peer),
        shutdown,
    )
    .await
}

/// The website endpoint, running.
pub struct WebEndpoint {
    pub addr: std::net::SocketAddr,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl WebEndpoint {
    /// Starts the website endpoint when `[s3_web] bind_addr` is set.
    /// `lookups` are those of the process's S3 endpoint: a website configured through it is
    /// served at once.
    pub async fn start(
        cfg: &hangar_common::config::Config,
        lookups: Arc<lookups::Lookups>,
    ) -> Result<Option<WebEndpoint>, hangar_common::Error> {
        let Some(addr) = cfg.s3_web.bind_addr else { return Ok(None) };
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| hangar_common::Error::Config(format!("[s3_web] bind_addr: cannot listen on {addr}: {e}")))?;
        let addr = listener.local_addr()?;
        let stop = tokio_util::sync::CancellationToken::new();
        let web = web::Web::new(lookups, cfg.s3_web.root_domain.as_deref(), &cfg.s3_web.index);
        let task = tokio::spawn(web::run(listener, web, cfg.s3_api.limits(), stop.clone().cancelled_owned()));
        tracing::info!(web = %addr, "website endpoint ready");
        Ok(Some(WebEndpoint { addr, stop, task }))
    }

    /// Stops accepting, and lets open requests finish.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Runs a frontend on its own (`hangar s3-frontend --config FILE`) until `shutdown`: follows
/// the control plane's layout (kept in memory), announces itself, serves S3 and `/metrics`.
pub async fn run_service(
    cfg: hangar_common::config::Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), hangar_common::Error> {
    use hangar_common::cluster::Cluster;
    use hangar_common::follower::{follow_layout, spawn_heartbeat};
    use hangar_proto::control::{HeartbeatRequest, LayoutHistory, NodeInfo, NodeRole};

    cfg.require("S3 frontend", &["rpc_secret", "bootstrap_peers"])?;
    // A frontend serves no gRPC; only its clients use the TLS settings.
    hangar_common::tls::configure(cfg.rpc_tls.as_ref())?;
    let secret = cfg.rpc_secret.clone().unwrap_or_default();
    let listener = bind(&cfg).await?;

    let s3_addr = listener.local_addr()?;
    // The control plane, and data nodes as layout sources while it is away.
    let backend = hangar_discovery::from_config(&cfg).await.map_err(|e| hangar_common::Error::Config(e.to_string()))?;
    let peers = hangar_discovery::peers(backend.clone(), cfg.bootstrap_peers.clone(), None);
    let history = follow_layout(peers.clone(), secret.clone(), LayoutHistory::default(), |_| {});
    // Frontends keep no state, so a fresh id per start is enough to tell them apart.
    let id = format!("s3-{}", hex::encode(&hangar_common::ids::random_id()[..6]));
    let info = NodeInfo {
        id: id.clone(),
        hostname: hangar_common::ids::hostname(),
        rpc_addr: s3_addr.to_string(),
        role: NodeRole::Frontend as i32,
        ..Default::default()
    };
    // Others reach a frontend at its S3 port on the public rpc address's host when one is
    // set (the bind address may be 0.0.0.0).
    let announced = cfg.rpc_public_addr.clone().unwrap_or_else(|| s3_addr.to_string());
    let mut me = hangar_discovery::Node::at(&id, &announced, hangar_discovery::Role::Frontend)
        .map_err(|e| hangar_common::Error::Config(format!("rpc_public_addr: {e}")))?;
    me.port = s3_addr.port();
    let announcer =
        hangar_discovery::Announcer::start(backend, me).map_err(|e| hangar_common::Error::Config(e.to_string()))?;
    let heartbeat = spawn_heartbeat(
        peers,
        secret,
        move || HeartbeatRequest { node: Some(info.clone()), ..Default::default() },
        Default::default(),
    );
    let admin = hangar_common::admin_http::start(cfg.admin.api_bind_addr, cfg.admin.limits()).await?;
    tracing::info!(frontend = %id, s3 = %s3_addr, "S3 frontend ready");
    let cluster = Cluster::new(history, cfg.rpc_options())?;
    let served = serve(listener, &cfg, cluster, shutdown).await;
    heartbeat.abort();
    announcer.stop().await;
    admin.stop().await;
    served
}

/// Listens on `[s3_api] api_bind_addr`.
pub async fn bind(cfg: &hangar_common::config::Config) -> Result<TcpListener, hangar_common::Error> {
    TcpListener::bind(cfg.s3_api.api_bind_addr).await.map_err(|e| {
        hangar_common::Error::Config(format!(
            "[s3_api] api_bind_addr: cannot listen on {}: {e}",
            cfg.s3_api.api_bind_addr
        ))
    })
}

/// Serves S3 on `listener` (and the website endpoint when `[s3_web]` sets one) over
/// `cluster` until `shutdown`, probing the data nodes for `/health` meanwhile: the body of a
/// frontend process, and of a data node that serves S3 too (its `cluster` calls the data
/// node of the process in-process).
pub async fn serve(
    listener: TcpListener,
    cfg: &hangar_common::config::Config,
    cluster: hangar_common::cluster::Cluster,
    shutdown: impl Future<Output = ()>,
) -> Result<(), hangar_common::Error> {
    let probe = readiness::spawn(cluster.clone());
    let store = Store::new(cluster, cfg);
    let frontend = FrontendConfig::from_config(cfg);
    let lookups = Arc::new(lookups::Lookups::new(store, frontend.catalog_cache));
    let web = match WebEndpoint::start(cfg, lookups.clone()).await {
        Ok(w) => w,
        Err(e) => {
            probe.abort();
            return Err(e);
        }
    };
    run(listener, frontend, lookups, cfg.s3_api.limits(), shutdown).await;
    if let Some(w) = web {
        w.stop().await;
    }
    probe.abort();
    Ok(())
}
