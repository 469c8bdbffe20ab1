//! SigV4 secrets come from the access key table; s3s does the signature math.

use std::sync::Arc;

use s3s::auth::{S3Auth, SecretKey};
use s3s::{S3Result, s3_error};

use crate::lookups::Lookups;

pub struct KeyAuth {
    lookups: Arc<Lookups>,
}

impl KeyAuth {
    pub fn new(lookups: Arc<Lookups>) -> Self {
        Self { lookups }
    }
}

#[async_trait::async_trait]
impl S3Auth for KeyAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        // The secret for the signature check: the trace's "key lookup".
        let span = tracing::debug_span!("key lookup", purpose = "signature");
        match tracing::Instrument::instrument(self.lookups.key(access_key), span).await {
            Ok(Some(k)) => Ok(SecretKey::from(k.secret)),
            Ok(None) => Err(s3_error!(InvalidAccessKeyId, "the access key id does not exist")),
            Err(e) => Err(crate::errors::internal(e)),
        }
    }
}
