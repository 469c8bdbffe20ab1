//! Multipart uploads: create/upload/copy/complete/abort/list and their errors.

use aws_sdk_s3::primitives::ByteStream;
use hangar_integration_tests::sigv4::{encode_path, sha256_hex};
use hangar_integration_tests::*;

const MIB: usize = 1 << 20;
/// S3's minimum size for every part but the last.
const MIN_PART: usize = 5 * MIB;

#[tokio::test]
async fn multipart_upload_round_trip() {
    let (_server, s3, bucket) = Server::start_with_bucket("mpu").await;
    let key = "big/object.bin";
    let parts = [random_bytes(MIN_PART), random_bytes(MIN_PART + 17), random_bytes(1234)];

    let upload_id = {
        let out = s3
            .create_multipart_upload()
            .bucket(&bucket)
            .key(key)
            .content_type("application/x-multipart-test")
            .metadata("kind", "multipart")
            .send()
            .await
            .expect("create multipart upload");
        out.upload_id().expect("upload id").to_string()
    };

    // Parts may arrive in any order.
    let e3 = upload_part(&s3, &bucket, key, &upload_id, 3, &parts[2]).await;
    let e1 = upload_part(&s3, &bucket, key, &upload_id, 1, &parts[0]).await;
    let e2 = upload_part(&s3, &bucket, key, &upload_id, 2, &parts[1]).await;

    let listed = s3.list_parts().bucket(&bucket).key(key).upload_id(&upload_id).send().await.expect("list parts");
    let summary: Vec<(i32, i64, String)> = listed
        .parts()
        .iter()
        .map(|p| (p.part_number().unwrap_or(0), p.size().unwrap_or(-1), p.e_tag().unwrap_or("").to_string()))
        .collect();
    assert_eq!(
        summary,
        [
            (1, parts[0].len() as i64, e1.clone()),
            (2, parts[1].len() as i64, e2.clone()),
            (3, parts[2].len() as i64, e3.clone())
        ]
    );

    let uploads = s3.list_multipart_uploads().bucket(&bucket).send().await.expect("list multipart uploads");
    assert!(
        uploads.uploads().iter().any(|u| u.upload_id() == Some(upload_id.as_str()) && u.key() == Some(key)),
        "upload not listed: {:?}",
        uploads.uploads()
    );
    // The object does not exist until completion.
    assert_no_object(&s3, &bucket, key).await;

    let done = complete_upload(&s3, &bucket, key, &upload_id, &[(1, &e1), (2, &e2), (3, &e3)])
        .send()
        .await
        .expect("complete multipart upload");
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    let expected_etag = multipart_etag(&refs);
    assert_eq!(done.e_tag(), Some(expected_etag.as_str()), "multipart ETag");

    let whole: Vec<u8> = parts.concat();
    let got = s3.get_object().bucket(&bucket).key(key).send().await.expect("get");
    assert_eq!(got.e_tag(), Some(expected_etag.as_str()));
    assert_eq!(got.content_length(), Some(whole.len() as i64));
    assert_eq!(got.content_type(), Some("application/x-multipart-test"));
    assert_eq!(got.metadata().and_then(|m| m.get("kind")).map(String::as_str), Some("multipart"));
    assert!(body_bytes(got.body).await == whole, "multipart object content differs");

    // GET ?partNumber=N returns exactly that part.
    for (i, part) in parts.iter().enumerate() {
        let n = i as i32 + 1;
        let out = s3
            .get_object()
            .bucket(&bucket)
            .key(key)
            .part_number(n)
            .send()
            .await
            .unwrap_or_else(|e| panic!("part {n}: {e:?}"));
        assert_eq!(out.parts_count(), Some(3), "x-amz-mp-parts-count");
        assert_eq!(out.content_length(), Some(part.len() as i64), "part {n} length");
        assert!(body_bytes(out.body).await == *part, "part {n} content differs");
    }
    // A range inside a multipart object crossing the part 1/2 boundary.
    let out = s3
        .get_object()
        .bucket(&bucket)
        .key(key)
        .range(format!("bytes={}-{}", MIN_PART - 10, MIN_PART + 9))
        .send()
        .await
        .expect("range across parts");
    assert_eq!(body_bytes(out.body).await, &whole[MIN_PART - 10..MIN_PART + 10]);

    let uploads = s3.list_multipart_uploads().bucket(&bucket).send().await.expect("list multipart uploads");
    assert!(uploads.uploads().is_empty(), "completed upload still listed: {:?}", uploads.uploads());
    expect_s3_error(
        s3.list_parts().bucket(&bucket).key(key).upload_id(&upload_id).send().await,
        404,
        Some("NoSuchUpload"),
    );
}

