//! Authentication and authorisation: SigV4 variants, presigned URLs, clock
//! skew, per-key bucket rights, virtual-hosted-style addressing.

use std::time::{Duration, SystemTime};

use aws_sdk_s3::Client;
use aws_sdk_s3::presigning::{PresignedRequest, PresigningConfig};
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_async::time::StaticTimeSource;
use hangar_integration_tests::sigv4::{self, RawRequest, encode_path, sha256_hex};
use hangar_integration_tests::*;

/// Sends a presigned request with reqwest, resolving its host to the server.
async fn send_presigned(server: &Server, presigned: &PresignedRequest, body: Vec<u8>) -> reqwest::Response {
    let url = reqwest::Url::parse(presigned.uri()).expect("presigned URL");
    let host = url.host_str().expect("host").to_string();
    let client = reqwest::Client::builder().resolve(&host, server.s3_addr).build().expect("reqwest client");
    let method = reqwest::Method::from_bytes(presigned.method().as_bytes()).expect("method");
    let mut req = client.request(method, url);
    for (k, v) in presigned.headers() {
        req = req.header(k, v);
    }
    req.body(body).send().await.expect("send presigned request")
}

fn presign_for(secs: u64) -> PresigningConfig {
    PresigningConfig::expires_in(Duration::from_secs(secs)).expect("presigning config")
}

#[tokio::test]
async fn wrong_secret_is_signature_does_not_match() {
    let server = Server::start().await;
    let bad =
        server.s3_client_for(&server.access_key, "0000000000000000000000000000000000000000000000000000000000000000");
    expect_s3_error(bad.list_buckets().send().await, 403, Some("SignatureDoesNotMatch"));
    expect_s3_error(
        bad.put_object().bucket("any-bucket").key("k").body(ByteStream::from_static(b"x")).send().await,
        403,
        Some("SignatureDoesNotMatch"),
    );
}

#[tokio::test]
async fn unknown_key_is_invalid_access_key_id() {
    let server = Server::start().await;
    let bad = server.s3_client_for("GK000000000000000000000000", "deadbeef");
    expect_s3_error(bad.list_buckets().send().await, 403, Some("InvalidAccessKeyId"));
}

#[tokio::test]
async fn anonymous_requests_are_denied() {
    let (server, s3, bucket) = Server::start_with_bucket("anon").await;
    put_bytes(&s3, &bucket, "k", b"secret").await;
    let http = server.http();

    for (method, path) in [("GET", "/".to_string()), ("GET", format!("/{bucket}")), ("GET", format!("/{bucket}/k"))] {
        let resp = http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
                format!("{}{path}", server.endpoint),
            )
            .send()
            .await
            .expect("send");
        let (status, code) = status_and_code(resp).await;
        assert_eq!((status, code.as_deref()), (403, Some("AccessDenied")), "{method} {path}");
    }
    let resp = http.put(format!("{}/{bucket}/planted", server.endpoint)).body("x").send().await.expect("send");
    let (status, code) = status_and_code(resp).await;
    assert_eq!((status, code.as_deref()), (403, Some("AccessDenied")), "anonymous PUT");
    assert_no_object(&s3, &bucket, "planted").await;
}

#[tokio::test]
async fn skewed_clock_is_request_time_too_skewed() {
    let server = Server::start().await;
    for offset in [-20i64 * 60, 20 * 60] {
        let at = if offset < 0 {
            SystemTime::now() - Duration::from_secs(offset.unsigned_abs())
        } else {
            SystemTime::now() + Duration::from_secs(offset as u64)
        };
        // The SDK signs with X-Amz-Date taken from its time source.
        let skewed = Client::from_conf(server.s3_config().time_source(StaticTimeSource::new(at)).build());
        let err = expect_s3_error(skewed.list_buckets().send().await, 403, Some("RequestTimeTooSkewed"));
        drop(err);

        // Same with the independent signer on a write.
        let mut req = server.raw_request("PUT", "/skew-bucket").body(Vec::new());
        server.signer().sign(&mut req, &sha256_hex(b""), at);
        let (status, code) = status_and_code(server.send_raw(&req).await).await;
        assert_eq!((status, code.as_deref()), (403, Some("RequestTimeTooSkewed")), "offset {offset}s");
    }
    // 5 minutes off is within S3's 15-minute window.
    let slightly = Client::from_conf(
        server.s3_config().time_source(StaticTimeSource::new(SystemTime::now() - Duration::from_secs(300))).build(),
    );
    slightly.list_buckets().send().await.expect("5 minutes of skew is tolerated");
}

