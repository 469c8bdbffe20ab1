//! The `hangar` binary: parses arguments and hands over to the service crates
//! (`server` runs them all in one process) or to the admin API (every other verb).

mod admin;
mod server;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "hangar", version, about = "Hangar: an S3-compatible object store")]
struct Cli {
    /// The control plane's gRPC address (the server's --rpc-addr).
    #[arg(long, global = true, env = "HANGAR_RPC_ADDR", default_value = "127.0.0.1:3901")]
    rpc_addr: SocketAddr,
    /// Data directory: the server keeps everything here; the CLI reads the admin token from it.
    #[arg(long, global = true, default_value = "./hangar-data")]
    data_dir: PathBuf,
    /// For a cluster with `[rpc_tls]`: the CA, and this client's certificate and key (PEM).
    #[arg(long, global = true, env = "HANGAR_RPC_TLS_CA_FILE", requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
    #[arg(long, global = true, env = "HANGAR_RPC_TLS_CERT_FILE")]
    tls_cert: Option<PathBuf>,
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
    /// Show the cluster's nodes and layout.
    Status,
    /// Manage access keys.
    #[command(subcommand)]
    Key(admin::KeyCommand),
    /// Manage buckets and who may use them.
    #[command(subcommand)]
    Bucket(admin::BucketCommand),
}

#[derive(clap::Args)]
struct ServiceArgs {
    /// The service's TOML config (see docs/configuration.md); HANGAR_* variables override it.
    #[arg(long)]
    config: PathBuf,
}

type BoxError = Box<dyn std::error::Error>;

fn load(args: &ServiceArgs) -> Result<hangar_common::config::Config, BoxError> {
    hangar_common::telemetry::init_tracing();
    Ok(hangar_common::config::Config::load(&args.config)?)
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
        match cli.command {
            Command::Server(args) => server::run(args, cli.rpc_addr, cli.data_dir).await,
            Command::ControlPlane(args) => {
                Ok(hangar_control_plane::run(load(&args)?, hangar_common::follower::shutdown_signal()).await?)
            }
            Command::DataNode(args) => {
                Ok(hangar_data_node::run(load(&args)?, hangar_common::follower::shutdown_signal()).await?)
            }
            Command::S3Frontend(args) => {
                Ok(hangar_s3_frontend::run_service(load(&args)?, hangar_common::follower::shutdown_signal()).await?)
            }
            Command::Layout(cmd) => admin::layout(&admin::connect(cli.rpc_addr, &cli.data_dir)?, cmd).await,
            Command::Status => admin::status(&admin::connect(cli.rpc_addr, &cli.data_dir)?).await,
            Command::Key(cmd) => admin::key(&admin::connect(cli.rpc_addr, &cli.data_dir)?, cmd).await,
            Command::Bucket(cmd) => admin::bucket(&admin::connect(cli.rpc_addr, &cli.data_dir)?, cmd).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hangar: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