#[tokio::test]
async fn reuploading_a_part_replaces_it() {
    let (_server, s3, bucket) = Server::start_with_bucket("mpu").await;
    let id = create_upload(&s3, &bucket, "k").await;
    upload_part(&s3, &bucket, "k", &id, 1, b"first attempt").await;
    let etag = upload_part(&s3, &bucket, "k", &id, 1, b"second attempt").await;
    let parts = s3.list_parts().bucket(&bucket).key("k").upload_id(&id).send().await.expect("list parts");
    assert_eq!(parts.parts().len(), 1);
    complete_upload(&s3, &bucket, "k", &id, &[(1, &etag)]).send().await.expect("complete");
    let got = s3.get_object().bucket(&bucket).key("k").send().await.expect("get");
    assert_eq!(body_bytes(got.body).await, b"second attempt");
}

#[tokio::test]
async fn abort_multipart_upload() {
    let (_server, s3, bucket) = Server::start_with_bucket("mpu").await;
    let id = create_upload(&s3, &bucket, "k").await;
    let etag = upload_part(&s3, &bucket, "k", &id, 1, b"part data").await;

    s3.abort_multipart_upload().bucket(&bucket).key("k").upload_id(&id).send().await.expect("abort");
    let uploads = s3.list_multipart_uploads().bucket(&bucket).send().await.expect("list uploads");
    assert!(uploads.uploads().is_empty(), "aborted upload still listed");

    expect_s3_error(
        s3.upload_part()
            .bucket(&bucket)
            .key("k")
            .upload_id(&id)
            .part_number(2)
            .body(ByteStream::from_static(b"late"))
            .send()
            .await,
        404,
        Some("NoSuchUpload"),
    );
    expect_s3_error(complete_upload(&s3, &bucket, "k", &id, &[(1, &etag)]).send().await, 404, Some("NoSuchUpload"));
    expect_s3_error(
        s3.abort_multipart_upload().bucket(&bucket).key("k").upload_id(&id).send().await,
        404,
        Some("NoSuchUpload"),
    );
    assert_no_object(&s3, &bucket, "k").await;
    expect_s3_error(
        s3.list_parts().bucket(&bucket).key("k").upload_id("bogus-upload-id").send().await,
        404,
        Some("NoSuchUpload"),
    );
}

#[tokio::test]
async fn small_non_last_part_is_entity_too_small() {
    let (_server, s3, bucket) = Server::start_with_bucket("mpu").await;
    let id = create_upload(&s3, &bucket, "k").await;
    let e1 = upload_part(&s3, &bucket, "k", &id, 1, &random_bytes(MIB)).await;
    let e2 = upload_part(&s3, &bucket, "k", &id, 2, &random_bytes(MIB)).await;
    expect_s3_error(
        complete_upload(&s3, &bucket, "k", &id, &[(1, &e1), (2, &e2)]).send().await,
        400,
        Some("EntityTooSmall"),
    );
    assert_no_object(&s3, &bucket, "k").await;
}

#[tokio::test]
async fn invalid_part_and_part_order() {
    let (_server, s3, bucket) = Server::start_with_bucket("mpu").await;
    let id = create_upload(&s3, &bucket, "k").await;
    let p1 = random_bytes(MIN_PART);
    // Both parts are full-size so that only the listed order can be wrong.
    let p2 = random_bytes(MIN_PART);
    let e1 = upload_part(&s3, &bucket, "k", &id, 1, &p1).await;
    let e2 = upload_part(&s3, &bucket, "k", &id, 2, &p2).await;
    let complete = |parts: &[(i32, &str)]| complete_upload(&s3, &bucket, "k", &id, parts).send();

    // Part 3 was never uploaded.
    expect_s3_error(complete(&[(1, &e1), (3, &e2)]).await, 400, Some("InvalidPart"));
    // Right number, wrong ETag.
    expect_s3_error(complete(&[(1, &e1), (2, "\"00000000000000000000000000000000\"")]).await, 400, Some("InvalidPart"));
    expect_s3_error(complete(&[(2, &e2), (1, &e1)]).await, 400, Some("InvalidPartOrder"));

    // The failures left the upload usable.
    let done = complete(&[(1, &e1), (2, &e2)]).await.expect("complete after errors");
    assert_eq!(done.e_tag(), Some(multipart_etag(&[&p1, &p2]).as_str()));
}

