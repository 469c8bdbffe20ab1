//! Turning internal failures into S3 errors.

use hangar_common::Error;
use s3s::{S3Error, S3ErrorCode, s3_error};

/// An S3 error code s3s does not list, with its status.
pub fn custom_error(code: &'static str, status: u16, msg: impl Into<String>) -> S3Error {
    let mut e = S3Error::with_message(S3ErrorCode::Custom(code.into()), msg.into());
    e.set_status_code(http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_REQUEST));
    e
}

/// Maps a failure of the model layer to the S3 error a client should see.
pub fn internal(e: Error) -> S3Error {
    match e {
        Error::Unavailable(m) | Error::StaleLayout(m) => {
            tracing::warn!(error = %m, "storage unavailable");
            s3_error!(ServiceUnavailable, "storage nodes unavailable, retry later")
        }
        Error::InsufficientStorage(m) => {
            tracing::warn!(error = %m, "storage full");
            custom_error("InsufficientStorage", 507, "the storage nodes are out of space; free some space and retry")
        }
        Error::Invalid(m) => S3Error::with_message(S3ErrorCode::InvalidArgument, m),
        Error::NotFound(m) => S3Error::with_message(S3ErrorCode::NoSuchKey, m),
        Error::Rpc(status) => {
            tracing::error!(error = %status, "internal rpc failed");
            s3_error!(InternalError, "internal error")
        }
        other => {
            tracing::error!(error = %other, "internal error");
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
