//! Raw SigV4-signed S3 requests, signed with the `aws-sigv4` crate.
//!
//! The SDK cannot be made to send some requests the server must handle
//! (signed aws-chunked streaming, hand-built trailers, a chosen Host, a skewed
//! X-Amz-Date, garbage bodies), so tests build those with this module. The
//! request and the body framing are built here; every signature (request and
//! aws-chunked chunk) comes from `aws-sigv4`.

use std::time::SystemTime;

use aws_sdk_s3::config::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings, UriPathNormalizationMode,
    sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use base64::Engine;
use bytes::Bytes;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::{Digest, Sha256};

pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
pub const STREAMING_SIGNED: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
pub const STREAMING_UNSIGNED_TRAILER: &str = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";

/// The service name S3 requests are signed for.
const SERVICE: &str = "s3";

/// An HTTP request before/after signing.
#[derive(Clone, Debug)]
pub struct RawRequest {
    pub method: String,
    /// Host header value, with port (e.g. `127.0.0.1:9000`, `b.s3.test:9000`).
    pub host: String,
    /// Already URI-encoded path (see [`encode_path`]).
    pub path: String,
    /// Decoded query parameters; encoded when signing and sending.
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawRequest {
    pub fn new(method: &str, host: &str, path: &str) -> Self {
        RawRequest {
            method: method.to_string(),
            host: host.to_string(),
            path: path.to_string(),
            query: Vec::new(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn query(mut self, k: &str, v: &str) -> Self {
        self.query.push((k.to_string(), v.to_string()));
        self
    }

    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The sorted, encoded query string used on the wire.
    pub fn query_string(&self) -> String {
        let mut pairs: Vec<(String, String)> =
            self.query.iter().map(|(k, v)| (uri_encode(k, true), uri_encode(v, true))).collect();
        pairs.sort();
        pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
    }

    /// The request target of the request line: the path, plus `?query` if any.
    pub fn target(&self) -> String {
        let q = self.query_string();
        if q.is_empty() { self.path.clone() } else { format!("{}?{}", self.path, q) }
    }

    pub fn url(&self) -> String {
        format!("http://{}{}", self.host, self.target())
    }
}

/// SigV4 credentials and scope.
#[derive(Clone, Debug)]
pub struct Signer {
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
}

/// What signing produced, needed to sign aws-chunked chunks afterwards.
#[derive(Clone, Debug)]
pub struct Signature {
    pub signature: String,
    /// `X-Amz-Date` the request was signed with (`YYYYMMDDTHHMMSSZ`).
    pub amz_date: String,
    /// Credential scope, `YYYYMMDD/<region>/s3/aws4_request`.
    pub scope: String,
    /// Signing time; chunk signatures are chained at the same time.
    pub time: SystemTime,
}

impl Signer {
    pub fn new(access_key: &str, secret_key: &str, region: &str) -> Self {
        Signer { access_key: access_key.to_string(), secret_key: secret_key.to_string(), region: region.to_string() }
    }

    fn identity(&self) -> Identity {
        Credentials::new(&self.access_key, &self.secret_key, None, None, "hangar-integration-tests").into()
    }

    /// S3's signing settings: payload hash in `x-amz-content-sha256`, the
    /// (already encoded) path neither re-encoded nor normalised.
    fn settings() -> SigningSettings {
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings
    }

    fn params<'a>(&'a self, identity: &'a Identity, at: SystemTime) -> v4::SigningParams<'a, SigningSettings> {
        v4::SigningParams::builder()
            .identity(identity)
            .region(&self.region)
            .name(SERVICE)
            .time(at)
            .settings(Self::settings())
            .build()
            .expect("all signing params set")
    }

    /// Signs `req` in place with an Authorization header, as of time `at`
    /// (which may be skewed on purpose). Adds `host`, `x-amz-date` and
    /// `x-amz-content-sha256` (= `payload_hash`, which need not match the
    /// body); every header present is signed, except those `aws-sigv4`
    /// never signs (`user-agent`, `transfer-encoding`, `x-amzn-trace-id`).
    pub fn sign(&self, req: &mut RawRequest, payload_hash: &str, at: SystemTime) -> Signature {
        req.headers.retain(|(k, _)| {
            !["host", "x-amz-date", "x-amz-content-sha256", "authorization"].contains(&k.to_ascii_lowercase().as_str())
        });
        req.headers.push(("host".into(), req.host.clone()));

        let body = match payload_hash {
            UNSIGNED_PAYLOAD => SignableBody::UnsignedPayload,
            STREAMING_UNSIGNED_TRAILER => SignableBody::StreamingUnsignedPayloadTrailer,
            other => SignableBody::Precomputed(other.to_string()),
        };
        let url = req.url();
        let signable = SignableRequest::new(
            &req.method,
            url.as_str(),
            req.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            body,
        )
        .expect("signable request");
        let identity = self.identity();
        let params = self.params(&identity, at).into();
        let (instructions, signature) = sign(signable, &params).expect("sign request").into_parts();

        let mut amz_date = String::new();
        for (name, value) in instructions.headers() {
            if name == "x-amz-date" {
                amz_date = value.to_string();
            }
            req.headers.push((name.to_string(), value.to_string()));
        }
        assert!(amz_date.len() == 16, "aws-sigv4 set no usable x-amz-date: {amz_date:?}");
        let scope = format!("{}/{}/{SERVICE}/aws4_request", &amz_date[..8], self.region);
        Signature { signature, amz_date, scope, time: at }
    }

    /// Signature of one aws-chunked chunk (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`),
    /// chained from `previous` (the seed signature for the first chunk).
    pub fn chunk_signature(&self, seed: &Signature, previous: &str, chunk: &[u8]) -> String {
        let identity = self.identity();
        let params = self.params(&identity, seed.time);
        let (_, signature) =
            v4::sign_chunk(&Bytes::copy_from_slice(chunk), previous, &params).expect("sign chunk").into_parts();
        signature
    }

    /// Builds and signs a `STREAMING-AWS4-HMAC-SHA256-PAYLOAD` PUT of `data`
    /// in `chunk_size` chunks. `corrupt_chunk` (index) sends that chunk's data
    /// with one byte flipped after signing, to test rejection.
    pub fn streaming_put(
        &self,
        host: &str,
        path: &str,
        data: &[u8],
        chunk_size: usize,
        corrupt_chunk: Option<usize>,
    ) -> RawRequest {
        self.streaming_put_with(host, path, data, chunk_size, corrupt_chunk, data.len() as u64, true)
    }

    /// [`Signer::streaming_put`] declaring `decoded_len` bytes (which need not be the data's
    /// length) and, unless `final_chunk`, leaving the final zero-length chunk out: a
    /// correctly signed but incomplete stream.
    #[allow(clippy::too_many_arguments)]
    pub fn streaming_put_with(
        &self,
        host: &str,
        path: &str,
        data: &[u8],
        chunk_size: usize,
        corrupt_chunk: Option<usize>,
        decoded_len: u64,
        final_chunk: bool,
    ) -> RawRequest {
        let chunks: Vec<&[u8]> = data.chunks(chunk_size).collect();
        let last: &[&[u8]] = if final_chunk { &[&[]] } else { &[] };
        let mut encoded_len = 0;
        for c in chunks.iter().chain(last).map(|c| c.len()) {
            // "<hex>;chunk-signature=<64>\r\n<data>\r\n"
            encoded_len += format!("{c:x}").len() + ";chunk-signature=".len() + 64 + 2 + c + 2;
        }
        let mut req = RawRequest::new("PUT", host, path)
            .header("content-encoding", "aws-chunked")
            .header("x-amz-decoded-content-length", &decoded_len.to_string())
            .header("content-length", &encoded_len.to_string());
        let seed = self.sign(&mut req, STREAMING_SIGNED, SystemTime::now());

        let mut body = Vec::with_capacity(encoded_len);
        let mut previous = seed.signature.clone();
        for (i, chunk) in chunks.iter().chain(last).copied().enumerate() {
            let sig = self.chunk_signature(&seed, &previous, chunk);
            body.extend_from_slice(format!("{:x};chunk-signature={sig}\r\n", chunk.len()).as_bytes());
            let start = body.len();
            body.extend_from_slice(chunk);
            if corrupt_chunk == Some(i) && !chunk.is_empty() {
                body[start] ^= 0xff;
            }
            body.extend_from_slice(b"\r\n");
            previous = sig;
        }
        debug_assert_eq!(body.len(), encoded_len);
        req.body = body;
        req
    }
}

/// Body of a `STREAMING-UNSIGNED-PAYLOAD-TRAILER` upload: unsigned aws-chunked
/// chunks followed by one trailer header line.
pub fn trailer_body(data: &[u8], chunk_size: usize, trailer_name: &str, trailer_value: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for chunk in data.chunks(chunk_size) {
        body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        body.extend_from_slice(chunk);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("0\r\n{trailer_name}:{trailer_value}\r\n\r\n").as_bytes());
    body
}

/// `x-amz-checksum-crc32` value: base64 of the big-endian CRC-32 (IEEE).
pub fn crc32_base64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(crc32fast::hash(data).to_be_bytes())
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Everything but S3's unreserved characters (`A-Z a-z 0-9 - _ . ~`).
const S3_QUERY_ENCODE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
/// As [`S3_QUERY_ENCODE`], but `/` is kept (object key paths).
const S3_PATH_ENCODE: &AsciiSet = &S3_QUERY_ENCODE.remove(b'/');

/// S3's URI encoding: unreserved characters stay, everything else is %XX;
/// `/` is kept in paths (`encode_slash = false`) and encoded in query parts.
pub fn uri_encode(s: &str, encode_slash: bool) -> String {
    let set = if encode_slash { S3_QUERY_ENCODE } else { S3_PATH_ENCODE };
    utf8_percent_encode(s, set).to_string()
}

/// `/bucket/key` path with the key URI-encoded.
pub fn encode_path(bucket: &str, key: &str) -> String {
    if key.is_empty() { format!("/{bucket}") } else { format!("/{bucket}/{}", uri_encode(key, false)) }
}

/// (`YYYYMMDDTHHMMSSZ`, `YYYYMMDD`) for a point in time.
pub fn amz_dates(at: SystemTime) -> (String, String) {
    let full = time::OffsetDateTime::from(at)
        .format(time::macros::format_description!("[year][month][day]T[hour][minute][second]Z"))
        .expect("format X-Amz-Date");
    let date = full[..8].to_string();
    (full, date)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_of_check_string() {
        // CRC-32/IEEE of "123456789" is 0xCBF43926.
        let expected = base64::engine::general_purpose::STANDARD.encode(0xCBF4_3926u32.to_be_bytes());
        assert_eq!(crc32_base64(b"123456789"), expected);
    }

    /// The GET example from AWS's S3 SigV4 documentation ("Example: GET Object").
    #[test]
    fn signs_documented_example() {
        let signer = Signer::new("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "us-east-1");
        let mut req =
            RawRequest::new("GET", "examplebucket.s3.amazonaws.com", "/test.txt").header("range", "bytes=0-9");
        let at = time::macros::datetime!(2013-05-24 00:00:00 UTC);
        let sig = signer.sign(&mut req, &sha256_hex(b""), at.into());
        assert_eq!(sig.signature, "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
        assert_eq!(sig.amz_date, "20130524T000000Z");
        assert_eq!(sig.scope, "20130524/us-east-1/s3/aws4_request");
        let auth = req.headers.iter().find(|(k, _)| k == "authorization").map(|(_, v)| v.as_str());
        assert_eq!(
            auth,
            Some(
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
                 SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
                 Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
            )
        );
    }

    /// The example from AWS's "Transferring payload in multiple chunks"
    /// documentation: seed and chained chunk signatures.
    #[test]
    fn signs_documented_streaming_example() {
        let signer = Signer::new("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "us-east-1");
        let mut req = RawRequest::new("PUT", "s3.amazonaws.com", "/examplebucket/chunkObject.txt")
            .header("x-amz-storage-class", "REDUCED_REDUNDANCY")
            .header("content-encoding", "aws-chunked")
            .header("x-amz-decoded-content-length", "66560")
            .header("content-length", "66824");
        let at = time::macros::datetime!(2013-05-24 00:00:00 UTC);
        let seed = signer.sign(&mut req, STREAMING_SIGNED, at.into());
        assert_eq!(seed.signature, "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9");

        let first = signer.chunk_signature(&seed, &seed.signature, &[b'a'; 65536]);
        assert_eq!(first, "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648");
        let second = signer.chunk_signature(&seed, &first, &[b'a'; 1024]);
        assert_eq!(second, "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497");
        let last = signer.chunk_signature(&seed, &second, b"");
        assert_eq!(last, "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9");
    }

    #[test]
    fn uri_encoding() {
        assert_eq!(uri_encode("a b/c+d~", false), "a%20b/c%2Bd~");
        assert_eq!(uri_encode("a/b", true), "a%2Fb");
        assert_eq!(uri_encode("é*", true), "%C3%A9%2A");
    }

    #[test]
    fn amz_date_format() {
        let at = time::macros::datetime!(2024-02-03 04:05:06 UTC);
        assert_eq!(amz_dates(at.into()), ("20240203T040506Z".to_string(), "20240203".to_string()));
    }
}
