//! Checksums of objects made by multipart upload. An upload may name an algorithm
//! (`x-amz-checksum-algorithm`) and a type (`x-amz-checksum-type`): every part then carries
//! that checksum (the client's, checked, or computed here), and Complete gives the object
//!
//! - COMPOSITE (CRC32, CRC32C, SHA1, SHA256): the checksum of the parts' checksums laid end
//!   to end, followed by `-N` (N parts), as AWS computes it;
//! - FULL_OBJECT (CRC32, CRC32C, CRC64NVME): the CRC of the whole object, combined from the
//!   parts' CRCs and lengths without reading the data again.

use base64::Engine;
use crc_fast::CrcAlgorithm;
use s3s::checksum::ChecksumHasher;
use s3s::{S3Error, S3ErrorCode, S3Result};

/// The checksum headers an S3 input gives (its five `checksum_*` fields), by name.
macro_rules! given {
    ($input:expr) => {
        [
            ("x-amz-checksum-crc32", &$input.checksum_crc32),
            ("x-amz-checksum-crc32c", &$input.checksum_crc32c),
            ("x-amz-checksum-crc64nvme", &$input.checksum_crc64nvme),
            ("x-amz-checksum-sha1", &$input.checksum_sha1),
            ("x-amz-checksum-sha256", &$input.checksum_sha256),
        ]
    };
}
pub(crate) use given;

pub const COMPOSITE: &str = "COMPOSITE";
pub const FULL_OBJECT: &str = "FULL_OBJECT";

/// A checksum algorithm, by the name S3 gives it (`CRC32`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Crc32,
    Crc32c,
    Crc64Nvme,
    Sha1,
    Sha256,
}

fn invalid(m: String) -> S3Error {
    S3Error::with_message(S3ErrorCode::InvalidRequest, m)
}

impl Algorithm {
    pub fn from_name(name: &str) -> S3Result<Self> {
        Ok(match name.to_ascii_uppercase().as_str() {
            "CRC32" => Self::Crc32,
            "CRC32C" => Self::Crc32c,
            "CRC64NVME" => Self::Crc64Nvme,
            "SHA1" => Self::Sha1,
            "SHA256" => Self::Sha256,
            _ => return Err(invalid(format!("unknown checksum algorithm {}", crate::http_layer::bounded(name)))),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Crc32 => "CRC32",
            Self::Crc32c => "CRC32C",
            Self::Crc64Nvme => "CRC64NVME",
            Self::Sha1 => "SHA1",
            Self::Sha256 => "SHA256",
        }
    }

    /// The header (and stored name) of this checksum.
    pub fn header(self) -> &'static str {
        match self {
            Self::Crc32 => "x-amz-checksum-crc32",
            Self::Crc32c => "x-amz-checksum-crc32c",
            Self::Crc64Nvme => "x-amz-checksum-crc64nvme",
            Self::Sha1 => "x-amz-checksum-sha1",
            Self::Sha256 => "x-amz-checksum-sha256",
        }
    }

    fn crc(self) -> Option<CrcAlgorithm> {
        match self {
            Self::Crc32 => Some(CrcAlgorithm::Crc32IsoHdlc),
            Self::Crc32c => Some(CrcAlgorithm::Crc32Iscsi),
            Self::Crc64Nvme => Some(CrcAlgorithm::Crc64Nvme),
            Self::Sha1 | Self::Sha256 => None,
        }
    }

    /// The checksum of `data`, base64 as S3 writes it.
    fn of(self, data: &[u8]) -> Option<String> {
        let mut h = ChecksumHasher::default();
        match self {
            Self::Crc32 => h.crc32 = Some(Default::default()),
            Self::Crc32c => h.crc32c = Some(Default::default()),
            Self::Crc64Nvme => h.crc64nvme = Some(Default::default()),
            Self::Sha1 => h.sha1 = Some(Default::default()),
            Self::Sha256 => h.sha256 = Some(Default::default()),
        }
        h.update(data);
        let c = h.finalize();
        match self {
            Self::Crc32 => c.checksum_crc32,
            Self::Crc32c => c.checksum_crc32c,
            Self::Crc64Nvme => c.checksum_crc64nvme,
            Self::Sha1 => c.checksum_sha1,
            Self::Sha256 => c.checksum_sha256,
        }
    }
}

