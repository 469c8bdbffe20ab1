//! Hangar data node: keeps content-addressed blocks on disk and metadata tables in sled,
//! serves both over gRPC (BlockService, MetadataService), enforces the layout it knows on
//! every write, and runs the background workers that release, collect, move and drop data.

pub mod admin;
pub mod block_store;
pub mod disk;
pub mod error;
pub mod gate;
pub mod get_block_route;
pub mod group_commit;
pub mod merkle;
pub mod meta_store;
pub mod service;
pub mod work;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hangar_common::cluster::Cluster;
use hangar_common::config::Config;
use hangar_common::rpc::{MAX_MESSAGE, RequireHeader, require_secret};
use hangar_common::worker::Workers;
use hangar_proto::control::node_admin_service_server::NodeAdminServiceServer;
use hangar_proto::control::{HeartbeatRequest, NodeInfo};
use hangar_proto::metadata::metadata_service_server::MetadataServiceServer;
use tokio::sync::Notify;
use tonic::service::interceptor::InterceptedService;

pub use error::DataError;

/// Kept in `node_state` once the data directory got its mark file.
const DATA_DIR_MARKED: &[u8] = b"data_dir_marked";

/// An open data node: its stores, its layout gate, its workers.
pub struct DataNode {
    pub blocks: Arc<block_store::BlockStore>,
    pub meta: Arc<meta_store::MetaStore>,
    pub gate: Arc<gate::WriteGate>,
    pub disk: Arc<disk::DiskGuard>,
    pub workers: Workers,
    secret: String,
    cfg: Config,
    /// Newest layout version enforced (and drained), and newest fully synced.
    acked: Arc<AtomicU64>,
    synced: Arc<AtomicU64>,
    /// Asks for a heartbeat at once (an ack or a sync to report).
    pub nudge: Arc<Notify>,
    /// Rebuilding after lost directories: reads refused until a full anti-entropy round.
    pub rebuilding: Arc<AtomicBool>,
    /// `hangar repair tables` asks the anti-entropy worker for a round.
    force_tables: Arc<AtomicBool>,
    pub vars: work::vars::Vars,
    node_state: sled::Tree,
}

pub type BlockServer = InterceptedService<get_block_route::BlockRoutes, RequireHeader>;
pub type MetadataServer = InterceptedService<MetadataServiceServer<service::MetadataRpc>, RequireHeader>;
pub type NodeAdminServer = InterceptedService<NodeAdminServiceServer<admin::NodeAdminRpc>, RequireHeader>;

impl DataNode {
    /// Opens (creating on first use) the block directory and the metadata database.
    pub fn open(cfg: &Config) -> Result<Self, DataError> {
        let secret = cfg.rpc_secret.clone().ok_or_else(|| DataError::Config("rpc_secret is not set".into()))?;
        std::fs::create_dir_all(&cfg.metadata_dir)?;
        std::fs::create_dir_all(&cfg.data_dir)?;
        let delay = Duration::from_secs(cfg.block_gc_delay_secs);
        let meta = Arc::new(meta_store::MetaStore::open(&cfg.metadata_dir.join("db"), delay)?);
        let blocks = Arc::new(block_store::BlockStore::open(&cfg.data_dir, meta.clone())?);
        let disk = Arc::new(disk::DiskGuard::new(
            vec![cfg.data_dir.clone(), cfg.metadata_dir.clone()],
            cfg.free_space_reserve,
        ));
        let synced = work::sync::synced_version(&meta.db.open_tree("sync_state")?);
        let node_state = meta.db.open_tree("node_state")?;
        let rebuilding = node_state.contains_key(work::anti_entropy::REBUILDING)?;
        // A data directory that is new while the database knows it had one was lost or
        // replaced: every block the references name is looked for. (A database from before
        // the mark existed only gets the mark.)
        let marker = cfg.data_dir.join(".hangar-data");
        if !marker.exists() {
            if node_state.contains_key(DATA_DIR_MARKED)? {
                tracing::warn!(dir = %cfg.data_dir.display(), "the data directory is new: checking every block");
                work::block_scan::request(&meta.db.open_tree("repair_state")?)
                    .map_err(|e| DataError::Config(e.to_string()))?;
            }
            std::fs::write(&marker, b"hangar data directory\n")?;
            node_state.insert(DATA_DIR_MARKED, &[])?;
            node_state.flush()?;
        }
        Ok(Self {
            vars: work::vars::Vars::open(&meta.db, cfg)?,
            rebuilding: Arc::new(AtomicBool::new(rebuilding)),
            force_tables: Default::default(),
            node_state,
            blocks,
            meta,
            gate: Default::default(),
            disk,
            workers: Workers::default(),
            secret,
            cfg: cfg.clone(),
            acked: Default::default(),
            synced: Arc::new(AtomicU64::new(synced)),
            nudge: Default::default(),
        })
    }

