//! `hangar server`: control plane, one data node and the S3 frontend in one process over
//! one directory. The frontend and the control plane reach the data node through its gRPC
//! services on the rpc address, exactly as they will across machines.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use hangar_common::cluster::Cluster;
use hangar_common::config::{Config, env_overrides, load_or_create_secret};
use hangar_common::ids::{new_secret_key, random_string};
use hangar_common::meta_client::MetaClient;
use hangar_common::model::Catalog;
use hangar_control_plane::ControlPlane;
use hangar_data_node::DataNode;
use hangar_proto::control::{NodeAssignment, NodeInfo, NodeRole};
use hangar_s3_frontend::{Backend, FrontendConfig};
use tokio::net::TcpListener;

#[derive(Args)]
pub struct ServerArgs {
    /// A TOML config file; flags override it, and HANGAR_* variables override it too.
    #[arg(long)]
    config: Option<PathBuf>,
    /// S3 API address.
    #[arg(long)]
    s3_addr: Option<SocketAddr>,
    /// Admin HTTP address (/health, /metrics).
    #[arg(long)]
    admin_addr: Option<SocketAddr>,
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
    let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| format!("{origin}: {}", e.message()))?;
    for (key, sub) in [("metadata_dir", "meta"), ("data_dir", "blocks")] {
        table.entry(key).or_insert_with(|| toml::Value::String(data_dir.join(sub).display().to_string()));
    }
    let mut cfg = Config::from_toml_with_overrides(&table.to_string(), &origin, env_overrides())?;
    if rpc_flag_given || args.config.is_none() {
        cfg.rpc_bind_addr = rpc_addr;
    }
    if let Some(a) = args.s3_addr {
        cfg.s3_api.api_bind_addr = a;
    }
    if let Some(a) = args.admin_addr {
        cfg.admin.api_bind_addr = a;
    }
    Ok(cfg)
}

async fn bind(what: &str, addr: SocketAddr) -> Result<TcpListener, BoxError> {
    TcpListener::bind(addr).await.map_err(|e| format!("cannot listen for {what} on {addr}: {e}").into())
}

/// Total size of the filesystem holding `dir`: the node's capacity in its layout.
fn disk_capacity(dir: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return 0 };
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return 0;
    }
    st.f_blocks as u64 * st.f_frsize as u64
}

/// Makes sure the root key exists: the one the environment names, or the one made on the
/// first start (its id kept in `root_key`), or a new one.
async fn ensure_root_key(catalog: &Catalog, cfg: &Config) -> Result<(String, String), BoxError> {
    let id_file = cfg.metadata_dir.join("root_key");
    let wanted = match (&cfg.root_access_key_id, &cfg.root_secret_access_key) {
        (Some(id), Some(secret)) => Some((id.clone(), secret.clone())),
        _ => None,
    };
    let existing_id = match &wanted {
        Some((id, _)) => Some(id.clone()),
        None => std::fs::read_to_string(&id_file).ok().map(|s| s.trim().to_string()),
    };
    if let Some(id) = existing_id
        && let Some(k) = catalog.get_key(&id).await?
    {
        if let Some((_, secret)) = &wanted
            && *secret != k.value.secret
        {
            return Err(format!("root key {id} exists with another secret than HANGAR_ROOT_SECRET_ACCESS_KEY").into());
        }
        if !k.value.allow_create_bucket {
            catalog.set_allow_create_bucket(&id, true).await?;
        }
        return Ok((id, k.value.secret));
    }
    let key = match &wanted {
        Some((id, secret)) => catalog.create_key("root", Some(id), Some(secret)).await?,
        None => catalog.create_key("root", None, None).await?,
    };
    catalog.set_allow_create_bucket(&key.id, true).await?;
    std::fs::write(&id_file, &key.id)?;
    Ok((key.id, key.secret))
}