/// The checksum type of an upload: the one asked for, or the default of the algorithm
/// (FULL_OBJECT for CRC64NVME, COMPOSITE for the others), refusing pairs S3 refuses.
pub fn upload_type(algorithm: Algorithm, asked: Option<&str>) -> S3Result<&'static str> {
    match asked {
        None if algorithm == Algorithm::Crc64Nvme => Ok(FULL_OBJECT),
        None => Ok(COMPOSITE),
        Some(t) if t == FULL_OBJECT && algorithm.crc().is_some() => Ok(FULL_OBJECT),
        Some(t) if t == COMPOSITE && algorithm != Algorithm::Crc64Nvme => Ok(COMPOSITE),
        Some(t) => Err(invalid(format!(
            "The {} checksum algorithm does not support the checksum type {}",
            algorithm.name(),
            crate::http_layer::bounded(t)
        ))),
    }
}

fn decode(v: &str) -> S3Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(v)
        .map_err(|_| S3Error::with_message(S3ErrorCode::InvalidPart, "a part's checksum is not base64"))
}

/// The object checksum of an upload whose parts (in order) have these checksums and sizes.
pub fn of_parts(algorithm: Algorithm, kind: &str, parts: &[(&str, u64)]) -> S3Result<String> {
    if kind == FULL_OBJECT {
        let crc =
            algorithm.crc().ok_or_else(|| invalid(format!("{} has no full-object checksum", algorithm.name())))?;
        let width = if algorithm == Algorithm::Crc64Nvme { 8 } else { 4 };
        let mut total: Option<u64> = None;
        for (value, size) in parts {
            let bytes = decode(value)?;
            if bytes.len() != width {
                return Err(S3Error::with_message(S3ErrorCode::InvalidPart, "a part's CRC has the wrong length"));
            }
            let v = bytes.iter().fold(0u64, |acc, b| (acc << 8) | *b as u64);
            total = Some(match total {
                None => v,
                Some(t) => crc_fast::checksum_combine(crc, t, v, *size),
            });
        }
        let t = total.unwrap_or(0);
        let be = t.to_be_bytes();
        return Ok(base64::engine::general_purpose::STANDARD.encode(&be[8 - width..]));
    }
    let mut concat = Vec::new();
    for (value, _) in parts {
        concat.extend(decode(value)?);
    }
    let sum = algorithm.of(&concat).ok_or_else(|| invalid("checksum failed".into()))?;
    Ok(format!("{sum}-{}", parts.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_object_crcs_combine_to_the_crc_of_the_whole() {
        let (a, b) = (vec![1u8; 5000], vec![7u8; 1234]);
        let mut whole = a.clone();
        whole.extend_from_slice(&b);
        for algo in [Algorithm::Crc32, Algorithm::Crc32c, Algorithm::Crc64Nvme] {
            let (ca, cb) = (algo.of(&a).unwrap(), algo.of(&b).unwrap());
            let combined = of_parts(algo, FULL_OBJECT, &[(&ca, 5000), (&cb, 1234)]).unwrap();
            assert_eq!(combined, algo.of(&whole).unwrap(), "{algo:?}");
        }
    }

    #[test]
    fn composite_checksums_hash_the_parts_checksums() {
        let (a, b) = (vec![1u8; 10], vec![2u8; 20]);
        let (ca, cb) = (Algorithm::Sha256.of(&a).unwrap(), Algorithm::Sha256.of(&b).unwrap());
        let got = of_parts(Algorithm::Sha256, COMPOSITE, &[(&ca, 10), (&cb, 20)]).unwrap();
        let mut concat = decode(&ca).unwrap();
        concat.extend(decode(&cb).unwrap());
        assert_eq!(got, format!("{}-2", Algorithm::Sha256.of(&concat).unwrap()));
        assert!(upload_type(Algorithm::Sha1, Some(FULL_OBJECT)).is_err());
        assert!(upload_type(Algorithm::Crc64Nvme, Some(COMPOSITE)).is_err());
        assert_eq!(upload_type(Algorithm::Crc64Nvme, None).unwrap(), FULL_OBJECT);
        assert_eq!(upload_type(Algorithm::Crc32, None).unwrap(), COMPOSITE);
    }
}
