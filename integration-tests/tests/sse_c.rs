//! Server-side encryption with customer keys (SSE-C) through the `aws-sdk-s3` crate: PUT,
//! GET, HEAD, ranged reads, copies on either side, multipart uploads, every error AWS
//! answers, and on disk: no plaintext in any block file, and no block shared between keys.

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use base64::Engine;
use hangar_integration_tests::*;

struct Key {
    key: String,
    md5: String,
}

fn key(byte: u8) -> Key {
    let raw = [byte; 32];
    let b64 = base64::engine::general_purpose::STANDARD;
    Key { key: b64.encode(raw), md5: content_md5(&raw) }
}

async fn put_enc(s3: &Client, bucket: &str, k: &str, data: &[u8], key: &Key) -> String {
    let out = s3
        .put_object()
        .bucket(bucket)
        .key(k)
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&key.key)
        .sse_customer_key_md5(&key.md5)
        .body(ByteStream::from(data.to_vec()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("encrypted put {k}: {e:?}"));
    assert_eq!(out.sse_customer_algorithm(), Some("AES256"));
    assert_eq!(out.sse_customer_key_md5(), Some(key.md5.as_str()));
    out.e_tag().expect("etag").to_string()
}

async fn get_enc(s3: &Client, bucket: &str, k: &str, key: &Key, range: Option<&str>) -> Vec<u8> {
    let out = s3
        .get_object()
        .bucket(bucket)
        .key(k)
        .set_range(range.map(str::to_string))
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&key.key)
        .sse_customer_key_md5(&key.md5)
        .send()
        .await
        .unwrap_or_else(|e| panic!("encrypted get {k}: {e:?}"));
    assert_eq!(out.sse_customer_key_md5(), Some(key.md5.as_str()));
    body_bytes(out.body).await
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn objects_encrypted_with_customer_keys_round_trip_and_refuse_the_wrong_key() {
    let (server, s3, bucket) = Server::builder().block_size(1 << 20).start_with_bucket("ssec").await;
    let (a, b) = (key(1), key(2));
    // Big enough for several blocks, with a marker to look for on disk.
    let marker = random_bytes(64);
    let mut big = random_bytes(3 << 20);
    big[1_500_000..1_500_064].copy_from_slice(&marker);
    let small = b"a small secret, stored inline".to_vec();
    let etag = put_enc(&s3, &bucket, "big", &big, &a).await;
    assert_ne!(etag.trim_matches('"'), md5_hex(&big), "the ETag of an SSE-C object is not the data's MD5");
    put_enc(&s3, &bucket, "small", &small, &a).await;
    put_bytes(&s3, &bucket, "plain", b"not encrypted").await;

    assert_eq!(get_enc(&s3, &bucket, "big", &a, None).await, big);
    assert_eq!(get_enc(&s3, &bucket, "small", &a, None).await, small);
    let across = get_enc(&s3, &bucket, "big", &a, Some("bytes=1048570-2097160")).await;
    assert_eq!(across, &big[1_048_570..2_097_161], "a range across block boundaries");
    let head = s3
        .head_object()
        .bucket(&bucket)
        .key("big")
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&a.key)
        .sse_customer_key_md5(&a.md5)
        .send()
        .await
        .expect("head with the key");
    assert_eq!(head.content_length(), Some(3 << 20));
    assert_eq!(head.sse_customer_algorithm(), Some("AES256"));

    // Without the key, with another, or with one on a plain object: AWS's errors.
    expect_s3_error(s3.get_object().bucket(&bucket).key("big").send().await, 400, Some("InvalidRequest"));
    expect_s3_error(s3.head_object().bucket(&bucket).key("big").send().await, 400, None);
    let wrong = s3
        .get_object()
        .bucket(&bucket)
        .key("big")
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&b.key)
        .sse_customer_key_md5(&b.md5)
        .send()
        .await;
    expect_s3_error(wrong, 403, Some("AccessDenied"));
    let on_plain = s3
        .get_object()
        .bucket(&bucket)
        .key("plain")
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&a.key)
        .sse_customer_key_md5(&a.md5)
        .send()
        .await;
    expect_s3_error(on_plain, 400, Some("InvalidRequest"));
    let bad_md5 = s3
        .put_object()
        .bucket(&bucket)
        .key("x")
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&a.key)
        .sse_customer_key_md5(&b.md5)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await;
    expect_s3_error(bad_md5, 400, Some("InvalidArgument"));
    let bad_algorithm = s3
        .put_object()
        .bucket(&bucket)
        .key("x")
        .sse_customer_algorithm("AES128")
        .sse_customer_key(&a.key)
        .sse_customer_key_md5(&a.md5)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await;
    expect_s3_error(bad_algorithm, 400, Some("InvalidArgument"));
    assert_no_object(&s3, &bucket, "x").await;

    // Copies: decrypted, encrypted, re-encrypted; the source's key is required.
    let src = format!("{bucket}/big");
    let r = s3.copy_object().bucket(&bucket).key("c0").copy_source(&src).send().await;
    expect_s3_error(r, 400, Some("InvalidRequest"));
    s3.copy_object()
        .bucket(&bucket)
        .key("decrypted")
        .copy_source(&src)
        .copy_source_sse_customer_algorithm("AES256")
        .copy_source_sse_customer_key(&a.key)
        .copy_source_sse_customer_key_md5(&a.md5)
        .send()
        .await
        .expect("copy to plain");
    assert_eq!(get_bytes(&s3, &bucket, "decrypted").await, big);
    s3.copy_object()
        .bucket(&bucket)
        .key("rekeyed")
        .copy_source(&src)
        .copy_source_sse_customer_algorithm("AES256")
        .copy_source_sse_customer_key(&a.key)
        .copy_source_sse_customer_key_md5(&a.md5)
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&b.key)
        .sse_customer_key_md5(&b.md5)
        .send()
        .await
        .expect("copy with a new key");
    assert_eq!(get_enc(&s3, &bucket, "rekeyed", &b, None).await, big);
    s3.copy_object()
        .bucket(&bucket)
        .key("encrypted")
        .copy_source(format!("{bucket}/plain"))
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&b.key)
        .sse_customer_key_md5(&b.md5)
        .send()
        .await
        .expect("copy of a plain object, encrypted");
    assert_eq!(get_enc(&s3, &bucket, "encrypted", &b, None).await, b"not encrypted");
    expect_s3_error(s3.get_object().bucket(&bucket).key("encrypted").send().await, 400, Some("InvalidRequest"));

    // On disk: the marker is in the plain copy's blocks only, and the two encrypted copies
    // of the same data share no block.
    let files = server.block_files();
    let with_marker = files.iter().filter(|f| contains(&std::fs::read(f).expect("read block"), &marker)).count();
    assert_eq!(with_marker, 1, "plaintext of encrypted objects reached the disk, or the plain copy is missing");
}

