//! Hostile or broken input: malformed XML, truncated bodies, garbage auth.
//! The server must answer with a 4xx S3 error, store nothing, and stay up.

use std::time::{Duration, SystemTime};

use hangar_integration_tests::sigv4::{self, RawRequest, encode_path, sha256_hex};
use hangar_integration_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `req` (signed with UNSIGNED-PAYLOAD) with a Content-Length that
/// promises `declared` bytes, but only `sent` arrive before the client closes
/// the connection. Returns whatever the server answered.
async fn send_truncated(server: &Server, mut req: RawRequest, declared: usize, sent: usize) -> String {
    server.sign_now(&mut req, sigv4::UNSIGNED_PAYLOAD);
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.target());
    for (k, v) in &req.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("content-length: {declared}\r\n\r\n"));

    let mut stream = tokio::net::TcpStream::connect(server.s3_addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream.write_all(&random_bytes(sent)).await.expect("write partial body");
    stream.flush().await.expect("flush");
    // Give the server a moment to start consuming, then hang up mid-body.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stream.shutdown().await.expect("shutdown write side");
    // Read whatever the server says (or EOF) so it has finished with us.
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut sink)).await;
    String::from_utf8_lossy(&sink).into_owned()
}

/// A truncated PUT of `bucket/key` (see [`send_truncated`]) that must not be acknowledged.
async fn truncated_put(server: &Server, bucket: &str, key: &str, declared: usize, sent: usize) {
    let reply = send_truncated(server, server.raw_request("PUT", &encode_path(bucket, key)), declared, sent).await;
    assert!(!reply.starts_with("HTTP/1.1 200"), "truncated upload was acknowledged: {reply}");
}

#[tokio::test]
async fn truncated_body_leaves_no_object() {
    let (server, s3, bucket) = Server::builder().block_size(1 << 20).start_with_bucket("hostile").await;

    // Small (would be inline) and large (several blocks already received).
    truncated_put(&server, &bucket, "small", 2000, 1000).await;
    truncated_put(&server, &bucket, "large", 8 << 20, 3 << 20).await;
    for key in ["small", "large"] {
        assert_no_object(&s3, &bucket, key).await;
    }
    let list = s3.list_objects_v2().bucket(&bucket).send().await.expect("list");
    assert!(list.contents().is_empty(), "truncated uploads are listed: {:?}", list.contents());

    // A truncated overwrite keeps the previous version.
    put_bytes(&s3, &bucket, "existing", b"version one").await;
    truncated_put(&server, &bucket, "existing", 4 << 20, 2 << 20).await;
    let got = s3.get_object().bucket(&bucket).key("existing").send().await.expect("get after truncated overwrite");
    assert_eq!(body_bytes(got.body).await, b"version one");

    // A truncated part does not become part of the upload.
    let id = create_upload(&s3, &bucket, "mpu").await;
    let req = server.raw_request("PUT", &encode_path(&bucket, "mpu")).query("partNumber", "1").query("uploadId", &id);
    send_truncated(&server, req, 6_000_000, 100_000).await;
    let parts = s3.list_parts().bucket(&bucket).key("mpu").upload_id(&id).send().await.expect("list parts");
    assert!(parts.parts().is_empty(), "truncated part was recorded: {:?}", parts.parts());

    // And the server is still healthy.
    let (status, body) = server.admin_get("/health").await;
    assert_eq!((status, body.trim()), (200, "ok"));
}

#[tokio::test]
async fn delete_objects_with_malformed_xml() {
    let (server, s3, bucket) = Server::start_with_bucket("hostile").await;
    put_bytes(&s3, &bucket, "keep", b"x").await;

    for garbage in [&b"<Delete><Object><Key>keep"[..], b"{\"not\": \"xml\"}", b""] {
        let req = server
            .raw_request("POST", &format!("/{bucket}"))
            .query("delete", "")
            .header("content-md5", &content_md5(garbage))
            .body(garbage);
        let (status, body) = status_and_body(server.send_signed(req, &sha256_hex(garbage)).await).await;
        assert_eq!(status, 400, "{garbage:?}: {body}");
        let code = xml_value(&body, "Code");
        // S3 itself answers an empty body with MissingRequestBodyError.
        let allowed: &[&str] =
            if garbage.is_empty() { &["MalformedXML", "MissingRequestBodyError"] } else { &["MalformedXML"] };
        assert!(code.as_deref().is_some_and(|c| allowed.contains(&c)), "{garbage:?}: {body}");
    }
    s3.head_object().bucket(&bucket).key("keep").send().await.expect("object untouched");
}

#[tokio::test]
async fn garbage_authorization_headers_are_client_errors() {
    let server = Server::start().await;
    let http = server.http();
    for auth in [
        "garbage",
        "AWS4-HMAC-SHA256",
        "AWS4-HMAC-SHA256 Credential=, SignedHeaders=, Signature=",
        "AWS4-HMAC-SHA256 Credential=GK1/20200101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=zz",
        "AWS AKIAIOSFODNN7EXAMPLE:frJIUN8DYpKDtOLCwo//yllqDzg=",
    ] {
        let resp = http
            .get(format!("{}/", server.endpoint))
            .header("authorization", auth)
            .header("x-amz-date", sigv4::amz_dates(SystemTime::now()).0)
            .header("x-amz-content-sha256", sha256_hex(b""))
            .send()
            .await
            .expect("send");
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        assert!((400..500).contains(&status), "Authorization {auth:?} gave {status}: {body}");
        assert!(xml_value(&body, "Code").is_some(), "Authorization {auth:?}: no S3 error body: {body}");
    }
    let (status, _) = server.admin_get("/health").await;
    assert_eq!(status, 200, "server still healthy");
}

#[tokio::test]
async fn garbage_copy_source_and_ranges() {
    let (_server, s3, bucket) = Server::start_with_bucket("hostile").await;
    put_bytes(&s3, &bucket, "src", b"0123456789").await;

    for source in ["no-slash-at-all", "/", "%ZZ/bad-escape"] {
        let err = s3
            .copy_object()
            .bucket(&bucket)
            .key("dst")
            .copy_source(source)
            .send()
            .await
            .expect_err("bogus copy source accepted");
        let status = err_status(&err).unwrap_or(0);
        assert!((400..500).contains(&status), "copy source {source:?} gave {status}: {err:?}");
    }

    // Unsatisfiable or malformed ranges never produce a 5xx.
    for range in ["bytes=20-30", "bytes=9-2", "bytes=abc", "items=0-1", "bytes=-0"] {
        let res = s3.get_object().bucket(&bucket).key("src").range(range).send().await;
        match res {
            Ok(out) => {
                // Malformed ranges may be ignored (full object), as S3 does.
                assert_eq!(body_bytes(out.body).await, b"0123456789", "range {range:?}");
            }
            Err(err) => {
                let status = err_status(&err).unwrap_or(0);
                assert!((400..500).contains(&status), "range {range:?} gave {status}: {err:?}");
            }
        }
    }
}
