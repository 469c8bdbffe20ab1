//! `hangar server`: control plane, one data node and the S3 frontend in one process over
//! one directory. The frontend and the control plane reach the data node through its gRPC
//! services on the rpc address, exactly as they will across machines.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use hangar_common::cluster::Cluster;
use hangar_common::config::{Config, env_overrides, load_or_create_secret, write_private};
use hangar_common::ids::{new_secret_key, random_string};
use hangar_control_plane::ControlPlane;
use hangar_data_node::DataNode;
use hangar_model::Store;
use hangar_proto::control::{HeartbeatRequest, NodeAssignment, NodeInfo, NodeRole};
use hangar_s3_frontend::FrontendConfig;
use tokio::net::TcpListener;

#[derive(Args)]
pub struct ServerArgs {
    /// A TOML config file (docs/configuration.md), here or before the command; HANGAR_*
    /// variables override it, and flags override both.
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// S3 API address [default: 127.0.0.1:3900, or s3_api.api_bind_addr from the config].
    #[arg(long)]
    s3_addr: Option<SocketAddr>,
    /// Admin HTTP address for /health and /metrics [default: 127.0.0.1:3903, or
    /// admin.api_bind_addr from the config].
    #[arg(long)]
    admin_addr: Option<SocketAddr>,
    /// Static website address [default: none, or s3_web.bind_addr from the config; Garage's
    /// port is 3902].
    #[arg(long)]
    web_addr: Option<SocketAddr>,
}

type BoxError = Box<dyn std::error::Error>;

/// The config: file (if any), then HANGAR_* variables, then flags. Directories default
/// to `<data-dir>/meta` and `<data-dir>/blocks`.
fn load_config(
    args: &ServerArgs,
    rpc_addr: SocketAddr,
    data_dir: &Path,
    rpc_flag_given: bool,
) -> Result<Config, BoxError> {
    let (text, origin) = match &args.config {
        Some(p) => (
            std::fs::read_to_string(p).map_err(|e| format!("{}: cannot read: {e}", p.display()))?,
            p.display().to_string(),
        ),
        None => (String::new(), "defaults".to_string()),
    };
    let mut table = hangar_common::config::parse_toml(&text, &origin)?;
    for (key, sub) in [("metadata_dir", "meta"), ("data_dir", "blocks")] {
        table.entry(key).or_insert_with(|| toml::Value::String(data_dir.join(sub).display().to_string()));
    }
    let factor_given =
        table.contains_key("replication_factor") || std::env::var_os("HANGAR_REPLICATION_FACTOR").is_some();
    let mut cfg = Config::from_table_with_overrides(table, &origin, env_overrides())?;
    if factor_given && cfg.replication_factor != 1 {
        return Err(format!(
            "{origin}: replication_factor = {}: `hangar server` runs one data node, which keeps one copy of \
             everything; remove the key or set it to 1 (a cluster's factor is set on its control plane, \
             and changed with `hangar layout config -r N`)",
            cfg.replication_factor
        )
        .into());
    }
    if rpc_flag_given || args.config.is_none() {
        cfg.rpc_bind_addr = rpc_addr;
    }
    if let Some(a) = args.s3_addr {
        cfg.s3_api.api_bind_addr = a;
    }
    if let Some(a) = args.admin_addr {
        cfg.admin.api_bind_addr = a;
    }
    if let Some(a) = args.web_addr {
        cfg.s3_web.bind_addr = Some(a);
    }
    Ok(cfg)
}

async fn bind(what: &str, addr: SocketAddr) -> Result<TcpListener, BoxError> {
    TcpListener::bind(addr).await.map_err(|e| format!("cannot listen for {what} on {addr}: {e}").into())
}

