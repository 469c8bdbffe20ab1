//! SigV4 verification as a frontend does it: a signed GetObject (header signature,
//! UNSIGNED-PAYLOAD) through s3s's request path — path and header parsing, the canonical
//! request, the HMAC chain, the operation's dispatch — to a handler that answers at once,
//! against the same request with a wrong signature. `cargo bench -p hangar-integration-tests
//! --bench sigv4`.

use std::time::SystemTime;

use criterion::{Criterion, criterion_group, criterion_main};
use hangar_integration_tests::sigv4::{RawRequest, Signer, UNSIGNED_PAYLOAD};
use s3s::dto::{GetObjectInput, GetObjectOutput};
use s3s::{S3, S3Request, S3Response, S3Result};

const AK: &str = "GK0123456789abcdef01234567";
const SK: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Answers every GetObject with an empty object.
struct Answer;

#[async_trait::async_trait]
impl S3 for Answer {
    async fn get_object(&self, _req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        Ok(S3Response::new(GetObjectOutput::default()))
    }
}

fn request(signed: &RawRequest) -> s3s::HttpRequest {
    let mut b = http::Request::builder().method("GET").uri(signed.target());
    for (k, v) in &signed.headers {
        b = b.header(k, v);
    }
    b.body(s3s::Body::empty()).expect("request")
}

fn sigv4(c: &mut Criterion) {
    let mut builder = s3s::service::S3ServiceBuilder::new(Answer);
    builder.set_auth(s3s::auth::SimpleAuth::from_single(AK, SK));
    let service = builder.build();
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");

    let mut good = RawRequest::new("GET", "127.0.0.1:3900", "/photos/2026/12/img-000001.jpg");
    Signer::new(AK, SK, "us-east-1").sign(&mut good, UNSIGNED_PAYLOAD, SystemTime::now());
    let mut bad = good.clone();
    Signer::new(AK, &SK.replace('0', "1"), "us-east-1").sign(&mut bad, UNSIGNED_PAYLOAD, SystemTime::now());

    let mut g = c.benchmark_group("sigv4");
    g.bench_function("signed GetObject through s3s", |b| {
        b.iter(|| {
            let resp = rt.block_on(service.call(request(&good))).expect("call");
            assert_eq!(resp.status(), 200);
        })
    });
    g.bench_function("wrong signature through s3s", |b| {
        b.iter(|| {
            let resp = rt.block_on(service.call(request(&bad))).expect("call");
            assert_eq!(resp.status(), 403);
        })
    });
    g.finish();
}

criterion_group!(benches, sigv4);
criterion_main!(benches);
