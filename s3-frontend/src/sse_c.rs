//! Server-side encryption with customer keys (SSE-C). The client sends a 256-bit key with
//! every request that writes or reads the object; Hangar encrypts each block with it
//! (AES-256-GCM, a random 96-bit nonce per block, stored as nonce ‖ ciphertext ‖ tag), keeps
//! only the key's MD5 to recognise it later, and forgets the key. Blocks are addressed by the
//! hash of what is stored, so encrypted blocks are never shared with other objects.
//!
//! Errors follow AWS: a key missing, malformed or not matching its MD5 is 400
//! InvalidArgument; reading an encrypted object without a key, or an unencrypted one with a
//! key, is 400 InvalidRequest; the wrong key is 403 AccessDenied.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use bytes::Bytes;
use md5::Digest;
use s3s::{S3Error, S3ErrorCode, S3Result};

use crate::errors::custom_error;

/// Bytes an encrypted block holds beyond its data: the nonce and the authentication tag.
pub const OVERHEAD: usize = 12 + 16;
/// The one algorithm SSE-C has.
pub const ALGORITHM: &str = "AES256";

fn invalid(m: &str) -> S3Error {
    S3Error::with_message(S3ErrorCode::InvalidArgument, m.to_string())
}

/// A customer key, checked against its MD5.
#[derive(Clone)]
pub struct CustomerKey {
    cipher: Aes256Gcm,
    key: [u8; 32],
    /// Base64 of the key's MD5, as the headers carry it and the object keeps it.
    pub md5: String,
}

impl std::fmt::Debug for CustomerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CustomerKey(md5 {})", self.md5)
    }
}

impl CustomerKey {
    /// The key the three SSE-C headers of a request give, if they give one.
    pub fn from_headers(algorithm: Option<&str>, key: Option<&str>, key_md5: Option<&str>) -> S3Result<Option<Self>> {
        if algorithm.is_none() && key.is_none() && key_md5.is_none() {
            return Ok(None);
        }
        if algorithm != Some(ALGORITHM) {
            return Err(invalid(
                "Requests specifying Server Side Encryption with Customer provided keys must provide a valid encryption algorithm.",
            ));
        }
        let Some(key) = key else {
            return Err(invalid(
                "Requests specifying Server Side Encryption with Customer provided keys must provide an appropriate secret key.",
            ));
        };
        let Some(key_md5) = key_md5 else {
            return Err(invalid(
                "Requests specifying Server Side Encryption with Customer provided keys must provide the client calculated MD5 of the secret key.",
            ));
        };
        let b64 = base64::engine::general_purpose::STANDARD;
        let key: [u8; 32] = b64
            .decode(key)
            .ok()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| invalid("The secret key was invalid for the specified algorithm."))?;
        let md5 = b64.encode(md5::Md5::digest(key));
        if md5 != key_md5 {
            return Err(invalid("The calculated MD5 hash of the key did not match the hash that was provided."));
        }
        Ok(Some(Self { cipher: Aes256Gcm::new(&key.into()), key, md5 }))
    }

    /// `plain` encrypted: nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, plain: &[u8]) -> S3Result<Bytes> {
        let nonce: [u8; 12] = rand::random();
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plain)
            .map_err(|_| s3s::s3_error!(InternalError, "encryption failed"))?;
        let mut out = Vec::with_capacity(OVERHEAD + plain.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out.into())
    }

    /// What `seal` made, decrypted and authenticated.
    pub fn open(&self, sealed: &[u8]) -> S3Result<Bytes> {
        if sealed.len() < OVERHEAD {
            return Err(s3s::s3_error!(InternalError, "an encrypted block is too short"));
        }
        let (nonce, data) = sealed.split_at(12);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), data)
            .map(Bytes::from)
            .map_err(|_| s3s::s3_error!(InternalError, "an encrypted block does not authenticate"))
    }

    /// The ETag of encrypted data whose MD5 is `md5`: keyed with the customer key, so that
    /// it says nothing about the content to whoever lacks the key (AWS's ETag of an SSE-C
    /// object is not the MD5 of the data either).
    pub fn etag(&self, md5: &[u8]) -> String {
        let mut h = md5::Md5::new();
        h.update(self.key);
        h.update(md5);
        hex::encode(h.finalize())
    }
}

/// Checks the key a request gives against the object's (`stored`: the MD5 it keeps, empty
/// when the object is not encrypted).
pub fn check(stored: &str, given: Option<&CustomerKey>) -> S3Result<()> {
    match (stored.is_empty(), given) {
        (true, None) => Ok(()),
        (true, Some(_)) => Err(S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            "The encryption parameters are not applicable to this object.",
        )),
        (false, None) => Err(S3Error::with_message(
            S3ErrorCode::InvalidRequest,
            "The object was stored using a form of Server Side Encryption. The correct parameters must be provided to retrieve the object.",
        )),
        (false, Some(k)) if k.md5 != stored => Err(custom_error(
            "AccessDenied",
            403,
            "The provided customer key does not match the key the object was encrypted with.",
        )),
        (false, Some(_)) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(key: &[u8]) -> (String, String) {
        let b64 = base64::engine::general_purpose::STANDARD;
        (b64.encode(key), b64.encode(md5::Md5::digest(key)))
    }

    #[test]
    fn keys_are_checked_and_blocks_round_trip() {
        let (k, m) = headers(&[7; 32]);
        let key = CustomerKey::from_headers(Some("AES256"), Some(&k), Some(&m)).unwrap().unwrap();
        let sealed = key.seal(b"hello").unwrap();
        assert_eq!(sealed.len(), 5 + OVERHEAD);
        assert_eq!(&key.open(&sealed).unwrap()[..], b"hello");
        assert_ne!(key.seal(b"hello").unwrap(), sealed, "a fresh nonce each time");
        let (k2, m2) = headers(&[8; 32]);
        let other = CustomerKey::from_headers(Some("AES256"), Some(&k2), Some(&m2)).unwrap().unwrap();
        assert!(other.open(&sealed).is_err(), "another key does not open it");
        let code = |r: S3Result<Option<CustomerKey>>| r.unwrap_err().code().as_str().to_string();
        assert_eq!(code(CustomerKey::from_headers(Some("AES128"), Some(&k), Some(&m))), "InvalidArgument");
        assert_eq!(code(CustomerKey::from_headers(Some("AES256"), None, Some(&m))), "InvalidArgument");
        assert_eq!(code(CustomerKey::from_headers(Some("AES256"), Some(&k), Some(&m2))), "InvalidArgument");
        let (short, short_md5) = headers(&[1; 16]);
        assert_eq!(code(CustomerKey::from_headers(Some("AES256"), Some(&short), Some(&short_md5))), "InvalidArgument");
        assert!(CustomerKey::from_headers(None, None, None).unwrap().is_none());
        assert!(check(&key.md5, Some(&key)).is_ok());
        assert_eq!(check(&key.md5, Some(&other)).unwrap_err().code().as_str(), "AccessDenied");
        assert_eq!(check(&key.md5, None).unwrap_err().code().as_str(), "InvalidRequest");
        assert_eq!(check("", Some(&key)).unwrap_err().code().as_str(), "InvalidRequest");
    }
}
