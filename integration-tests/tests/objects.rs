//! Object operations: put/get/head/delete, ranges, conditionals, copy, headers.

use std::time::{Duration, SystemTime};

use aws_sdk_s3::Client;
use aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder;
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{Delete, MetadataDirective, ObjectIdentifier};
use hangar_integration_tests::sigv4::{encode_path, sha256_hex};
use hangar_integration_tests::*;

/// Times an hour before and an hour after `bucket/key`'s Last-Modified.
async fn hour_around_last_modified(s3: &Client, bucket: &str, key: &str) -> (DateTime, DateTime) {
    let head = s3.head_object().bucket(bucket).key(key).send().await.expect("head");
    let modified = SystemTime::try_from(*head.last_modified().expect("last modified")).expect("time");
    (DateTime::from(modified - Duration::from_secs(3600)), DateTime::from(modified + Duration::from_secs(3600)))
}

/// In a fresh server: a PUT of `data` to "good" with the digest header
/// (`with_digest`) of `data` succeeds; one to "bad" with the digest of `other`
/// is rejected as BadDigest and stores nothing.
async fn digest_header_is_verified(
    bucket_prefix: &str,
    header: &str,
    with_digest: impl Fn(PutObjectFluentBuilder, &[u8]) -> PutObjectFluentBuilder,
    data: &'static [u8],
    other: &[u8],
) {
    let (_server, s3, bucket) = Server::start_with_bucket(bucket_prefix).await;
    with_digest(s3.put_object().bucket(&bucket).key("good"), data)
        .body(ByteStream::from_static(data))
        .send()
        .await
        .unwrap_or_else(|e| panic!("PUT with the right {header}: {e:?}"));
    expect_s3_error(
        with_digest(s3.put_object().bucket(&bucket).key("bad"), other).body(ByteStream::from_static(data)).send().await,
        400,
        Some("BadDigest"),
    );
    assert_no_object(&s3, &bucket, "bad").await;
}

#[tokio::test]
async fn put_get_head_round_trip_with_headers_and_metadata() {
    let (_server, s3, bucket) = Server::start_with_bucket("rt").await;
    let data = random_bytes(100_000);
    let expires = DateTime::from_secs(2_000_000_000);

    let put = s3
        .put_object()
        .bucket(&bucket)
        .key("dir/file.bin")
        .body(ByteStream::from(data.clone()))
        .content_type("application/x-test")
        .content_encoding("identity")
        .content_disposition("attachment; filename=\"file.bin\"")
        .content_language("en-GB")
        .cache_control("max-age=60")
        .expires(expires)
        .metadata("color", "blue")
        .metadata("Mixed-Case", "Value With Spaces")
        .send()
        .await
        .expect("put object");
    assert_eq!(put.e_tag(), Some(etag_of(&data).as_str()), "PUT ETag is the MD5");

    let got = s3.get_object().bucket(&bucket).key("dir/file.bin").send().await.expect("get object");
    assert_eq!(got.e_tag(), Some(etag_of(&data).as_str()));
    assert_eq!(got.content_length(), Some(data.len() as i64));
    assert_eq!(got.content_type(), Some("application/x-test"));
    assert_eq!(got.content_encoding(), Some("identity"));
    assert_eq!(got.content_disposition(), Some("attachment; filename=\"file.bin\""));
    assert_eq!(got.content_language(), Some("en-GB"));
    assert_eq!(got.cache_control(), Some("max-age=60"));
    assert!(got.expires_string().is_some_and(|e| e.contains("2033")), "Expires: {:?}", got.expires_string());
    assert!(got.last_modified().is_some(), "Last-Modified present");
    let meta = got.metadata().expect("metadata present");
    assert_eq!(meta.get("color").map(String::as_str), Some("blue"));
    assert_eq!(meta.get("mixed-case").map(String::as_str), Some("Value With Spaces"));
    assert_eq!(body_bytes(got.body).await, data, "body round-trips");

    let head = s3.head_object().bucket(&bucket).key("dir/file.bin").send().await.expect("head object");
    assert_eq!(head.content_length(), Some(data.len() as i64));
    assert_eq!(head.e_tag(), Some(etag_of(&data).as_str()));
    assert_eq!(head.content_type(), Some("application/x-test"));
    assert_eq!(head.cache_control(), Some("max-age=60"));
    assert_eq!(head.metadata().and_then(|m| m.get("color")).map(String::as_str), Some("blue"));

    // partNumber=1 of a simple object is the whole object.
    let part =
        s3.get_object().bucket(&bucket).key("dir/file.bin").part_number(1).send().await.expect("get partNumber=1");
    assert_eq!(body_bytes(part.body).await, data);
}

