//! Turning internal failures into S3 errors.

use hangar_common::Error;
use s3s::{S3Error, S3ErrorCode, s3_error};

/// Maps a failure of the shared plumbing to the S3 error a client should see.
pub fn internal(e: Error) -> S3Error {
    match e {
        Error::Rpc(status) => rpc(status),
        Error::Invalid(m) => S3Error::with_message(S3ErrorCode::InvalidArgument, m),
        Error::NotFound(m) => S3Error::with_message(S3ErrorCode::NoSuchKey, m),
        other => {
            tracing::error!(error = %other, "internal error");
            s3_error!(InternalError, "internal error")
        }
    }
}

/// A failed internal RPC: unavailable peers are a 503 the client may retry.
pub fn rpc(status: tonic::Status) -> S3Error {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::ResourceExhausted => {
            tracing::warn!(error = %status, "storage unavailable");
            s3_error!(ServiceUnavailable, "storage nodes unavailable, retry later")
        }
        _ => {
            tracing::error!(error = %status, "internal rpc failed");
            s3_error!(InternalError, "internal error")
        }
    }
}

pub trait OrS3<T> {
    fn or_s3(self) -> Result<T, S3Error>;
}

impl<T> OrS3<T> for Result<T, Error> {
    fn or_s3(self) -> Result<T, S3Error> {
        self.map_err(internal)
    }
}

impl<T> OrS3<T> for Result<T, tonic::Status> {
    fn or_s3(self) -> Result<T, S3Error> {
        self.map_err(rpc)
    }
}