#[tokio::test]
async fn presigned_get_and_put() {
    let (server, s3, bucket) = Server::start_with_bucket("presign").await;
    let data = random_bytes(200_000);

    let put_req = s3
        .put_object()
        .bucket(&bucket)
        .key("via presigned put")
        .presigned(presign_for(300))
        .await
        .expect("presign put");
    assert!(put_req.uri().contains("X-Amz-Signature="), "query-string auth: {}", put_req.uri());
    let resp = send_presigned(&server, &put_req, data.clone()).await;
    assert_eq!(resp.status().as_u16(), 200, "presigned PUT: {:?}", resp.text().await);
    assert_eq!(get_bytes(&s3, &bucket, "via presigned put").await, data);

    let get_req = s3
        .get_object()
        .bucket(&bucket)
        .key("via presigned put")
        .presigned(presign_for(300))
        .await
        .expect("presign get");
    let resp = send_presigned(&server, &get_req, Vec::new()).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.bytes().await.expect("body") == data, "presigned GET body differs");

    // Tampering with the signature.
    let tampered_uri = {
        let uri = get_req.uri();
        let idx = uri.find("X-Amz-Signature=").expect("signature param") + "X-Amz-Signature=".len();
        let mut chars: Vec<char> = uri.chars().collect();
        chars[idx] = if chars[idx] == '0' { '1' } else { '0' };
        chars.into_iter().collect::<String>()
    };
    let resp = server.http().get(tampered_uri).send().await.expect("send");
    let (status, code) = status_and_code(resp).await;
    assert_eq!((status, code.as_deref()), (403, Some("SignatureDoesNotMatch")), "tampered presigned URL");

    // Expired: signed two hours ago, valid for one minute.
    let expired_cfg = PresigningConfig::builder()
        .start_time(SystemTime::now() - Duration::from_secs(7200))
        .expires_in(Duration::from_secs(60))
        .build()
        .expect("presigning config");
    let expired =
        s3.get_object().bucket(&bucket).key("via presigned put").presigned(expired_cfg).await.expect("presign");
    let (status, code) = status_and_code(send_presigned(&server, &expired, Vec::new()).await).await;
    assert_eq!((status, code.as_deref()), (403, Some("AccessDenied")), "expired presigned URL");

    // A presigned URL for a missing key gets the normal error.
    let missing = s3.get_object().bucket(&bucket).key("missing").presigned(presign_for(60)).await.expect("presign");
    let (status, code) = status_and_code(send_presigned(&server, &missing, Vec::new()).await).await;
    assert_eq!((status, code.as_deref()), (404, Some("NoSuchKey")));
}

#[tokio::test]
async fn key_without_rights_is_denied_until_allowed() {
    let (server, root, bucket) = Server::start_with_bucket("shared").await;
    put_bytes(&root, &bucket, "doc", b"root's document").await;

    let bob = server.create_key("bob").await;
    let s3 = server.s3_client_for_key(&bob);

    let list = s3.list_buckets().send().await.expect("list buckets as bob");
    assert!(list.buckets().is_empty(), "bob sees buckets he has no rights on: {:?}", list.buckets());
    expect_s3_error(s3.get_object().bucket(&bucket).key("doc").send().await, 403, Some("AccessDenied"));
    expect_s3_error(s3.list_objects_v2().bucket(&bucket).send().await, 403, Some("AccessDenied"));
    expect_s3_error(
        s3.put_object().bucket(&bucket).key("bob").body(ByteStream::from_static(b"x")).send().await,
        403,
        Some("AccessDenied"),
    );
    expect_s3_error(s3.delete_object().bucket(&bucket).key("doc").send().await, 403, Some("AccessDenied"));
    expect_s3_error(s3.delete_bucket().bucket(&bucket).send().await, 403, Some("AccessDenied"));

    // Read only.
    server.cli_ok(["bucket", "allow", "--read", &bucket, "--key", &bob.name]).await;
    assert_eq!(get_bytes(&s3, &bucket, "doc").await, b"root's document");
    s3.list_objects_v2().bucket(&bucket).send().await.expect("bob lists with read");
    let names = bucket_names(&s3).await;
    assert_eq!(names, std::slice::from_ref(&bucket), "bob sees exactly the bucket he can read");
    expect_s3_error(
        s3.put_object().bucket(&bucket).key("bob").body(ByteStream::from_static(b"x")).send().await,
        403,
        Some("AccessDenied"),
    );

    // Read + write.
    server.cli_ok(["bucket", "allow", "--write", &bucket, "--key", &bob.id]).await;
    put_bytes(&s3, &bucket, "bob", b"bob's").await;
    assert_eq!(get_bytes(&root, &bucket, "bob").await, b"bob's");
    s3.delete_object().bucket(&bucket).key("bob").send().await.expect("bob deletes with write");

    // Revoke both.
    server.cli_ok(["bucket", "deny", "--read", "--write", &bucket, "--key", &bob.name]).await;
    catalog_settles().await;
    expect_s3_error(s3.get_object().bucket(&bucket).key("doc").send().await, 403, Some("AccessDenied"));
    let list = s3.list_buckets().send().await.expect("list buckets");
    assert!(list.buckets().is_empty(), "revoked bucket still visible");
}