#[tokio::test]
async fn empty_object_and_overwrite() {
    let (_server, s3, bucket) = Server::start_with_bucket("ow").await;

    let etag = put_bytes(&s3, &bucket, "empty", b"").await;
    assert_eq!(etag, etag_of(b""));
    let head = s3.head_object().bucket(&bucket).key("empty").send().await.expect("head empty");
    assert_eq!(head.content_length(), Some(0));
    assert!(get_bytes(&s3, &bucket, "empty").await.is_empty());

    put_bytes(&s3, &bucket, "k", b"first version").await;
    let second = random_bytes(50_000);
    put_bytes(&s3, &bucket, "k", &second).await;
    assert_eq!(get_bytes(&s3, &bucket, "k").await, second, "overwrite replaces content");
    let list = s3.list_objects_v2().bucket(&bucket).prefix("k").send().await.expect("list");
    assert_eq!(list.contents().len(), 1, "an overwritten key is listed once");
    assert_eq!(list.contents()[0].size(), Some(second.len() as i64));
}

#[tokio::test]
async fn missing_keys_and_deletes() {
    let (_server, s3, bucket) = Server::start_with_bucket("del").await;

    expect_s3_error(s3.get_object().bucket(&bucket).key("nope").send().await, 404, Some("NoSuchKey"));
    assert_no_object(&s3, &bucket, "nope").await;
    // Deleting a missing key succeeds, as in S3.
    s3.delete_object().bucket(&bucket).key("nope").send().await.expect("delete of a missing key succeeds");

    put_bytes(&s3, &bucket, "k", b"data").await;
    s3.delete_object().bucket(&bucket).key("k").send().await.expect("delete object");
    expect_s3_error(s3.get_object().bucket(&bucket).key("k").send().await, 404, Some("NoSuchKey"));
    let list = s3.list_objects_v2().bucket(&bucket).send().await.expect("list");
    assert!(list.contents().is_empty(), "deleted object still listed");
}

#[tokio::test]
async fn delete_objects_batch() {
    let (_server, s3, bucket) = Server::start_with_bucket("batch").await;
    for k in ["a", "b", "c", "d", "e"] {
        put_bytes(&s3, &bucket, k, k.as_bytes()).await;
    }
    let ids = |keys: &[&str]| {
        keys.iter().map(|k| ObjectIdentifier::builder().key(*k).build().expect("identifier")).collect::<Vec<_>>()
    };

    let out = s3
        .delete_objects()
        .bucket(&bucket)
        .delete(Delete::builder().set_objects(Some(ids(&["a", "b", "missing"]))).build().expect("delete"))
        .send()
        .await
        .expect("delete objects");
    let mut deleted: Vec<&str> = out.deleted().iter().filter_map(|d| d.key()).collect();
    deleted.sort();
    // S3 reports keys that did not exist as deleted too.
    assert_eq!(deleted, ["a", "b", "missing"]);
    assert!(out.errors().is_empty(), "errors: {:?}", out.errors());

    // Quiet mode reports only errors.
    let out = s3
        .delete_objects()
        .bucket(&bucket)
        .delete(Delete::builder().set_objects(Some(ids(&["c", "d"]))).quiet(true).build().expect("delete"))
        .send()
        .await
        .expect("quiet delete objects");
    assert!(out.deleted().is_empty(), "quiet mode lists no deleted keys: {:?}", out.deleted());
    assert!(out.errors().is_empty());

    let list = s3.list_objects_v2().bucket(&bucket).send().await.expect("list");
    let keys: Vec<&str> = list.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["e"]);
}

#[tokio::test]
async fn range_requests() {
    // 1 MiB blocks so ranges cross block boundaries.
    let (_server, s3, bucket) = Server::builder().block_size(1 << 20).start_with_bucket("range").await;
    let small = random_bytes(1000);
    let big = random_bytes(2_500_000);
    put_bytes(&s3, &bucket, "small", &small).await;
    put_bytes(&s3, &bucket, "big", &big).await;

    let cases: [(&str, &[u8], &str, std::ops::Range<usize>); 7] = [
        ("small", &small, "bytes=0-0", 0..1),
        ("small", &small, "bytes=10-19", 10..20),
        ("small", &small, "bytes=-5", 995..1000),
        ("small", &small, "bytes=990-5000", 990..1000),
        ("big", &big, "bytes=1048570-1048585", 1_048_570..1_048_586),
        ("big", &big, "bytes=1000000-2200000", 1_000_000..2_200_001),
        ("big", &big, "bytes=2000000-", 2_000_000..2_500_000),
    ];
    for (key, data, range, want) in cases {
        let out = s3
            .get_object()
            .bucket(&bucket)
            .key(key)
            .range(range)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{key} {range}: {e:?}"));
        let expected_cr = format!("bytes {}-{}/{}", want.start, want.end - 1, data.len());
        assert_eq!(out.content_range(), Some(expected_cr.as_str()), "{key} {range}");
        assert_eq!(out.content_length(), Some(want.len() as i64), "{key} {range}");
        assert_eq!(body_bytes(out.body).await, &data[want.clone()], "{key} {range}");
    }

    expect_s3_error(
        s3.get_object().bucket(&bucket).key("small").range("bytes=5000-6000").send().await,
        416,
        Some("InvalidRange"),
    );
}

