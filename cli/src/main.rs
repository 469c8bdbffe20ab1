//! The `hangar` binary: parses arguments and hands over to the service crates
//! (`server` runs them all in one process) or to the admin API (every other verb).

mod admin;
mod health;
mod repair;
mod server;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "hangar",
    version,
    about = "Hangar: an S3-compatible object store",
    after_help = "Admin commands (status, layout, key, bucket) reach the control plane's gRPC address with the \
admin token. The address comes from --rpc-addr, HANGAR_RPC_ADDR, or rpc_bind_addr in the config given with \
-c; the token from HANGAR_ADMIN_TOKEN (or the file HANGAR_ADMIN_TOKEN_FILE names), the config's [admin] \
admin_token / admin_token_file, or the file \
meta/admin_token in the server's data directory (--data-dir)."
)]
struct Cli {
    /// A config file (docs/configuration.md): services run with it; admin commands read the
    /// rpc address and admin token from it.
    #[arg(short, long, env = "HANGAR_CONFIG")]
    config: Option<PathBuf>,
    /// The control plane's gRPC address [default: from -c, else 127.0.0.1:3901].
    #[arg(long, global = true, env = "HANGAR_RPC_ADDR")]
    rpc_addr: Option<SocketAddr>,
    /// Data directory of `hangar server`; admin commands read the admin token from it.
    #[arg(long, global = true, default_value = "./hangar-data")]
    data_dir: PathBuf,
    /// For a cluster with `[rpc_tls]`: the CA (PEM) admin commands trust.
    #[arg(long, global = true, env = "HANGAR_RPC_TLS_CA_FILE", requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
    /// This client's certificate (PEM), with --tls-ca.
    #[arg(long, global = true, env = "HANGAR_RPC_TLS_CERT_FILE")]
    tls_cert: Option<PathBuf>,
    /// This client's private key (PEM), with --tls-ca.
    #[arg(long, global = true, env = "HANGAR_RPC_TLS_KEY_FILE")]
    tls_key: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run control plane, a data node and the S3 API in one process.
    Server(server::ServerArgs),
    /// Run the control plane (layout, membership, admin API).
    ControlPlane(ServiceArgs),
    /// Run a data node (blocks and metadata).
    DataNode(ServiceArgs),
    /// Run an S3 frontend.
    S3Frontend(ServiceArgs),
    /// Stage, review and apply cluster layout changes.
    #[command(subcommand)]
    Layout(admin::LayoutCommand),
    /// Show the cluster: the control plane, every node, its zone, capacity and health.
    Status,
    /// Manage access keys.
    #[command(subcommand)]
    Key(admin::KeyCommand),
    /// Manage buckets and who may use them.
    #[command(subcommand)]
    Bucket(admin::BucketCommand),
    /// Start repairs on the data nodes: tables (anti-entropy), blocks, scrub.
    #[command(subcommand)]
    Repair(repair::RepairCommand),
    /// The background workers of every node, and their variables.
    #[command(subcommand)]
    Worker(repair::WorkerCommand),
    /// Blocks: where one is and what uses it; blocks that cannot be fetched.
    #[command(subcommand)]
    Block(repair::BlockCommand),
    /// Nodes gone for good.
    #[command(subcommand)]
    Node(repair::NodeCommand),
    /// Print the HangarNode CustomResourceDefinition (YAML) for `kubectl apply -f -`.
    KubernetesCrd,
    /// Ask a process's admin endpoint whether it is healthy (exit 0) or not (exit 1): the
    /// container image's health check.
    Health(health::HealthArgs),
}

#[derive(clap::Args)]
struct ServiceArgs {
    /// The service's TOML config (see docs/configuration.md), here or before the command;
    /// HANGAR_* variables override it.
    #[arg(short, long)]
    config: Option<PathBuf>,
}

type BoxError = Box<dyn std::error::Error>;
use hangar_common::telemetry::Service;

/// Loads a service's config and starts its logging and trace export.
fn load(
    args: &ServiceArgs,
    top: &Option<PathBuf>,
    service: hangar_common::telemetry::Service,
) -> Result<hangar_common::config::Config, BoxError> {
    let path = args.config.as_ref().or(top.as_ref()).ok_or("give the service's config with --config FILE")?;
    let cfg = hangar_common::config::Config::load(path)?;
    hangar_common::telemetry::init(&cfg.admin.log_settings(), cfg.admin.trace_export(service))?;
    hangar_common::telemetry::metrics().set_build(cfg.replication_factor);
    Ok(cfg)
}

