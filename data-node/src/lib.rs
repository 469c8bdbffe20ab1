//! Hangar data node: keeps content-addressed blocks on disk and metadata tables in sled,
//! and serves both over gRPC (BlockService, MetadataService).

pub mod block_store;
pub mod error;
pub mod meta_store;
pub mod refs;
pub mod service;

use std::sync::Arc;
use std::time::Duration;

use hangar_common::config::Config;
use hangar_common::rpc::{MAX_MESSAGE, RequireHeader, require_secret};
use hangar_proto::block::block_service_server::BlockServiceServer;
use hangar_proto::metadata::metadata_service_server::MetadataServiceServer;
use tonic::service::interceptor::InterceptedService;

pub use error::DataError;

/// An open data node: its stores and the background work that keeps them tidy.
pub struct DataNode {
    pub blocks: Arc<block_store::BlockStore>,
    pub meta: Arc<meta_store::MetaStore>,
    secret: String,
}

pub type BlockServer = InterceptedService<BlockServiceServer<service::BlockRpc>, RequireHeader>;
pub type MetadataServer = InterceptedService<MetadataServiceServer<service::MetadataRpc>, RequireHeader>;

impl DataNode {
    /// Opens (creating on first use) the block directory and the metadata database.
    pub fn open(cfg: &Config) -> Result<Self, DataError> {
        let secret = cfg.rpc_secret.clone().ok_or_else(|| DataError::Config("rpc_secret is not set".into()))?;
        let meta = Arc::new(meta_store::MetaStore::open(&cfg.metadata_dir.join("db"))?);
        let refs = refs::BlockRefs::new(&meta.db, Duration::from_secs(cfg.block_gc_delay_secs))?;
        let blocks = Arc::new(block_store::BlockStore::open(&cfg.data_dir, refs, meta.db.clone())?);
        Ok(Self { blocks, meta, secret })
    }

    /// The gRPC services, each refusing calls without the cluster secret.
    pub fn services(&self) -> (BlockServer, MetadataServer) {
        let block = BlockServiceServer::new(service::BlockRpc { store: self.blocks.clone() })
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let meta = MetadataServiceServer::new(service::MetadataRpc { store: self.meta.clone() })
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        (
            InterceptedService::new(block, require_secret(&self.secret)),
            InterceptedService::new(meta, require_secret(&self.secret)),
        )
    }

    /// Starts the worker that deletes blocks whose last reference went away long enough ago.
    pub fn spawn_workers(&self) -> tokio::task::JoinHandle<()> {
        let blocks = self.blocks.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                if let Err(e) = blocks.collect_garbage().await {
                    tracing::warn!(error = %e, "block garbage collection failed");
                }
            }
        })
    }
}

/// Runs a data node on its own (`hangar data-node --config FILE`) until `shutdown`:
/// serves blocks and metadata, announces itself to the control plane, and keeps the last
/// layout it received in `<metadata_dir>/layout.pb`.
pub async fn run(mut cfg: Config, shutdown: impl std::future::Future<Output = ()>) -> Result<(), DataError> {
    use hangar_common::config::load_or_create_secret;
    use hangar_common::follower::{follow_layout, spawn_heartbeat};
    use hangar_proto::control::{Layout, NodeInfo, NodeRole};
    use prost::Message;

    cfg.require("data node", &["metadata_dir", "data_dir", "rpc_secret", "bootstrap_peers"])
        .map_err(|e| DataError::Config(e.to_string()))?;
    let mut rpc_server =
        hangar_common::tls::configure(cfg.rpc_tls.as_ref()).map_err(|e| DataError::Config(e.to_string()))?;
    std::fs::create_dir_all(&cfg.metadata_dir)?;
    std::fs::create_dir_all(&cfg.data_dir)?;
    let node_id = load_or_create_secret(&cfg.metadata_dir.join("node_id"), || {
        hangar_common::ids::random_string(16, b"0123456789abcdef")
    })
    .map_err(|e| DataError::Config(e.to_string()))?;
    let node = DataNode::open(&cfg)?;
    let gc = node.spawn_workers();
    let listener = tokio::net::TcpListener::bind(cfg.rpc_bind_addr)
        .await
        .map_err(|e| DataError::Config(format!("rpc_bind_addr: cannot listen on {}: {e}", cfg.rpc_bind_addr)))?;
    if cfg.rpc_public_addr.is_none() {
        cfg.rpc_public_addr = Some(listener.local_addr()?.to_string());
    }
    let secret = cfg.rpc_secret.clone().unwrap_or_default();

    let layout_file = cfg.metadata_dir.join("layout.pb");
    let initial = std::fs::read(&layout_file).ok().and_then(|b| Layout::decode(b.as_slice()).ok()).unwrap_or_default();
    let save_to = layout_file.clone();
    let _layout = follow_layout(cfg.bootstrap_peers.clone(), secret.clone(), initial, move |l| {
        let tmp = save_to.with_extension("tmp");
        if let Err(e) = std::fs::write(&tmp, l.encode_to_vec()).and_then(|_| std::fs::rename(&tmp, &save_to)) {
            tracing::warn!(error = %e, "cannot keep the layout on disk");
        }
    });
    let heartbeat = spawn_heartbeat(
        cfg.bootstrap_peers.clone(),
        secret,
        NodeInfo {
            id: node_id.clone(),
            hostname: hangar_common::ids::hostname(),
            rpc_addr: cfg.public_rpc_addr(),
            role: NodeRole::Data as i32,
        },
    );
    let admin = hangar_common::admin_http::start(cfg.admin.api_bind_addr)
        .await
        .map_err(|e| DataError::Config(e.to_string()))?;
    tracing::info!(node = %node_id, rpc = %cfg.public_rpc_addr(), "data node ready");

    let (block_svc, meta_svc) = node.services();
    let router = rpc_server.add_service(block_svc).add_service(meta_svc);
    let served = hangar_common::rpc::serve_until(router, listener, shutdown).await;
    heartbeat.abort();
    gc.abort();
    admin.stop().await;
    error::flush(&node.meta.db).await?;
    served.map_err(|e| DataError::Config(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hangar_common::rpc::{lazy_channel, meta_client};
    use hangar_proto::metadata::{GetRequest, Table};

    /// Over real gRPC on loopback: calls without the cluster secret are refused.
    #[tokio::test]
    async fn calls_without_the_cluster_secret_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let toml = format!(
            "metadata_dir = \"{0}/meta\"\ndata_dir = \"{0}/blocks\"\nrpc_secret = \"right-secret\"\n",
            dir.path().display()
        );
        let cfg = Config::from_toml_with_overrides(&toml, "test", vec![]).unwrap();
        let node = DataNode::open(&cfg).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (block, meta) = node.services();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(block)
                .add_service(meta)
                .serve_with_incoming(hangar_common::rpc::incoming(listener)),
        );
        let get = GetRequest { table: Table::Bucket as i32, key: b"x".to_vec().into() };
        let mut wrong = meta_client(lazy_channel(&addr).unwrap(), "wrong-secret").unwrap();
        let err = wrong.get(get.clone()).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        let mut right = meta_client(lazy_channel(&addr).unwrap(), "right-secret").unwrap();
        assert!(right.get(get).await.unwrap().into_inner().entry.is_none());
    }
}
