//! Plumbing shared by every Hangar service: hashes and ids, configuration, telemetry, the
//! HTTP listener and admin endpoint, RPC authentication, placement over the layout history,
//! quorum calls, the one internal call path and background workers. Nothing here knows
//! about S3 or about what the metadata tables hold.

pub mod admin_http;
pub mod block_wire;
pub mod call;
pub mod cluster;
pub mod config;
pub mod disk;
pub mod follower;
pub mod hash;
pub mod http_server;
pub mod ids;
pub mod layout_feed;
pub mod local;
pub mod quorum;
pub mod rpc;
pub mod telemetry;
pub mod tls;
pub mod worker;

/// Errors of the shared plumbing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("rpc failed: {0}")]
    Rpc(tonic::Status),
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
    /// Not enough replicas answered; retrying later may succeed.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A data node knows a newer layout than the caller; the caller retries with it.
    #[error("{0}")]
    StaleLayout(String),
    /// A data node refused a write because its disk is (nearly) full.
    #[error("{0}")]
    InsufficientStorage(String),
}

/// Prefix of the FAILED_PRECONDITION message a data node answers to a write made with an
/// outdated layout.
pub const STALE_LAYOUT: &str = "stale layout";
/// Prefix of the RESOURCE_EXHAUSTED message a data node answers when its disk is full.
pub const INSUFFICIENT_STORAGE: &str = "insufficient storage";

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Self {
        use tonic::Code;
        match s.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => Error::Unavailable(s.message().to_string()),
            Code::FailedPrecondition if s.message().starts_with(STALE_LAYOUT) => {
                Error::StaleLayout(s.message().to_string())
            }
            Code::ResourceExhausted if s.message().starts_with(INSUFFICIENT_STORAGE) => {
                Error::InsufficientStorage(s.message().to_string())
            }
            _ => Error::Rpc(s),
        }
    }
}

impl Error {
    /// The gRPC status code of an RPC failure.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::Rpc(s) => Some(s.code()),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