/// `hangar data-node`: a data node, and an S3 frontend in the same process when its config
/// names `[s3_api] api_bind_addr` (the S3 port is taken before anything starts, so a port in
/// use is the first and only error).
async fn run_data_node(cfg: hangar_common::config::Config) -> Result<(), BoxError> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let shutdown = move |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let colocated = match cfg.s3_api.bind_addr_set {
        true => {
            let listener = hangar_s3_frontend::bind(&cfg).await?;
            let (s3_addr, cfg, stopped) = (listener.local_addr()?, cfg.clone(), stopped.clone());
            Some(hangar_data_node::Colocated {
                s3_addr,
                serve: Box::new(move |cluster| {
                    Box::pin(async move {
                        hangar_s3_frontend::serve(listener, &cfg, cluster, shutdown(stopped))
                            .await
                            .map_err(|e| e.to_string())
                    })
                }),
            })
        }
        false => None,
    };
    tokio::spawn(async move {
        hangar_common::follower::shutdown_signal().await;
        let _ = stop.send(true);
    });
    Ok(hangar_data_node::run(cfg, shutdown(stopped), colocated).await?)
}

/// Where admin commands find the control plane and its token: flags and variables first,
/// then the config file, then the server's data directory.
fn admin_target(
    config: &Option<PathBuf>,
    rpc_addr: Option<SocketAddr>,
    data_dir: &Path,
) -> Result<admin::Target, BoxError> {
    let cfg = match config {
        Some(p) => Some(hangar_common::config::Config::load(p)?),
        None => None,
    };
    let addr = match (rpc_addr, &cfg) {
        (Some(a), _) => a,
        (None, Some(c)) => hangar_common::config::local_dial_addr(c.rpc_bind_addr),
        (None, None) => SocketAddr::from(([127, 0, 0, 1], 3901)),
    };
    let token = match (admin::token_from_env()?, &cfg) {
        (Some(t), _) => t,
        (None, Some(c)) => match &c.admin.admin_token {
            Some(t) => t.clone(),
            // The token the control plane generated in its metadata directory.
            None => admin::token_in(&c.metadata_dir.join("admin_token"))?,
        },
        (None, None) => admin::token_from(data_dir)?,
    };
    Ok(admin::Target { addr, token })
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hangar: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        // Admin verbs reach the control plane over TLS when given certificates; services
        // read theirs from their config.
        if let (Some(ca), Some(cert), Some(key), false) = (
            &cli.tls_ca,
            &cli.tls_cert,
            &cli.tls_key,
            matches!(
                cli.command,
                Command::ControlPlane(_) | Command::DataNode(_) | Command::S3Frontend(_) | Command::Server(_)
            ),
        ) {
            let cfg = hangar_common::config::RpcTlsConfig {
                ca_file: ca.clone(),
                cert_file: cert.clone(),
                key_file: key.clone(),
                require_client_cert: false,
            };
            hangar_common::tls::use_for_clients(hangar_common::tls::client_config(&cfg)?);
        }
        let (config, rpc_addr, data_dir) = (cli.config.clone(), cli.rpc_addr, cli.data_dir.clone());
        let target = || admin::connect(&admin_target(&config, rpc_addr, &data_dir)?);
        match cli.command {
            Command::Server(args) => server::run(args, cli.config.clone(), cli.rpc_addr, cli.data_dir.clone()).await,
            Command::ControlPlane(args) => Ok(hangar_control_plane::run(
                load(&args, &cli.config, Service::ControlPlane)?,
                hangar_common::follower::shutdown_signal(),
            )
            .await?),
            Command::DataNode(args) => run_data_node(load(&args, &cli.config, Service::DataNode)?).await,
            Command::S3Frontend(args) => Ok(hangar_s3_frontend::run_service(
                load(&args, &cli.config, Service::S3Frontend)?,
                hangar_common::follower::shutdown_signal(),
            )
            .await?),
            Command::Layout(cmd) => admin::layout(&target()?, cmd).await,
            Command::Status => admin::status(&target()?).await,
            Command::Key(cmd) => admin::key(&target()?, cmd).await,
            Command::Bucket(cmd) => admin::bucket(&target()?, cmd).await,
            Command::Repair(cmd) => repair::repair(&target()?, cmd).await,
            Command::Worker(cmd) => repair::worker(&target()?, cmd).await,
            Command::Block(cmd) => repair::block(&target()?, cmd).await,
            Command::Node(cmd) => repair::node(&target()?, cmd).await,
            Command::KubernetesCrd => {
                print!("{}", hangar_discovery::kubernetes::crd_yaml());
                Ok(())
            }
            Command::Health(args) => health::check(args).await,
        }
    });
    // Spans still buffered leave before the runtime goes.
    hangar_common::telemetry::shutdown();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hangar: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