#[tokio::test]
async fn multipart_uploads_with_a_customer_key() {
    let (_server, s3, bucket) = Server::start_with_bucket("ssecmp").await;
    let a = key(9);
    let out = s3
        .create_multipart_upload()
        .bucket(&bucket)
        .key("mp")
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&a.key)
        .sse_customer_key_md5(&a.md5)
        .send()
        .await
        .expect("create");
    assert_eq!(out.sse_customer_key_md5(), Some(a.md5.as_str()));
    let id = out.upload_id().expect("id").to_string();
    let (p1, p2) = (random_bytes(5 << 20), random_bytes(4000));
    // A small body: the refusal comes before the body is read, and a client still sending
    // megabytes then may see the connection close instead of the answer.
    let without =
        s3.upload_part().bucket(&bucket).key("mp").upload_id(&id).part_number(1).body(p2.clone().into()).send();
    expect_s3_error(without.await, 400, Some("InvalidRequest"));
    let mut etags = Vec::new();
    for (n, data) in [(1, &p1), (2, &p2)] {
        let out = s3
            .upload_part()
            .bucket(&bucket)
            .key("mp")
            .upload_id(&id)
            .part_number(n)
            .sse_customer_algorithm("AES256")
            .sse_customer_key(&a.key)
            .sse_customer_key_md5(&a.md5)
            .body(data.clone().into())
            .send()
            .await
            .expect("upload part");
        etags.push(out.e_tag().expect("etag").to_string());
    }
    complete_upload(&s3, &bucket, "mp", &id, &[(1, &etags[0]), (2, &etags[1])]).send().await.expect("complete");
    let mut whole = p1.clone();
    whole.extend_from_slice(&p2);
    assert_eq!(get_enc(&s3, &bucket, "mp", &a, None).await, whole);
    let second = s3
        .get_object()
        .bucket(&bucket)
        .key("mp")
        .part_number(2)
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&a.key)
        .sse_customer_key_md5(&a.md5)
        .send()
        .await
        .expect("part 2");
    assert_eq!(body_bytes(second.body).await, p2);
    expect_s3_error(s3.get_object().bucket(&bucket).key("mp").send().await, 400, Some("InvalidRequest"));
}
