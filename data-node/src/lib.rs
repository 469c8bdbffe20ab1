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
