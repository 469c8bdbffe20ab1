//! Hostile or broken input: malformed XML, truncated bodies, garbage auth.
//! The server must answer with a 4xx S3 error, store nothing, and stay up.

use std::time::{Duration, SystemTime};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use hangar_integration_tests::sigv4::{self, RawRequest, encode_path, sha256_hex};
use hangar_integration_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn new_bucket(s3: &Client) -> String {
    let bucket = bucket_name("hostile");
    s3.create_bucket().bucket(&bucket).send().await.expect("create bucket");
    bucket
}

/// Sends a PUT whose Content-Length promises `declared` bytes but only
/// `sent` arrive before the client closes the connection.
async fn truncated_put(server: &Server, bucket: &str, key: &str, declared: usize, sent: usize) {
    let mut req = RawRequest::new("PUT", &server.s3_addr.to_string(), &encode_path(bucket, key));
    server.signer().sign(&mut req, sigv4::UNSIGNED_PAYLOAD, SystemTime::now());
    let mut head = format!("PUT {} HTTP/1.1\r\n", req.path);
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
    let reply = String::from_utf8_lossy(&sink);
    assert!(!reply.starts_with("HTTP/1.1 200"), "truncated upload was acknowledged: {reply}");
}

#[tokio::test]
async fn truncated_body_leaves_no_object() {
    let server = Server::builder().block_size(1 << 20).start().await;
    let s3 = server.s3_client();
    let bucket = new_bucket(&s3).await;

    // Small (would be inline) and large (several blocks already received).
    truncated_put(&server, &bucket, "small", 2000, 1000).await;
    truncated_put(&server, &bucket, "large", 8 << 20, 3 << 20).await;
    for key in ["small", "large"] {
        expect_s3_error(s3.head_object().bucket(&bucket).key(key).send().await, 404, None);
    }
    let list = s3.list_objects_v2().bucket(&bucket).send().await.expect("list");
    assert!(list.contents().is_empty(), "truncated uploads are listed: {:?}", list.contents());

    // A truncated overwrite keeps the previous version.
    s3.put_object()
        .bucket(&bucket)
        .key("existing")
        .body(ByteStream::from_static(b"version one"))
        .send()
        .await
        .expect("put v1");
    truncated_put(&server, &bucket, "existing", 4 << 20, 2 << 20).await;
    let got = s3.get_object().bucket(&bucket).key("existing").send().await.expect("get after truncated overwrite");
    assert_eq!(body_bytes(got.body).await, b"version one");

    // A truncated part does not become part of the upload.
    let id = s3
        .create_multipart_upload()
        .bucket(&bucket)
        .key("mpu")
        .send()
        .await
        .expect("create upload")
        .upload_id()
        .expect("id")
        .to_string();
    {
        let mut req = RawRequest::new("PUT", &server.s3_addr.to_string(), &encode_path(&bucket, "mpu"))
            .query("partNumber", "1")
            .query("uploadId", &id);
        server.signer().sign(&mut req, sigv4::UNSIGNED_PAYLOAD, SystemTime::now());
        let mut head = format!("PUT {}?{} HTTP/1.1\r\n", req.path, req.query_string());
        for (k, v) in &req.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("content-length: 6000000\r\n\r\n");
        let mut stream = tokio::net::TcpStream::connect(server.s3_addr).await.expect("connect");
        stream.write_all(head.as_bytes()).await.expect("write head");
        stream.write_all(&random_bytes(100_000)).await.expect("write partial body");
        tokio::time::sleep(Duration::from_millis(200)).await;
        stream.shutdown().await.expect("shutdown");
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut sink)).await;
    }
    let parts = s3.list_parts().bucket(&bucket).key("mpu").upload_id(&id).send().await.expect("list parts");
    assert!(parts.parts().is_empty(), "truncated part was recorded: {:?}", parts.parts());

    // And the server is still healthy.
    let (status, body) = server.admin_get("/health").await;
    assert_eq!((status, body.trim()), (200, "ok"));
}

#[tokio::test]
async fn delete_objects_with_malformed_xml() {
    let server = Server::start().await;
    let s3 = server.s3_client();
    let bucket = new_bucket(&s3).await;
    s3.put_object().bucket(&bucket).key("keep").body(ByteStream::from_static(b"x")).send().await.expect("put");

    for garbage in [&b"<Delete><Object><Key>keep"[..], b"{\"not\": \"xml\"}", b""] {
        let mut req = RawRequest::new("POST", &server.s3_addr.to_string(), &format!("/{bucket}"))
            .query("delete", "")
            .header("content-md5", &content_md5(garbage))
            .body(garbage);
        server.signer().sign(&mut req, &sha256_hex(garbage), SystemTime::now());
        let resp = server.send_raw(&req).await;
        let status = resp.status().as_u16();
        let body = resp.text().await.expect("body");
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
    let server = Server::start().await;
    let s3 = server.s3_client();
    let bucket = new_bucket(&s3).await;
    s3.put_object().bucket(&bucket).key("src").body(ByteStream::from_static(b"0123456789")).send().await.expect("put");

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