#[tokio::test]
async fn upload_part_copy_with_ranges() {
    let (_server, s3, bucket) = Server::start_with_bucket("mpu").await;
    let source = random_bytes(MIN_PART + 300);
    let small_source = b"small whole-object source".to_vec();
    put_bytes(&s3, &bucket, "src", &source).await;
    put_bytes(&s3, &bucket, "small src", &small_source).await;

    let id = create_upload(&s3, &bucket, "dst").await;
    let copy_part = |n: i32, src: &str, range: Option<String>| {
        s3.upload_part_copy()
            .bucket(&bucket)
            .key("dst")
            .upload_id(&id)
            .part_number(n)
            .copy_source(format!("{bucket}/{src}"))
            .set_copy_source_range(range)
            .send()
    };
    // Every part but the last must be >= 5 MiB, so the two ranged copies
    // overlap: the first and the last 5 MiB of the source.
    let r1 = (0, MIN_PART - 1);
    let r2 = (source.len() - MIN_PART, source.len() - 1);
    let c1 = copy_part(1, "src", Some(format!("bytes={}-{}", r1.0, r1.1))).await.expect("copy part 1");
    let c2 = copy_part(2, "src", Some(format!("bytes={}-{}", r2.0, r2.1))).await.expect("copy part 2");
    let c3 = copy_part(3, "small%20src", None).await.expect("copy part 3 (whole object)");

    let etag = |out: &aws_sdk_s3::operation::upload_part_copy::UploadPartCopyOutput| {
        out.copy_part_result().and_then(|r| r.e_tag()).expect("copy part ETag").to_string()
    };
    let (e1, e2, e3) = (etag(&c1), etag(&c2), etag(&c3));
    assert_eq!(e1, etag_of(&source[r1.0..=r1.1]), "copied part ETag is the MD5 of the range");
    assert_eq!(e2, etag_of(&source[r2.0..=r2.1]), "copied part ETag is the MD5 of the range");
    assert_eq!(e3, etag_of(&small_source));

    let done =
        complete_upload(&s3, &bucket, "dst", &id, &[(1, &e1), (2, &e2), (3, &e3)]).send().await.expect("complete");
    let pieces = [&source[r1.0..=r1.1], &source[r2.0..=r2.1], small_source.as_slice()];
    assert_eq!(done.e_tag(), Some(multipart_etag(&pieces).as_str()));
    let expected = pieces.concat();
    let got = s3.get_object().bucket(&bucket).key("dst").send().await.expect("get");
    assert!(body_bytes(got.body).await == expected, "UploadPartCopy result differs");

    // A range past the end of the source is rejected.
    let id2 = create_upload(&s3, &bucket, "dst2").await;
    let bad = s3
        .upload_part_copy()
        .bucket(&bucket)
        .key("dst2")
        .upload_id(&id2)
        .part_number(1)
        .copy_source(format!("{bucket}/small%20src"))
        .copy_source_range("bytes=0-99999")
        .send()
        .await;
    let err = bad.expect_err("out-of-range copy source range");
    assert!(matches!(err_status(&err), Some(400 | 416)), "{err:?}");
}

#[tokio::test]
async fn list_multipart_uploads_with_prefix() {
    let (_server, s3, bucket) = Server::start_with_bucket("mpu").await;
    let a1 = create_upload(&s3, &bucket, "logs/a").await;
    let a2 = create_upload(&s3, &bucket, "logs/a").await;
    let b = create_upload(&s3, &bucket, "data/b").await;
    assert_ne!(a1, a2, "each upload has its own id");

    let all = s3.list_multipart_uploads().bucket(&bucket).send().await.expect("list uploads");
    let mut ids: Vec<&str> = all.uploads().iter().filter_map(|u| u.upload_id()).collect();
    ids.sort();
    let mut want = vec![a1.as_str(), a2.as_str(), b.as_str()];
    want.sort();
    assert_eq!(ids, want);

    let logs = s3.list_multipart_uploads().bucket(&bucket).prefix("logs/").send().await.expect("list logs/");
    assert_eq!(logs.uploads().len(), 2);
    assert!(logs.uploads().iter().all(|u| u.key() == Some("logs/a")));
}

#[tokio::test]
async fn complete_with_malformed_xml() {
    let (server, s3, bucket) = Server::start_with_bucket("mpu").await;
    let id = create_upload(&s3, &bucket, "k").await;
    let etag = upload_part(&s3, &bucket, "k", &id, 1, b"only part").await;

    for garbage in [&b"<CompleteMultipartUpload><Part><PartNumber>1"[..], b"this is not xml at all", b"\x00\xff\xfe"] {
        let req = server.raw_request("POST", &encode_path(&bucket, "k")).query("uploadId", &id).body(garbage);
        let (status, body) = status_and_body(server.send_signed(req, &sha256_hex(garbage)).await).await;
        assert_eq!(status, 400, "garbage {garbage:?}: {body}");
        assert_eq!(xml_value(&body, "Code").as_deref(), Some("MalformedXML"), "garbage {garbage:?}: {body}");
    }

    // The upload survives bad requests.
    complete_upload(&s3, &bucket, "k", &id, &[(1, &etag)]).send().await.expect("complete after malformed attempts");
}