#[tokio::test]
async fn conditional_get_and_head() {
    let (_server, s3, bucket) = Server::start_with_bucket("cond").await;
    let data = b"conditional body";
    let etag = put_bytes(&s3, &bucket, "k", data).await;
    let (past, future) = hour_around_last_modified(&s3, &bucket, "k").await;
    let get = || s3.get_object().bucket(&bucket).key("k");

    // Passing conditions return the object.
    for req in [
        get().if_match(&etag),
        get().if_none_match("\"0123456789abcdef0123456789abcdef\""),
        get().if_modified_since(past),
        get().if_unmodified_since(future),
    ] {
        let out = req.send().await.expect("condition should pass");
        assert_eq!(body_bytes(out.body).await, data);
    }

    // Failing conditions.
    expect_s3_error(get().if_match("\"wrong\"").send().await, 412, Some("PreconditionFailed"));
    expect_s3_error(get().if_unmodified_since(past).send().await, 412, Some("PreconditionFailed"));
    expect_s3_error(get().if_none_match(&etag).send().await, 304, None);
    expect_s3_error(get().if_none_match("*").send().await, 304, None);
    expect_s3_error(get().if_modified_since(future).send().await, 304, None);

    let head = || s3.head_object().bucket(&bucket).key("k");
    expect_s3_error(head().if_match("\"wrong\"").send().await, 412, None);
    expect_s3_error(head().if_none_match(&etag).send().await, 304, None);
    head().if_match(&etag).send().await.expect("HEAD If-Match with the right ETag");
}

#[tokio::test]
async fn copy_object_metadata_directives() {
    let (_server, s3, src_bucket) = Server::start_with_bucket("src").await;
    let dst_bucket = new_bucket(&s3, "dst").await;
    let data = random_bytes(20_000);
    s3.put_object()
        .bucket(&src_bucket)
        .key("src key")
        .body(ByteStream::from(data.clone()))
        .content_type("text/x-original")
        .metadata("origin", "source")
        .send()
        .await
        .expect("put source");
    // copy-source is URL-encoded "bucket/key".
    let source = format!("{src_bucket}/src%20key");

    let copy = s3
        .copy_object()
        .bucket(&dst_bucket)
        .key("copied")
        .copy_source(&source)
        .send()
        .await
        .expect("copy with COPY directive");
    assert_eq!(
        copy.copy_object_result().and_then(|r| r.e_tag()),
        Some(etag_of(&data).as_str()),
        "copy of a single-part object keeps the MD5 ETag"
    );
    let got = s3.get_object().bucket(&dst_bucket).key("copied").send().await.expect("get copy");
    assert_eq!(got.content_type(), Some("text/x-original"), "COPY keeps Content-Type");
    assert_eq!(got.metadata().and_then(|m| m.get("origin")).map(String::as_str), Some("source"));
    assert_eq!(body_bytes(got.body).await, data);

    s3.copy_object()
        .bucket(&dst_bucket)
        .key("replaced")
        .copy_source(&source)
        .metadata_directive(MetadataDirective::Replace)
        .content_type("text/x-new")
        .metadata("origin", "replaced")
        .send()
        .await
        .expect("copy with REPLACE directive");
    let got = s3.get_object().bucket(&dst_bucket).key("replaced").send().await.expect("get replaced");
    assert_eq!(got.content_type(), Some("text/x-new"));
    let meta = got.metadata().cloned().unwrap_or_default();
    assert_eq!(meta.get("origin").map(String::as_str), Some("replaced"));
    assert_eq!(body_bytes(got.body).await, data);

    // Self-copy with REPLACE is how clients update metadata in place.
    s3.copy_object()
        .bucket(&src_bucket)
        .key("src key")
        .copy_source(&source)
        .metadata_directive(MetadataDirective::Replace)
        .metadata("origin", "updated")
        .send()
        .await
        .expect("self copy with REPLACE");
    let head = s3.head_object().bucket(&src_bucket).key("src key").send().await.expect("head");
    assert_eq!(head.metadata().and_then(|m| m.get("origin")).map(String::as_str), Some("updated"));
    assert_eq!(get_bytes(&s3, &src_bucket, "src key").await, data, "self copy keeps the data");

    expect_s3_error(
        s3.copy_object().bucket(&dst_bucket).key("x").copy_source(format!("{src_bucket}/missing")).send().await,
        404,
        Some("NoSuchKey"),
    );
}

