//! TLS for gRPC between components (the `[rpc_tls]` config section). With it, every
//! server presents its certificate and every client checks it against the cluster CA;
//! with `require_client_cert`, servers also require a client certificate from that CA
//! (mutual TLS). The cluster secret is still checked on every call either way.

use std::sync::OnceLock;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::Error;
use crate::config::RpcTlsConfig;

fn read(path: &std::path::Path, key: &str) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::Config(format!("[rpc_tls] {key}: cannot read {}: {e}", path.display())))
}

/// Picks rustls' ring provider for the process. Needed because a workspace build can enable
/// both ring and aws-lc-rs in rustls (the test tools pull in the latter), and rustls then
/// refuses to choose by itself.
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn server_config(cfg: &RpcTlsConfig) -> Result<ServerTlsConfig, Error> {
    init_crypto();
    let identity = Identity::from_pem(read(&cfg.cert_file, "cert_file")?, read(&cfg.key_file, "key_file")?);
    let mut tls = ServerTlsConfig::new().identity(identity);
    if cfg.require_client_cert {
        tls = tls.client_ca_root(Certificate::from_pem(read(&cfg.ca_file, "ca_file")?));
    }
    Ok(tls)
}

pub fn client_config(cfg: &RpcTlsConfig) -> Result<ClientTlsConfig, Error> {
    init_crypto();
    // Clients always present their certificate; servers that do not ask simply ignore it.
    Ok(ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&cfg.ca_file, "ca_file")?))
        .identity(Identity::from_pem(read(&cfg.cert_file, "cert_file")?, read(&cfg.key_file, "key_file")?)))
}

static CLIENT: OnceLock<ClientTlsConfig> = OnceLock::new();

/// Makes every rpc channel this process opens use TLS. One process talks to one cluster,
/// so this is set once at start-up, before the first channel.
pub fn use_for_clients(cfg: ClientTlsConfig) {
    let _ = CLIENT.set(cfg);
}

pub fn client() -> Option<&'static ClientTlsConfig> {
    CLIENT.get()
}

/// Applies a process's `[rpc_tls]` section: its clients use TLS, and the returned server
/// builder serves TLS. Without the section, both stay plain text.
pub fn configure(cfg: Option<&RpcTlsConfig>) -> Result<tonic::transport::Server, Error> {
    // Connections of clients that vanished are closed too, with the streams they held.
    // Calls that carry a trace context get a span in the caller's trace.
    let mut server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(crate::rpc::KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(crate::rpc::KEEPALIVE_TIMEOUT))
        .max_frame_size(crate::rpc::FRAME_SIZE)
        .initial_stream_window_size(crate::rpc::STREAM_WINDOW)
        .initial_connection_window_size(crate::rpc::CONNECTION_WINDOW)
        .trace_fn(crate::telemetry::traces::serve_span);
    if let Some(cfg) = cfg {
        use_for_clients(client_config(cfg)?);
        server = server.tls_config(server_config(cfg)?).map_err(|e| Error::Config(format!("[rpc_tls]: {e}")))?;
    }
    Ok(server)
}