/// Makes sure the root key exists: the one the environment names, or the one made on the
/// first start (its id kept in `root_key`, or found by its name when that file was lost),
/// or a new one.
async fn ensure_root_key(catalog: &Store, cfg: &Config) -> Result<(String, String), BoxError> {
    let id_file = cfg.metadata_dir.join("root_key");
    let wanted = match (&cfg.root_access_key_id, &cfg.root_secret_access_key) {
        (Some(id), Some(secret)) => Some((id.clone(), secret.clone())),
        _ => None,
    };
    let recorded = std::fs::read_to_string(&id_file).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let known = match recorded {
        Some(id) => catalog.get_key(&id).await?,
        // A crash between creating the key and writing the file: the key is there.
        None => catalog.find_key("root").await.ok().filter(|k| k.value.root),
    };
    if let Some(k) = known {
        let id = k.value.id.clone();
        if let Some((wanted_id, secret)) = &wanted {
            if *wanted_id != id {
                return Err(format!(
                    "this data directory's root key is {id}, not HANGAR_ROOT_ACCESS_KEY_ID {wanted_id}; \
                     unset HANGAR_ROOT_ACCESS_KEY_ID and HANGAR_ROOT_SECRET_ACCESS_KEY, or import that key \
                     with `hangar key import`"
                )
                .into());
            }
            if *secret != k.value.secret {
                return Err(
                    format!("root key {id} exists with another secret than HANGAR_ROOT_SECRET_ACCESS_KEY").into()
                );
            }
        }
        if !k.value.root {
            // A root key made before keys were marked.
            catalog.mark_root(&id).await?;
        }
        write_private(&id_file, &id)?;
        return Ok((id, k.value.secret));
    }
    let key = match &wanted {
        Some((id, secret)) => catalog.create_key("root", Some(id), Some(secret), true).await?,
        None => catalog.create_key("root", None, None, true).await?,
    };
    write_private(&id_file, &key.id)?;
    Ok((key.id, key.secret))
}