#[tokio::test]
async fn create_bucket_permission_and_ownership() {
    let server = Server::start().await;
    let alice = server.create_key("alice").await;
    let carol = server.create_key("carol").await;
    let a = server.s3_client_for_key(&alice);
    let c = server.s3_client_for_key(&carol);

    expect_s3_error(a.create_bucket().bucket("alice-bucket").send().await, 403, Some("AccessDenied"));

    server.cli_ok(["key", "allow", "--create-bucket", &alice.name]).await;
    a.create_bucket().bucket("alice-bucket").send().await.expect("alice may now create buckets");
    // The creator owns it: full access, and it is listed for her only.
    put_bytes(&a, "alice-bucket", "k", b"alice data").await;
    assert_eq!(get_bytes(&a, "alice-bucket", "k").await, b"alice data");
    assert_eq!(bucket_names(&a).await, ["alice-bucket"]);
    assert!(c.list_buckets().send().await.expect("list").buckets().is_empty(), "carol sees alice's bucket");
    expect_s3_error(c.get_object().bucket("alice-bucket").key("k").send().await, 403, Some("AccessDenied"));
    expect_s3_error(c.delete_bucket().bucket("alice-bucket").send().await, 403, Some("AccessDenied"));

    // Ownership granted by the admin lets carol delete it once empty.
    server.cli_ok(["bucket", "allow", "--read", "--write", "--owner", "alice-bucket", "--key", &carol.name]).await;
    c.delete_object().bucket("alice-bucket").key("k").send().await.expect("carol deletes object");
    c.delete_bucket().bucket("alice-bucket").send().await.expect("carol, now an owner, deletes the bucket");

    server.cli_ok(["key", "deny", "--create-bucket", &alice.name]).await;
    catalog_settles().await;
    expect_s3_error(a.create_bucket().bucket("alice-second").send().await, 403, Some("AccessDenied"));
}

#[tokio::test]
async fn streaming_signed_payload_upload() {
    let (server, s3, bucket) = Server::start_with_bucket("chunked").await;
    let data = random_bytes(200_000);
    let signer = server.signer();
    let host = server.s3_addr.to_string();

    let req = signer.streaming_put(&host, &encode_path(&bucket, "streamed"), &data, 64 * 1024, None);
    let resp = server.send_raw(&req).await;
    let status = resp.status().as_u16();
    let etag = resp.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_string);
    assert_eq!(status, 200, "signed aws-chunked PUT: {:?}", resp.text().await);
    assert_eq!(etag.as_deref(), Some(etag_of(&data).as_str()), "ETag is the MD5 of the decoded payload");
    assert!(get_bytes(&s3, &bucket, "streamed").await == data, "aws-chunked payload not decoded correctly");

    // A chunk altered after signing must be rejected, and nothing stored.
    let req = signer.streaming_put(&host, &encode_path(&bucket, "tampered"), &data, 64 * 1024, Some(1));
    let (status, code) = status_and_code(server.send_raw(&req).await).await;
    assert_eq!((status, code.as_deref()), (403, Some("SignatureDoesNotMatch")), "tampered chunk");
    assert_no_object(&s3, &bucket, "tampered").await;
}

#[tokio::test]
async fn unsigned_payload_and_payload_hash_checks() {
    let (server, s3, bucket) = Server::start_with_bucket("unsigned").await;
    let data = random_bytes(10_000);
    let put_req = |key: &str| server.raw_request("PUT", &encode_path(&bucket, key)).body(data.clone());

    let resp = server.send_signed(put_req("unsigned"), sigv4::UNSIGNED_PAYLOAD).await;
    assert_eq!(resp.status().as_u16(), 200, "UNSIGNED-PAYLOAD PUT: {:?}", resp.text().await);
    assert_eq!(get_bytes(&s3, &bucket, "unsigned").await, data);

    // Fully signed payload.
    let resp = server.send_signed(put_req("signed"), &sha256_hex(&data)).await;
    assert_eq!(resp.status().as_u16(), 200, "signed-payload PUT");
    assert_eq!(get_bytes(&s3, &bucket, "signed").await, data);

    // A body that does not match the signed x-amz-content-sha256 is refused.
    let (status, code) =
        status_and_code(server.send_signed(put_req("mismatch"), &sha256_hex(b"different")).await).await;
    assert!((400..500).contains(&status), "payload hash mismatch gave {status} {code:?}");
    assert_no_object(&s3, &bucket, "mismatch").await;
}