    /// Marks this node as rebuilding (it took back the id of a node whose directories
    /// were lost): it refuses reads until anti-entropy has pulled from every peer.
    pub fn mark_rebuilding(&self) -> Result<(), DataError> {
        self.node_state.insert(work::anti_entropy::REBUILDING, &[])?;
        self.node_state.flush()?;
        self.rebuilding.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// The repair and worker commands (cluster secret).
    pub fn admin_service(&self) -> Result<NodeAdminServer, DataError> {
        let svc = NodeAdminServiceServer::new(admin::NodeAdminRpc {
            meta: self.meta.clone(),
            vars: self.vars.clone(),
            workers: self.workers.clone(),
            force_tables: self.force_tables.clone(),
            repair_state: self.meta.db.open_tree("repair_state")?,
            scrub_state: self.meta.db.open_tree("scrub_state")?,
        });
        Ok(InterceptedService::new(svc, require_secret(&self.secret)))
    }

    fn block_rpc(&self) -> service::BlockRpc {
        service::BlockRpc {
            store: self.blocks.clone(),
            gate: self.gate.clone(),
            disk: self.disk.clone(),
            block_size: self.cfg.block_size as u64,
        }
    }

    fn metadata_rpc(&self) -> service::MetadataRpc {
        service::MetadataRpc {
            store: self.meta.clone(),
            gate: self.gate.clone(),
            disk: self.disk.clone(),
            rebuilding: self.rebuilding.clone(),
        }
    }

    /// The same services for calls from this process, this node being `node_id` in the
    /// layout (see `Cluster::with_local`).
    pub fn local(&self, node_id: &str) -> hangar_common::local::LocalNode {
        hangar_common::local::LocalNode {
            id: node_id.into(),
            meta: Arc::new(self.metadata_rpc()),
            blocks: Arc::new(self.block_rpc()),
        }
    }

    /// The gRPC services, each refusing calls without the cluster secret.
    pub fn services(&self) -> (BlockServer, MetadataServer) {
        let block = get_block_route::BlockRoutes::new(self.block_rpc(), MAX_MESSAGE);
        let meta = MetadataServiceServer::new(self.metadata_rpc())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        (
            InterceptedService::new(block, require_secret(&self.secret)),
            InterceptedService::new(meta, require_secret(&self.secret)),
        )
    }

    /// Starts following `cluster`'s layout history (the gate and its acknowledgements) and
    /// the background workers.
    pub fn start(&self, node_id: &str, cluster: Cluster) -> Result<(), DataError> {
        hangar_common::telemetry::set_this_node(node_id);
        let node_id: Arc<str> = node_id.into();
        // Disk space in the metrics, as Garage reports it.
        let (data_dir, meta_dir) = (self.cfg.data_dir.clone(), self.cfg.metadata_dir.clone());
        tokio::spawn(async move {
            loop {
                let m = hangar_common::telemetry::metrics();
                m.measure_disk("data", &data_dir);
                m.measure_disk("metadata", &meta_dir);
                tokio::time::sleep(std::time::Duration::from_secs(10)).await;
            }
        });
        // Writes made with an older layout than the one this node knows are refused from
        // the first request on.
        let bounds = |h: &hangar_proto::control::LayoutHistory| {
            (hangar_common::follower::current_version(h), h.versions.first().map(|l| l.version).unwrap_or(0))
        };
        let (v, oldest) = bounds(&cluster.watch().borrow());
        self.gate.advance(v, oldest);
        let (gate, acked, nudge, mut rx) = (self.gate.clone(), self.acked.clone(), self.nudge.clone(), cluster.watch());
        let offload_state = self.meta.db.open_tree("offload_state")?;
        let me = node_id.clone();
        tokio::spawn(async move {
            loop {
                let history = rx.borrow_and_update().clone();
                hangar_common::telemetry::metrics().layout(&history);
                let (v, oldest) = bounds(&history);
                // The offload worker learns every partition this node was given, also by a
                // version retired before its next step.
                let view = hangar_common::cluster::View::new(history);
                if view.version() > 0
                    && let Err(e) = work::offload::note_held(&offload_state, view.version(), &work::held_by(&me, &view))
                {
                    tracing::warn!(error = %e, "could not record the partitions this node holds");
                }
                gate.advance(v, oldest);
                gate.drained_below(v).await;
                if acked.fetch_max(v, Ordering::SeqCst) < v {
                    tracing::debug!(version = v, "layout version acknowledged");
                    nudge.notify_one();
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        });
        let ctx = work::Ctx {
            node_id,
            cluster: cluster.clone(),
            store: hangar_model::Store::new(cluster, &self.cfg),
            meta: self.meta.clone(),
            blocks: self.blocks.clone(),
        };
        let w = &self.workers;
        w.spawn(work::gc::BlockGc { ctx: ctx.clone(), deleted: 0 });
        w.spawn(work::release::Releaser {
            ctx: ctx.clone(),
            done: 0,
            follower_wait: Duration::from_secs(self.cfg.pending_write_grace_secs),
        });
        w.spawn(work::collect::Collector {
            ctx: ctx.clone(),
            grace: Duration::from_secs(self.cfg.pending_write_grace_secs),
            cursor: Vec::new(),
            released: 0,
        });
        w.spawn(work::janitor::Janitor {
            ctx: ctx.clone(),
            cursor: Vec::new(),
            finished: 0,
            max_age: (self.cfg.multipart_max_age_secs > 0)
                .then(|| Duration::from_secs(self.cfg.multipart_max_age_secs)),
            aborted: 0,
        });
        w.spawn(work::anti_entropy::AntiEntropy::new(
            ctx.clone(),
            (self.cfg.anti_entropy_interval_secs > 0).then(|| Duration::from_secs(self.cfg.anti_entropy_interval_secs)),
            self.force_tables.clone(),
            self.rebuilding.clone(),
            self.node_state.clone(),
        ));
        w.spawn(work::tombstones::TombstoneGc {
            ctx: ctx.clone(),
            // Never before writes older than the tombstone can have ended.
            delay: Duration::from_secs(self.cfg.tombstone_gc_delay_secs.max(self.cfg.pending_write_grace_secs)),
            table: 0,
            cursor: Vec::new(),
            collected: 0,
        });
        w.spawn(work::resync::Resync {
            ctx: ctx.clone(),
            vars: self.vars.clone(),
            fetched: 0,
            counts: (0, 0),
            counted: None,
        });
        w.spawn(work::lifecycle::Lifecycle {
            ctx: ctx.clone(),
            state: self.meta.db.open_tree("repair_state")?,
            day: Duration::from_secs(self.cfg.lifecycle_day_secs.max(1)),
            rules: Default::default(),
            expired: 0,
            aborted: 0,
            report: String::new(),
        });
        w.spawn(work::block_scan::BlockScan {
            ctx: ctx.clone(),
            state: self.meta.db.open_tree("repair_state")?,
            missing: 0,
            unreferenced: 0,
            report: String::new(),
        });
        w.spawn(work::scrub::Scrub {
            ctx: ctx.clone(),
            vars: self.vars.clone(),
            state: self.meta.db.open_tree("scrub_state")?,
            scheduled: !self.cfg.disable_scrub,
        });
        w.spawn(work::sync::Sync {
            ctx: ctx.clone(),
            tranquility: self.cfg.sync_tranquility,
            state: self.meta.db.open_tree("sync_state")?,
            report: String::new(),
            nudge: self.nudge.clone(),
            synced: self.synced.clone(),
        });
        w.spawn(work::offload::Offload {
            ctx,
            delay: Duration::from_secs(self.cfg.offload_delay_secs),
            state: self.meta.db.open_tree("offload_state")?,
            dropped: 0,
        });
        // Queued releases wake the releaser.
        let (wake, workers) = (self.meta.wake.clone(), self.workers.clone());
        tokio::spawn(async move {
            loop {
                wake.notified().await;
                workers.wake();
            }
        });
        Ok(())
    }

    /// What this node tells the control plane.
    pub fn heartbeat(&self, node: NodeInfo) -> HeartbeatRequest {
        HeartbeatRequest {
            node: Some(node),
            acked_version: self.acked.load(Ordering::SeqCst),
            synced_version: self.synced.load(Ordering::SeqCst),
            workers: self.workers.status(),
        }
    }

    /// Stops the workers (after their current step) and makes everything durable.
    pub async fn shutdown(&self) -> Result<(), DataError> {
        self.workers.shutdown(Duration::from_secs(10)).await;
        self.meta.commit.flush().await
    }
}

/// An S3 frontend served by a data node's process as well (`[s3_api] api_bind_addr` in a
/// data node's config), like a Garage node that has an `[s3_api]` section: its reads and
/// writes reach this node in-process, and a block this node holds is read from its disk.
pub struct Colocated {
    /// Where it serves S3: reported to the control plane as a frontend's address.
    pub s3_addr: std::net::SocketAddr,
    /// Serves S3 over the node's view of the cluster until the process's shutdown.
    pub serve: Box<dyn FnOnce(Cluster) -> futures::future::BoxFuture<'static, Result<(), String>> + Send>,
}

/// Runs a data node on its own (`hangar data-node --config FILE`) until `shutdown`:
/// serves blocks and metadata, announces itself to the control plane, and keeps the last
/// layout history it received in `<metadata_dir>/layout.pb`. With `colocated`, the process
/// serves S3 too; a co-located frontend that fails (it could not start its website
/// endpoint, say) stops the node with its error.
pub async fn run(
    mut cfg: Config,
    shutdown: impl std::future::Future<Output = ()>,
    colocated: Option<Colocated>,
) -> Result<(), DataError> {
    use hangar_common::config::load_or_create_secret;
    use hangar_common::follower::{follow_layout, spawn_heartbeat};
    use hangar_proto::control::{LayoutHistory, NodeRole};
    use prost::Message;

    cfg.require("data node", &["metadata_dir", "data_dir", "rpc_secret", "bootstrap_peers"])
        .map_err(|e| DataError::Config(e.to_string()))?;
    let mut rpc_server =
        hangar_common::tls::configure(cfg.rpc_tls.as_ref()).map_err(|e| DataError::Config(e.to_string()))?;
    std::fs::create_dir_all(&cfg.metadata_dir)?;
    std::fs::create_dir_all(&cfg.data_dir)?;
    let listener = tokio::net::TcpListener::bind(cfg.rpc_bind_addr)
        .await
        .map_err(|e| DataError::Config(format!("rpc_bind_addr: cannot listen on {}: {e}", cfg.rpc_bind_addr)))?;
    if cfg.rpc_public_addr.is_none() {
        cfg.rpc_public_addr = Some(listener.local_addr()?.to_string());
    }
    let secret = cfg.rpc_secret.clone().unwrap_or_default();
    // The control plane and the other data nodes: bootstrap_peers, or found through discovery.
    let backend = hangar_discovery::from_config(&cfg).await.map_err(|e| DataError::Config(e.to_string()))?;
    let peers = hangar_discovery::peers(backend.clone(), cfg.bootstrap_peers.clone(), Some(cfg.public_rpc_addr()));
    let id_file = cfg.metadata_dir.join("node_id");
    let had_id = id_file.exists();
    let db_existed = cfg.metadata_dir.join("db").exists();
    // A node starting without its id may be one whose directories were lost: the control
    // plane knows whether a node of the layout at this address has gone silent.
    let taken_back =
        if had_id { None } else { hangar_common::follower::identify(&peers, &secret, &cfg.public_rpc_addr()).await };
    let node = Arc::new(DataNode::open(&cfg)?);
    // Marked before the id is written: a crash in between asks the control plane again,
    // and never leaves a node with the old id and lost data serving reads. A node that kept
    // its id but lost its database rebuilds too (it forgot its CASPaxos promises).
    if taken_back.is_some() || (had_id && !db_existed) {
        node.mark_rebuilding()?;
    }
    if let Some(id) = &taken_back {
        hangar_common::config::write_private(&id_file, id).map_err(|e| DataError::Config(e.to_string()))?;
        tracing::warn!(node = %id, "took back the id of the node that had this address; rebuilding its data");
    }
    let node_id = load_or_create_secret(&id_file, || hangar_common::ids::random_string(16, b"0123456789abcdef"))
        .map_err(|e| DataError::Config(e.to_string()))?;

    let layout_file = cfg.metadata_dir.join("layout.pb");
    let initial =
        std::fs::read(&layout_file).ok().and_then(|b| LayoutHistory::decode(b.as_slice()).ok()).unwrap_or_default();
    let save_to = layout_file.clone();
    let history = follow_layout(peers.clone(), secret.clone(), initial, move |h| {
        let tmp = save_to.with_extension("tmp");
        if let Err(e) = std::fs::write(&tmp, h.encode_to_vec()).and_then(|_| std::fs::rename(&tmp, &save_to)) {
            tracing::warn!(error = %e, "cannot keep the layout on disk");
        }
    });
    let cluster = Cluster::new(history.clone(), cfg.rpc_options())?.with_local(node.local(&node_id));
    node.start(&node_id, cluster.clone())?;
    let capacity = hangar_common::disk::capacity(&cfg.data_dir);
    let zone = cfg.zone.clone().unwrap_or_default();
    let info = NodeInfo {
        id: node_id.clone(),
        hostname: hangar_common::ids::hostname(),
        rpc_addr: cfg.public_rpc_addr(),
        role: NodeRole::Data as i32,
        zone: zone.clone(),
        capacity,
    };
    let mut me = hangar_discovery::Node::at(&node_id, &cfg.public_rpc_addr(), hangar_discovery::Role::Data)
        .map_err(|e| DataError::Config(format!("rpc_public_addr: {e}")))?;
    (me.zone, me.capacity) = (zone, capacity);
    let announcer = hangar_discovery::Announcer::start(backend, me).map_err(|e| DataError::Config(e.to_string()))?;
    let reporter = node.clone();
    let frontend = colocated.map(|c| {
        let info = NodeInfo {
            id: format!("{node_id}-s3"),
            hostname: info.hostname.clone(),
            rpc_addr: c.s3_addr.to_string(),
            role: NodeRole::Frontend as i32,
            ..Default::default()
        };
        let heartbeat = spawn_heartbeat(
            peers.clone(),
            secret.clone(),
            move || HeartbeatRequest { node: Some(info.clone()), ..Default::default() },
            Default::default(),
        );
        tracing::info!(s3 = %c.s3_addr, "serving S3 too");
        (heartbeat, tokio::spawn((c.serve)(cluster.clone())))
    });
    let heartbeat =
        spawn_heartbeat(peers, secret.clone(), move || reporter.heartbeat(info.clone()), node.nudge.clone());
    let admin = hangar_common::admin_http::start(cfg.admin.api_bind_addr, cfg.admin.limits())
        .await
        .map_err(|e| DataError::Config(e.to_string()))?;
    tracing::info!(node = %node_id, rpc = %cfg.public_rpc_addr(), "data node ready");

    let (block_svc, meta_svc) = node.services();
    // The layout this node follows, for frontends that start while the control plane is away.
    let layout_svc = hangar_common::layout_feed::LayoutFeed::server(history, &secret);
    let router = rpc_server
        .add_service(block_svc)
        .add_service(meta_svc)
        .add_service(node.admin_service()?)
        .add_service(layout_svc);
    let (stop_rpc, rpc_stopped) = tokio::sync::oneshot::channel::<()>();
    let rpc = tokio::spawn(hangar_common::rpc::serve_until(router, listener, async {
        let _ = rpc_stopped.await;
    }));
    // The frontend stops on the same shutdown (and finishes its requests, which may need
    // this node, before the node stops); one that ends before it failed to serve.
    let frontend_ended = match frontend {
        Some((frontend_heartbeat, mut task)) => {
            let early = tokio::select! {
                _ = shutdown => None,
                ended = &mut task => Some(ended),
            };
            let _ = stop_rpc.send(());
            let ended = match early {
                Some(ended) => ended,
                None => task.await,
            };
            frontend_heartbeat.abort();
            ended.map_err(|e| e.to_string()).and_then(|r| r)
        }
        None => {
            shutdown.await;
            let _ = stop_rpc.send(());
            Ok(())
        }
    };
    let served = rpc.await.map_err(|e| DataError::Config(e.to_string()))?;
    heartbeat.abort();
    announcer.stop().await;
    admin.stop().await;
    node.shutdown().await?;
    frontend_ended.map_err(|e| DataError::Config(format!("S3 frontend: {e}")))?;
    served.map_err(|e| DataError::Config(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hangar_common::rpc::{add_secret, lazy_channel, meta_client};
    use hangar_proto::metadata::{GetRequest, Table};

    /// A data node on `dir` with cluster secret `secret`.
    fn open_node(dir: &std::path::Path, secret: &str) -> DataNode {
        let toml = format!(
            "metadata_dir = \"{0}/meta\"\ndata_dir = \"{0}/blocks\"\nrpc_secret = \"{secret}\"\n",
            dir.display()
        );
        DataNode::open(&Config::from_toml_with_overrides(&toml, "test", vec![]).unwrap()).unwrap()
    }

    /// A data node on `dir` (cluster secret "right-secret") serving its block and metadata
    /// services over real gRPC on loopback, with the HTTP/2 settings of a running node; the
    /// node and its address.
    async fn serve_node(dir: &std::path::Path) -> (DataNode, String) {
        let node = open_node(dir, "right-secret");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (block, meta) = node.services();
        tokio::spawn(
            hangar_common::tls::configure(None)
                .unwrap()
                .add_service(block)
                .add_service(meta)
                .serve_with_incoming(hangar_common::rpc::incoming(listener)),
        );
        (node, addr)
    }

    /// Over real gRPC on loopback: calls without the cluster secret are refused.
    #[tokio::test]
    async fn calls_without_the_cluster_secret_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_node, addr) = serve_node(dir.path()).await;
        let get = GetRequest { table: Table::Bucket as i32, key: b"x".to_vec().into() };
        let mut wrong = meta_client(lazy_channel(&addr).unwrap(), add_secret("wrong-secret").unwrap());
        let err = wrong.get(get.clone()).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        let mut right = meta_client(lazy_channel(&addr).unwrap(), add_secret("right-secret").unwrap());
        assert!(right.get(get).await.unwrap().into_inner().entry.is_none());
    }

    /// GetBlock as the data node serves it (the block's buffer as frame payload) and as a
    /// frontend reads it (`block_wire`, slices of the frames) over real gRPC on loopback,
    /// beside tonic's own client, which must read the same reply: a block in one HTTP/2
    /// frame, one over several frames, one over several messages; a missing block and a
    /// wrong secret give the same status both ways.
    #[tokio::test]
    async fn get_block_replies_read_the_same_by_both_clients() {
        use futures::StreamExt;
        use hangar_common::block_wire;
        use hangar_common::hash::BlockHash;
        use hangar_common::rpc::{AuthChannel, block_client};
        use hangar_proto::block::GetBlockRequest;

        let dir = tempfile::tempdir().unwrap();
        let (node, addr) = serve_node(dir.path()).await;
        let channel = |secret| AuthChannel::new(lazy_channel(&addr).unwrap(), add_secret(secret).unwrap());
        let request = |hash: &BlockHash| tonic::Request::new(GetBlockRequest { hash: hash.0.to_vec().into() });
        let one_mib = 1 << 20;
        for len in [1, one_mib, 5 * one_mib, hangar_common::rpc::BLOCK_REPLY_CHUNK + one_mib] {
            let data: bytes::Bytes = (0..len).map(|i| (i * 7 % 253) as u8).collect();
            let hash = BlockHash::of(&data);
            node.blocks.store_copy(&hash, data.clone()).await.unwrap();
            let mut chunks = block_wire::get_block(channel("right-secret"), request(&hash)).await.unwrap().into_inner();
            let mut ours = Vec::new();
            while let Some(c) = chunks.next().await {
                ours.extend_from_slice(&c.unwrap().data);
            }
            assert!(ours == data, "{len} bytes through block_wire");
            let mut tonics =
                block_client(channel("right-secret")).get_block(request(&hash)).await.unwrap().into_inner();
            let mut theirs = Vec::new();
            while let Some(c) = tonics.message().await.unwrap() {
                theirs.extend_from_slice(&c.data);
            }
            assert!(theirs == data, "{len} bytes through tonic's client");
        }
        let missing = BlockHash::of(b"never stored");
        let ours = block_wire::get_block(channel("right-secret"), request(&missing)).await.err().unwrap();
        let theirs = block_client(channel("right-secret")).get_block(request(&missing)).await.err().unwrap();
        assert_eq!(ours.code(), tonic::Code::NotFound, "{ours}");
        assert_eq!((theirs.code(), theirs.message()), (ours.code(), ours.message()));
        let hash = BlockHash::of(&[0u8; 1]);
        let wrong = block_wire::get_block(channel("wrong-secret"), request(&hash)).await.err().unwrap();
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
    }

    /// Calls to the node of this process never reach the network: the layout gives it an
    /// address nobody listens on, and blocks and entries still go in and come back, through
    /// the service's own checks (a write made with an outdated layout is refused).
    #[tokio::test]
    async fn calls_to_the_node_of_this_process_stay_in_process() {
        use hangar_common::cluster::{PARTITIONS, RpcOptions, fixed_history};
        use hangar_proto::control::{Layout, LayoutHistory, NodeAssignment, PartitionReplicas};
        let dir = tempfile::tempdir().unwrap();
        let node = open_node(dir.path(), "s");
        let nowhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
        let layout = Layout {
            version: 1,
            replication_factor: 1,
            nodes: vec![NodeAssignment { node_id: "n1".into(), rpc_addr: nowhere, ..Default::default() }],
            partitions: (0..PARTITIONS).map(|_| PartitionReplicas { nodes: vec![0] }).collect(),
        };
        let history = fixed_history(LayoutHistory { versions: vec![layout], ..Default::default() });
        let opts = RpcOptions { secret: "s".into(), timeout: Duration::from_secs(5) };
        let cluster = Cluster::new(history, opts).unwrap().with_local(node.local("n1"));
        node.gate.advance(1, 1);

        // A block of several gRPC chunks, in and out.
        let blocks = hangar_model::blocks::Blocks::new(cluster.clone());
        let data = bytes::Bytes::from((0..700_000u32).map(|i| i as u8).collect::<Vec<_>>());
        let hash = hangar_common::hash::BlockHash::of(&data);
        let owner = vec![1u8; 16];
        blocks.put(hash, owner.clone(), 5, data.clone()).await.unwrap();
        assert_eq!(blocks.get(&hash.0, &owner).await.unwrap(), data);
        assert_eq!(blocks.has(&cluster.view().all_nodes()[0], vec![hash.0.to_vec()]).await.unwrap(), [true]);
        // Bytes this process did not hash itself (a repair's copy) are hashed on arrival, even
        // in-process: a hash that does not match them is refused and nothing is stored.
        let n = cluster.view().all_nodes()[0].clone();
        let other = hangar_common::hash::BlockHash::of(b"other bytes");
        let err = blocks.put_to(&n, 1, &other, &owner, &data, 0, None).await.unwrap_err();
        assert!(err.to_string().contains("hash"), "{err}");
        assert_eq!(blocks.has(&n, vec![other.0.to_vec()]).await.unwrap(), [false]);

        // An entry, in and out.
        let tables = hangar_model::client::Tables::new(cluster.clone());
        let entry = hangar_model::client::entry(b"key".to_vec(), &GetRequest::default(), None);
        tables.insert(Table::Bucket, vec![entry.clone()]).await.unwrap();
        assert_eq!(tables.get_entry(Table::Bucket, b"key").await.unwrap(), Some(entry));

        // The node knows version 2: a write chosen with version 1 is refused, as over gRPC.
        node.gate.advance(2, 1);
        let err = blocks.put_to(&n, 1, &hash, &owner, &data, 6, None).await.unwrap_err();
        assert!(matches!(err, hangar_common::Error::StaleLayout(_)), "{err}");
    }
}