pub async fn run(
    mut args: ServerArgs,
    top_config: Option<PathBuf>,
    rpc_addr: Option<SocketAddr>,
    data_dir: PathBuf,
) -> Result<(), BoxError> {
    args.config = args.config.or(top_config);
    let rpc_flag_given = rpc_addr.is_some();
    let rpc_addr = rpc_addr.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 3901)));
    let mut cfg = load_config(&args, rpc_addr, &data_dir, rpc_flag_given)?;
    hangar_common::telemetry::init(
        &cfg.admin.log_settings(),
        cfg.admin.trace_export(hangar_common::telemetry::Service::Server),
    )?;
    hangar_common::telemetry::metrics().set_build(cfg.replication_factor);
    std::fs::create_dir_all(&cfg.metadata_dir)?;
    std::fs::create_dir_all(&cfg.data_dir)?;
    if cfg.rpc_secret.is_none() {
        cfg.rpc_secret = Some(load_or_create_secret(&cfg.metadata_dir.join("rpc_secret"), new_secret_key)?);
    }
    let admin_token = match &cfg.admin.admin_token {
        Some(t) => t.clone(),
        None => load_or_create_secret(&cfg.metadata_dir.join("admin_token"), new_secret_key)?,
    };
    let node_id = load_or_create_secret(&cfg.metadata_dir.join("node_id"), || random_string(16, b"0123456789abcdef"))?;
    let secret = cfg.rpc_secret.clone().unwrap_or_default();

    let data_node = std::sync::Arc::new(DataNode::open(&cfg)?);

    let rpc_listener = bind("gRPC", cfg.rpc_bind_addr).await?;
    let rpc_local = rpc_listener.local_addr()?;
    let mut control = ControlPlane::open(&cfg.metadata_dir, 1, admin_token, secret.clone())?;
    control.info.id = format!("{node_id}-cp");
    control.info.rpc_addr = rpc_local.to_string();
    control.layout.init_single_node(NodeAssignment {
        node_id: node_id.clone(),
        zone: "dc1".into(),
        capacity: hangar_common::disk::capacity(&cfg.data_dir),
        tags: vec![],
        rpc_addr: rpc_local.to_string(),
    })?;
    control.layout.update_address(&node_id, &rpc_local.to_string())?;

    // The embedded frontend, data node and control plane follow the layout in-process, and
    // call the data node in-process (the gRPC services below answer the CLI and any other
    // process).
    let cluster = Cluster::new(control.layout.subscribe(), cfg.rpc_options())?.with_local(data_node.local(&node_id));
    let store = Store::new(cluster.clone(), &cfg);
    data_node.start(&node_id, cluster)?;
    let (block_svc, meta_svc) = data_node.services();
    let (admin_svc, layout_svc, member_svc) = control.services(store.clone());
    let (rpc_stop_tx, rpc_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let router = hangar_common::tls::configure(cfg.rpc_tls.as_ref())?
        .add_service(block_svc)
        .add_service(meta_svc)
        .add_service(data_node.admin_service()?)
        .add_service(admin_svc)
        .add_service(layout_svc)
        .add_service(member_svc);
    let rpc_server = tokio::spawn(hangar_common::rpc::serve_until(router, rpc_listener, async {
        let _ = rpc_stop_rx.await;
    }));

    // The cluster_* metrics, from the embedded heartbeats.
    let health =
        hangar_control_plane::membership::spawn_health_metrics(control.members.clone(), control.layout.clone());
    // The embedded components report to the control plane like remote ones would.
    let (members, layout, reporter) = (control.members.clone(), control.layout.clone(), data_node.clone());
    let (host, rpc_str) = (hangar_common::ids::hostname(), rpc_local.to_string());
    let heartbeat = tokio::spawn(async move {
        let info = |suffix: &str, role: NodeRole| NodeInfo {
            id: format!("{node_id}{suffix}"),
            hostname: host.clone(),
            rpc_addr: rpc_str.clone(),
            role: role as i32,
            ..Default::default()
        };
        loop {
            let data = reporter.heartbeat(info("", NodeRole::Data));
            let s3 = HeartbeatRequest { node: Some(info("-s3", NodeRole::Frontend)), ..Default::default() };
            for hb in [data, s3] {
                if let Err(e) = hangar_control_plane::membership::receive(&members, &layout, hb) {
                    tracing::warn!(error = %e, "embedded heartbeat refused");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = reporter.nudge.notified() => {}
            }
        }
    });

    let (root_id, root_secret) = ensure_root_key(&store, &cfg).await?;

    let s3_listener = bind("S3", cfg.s3_api.api_bind_addr).await?;
    let frontend = FrontendConfig::from_config(&cfg);
    let lookups = std::sync::Arc::new(hangar_s3_frontend::lookups::Lookups::new(store, frontend.catalog_cache));
    let web = hangar_s3_frontend::WebEndpoint::start(&cfg, lookups.clone()).await?;
    let admin = hangar_common::admin_http::start(cfg.admin.api_bind_addr, cfg.admin.limits()).await?;
    let s3_local = s3_listener.local_addr()?;
    // In a container, loopback is where the published port leads.
    let s3_endpoint = hangar_common::config::local_dial_addr(s3_local);
    // Shell lines, so they can be pasted (or eval'd) as printed.
    println!("export AWS_ACCESS_KEY_ID={root_id}");
    println!("export AWS_SECRET_ACCESS_KEY={root_secret}");
    println!("export AWS_DEFAULT_REGION={}", cfg.s3_api.s3_region);
    if let Some(w) = &web {
        println!("export WEB_ENDPOINT=http://{}", hangar_common::config::local_dial_addr(w.addr));
    }
    println!("export S3_ENDPOINT=http://{s3_endpoint}");
    tracing::info!(s3 = %s3_local, rpc = %rpc_local, admin = %cfg.admin.api_bind_addr, "hangar server ready");

    let (s3_stop, s3_stopped) = tokio::sync::oneshot::channel::<()>();
    let s3 = tokio::spawn(hangar_s3_frontend::run(s3_listener, frontend, lookups, cfg.s3_api.limits(), async move {
        let _ = s3_stopped.await;
    }));

    hangar_common::follower::shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = s3_stop.send(());
    let _ = s3.await;
    if let Some(w) = web {
        w.stop().await;
    }
    admin.stop().await;
    heartbeat.abort();
    health.abort();
    let _ = rpc_stop_tx.send(());
    if let Ok(Err(e)) = rpc_server.await {
        tracing::warn!(error = %e, "rpc server stopped with an error");
    }
    data_node.shutdown().await?;
    Ok(())
}
