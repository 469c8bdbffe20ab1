//! Hangar control plane: membership (heartbeats), the versioned cluster layout and the
//! administration API that the `hangar` CLI uses. It is off the data path: frontends and
//! data nodes keep serving with the last layout they saw while it is away.

pub mod admin;
pub mod assign;
pub mod auto_layout;
pub mod discovered;
pub mod layout;
pub mod membership;
pub mod repair;

use std::sync::Arc;

use hangar_common::rpc::{RequireHeader, require_admin_token, require_secret};
use hangar_model::Store;
use hangar_proto::control::admin_service_server::AdminServiceServer;
use hangar_proto::control::membership_service_server::MembershipServiceServer;
use tonic::service::interceptor::InterceptedService;

pub type AdminServer = InterceptedService<AdminServiceServer<admin::AdminRpc>, RequireHeader>;
pub use hangar_common::layout_feed::LayoutServer;
pub type MembershipServer = InterceptedService<MembershipServiceServer<membership::MembershipRpc>, RequireHeader>;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("layout database error: {0}")]
    Sled(#[from] sled::Error),
    #[error("stored layout is corrupt: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("{0}")]
    Invalid(String),
}

/// An open control plane.
pub struct ControlPlane {
    pub layout: Arc<layout::LayoutManager>,
    pub members: Arc<membership::Members>,
    admin_token: String,
    rpc_secret: String,
    /// How this control plane names itself in `hangar status`.
    pub info: hangar_proto::control::NodeInfo,
}

impl ControlPlane {
    pub fn open(
        metadata_dir: &std::path::Path,
        replication_factor: u32,
        admin_token: String,
        rpc_secret: String,
    ) -> Result<Self, ControlError> {
        let db = sled::open(metadata_dir.join("control"))?;
        let layout = Arc::new(layout::LayoutManager::open(db, replication_factor)?);
        let info = hangar_proto::control::NodeInfo {
            id: "control-plane".into(),
            hostname: hangar_common::ids::hostname(),
            role: hangar_proto::control::NodeRole::Control as i32,
            ..Default::default()
        };
        Ok(Self { layout, members: Arc::new(membership::Members::default()), admin_token, rpc_secret, info })
    }

    /// Admin calls need the admin token; layout and membership calls the cluster secret.
    /// `store` reaches buckets and keys on the data nodes (through the layout).
    pub fn services(&self, store: Store) -> (AdminServer, LayoutServer, MembershipServer) {
        let admin = admin::AdminRpc {
            store,
            layout: self.layout.clone(),
            members: self.members.clone(),
            info: self.info.clone(),
        };
        (
            InterceptedService::new(AdminServiceServer::new(admin), require_admin_token(&self.admin_token)),
            hangar_common::layout_feed::LayoutFeed::server(self.layout.subscribe(), &self.rpc_secret),
            InterceptedService::new(
                MembershipServiceServer::new(membership::MembershipRpc {
                    members: self.members.clone(),
                    layout: self.layout.clone(),
                }),
                require_secret(&self.rpc_secret),
            ),
        )
    }
}

/// Runs the control plane on its own (`hangar control-plane --config FILE`) until
/// `shutdown`: layout, membership and the admin API on `rpc_bind_addr`, `/metrics` on the
/// admin address.
pub async fn run(
    cfg: hangar_common::config::Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ControlError> {
    use hangar_common::cluster::Cluster;
    use hangar_common::config::load_or_create_secret;

    cfg.require("control plane", &["metadata_dir", "rpc_secret"]).map_err(|e| ControlError::Invalid(e.to_string()))?;
    let mut rpc_server =
        hangar_common::tls::configure(cfg.rpc_tls.as_ref()).map_err(|e| ControlError::Invalid(e.to_string()))?;
    std::fs::create_dir_all(&cfg.metadata_dir).map_err(|e| ControlError::Invalid(format!("metadata_dir: {e}")))?;
    let token = match &cfg.admin.admin_token {
        Some(t) => t.clone(),
        None => load_or_create_secret(&cfg.metadata_dir.join("admin_token"), hangar_common::ids::new_secret_key)
            .map_err(|e| ControlError::Invalid(e.to_string()))?,
    };
    let secret = cfg.rpc_secret.clone().unwrap_or_default();
    let mut control = ControlPlane::open(&cfg.metadata_dir, cfg.replication_factor, token, secret.clone())?;
    control.info.rpc_addr = cfg.public_rpc_addr();
    let current = control.layout.current();
    if current.version > 0 && current.replication_factor != cfg.replication_factor {
        // The config's factor is the first layout's; a layout change alters it.
        tracing::warn!(
            config = cfg.replication_factor,
            layout = current.replication_factor,
            "replication_factor in the config differs from the current layout's; the layout's holds \
             (change it with `hangar layout config -r N`)"
        );
    }
    let cluster = Cluster::new(control.layout.subscribe(), cfg.rpc_options())
        .map_err(|e| ControlError::Invalid(e.to_string()))?;
    let (admin_svc, layout_svc, member_svc) = control.services(Store::new(cluster, &cfg));
    let listener = tokio::net::TcpListener::bind(cfg.rpc_bind_addr)
        .await
        .map_err(|e| ControlError::Invalid(format!("rpc_bind_addr: cannot listen on {}: {e}", cfg.rpc_bind_addr)))?;
    let admin = hangar_common::admin_http::start(cfg.admin.api_bind_addr, cfg.admin.limits())
        .await
        .map_err(|e| ControlError::Invalid(e.to_string()))?;
    // Discovery: follow the backend's listing, and announce this control plane there.
    let backend = hangar_discovery::from_config(&cfg).await.map_err(|e| ControlError::Invalid(e.to_string()))?;
    let following = discovered::spawn(backend.clone(), control.members.clone());
    let me = hangar_discovery::Node::at(
        // Unique per host (a pod's name), usable as a Kubernetes resource name.
        &format!("control-{}", hangar_discovery::kubernetes::dns_label(&hangar_common::ids::hostname(), "plane")),
        &cfg.public_rpc_addr(),
        hangar_discovery::Role::Control,
    )
    .map_err(|e| ControlError::Invalid(format!("rpc_public_addr: {e}")))?;
    control.members.set_me(&me.id);
    let announcer =
        hangar_discovery::Announcer::start(backend.clone(), me).map_err(|e| ControlError::Invalid(e.to_string()))?;
    let auto = cfg
        .layout
        .auto_assign
        .then(|| auto_layout::spawn(cfg.layout.clone(), control.layout.clone(), control.members.clone()));
    tracing::info!(
        rpc = %cfg.rpc_bind_addr,
        version = control.layout.current().version,
        discovery = backend.name(),
        auto_layout = cfg.layout.auto_assign,
        "control plane ready"
    );
    let health = membership::spawn_health_metrics(control.members.clone(), control.layout.clone());
    let router = rpc_server.add_service(admin_svc).add_service(layout_svc).add_service(member_svc);
    let served = hangar_common::rpc::serve_until(router, listener, shutdown).await;
    health.abort();
    following.abort();
    if let Some(a) = auto {
        a.abort();
    }
    announcer.stop().await;
    admin.stop().await;
    served.map_err(|e| ControlError::Invalid(e.to_string()))
}
