//! Pieces shared by every Hangar service: hashes and ids, configuration, telemetry,
//! the admin HTTP endpoint, RPC authentication and typed access to the metadata tables.
//! Nothing here knows about S3.

pub mod admin_http;
pub mod cluster;
pub mod config;
pub mod follower;
pub mod hash;
pub mod ids;
pub mod meta_client;
pub mod model;
pub mod rpc;
pub mod telemetry;
pub mod tls;

/// Errors of the shared plumbing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("rpc failed: {0}")]
    Rpc(#[from] tonic::Status),
    #[error("stored value is corrupt: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Config(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