pub async fn run(args: ServerArgs, rpc_addr: SocketAddr, data_dir: PathBuf) -> Result<(), BoxError> {
    hangar_common::telemetry::init_tracing();
    let rpc_flag_given = std::env::args().any(|a| a.starts_with("--rpc-addr"));
    let mut cfg = load_config(&args, rpc_addr, &data_dir, rpc_flag_given)?;
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

    let data_node = DataNode::open(&cfg)?;
    let gc = data_node.spawn_workers();

    let rpc_listener = bind("gRPC", cfg.rpc_bind_addr).await?;
    let rpc_local = rpc_listener.local_addr()?;
    let control = ControlPlane::open(&cfg.metadata_dir, 1, admin_token, secret.clone())?;
    control.layout.init_single_node(NodeAssignment {
        node_id: node_id.clone(),
        zone: "dc1".into(),
        capacity: disk_capacity(&cfg.data_dir),
        tags: vec![],
        rpc_addr: rpc_local.to_string(),
    })?;
    control.layout.update_address(&node_id, &rpc_local.to_string())?;

    // The embedded frontend and control plane follow the control plane's layout in-process.
    let cluster = Cluster::new(control.layout.subscribe(), &secret);
    let catalog = Catalog::new(MetaClient::new(cluster.clone()));
    let (block_svc, meta_svc) = data_node.services();
    let (admin_svc, layout_svc, member_svc) = control.services(catalog.clone());
    let (rpc_stop_tx, rpc_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let router = hangar_common::tls::configure(cfg.rpc_tls.as_ref())?
        .add_service(block_svc)
        .add_service(meta_svc)
        .add_service(admin_svc)
        .add_service(layout_svc)
        .add_service(member_svc);
    let rpc_server = tokio::spawn(hangar_common::rpc::serve_until(router, rpc_listener, async {
        let _ = rpc_stop_rx.await;
    }));

    let (root_id, root_secret) = ensure_root_key(&catalog, &cfg).await?;

    // The embedded components report to the control plane like remote ones would.
    let members = control.members.clone();
    let (host, rpc_str) = (hangar_common::ids::hostname(), rpc_local.to_string());
    let heartbeat = tokio::spawn(async move {
        loop {
            for (suffix, role) in [("", NodeRole::Data), ("-s3", NodeRole::Frontend)] {
                members.heard_from(NodeInfo {
                    id: format!("{node_id}{suffix}"),
                    hostname: host.clone(),
                    rpc_addr: rpc_str.clone(),
                    role: role as i32,
                });
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    });

    let s3_listener = bind("S3", cfg.s3_api.api_bind_addr).await?;
    let admin = hangar_common::admin_http::start(cfg.admin.api_bind_addr).await?;
    let s3_local = s3_listener.local_addr()?;
    println!("AWS_ACCESS_KEY_ID={root_id}");
    println!("AWS_SECRET_ACCESS_KEY={root_secret}");
    println!("AWS_DEFAULT_REGION={}", cfg.s3_api.s3_region);
    println!("S3_ENDPOINT=http://{s3_local}");
    tracing::info!(s3 = %s3_local, rpc = %rpc_local, admin = %cfg.admin.api_bind_addr, "hangar server ready");

    let backend = Backend::new(cluster);
    let fcfg = FrontendConfig {
        region: cfg.s3_api.s3_region.clone(),
        root_domain: cfg.s3_api.root_domain.clone(),
        block_size: cfg.block_size,
    };
    let (s3_stop, s3_stopped) = tokio::sync::oneshot::channel::<()>();
    let s3 = tokio::spawn(hangar_s3_frontend::run(s3_listener, fcfg, backend, async move {
        let _ = s3_stopped.await;
    }));

    hangar_common::follower::shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = s3_stop.send(());
    let _ = s3.await;
    admin.stop().await;
    heartbeat.abort();
    gc.abort();
    let _ = rpc_stop_tx.send(());
    if let Ok(Err(e)) = rpc_server.await {
        tracing::warn!(error = %e, "rpc server stopped with an error");
    }
    hangar_data_node::error::flush(&data_node.meta.db).await?;
    Ok(())
}
