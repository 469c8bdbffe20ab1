use hangar_common::hash::BlockHash;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("metadata database error: {0}")]
    Sled(#[from] sled::Error),
    #[error("stored entry is corrupt: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("block {0} not found")]
    BlockNotFound(BlockHash),
    #[error("block {0} is corrupt on disk (moved aside)")]
    Corrupt(BlockHash),
    #[error("block data hashes to {got}, not {expected}")]
    HashMismatch { expected: BlockHash, got: BlockHash },
    #[error("block {0} arrived damaged: the CRC-64 of its bytes is not the one its sender sent")]
    Damaged(BlockHash),
    /// The disk is below its free-space reserve, or a write found it full.
    // Starts with hangar_common::INSUFFICIENT_STORAGE, which clients recognise.
    #[error("insufficient storage: {0}")]
    Full(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Cluster(#[from] hangar_common::Error),
}

impl DataError {
    /// True for errors that mean "no space left" (ENOSPC, EDQUOT).
    pub fn is_full(&self) -> bool {
        match self {
            DataError::Full(_) => true,
            // ENOSPC, EDQUOT.
            DataError::Io(e) => matches!(e.raw_os_error(), Some(28) | Some(122)),
            DataError::Sled(sled::Error::Io(e)) => matches!(e.raw_os_error(), Some(28) | Some(122)),
            _ => false,
        }
    }
}

/// A metadata store that failed an I/O stays failed (sled keeps the error until it is
/// reopened), and every later write would fail too. The node exits instead, so that its
/// supervisor (systemd, Kubernetes, a compose restart policy) starts it again on a database
/// that opens cleanly; acknowledged writes are on disk already.
pub fn exit_if_fatal(e: &DataError) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static EXITING: AtomicBool = AtomicBool::new(false);
    let fatal = matches!(
        e,
        DataError::Sled(sled::Error::Io(_) | sled::Error::Corruption { .. } | sled::Error::ReportableBug(_))
    );
    if fatal && !EXITING.swap(true, Ordering::SeqCst) {
        tracing::error!(error = %e, "the metadata store failed; exiting so that a restart reopens it");
        hangar_common::admin_http::set_problem("metadata", Some(format!("metadata store failed: {e}; restarting")));
        std::thread::spawn(|| {
            std::thread::sleep(std::time::Duration::from_millis(500));
            std::process::exit(75);
        });
    }
}

impl From<DataError> for tonic::Status {
    fn from(e: DataError) -> Self {
        exit_if_fatal(&e);
        if e.is_full() && !matches!(e, DataError::Full(_)) {
            return tonic::Status::resource_exhausted(format!("{}: {e}", hangar_common::INSUFFICIENT_STORAGE));
        }
        match &e {
            DataError::BlockNotFound(_) => tonic::Status::not_found(e.to_string()),
            DataError::Corrupt(_) => tonic::Status::data_loss(e.to_string()),
            DataError::Full(_) => tonic::Status::resource_exhausted(e.to_string()),
            DataError::HashMismatch { .. } | DataError::Damaged(_) | DataError::Invalid(_) => {
                tonic::Status::invalid_argument(e.to_string())
            }
            _ => tonic::Status::internal(e.to_string()),
        }
    }
}