#[tokio::test]
async fn streaming_unsigned_payload_with_checksum_trailer() {
    let (server, s3, bucket) = Server::start_with_bucket("trailer").await;
    let data = random_bytes(150_000);

    let build = |key: &str, checksum: String| {
        let body = sigv4::trailer_body(&data, 64 * 1024, "x-amz-checksum-crc32", &checksum);
        let mut req = server
            .raw_request("PUT", &encode_path(&bucket, key))
            .header("content-encoding", "aws-chunked")
            .header("x-amz-decoded-content-length", &data.len().to_string())
            .header("x-amz-trailer", "x-amz-checksum-crc32")
            .body(body);
        server.sign_now(&mut req, sigv4::STREAMING_UNSIGNED_TRAILER);
        req
    };

    let resp = server.send_raw(&build("good", sigv4::crc32_base64(&data))).await;
    assert_eq!(resp.status().as_u16(), 200, "trailer upload: {:?}", resp.text().await);
    assert!(get_bytes(&s3, &bucket, "good").await == data, "trailer payload not decoded correctly");

    let (status, code) = status_and_code(server.send_raw(&build("bad", sigv4::crc32_base64(b"nope"))).await).await;
    assert_eq!((status, code.as_deref()), (400, Some("BadDigest")), "wrong trailing checksum");
    assert_no_object(&s3, &bucket, "bad").await;
}

#[tokio::test]
async fn virtual_hosted_style_requests() {
    const DOMAIN: &str = "s3.test";
    let (server, path_style, bucket) =
        Server::builder().env("HANGAR_S3_ROOT_DOMAIN", DOMAIN).start_with_bucket("vhost").await;
    put_bytes(&path_style, &bucket, "path-style-object", b"from path style").await;
    let port = server.s3_addr.port();

    // An SDK client in virtual-hosted mode; its presigned URLs name
    // `<bucket>.s3.test`, which send_presigned resolves to the server.
    let vhost = Client::from_conf(
        server.s3_config().endpoint_url(format!("http://{DOMAIN}:{port}")).force_path_style(false).build(),
    );
    let put_req =
        vhost.put_object().bucket(&bucket).key("vhost-object").presigned(presign_for(300)).await.expect("presign");
    let expected_host = format!("{bucket}.{DOMAIN}:{port}");
    assert!(put_req.uri().starts_with(&format!("http://{expected_host}/")), "not virtual-hosted: {}", put_req.uri());
    let resp = send_presigned(&server, &put_req, b"from virtual host".to_vec()).await;
    assert_eq!(resp.status().as_u16(), 200, "virtual-hosted PUT: {:?}", resp.text().await);
    assert_eq!(get_bytes(&path_style, &bucket, "vhost-object").await, b"from virtual host");

    let get_req =
        vhost.get_object().bucket(&bucket).key("path-style-object").presigned(presign_for(300)).await.expect("presign");
    let resp = send_presigned(&server, &get_req, Vec::new()).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.bytes().await.expect("body").as_ref(), b"from path style");

    // Header-signed ListObjectsV2 on the bucket host: path is "/".
    let req = RawRequest::new("GET", &expected_host, "/").query("list-type", "2");
    let (status, body) = status_and_body(server.send_signed(req, &sha256_hex(b"")).await).await;
    assert_eq!(status, 200);
    assert!(body.contains("<Key>path-style-object</Key>") && body.contains("<Key>vhost-object</Key>"), "{body}");

    // Unsigned virtual-hosted requests are still denied.
    let mut req = RawRequest::new("GET", &expected_host, "/path-style-object");
    req.headers.push(("host".into(), expected_host.clone()));
    let (status, code) = status_and_code(server.send_raw(&req).await).await;
    assert_eq!((status, code.as_deref()), (403, Some("AccessDenied")));
}

#[tokio::test]
async fn fixed_root_credentials_from_env() {
    const AK: &str = "GK0123456789abcdef01234567";
    const SK: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let server = Server::builder().root_credentials(AK, SK).start().await;
    assert_eq!((server.access_key.as_str(), server.secret_key.as_str()), (AK, SK), "printed root credentials");
    let s3 = server.s3_client_for(AK, SK);
    s3.create_bucket().bucket("fixed-root").send().await.expect("root key from env works");

    let server = server.stop().await.start().await;
    assert_eq!(server.access_key, AK, "root key id after restart");
    server.s3_client().head_bucket().bucket("fixed-root").send().await.expect("bucket after restart");
}