#[tokio::test]
async fn copy_object_source_conditions() {
    let (_server, s3, bucket) = Server::start_with_bucket("copycond").await;
    let etag = put_bytes(&s3, &bucket, "src", b"source data").await;
    let (past, future) = hour_around_last_modified(&s3, &bucket, "src").await;
    let source = format!("{bucket}/src");
    let copy = || s3.copy_object().bucket(&bucket).key("dst").copy_source(&source);

    for (what, req) in [
        ("if-match wrong", copy().copy_source_if_match("\"wrong\"")),
        ("if-none-match current", copy().copy_source_if_none_match(&etag)),
        ("if-modified-since future", copy().copy_source_if_modified_since(future)),
        ("if-unmodified-since past", copy().copy_source_if_unmodified_since(past)),
    ] {
        let err = req.send().await.expect_err(what);
        assert_eq!(err_status(&err), Some(412), "{what}: {err:?}");
        assert_eq!(err_code(&err).as_deref(), Some("PreconditionFailed"), "{what}: {err:?}");
    }
    assert_no_object(&s3, &bucket, "dst").await;

    copy()
        .copy_source_if_match(&etag)
        .copy_source_if_unmodified_since(future)
        .send()
        .await
        .expect("copy with passing conditions");
    assert_eq!(get_bytes(&s3, &bucket, "dst").await, b"source data");
}

#[tokio::test]
async fn content_md5_is_verified() {
    digest_header_is_verified(
        "md5",
        "Content-MD5",
        |put, data| put.content_md5(content_md5(data)),
        b"payload with a digest",
        b"something else",
    )
    .await;
}

#[tokio::test]
async fn wrong_checksum_header_is_bad_digest() {
    digest_header_is_verified(
        "crc",
        "x-amz-checksum-crc32",
        |put, data| put.checksum_crc32(sigv4::crc32_base64(data)),
        b"checksummed payload",
        b"other",
    )
    .await;
}

#[tokio::test]
async fn keys_with_special_characters_round_trip() {
    let (_server, s3, bucket) = Server::start_with_bucket("keys").await;
    let keys = [
        "with space.txt",
        "unicode/ünïcødé-文字.txt",
        "plus+sign",
        "percent%20literal",
        "a/../b",
        "./dot",
        "trailing/",
        "semi;colon&and=eq?q#hash",
        "very/deep/path/to/some/object",
    ];
    for (i, key) in keys.iter().enumerate() {
        put_bytes(&s3, &bucket, key, format!("value {i}").as_bytes()).await;
    }
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(get_bytes(&s3, &bucket, key).await, format!("value {i}").as_bytes(), "{key}");
    }
    let list = s3.list_objects_v2().bucket(&bucket).send().await.expect("list");
    let mut listed: Vec<&str> = list.contents().iter().filter_map(|o| o.key()).collect();
    let mut expected = keys.to_vec();
    expected.sort();
    listed.sort();
    assert_eq!(listed, expected);
}

#[tokio::test]
async fn error_responses_are_s3_xml_with_request_id() {
    let (server, _s3, bucket) = Server::start_with_bucket("xml").await;

    let mut req = server.raw_request("GET", &encode_path(&bucket, "missing"));
    server.sign_now(&mut req, &sha256_hex(b""));
    let resp = server.send_raw(&req).await;
    assert_eq!(resp.status().as_u16(), 404);
    let header_id = resp
        .headers()
        .get("x-amz-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .expect("x-amz-request-id header");
    assert!(!header_id.is_empty());
    let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert!(content_type.contains("xml"), "error Content-Type is XML, got {content_type:?}");
    let body = resp.text().await.expect("body");
    assert!(body.contains("<Error>"), "body: {body}");
    assert_eq!(xml_value(&body, "Code").as_deref(), Some("NoSuchKey"), "body: {body}");
    assert_eq!(xml_value(&body, "RequestId").as_deref(), Some(header_id.as_str()), "body: {body}");

    // Each request gets its own id.
    let again = server.send_raw(&req).await;
    let id2 = again.headers().get("x-amz-request-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert_ne!(id2, header_id, "request ids should be unique");
}
