//! Hangar control plane: membership (heartbeats), the versioned cluster layout and the
//! administration API that the `hangar` CLI uses. It is off the data path: frontends and
//! data nodes keep serving with the last layout they saw while it is away.

pub mod admin;
pub mod assign;
pub mod layout;
pub mod membership;

use std::sync::Arc;

use hangar_common::model::Catalog;
use hangar_common::rpc::{RequireHeader, require_admin_token, require_secret};
use hangar_proto::control::admin_service_server::AdminServiceServer;
use hangar_proto::control::layout_service_server::LayoutServiceServer;
use hangar_proto::control::membership_service_server::MembershipServiceServer;
use tonic::service::interceptor::InterceptedService;

pub type AdminServer = InterceptedService<AdminServiceServer<admin::AdminRpc>, RequireHeader>;
pub type LayoutServer = InterceptedService<LayoutServiceServer<layout::LayoutRpc>, RequireHeader>;
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
}

impl ControlPlane {
    pub fn open(metadata_dir: &std::path::Path, admin_token: String, rpc_secret: String) -> Result<Self, ControlError> {
        let db = sled::open(metadata_dir.join("control"))?;
        let layout = Arc::new(layout::LayoutManager::open(db)?);
        Ok(Self { layout, members: Arc::new(membership::Members::default()), admin_token, rpc_secret })
    }

    /// Admin calls need the admin token; layout and membership calls the cluster secret.
    /// `catalog` reaches buckets and keys on the data nodes (through the layout).
    pub fn services(&self, catalog: Catalog) -> (AdminServer, LayoutServer, MembershipServer) {
        let admin = admin::AdminRpc { catalog, layout: self.layout.clone(), members: self.members.clone() };
        (
            InterceptedService::new(AdminServiceServer::new(admin), require_admin_token(&self.admin_token)),
            InterceptedService::new(
                LayoutServiceServer::new(layout::LayoutRpc { manager: self.layout.clone() }),
                require_secret(&self.rpc_secret),
            ),
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
