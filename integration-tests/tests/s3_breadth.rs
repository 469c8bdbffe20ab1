//! S3 features beyond objects and buckets, through the `aws-sdk-s3` crate: object and
//! bucket tags, ACLs, the answers clients get for bucket settings Hangar does not have,
//! conditional writes, GetObjectAttributes and the smaller behaviours real clients rely on
//! (304 validators, partNumber errors, empty delimiters).

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    AccessControlPolicy, BucketCannedAcl, BucketVersioningStatus, Grant, Grantee, ObjectAttributes, ObjectCannedAcl,
    Permission, Tag, Tagging, TaggingDirective, Type, VersioningConfiguration,
};
use hangar_integration_tests::sigv4::{UNSIGNED_PAYLOAD, encode_path};
use hangar_integration_tests::*;

fn tagging(pairs: &[(&str, &str)]) -> Tagging {
    let tags = pairs.iter().map(|(k, v)| Tag::builder().key(*k).value(*v).build().expect("tag")).collect();
    Tagging::builder().set_tag_set(Some(tags)).build().expect("tagging")
}

async fn object_tags(s3: &Client, bucket: &str, key: &str) -> Vec<(String, String)> {
    let out = s3.get_object_tagging().bucket(bucket).key(key).send().await.expect("get object tagging");
    out.tag_set().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The x-amz-tagging-count header of a HEAD (the SDK's HeadObject output has no field).
async fn head_tag_count(server: &Server, bucket: &str, key: &str) -> Option<String> {
    let req = server.raw_request("HEAD", &encode_path(bucket, key));
    let resp = server.send_signed(req, UNSIGNED_PAYLOAD).await;
    assert_eq!(resp.status().as_u16(), 200);
    resp.headers().get("x-amz-tagging-count").map(|v| v.to_str().expect("ascii").to_string())
}

#[tokio::test]
async fn object_tags_travel_with_put_copy_and_multipart_within_aws_limits() {
    let (server, s3, bucket) = Server::start_with_bucket("tags").await;
    let data = random_bytes(3000);
    s3.put_object()
        .bucket(&bucket)
        .key("t")
        .tagging("project=blue&owner=two%20words")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .expect("put with tags");
    assert_eq!(object_tags(&s3, &bucket, "t").await, pairs(&[("project", "blue"), ("owner", "two words")]));
    let got = s3.get_object().bucket(&bucket).key("t").send().await.expect("get");
    assert_eq!(got.tag_count(), Some(2), "GET carries x-amz-tagging-count");
    assert_eq!(head_tag_count(&server, &bucket, "t").await.as_deref(), Some("2"), "HEAD too");

    // Replaced, then removed; the data stays as it was.
    s3.put_object_tagging()
        .bucket(&bucket)
        .key("t")
        .tagging(tagging(&[("a", "1"), ("b", ""), ("c", "3")]))
        .send()
        .await
        .expect("put object tagging");
    assert_eq!(object_tags(&s3, &bucket, "t").await, pairs(&[("a", "1"), ("b", ""), ("c", "3")]));
    s3.delete_object_tagging().bucket(&bucket).key("t").send().await.expect("delete object tagging");
    assert!(object_tags(&s3, &bucket, "t").await.is_empty());
    assert_eq!(head_tag_count(&server, &bucket, "t").await, None, "no tags, no count");
    assert_eq!(get_bytes(&s3, &bucket, "t").await, data);

    // Copies keep the source's tags unless told to replace them.
    s3.put_object_tagging().bucket(&bucket).key("t").tagging(tagging(&[("src", "yes")])).send().await.expect("tag");
    s3.copy_object().bucket(&bucket).key("kept").copy_source(format!("{bucket}/t")).send().await.expect("copy");
    assert_eq!(object_tags(&s3, &bucket, "kept").await, pairs(&[("src", "yes")]));
    s3.copy_object()
        .bucket(&bucket)
        .key("replaced")
        .copy_source(format!("{bucket}/t"))
        .tagging_directive(TaggingDirective::Replace)
        .tagging("new=1")
        .send()
        .await
        .expect("copy replacing tags");
    assert_eq!(object_tags(&s3, &bucket, "replaced").await, pairs(&[("new", "1")]));

    // A new PUT of the key starts without tags.
    put_bytes(&s3, &bucket, "t", b"again").await;
    assert!(object_tags(&s3, &bucket, "t").await.is_empty());

    // Multipart uploads give the completed object the tags of their creation.
    let out =
        s3.create_multipart_upload().bucket(&bucket).key("mp").tagging("part=of-it").send().await.expect("create");
    let id = out.upload_id().expect("upload id").to_string();
    let etag = upload_part(&s3, &bucket, "mp", &id, 1, &random_bytes(1000)).await;
    complete_upload(&s3, &bucket, "mp", &id, &[(1, &etag)]).send().await.expect("complete");
    assert_eq!(object_tags(&s3, &bucket, "mp").await, pairs(&[("part", "of-it")]));

    // AWS's limits and errors.
    let eleven: Vec<(String, String)> = (0..11).map(|i| (format!("k{i}"), "v".to_string())).collect();
    let eleven: Vec<(&str, &str)> = eleven.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let too_many = s3.put_object_tagging().bucket(&bucket).key("t").tagging(tagging(&eleven)).send().await;
    expect_s3_error(too_many, 400, Some("BadRequest"));
    let long_key = "k".repeat(129);
    for bad in [vec![("a", "1"), ("a", "2")], vec![(long_key.as_str(), "v")], vec![("aws:reserved", "v")]] {
        let r = s3.put_object_tagging().bucket(&bucket).key("t").tagging(tagging(&bad)).send().await;
        expect_s3_error(r, 400, Some("InvalidTag"));
    }
    let long_value = "v".repeat(257);
    let r =
        s3.put_object().bucket(&bucket).key("n").tagging(format!("k={long_value}")).body(b"x".to_vec().into()).send();
    expect_s3_error(r.await, 400, Some("InvalidTag"));
    assert_no_object(&s3, &bucket, "n").await;
    let missing = s3.put_object_tagging().bucket(&bucket).key("nope").tagging(tagging(&[("a", "b")])).send().await;
    expect_s3_error(missing, 404, Some("NoSuchKey"));
    expect_s3_error(s3.get_object_tagging().bucket(&bucket).key("nope").send().await, 404, Some("NoSuchKey"));
}

#[tokio::test]
async fn bucket_tags_are_set_read_and_removed() {
    let (_server, s3, bucket) = Server::start_with_bucket("btags").await;
    expect_s3_error(s3.get_bucket_tagging().bucket(&bucket).send().await, 404, Some("NoSuchTagSet"));
    s3.put_bucket_tagging()
        .bucket(&bucket)
        .tagging(tagging(&[("team", "storage"), ("cost", "42")]))
        .send()
        .await
        .expect("put bucket tagging");
    let got = s3.get_bucket_tagging().bucket(&bucket).send().await.expect("get bucket tagging");
    let got: Vec<_> = got.tag_set().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect();
    assert_eq!(got, pairs(&[("team", "storage"), ("cost", "42")]));

    let fifty_one: Vec<(String, String)> = (0..51).map(|i| (format!("k{i}"), "v".to_string())).collect();
    let fifty_one: Vec<(&str, &str)> = fifty_one.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = s3.put_bucket_tagging().bucket(&bucket).tagging(tagging(&fifty_one)).send().await;
    expect_s3_error(r, 400, Some("BadRequest"));
    let fifty = &fifty_one[..50];
    s3.put_bucket_tagging().bucket(&bucket).tagging(tagging(fifty)).send().await.expect("50 bucket tags");
    assert_eq!(s3.get_bucket_tagging().bucket(&bucket).send().await.expect("get").tag_set().len(), 50);

    s3.delete_bucket_tagging().bucket(&bucket).send().await.expect("delete bucket tagging");
    expect_s3_error(s3.get_bucket_tagging().bucket(&bucket).send().await, 404, Some("NoSuchTagSet"));
}

#[tokio::test]
async fn acls_read_as_private_and_only_private_is_accepted() {
    let (_server, s3, bucket) = Server::start_with_bucket("acl").await;
    let acl = s3.get_bucket_acl().bucket(&bucket).send().await.expect("get bucket acl");
    let owner = acl.owner().and_then(|o| o.id()).expect("owner id").to_string();
    assert_eq!(acl.grants().len(), 1);
    let g = &acl.grants()[0];
    assert_eq!(g.permission(), Some(&Permission::FullControl));
    assert_eq!(g.grantee().and_then(|e| e.id()), Some(owner.as_str()));

    s3.put_bucket_acl().bucket(&bucket).acl(BucketCannedAcl::Private).send().await.expect("private bucket acl");
    let r = s3.put_bucket_acl().bucket(&bucket).acl(BucketCannedAcl::PublicRead).send().await;
    expect_s3_error(r, 400, Some("AccessControlListNotSupported"));
    let r = s3.create_bucket().bucket(bucket_name("aclpub")).acl(BucketCannedAcl::PublicRead).send().await;
    expect_s3_error(r, 400, Some("AccessControlListNotSupported"));

    // Objects: `private` goes through, anything else stores nothing.
    s3.put_object()
        .bucket(&bucket)
        .key("o")
        .acl(ObjectCannedAcl::Private)
        .body(b"x".to_vec().into())
        .send()
        .await
        .expect("private put");
    let r = s3
        .put_object()
        .bucket(&bucket)
        .key("p")
        .acl(ObjectCannedAcl::PublicRead)
        .body(b"x".to_vec().into())
        .send()
        .await;
    expect_s3_error(r, 400, Some("AccessControlListNotSupported"));
    assert_no_object(&s3, &bucket, "p").await;
    let r = s3
        .put_object()
        .bucket(&bucket)
        .key("p")
        .grant_read("uri=\"http://acs.amazonaws.com/groups/global/AllUsers\"")
        .body(b"x".to_vec().into())
        .send()
        .await;
    expect_s3_error(r, 400, Some("AccessControlListNotSupported"));

    let oacl = s3.get_object_acl().bucket(&bucket).key("o").send().await.expect("get object acl");
    assert_eq!(oacl.grants()[0].permission(), Some(&Permission::FullControl));
    expect_s3_error(s3.get_object_acl().bucket(&bucket).key("nope").send().await, 404, Some("NoSuchKey"));
    // A body that grants only the owner is `private` too; one that grants others is refused.
    let grant = |id: &str| {
        Grant::builder()
            .grantee(Grantee::builder().r#type(Type::CanonicalUser).id(id).build().expect("grantee"))
            .permission(Permission::FullControl)
            .build()
    };
    let policy = |id: &str| {
        AccessControlPolicy::builder()
            .owner(aws_sdk_s3::types::Owner::builder().id(&owner).build())
            .grants(grant(id))
            .build()
    };
    s3.put_object_acl()
        .bucket(&bucket)
        .key("o")
        .access_control_policy(policy(&owner))
        .send()
        .await
        .expect("owner-only body");
    let r = s3.put_object_acl().bucket(&bucket).key("o").access_control_policy(policy("someone-else")).send().await;
    expect_s3_error(r, 400, Some("AccessControlListNotSupported"));
}

#[tokio::test]
async fn settings_hangar_lacks_answer_as_aws_does_for_a_bucket_without_them() {
    let (_server, s3, bucket) = Server::start_with_bucket("answers").await;
    let v = s3.get_bucket_versioning().bucket(&bucket).send().await.expect("get versioning");
    assert_eq!(v.status(), None, "never enabled: no Status");
    let enable = VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build();
    let r = s3.put_bucket_versioning().bucket(&bucket).versioning_configuration(enable).send().await;
    let e = expect_s3_error(r, 501, Some("NotImplemented"));
    assert!(format!("{e:?}").contains("versioning"), "the message says what is missing: {e:?}");
    let suspend = VersioningConfiguration::builder().status(BucketVersioningStatus::Suspended).build();
    s3.put_bucket_versioning().bucket(&bucket).versioning_configuration(suspend).send().await.expect("suspend");

    let r = s3.get_bucket_encryption().bucket(&bucket).send().await;
    expect_s3_error(r, 404, Some("ServerSideEncryptionConfigurationNotFoundError"));
    expect_s3_error(s3.get_bucket_policy().bucket(&bucket).send().await, 404, Some("NoSuchBucketPolicy"));
    let r = s3.get_object_lock_configuration().bucket(&bucket).send().await;
    expect_s3_error(r, 404, Some("ObjectLockConfigurationNotFoundError"));
    let r = s3.get_public_access_block().bucket(&bucket).send().await;
    expect_s3_error(r, 404, Some("NoSuchPublicAccessBlockConfiguration"));
    let r = s3.put_bucket_policy().bucket(&bucket).policy("{}").send().await;
    expect_s3_error(r, 501, Some("NotImplemented"));
    // And on a bucket that does not exist, the bucket's absence comes first.
    let r = s3.get_bucket_encryption().bucket("no-such-bucket-here").send().await;
    expect_s3_error(r, 404, Some("NoSuchBucket"));
}

#[tokio::test]
async fn conditional_writes_on_put_and_complete() {
    let (_server, s3, bucket) = Server::start_with_bucket("cond").await;
    let first = s3.put_object().bucket(&bucket).key("k").if_none_match("*").body(b"first".to_vec().into()).send();
    let etag = first.await.expect("create if absent").e_tag().expect("etag").to_string();
    let again = s3.put_object().bucket(&bucket).key("k").if_none_match("*").body(b"second".to_vec().into()).send();
    expect_s3_error(again.await, 412, Some("PreconditionFailed"));
    assert_eq!(get_bytes(&s3, &bucket, "k").await, b"first");

    let wrong = s3.put_object().bucket(&bucket).key("k").if_match("\"0123\"").body(b"x".to_vec().into()).send();
    expect_s3_error(wrong.await, 412, Some("PreconditionFailed"));
    let absent = s3.put_object().bucket(&bucket).key("absent").if_match(&etag).body(b"x".to_vec().into()).send();
    expect_s3_error(absent.await, 404, Some("NoSuchKey"));
    s3.put_object()
        .bucket(&bucket)
        .key("k")
        .if_match(&etag)
        .body(b"third".to_vec().into())
        .send()
        .await
        .expect("if-match");
    assert_eq!(get_bytes(&s3, &bucket, "k").await, b"third");

    // Deleted, the key can be created again.
    s3.delete_object().bucket(&bucket).key("k").send().await.expect("delete");
    let r = s3.put_object().bucket(&bucket).key("k").if_none_match("*").body(b"fourth".to_vec().into()).send();
    r.await.expect("create again after delete");

    // CompleteMultipartUpload takes the same conditions.
    let part = random_bytes(2000);
    let id = create_upload(&s3, &bucket, "k").await;
    let etag_part = upload_part(&s3, &bucket, "k", &id, 1, &part).await;
    let r = complete_upload(&s3, &bucket, "k", &id, &[(1, &etag_part)]).if_none_match("*").send().await;
    expect_s3_error(r, 412, Some("PreconditionFailed"));
    assert_eq!(get_bytes(&s3, &bucket, "k").await, b"fourth");
    let current = s3.head_object().bucket(&bucket).key("k").send().await.expect("head");
    let r = complete_upload(&s3, &bucket, "k", &id, &[(1, &etag_part)]).if_match(current.e_tag().expect("etag")).send();
    r.await.expect("complete if-match");
    assert_eq!(get_bytes(&s3, &bucket, "k").await, part);
    let id = create_upload(&s3, &bucket, "new").await;
    let etag_part = upload_part(&s3, &bucket, "new", &id, 1, &part).await;
    complete_upload(&s3, &bucket, "new", &id, &[(1, &etag_part)]).if_none_match("*").send().await.expect("new");
}

#[tokio::test]
async fn attributes_validators_part_numbers_and_empty_delimiters() {
    let (_server, s3, bucket) = Server::start_with_bucket("gaps").await;
    let data = random_bytes(5000);
    let etag = put_bytes(&s3, &bucket, "single", &data).await;

    // A 304 carries the validators.
    let r = s3.get_object().bucket(&bucket).key("single").if_none_match(&etag).send().await;
    let e = expect_s3_error(r, 304, None);
    let headers = e.raw_response().expect("response").headers();
    assert_eq!(headers.get("etag"), Some(etag.as_str()), "304 carries the ETag");
    assert!(headers.get("last-modified").is_some_and(|v| v.ends_with("GMT")), "304 carries Last-Modified");

    // partNumber: 1 is the whole single-part object; others are 400 InvalidPartNumber.
    let one = s3.get_object().bucket(&bucket).key("single").part_number(1).send().await.expect("part 1");
    assert_eq!(one.content_length(), Some(5000));
    let r = s3.get_object().bucket(&bucket).key("single").part_number(2).send().await;
    expect_s3_error(r, 400, Some("InvalidPartNumber"));
    let (a, b) = (random_bytes(5 << 20), random_bytes(1000));
    let id = create_upload(&s3, &bucket, "multi").await;
    let ea = upload_part(&s3, &bucket, "multi", &id, 1, &a).await;
    let eb = upload_part(&s3, &bucket, "multi", &id, 2, &b).await;
    complete_upload(&s3, &bucket, "multi", &id, &[(1, &ea), (2, &eb)]).send().await.expect("complete");
    let r = s3.get_object().bucket(&bucket).key("multi").part_number(3).send().await;
    expect_s3_error(r, 400, Some("InvalidPartNumber"));
    let two = s3.get_object().bucket(&bucket).key("multi").part_number(2).send().await.expect("part 2");
    assert_eq!(body_bytes(two.body).await, b);

    // GetObjectAttributes.
    let all = [
        ObjectAttributes::Etag,
        ObjectAttributes::ObjectSize,
        ObjectAttributes::StorageClass,
        ObjectAttributes::ObjectParts,
    ];
    let attrs =
        s3.get_object_attributes().bucket(&bucket).key("multi").set_object_attributes(Some(all.to_vec())).send();
    let attrs = attrs.await.expect("object attributes");
    assert_eq!(attrs.object_size(), Some((5 << 20) + 1000));
    assert_eq!(attrs.e_tag().map(|e| e.trim_matches('"')), Some(multipart_etag(&[&a, &b]).trim_matches('"')));
    let parts = attrs.object_parts().expect("object parts");
    assert_eq!(parts.total_parts_count(), Some(2));
    let sizes: Vec<_> = parts.parts().iter().map(|p| (p.part_number(), p.size())).collect();
    assert_eq!(sizes, [(Some(1), Some(5 << 20)), (Some(2), Some(1000))]);
    let single =
        s3.get_object_attributes().bucket(&bucket).key("single").object_attributes(ObjectAttributes::ObjectParts);
    assert!(single.send().await.expect("single attributes").object_parts().is_none(), "no parts for a single PUT");

    // An empty delimiter is no delimiter.
    put_bytes(&s3, &bucket, "dir/a", b"1").await;
    let listed = s3.list_objects_v2().bucket(&bucket).prefix("dir/").delimiter("").send().await.expect("list");
    let keys: Vec<_> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["dir/a"]);
    assert!(listed.common_prefixes().is_empty());
}

#[tokio::test]
async fn protections_hangar_does_not_give_are_refused_not_ignored() {
    let (_server, s3, bucket) = Server::start_with_bucket("promise").await;
    put_bytes(&s3, &bucket, "k", b"data").await;
    let locked = s3
        .put_object()
        .bucket(&bucket)
        .key("locked")
        .object_lock_legal_hold_status(aws_sdk_s3::types::ObjectLockLegalHoldStatus::On)
        .body(b"x".to_vec().into())
        .send()
        .await;
    expect_s3_error(locked, 501, Some("NotImplemented"));
    let r = s3.create_bucket().bucket(bucket_name("locked")).object_lock_enabled_for_bucket(true).send().await;
    expect_s3_error(r, 501, Some("NotImplemented"));
    // A conditional delete and an append would be taken for done if ignored.
    let r = s3.delete_object().bucket(&bucket).key("k").if_match("\"0123\"").send().await;
    expect_s3_error(r, 501, Some("NotImplemented"));
    let r = s3.put_object().bucket(&bucket).key("k").write_offset_bytes(4).body(b"more".to_vec().into()).send().await;
    expect_s3_error(r, 501, Some("NotImplemented"));
    assert_eq!(get_bytes(&s3, &bucket, "k").await, b"data", "neither touched the object");
    // Only the current version exists.
    let r = s3.get_object().bucket(&bucket).key("k").version_id("3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY").send().await;
    expect_s3_error(r, 404, Some("NoSuchVersion"));
    let null = s3.get_object().bucket(&bucket).key("k").version_id("null").send().await.expect("version null");
    assert_eq!(body_bytes(null.body).await, b"data");
}

#[tokio::test]
async fn multipart_checksums_composite_and_full_object_are_kept_and_returned() {
    use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode, ChecksumType, CompletedMultipartUpload, CompletedPart};
    use base64::Engine;
    use hangar_integration_tests::sigv4::crc32_base64;
    use sha2::Digest;
    let (_server, s3, bucket) = Server::start_with_bucket("mpsum").await;
    let (a, b) = (random_bytes(5 << 20), random_bytes(3000));
    let b64 = base64::engine::general_purpose::STANDARD;

    // COMPOSITE SHA256: the checksum of the parts' checksums, then "-2".
    let id = s3
        .create_multipart_upload()
        .bucket(&bucket)
        .key("composite")
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .send()
        .await
        .expect("create");
    assert_eq!(id.checksum_algorithm(), Some(&ChecksumAlgorithm::Sha256));
    assert_eq!(id.checksum_type(), Some(&ChecksumType::Composite));
    let id = id.upload_id().expect("id").to_string();
    let mut parts = Vec::new();
    for (n, data) in [(1, &a), (2, &b)] {
        let out = s3
            .upload_part()
            .bucket(&bucket)
            .key("composite")
            .upload_id(&id)
            .part_number(n)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .body(data.clone().into())
            .send()
            .await
            .expect("part");
        let sum = out.checksum_sha256().expect("the part's SHA256").to_string();
        assert_eq!(sum, b64.encode(sha2::Sha256::digest(data)));
        parts.push(
            CompletedPart::builder().part_number(n).e_tag(out.e_tag().expect("etag")).checksum_sha256(sum).build(),
        );
    }
    let listed = s3.list_parts().bucket(&bucket).key("composite").upload_id(&id).send().await.expect("list parts");
    assert!(listed.parts().iter().all(|p| p.checksum_sha256().is_some()), "ListParts shows the checksums");
    // A part listed with another checksum than it was uploaded with is refused.
    let wrong = CompletedPart::builder()
        .part_number(2)
        .e_tag(parts[1].e_tag().expect("etag"))
        .checksum_sha256(b64.encode([0u8; 32]))
        .build();
    let r = s3
        .complete_multipart_upload()
        .bucket(&bucket)
        .key("composite")
        .upload_id(&id)
        .multipart_upload(CompletedMultipartUpload::builder().parts(parts[0].clone()).parts(wrong).build())
        .send()
        .await;
    expect_s3_error(r, 400, Some("InvalidPart"));
    let done = s3
        .complete_multipart_upload()
        .bucket(&bucket)
        .key("composite")
        .upload_id(&id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
        .send()
        .await
        .expect("complete");
    let mut concat = sha2::Sha256::digest(&a).to_vec();
    concat.extend(sha2::Sha256::digest(&b));
    let want = format!("{}-2", b64.encode(sha2::Sha256::digest(&concat)));
    assert_eq!(done.checksum_sha256(), Some(want.as_str()));
    let head = s3.head_object().bucket(&bucket).key("composite").checksum_mode(ChecksumMode::Enabled).send().await;
    let head = head.expect("head");
    assert_eq!(head.checksum_sha256(), Some(want.as_str()));
    assert_eq!(head.checksum_type(), Some(&ChecksumType::Composite));
    let attrs = s3
        .get_object_attributes()
        .bucket(&bucket)
        .key("composite")
        .object_attributes(ObjectAttributes::Checksum)
        .object_attributes(ObjectAttributes::ObjectParts)
        .send()
        .await
        .expect("attributes");
    assert_eq!(attrs.checksum().and_then(|c| c.checksum_sha256()), Some(want.as_str()));
    let part_sums: Vec<_> =
        attrs.object_parts().expect("parts").parts().iter().map(|p| p.checksum_sha256().is_some()).collect();
    assert_eq!(part_sums, [true, true]);

    // FULL_OBJECT CRC32: the CRC of the whole object, combined from the parts'.
    let id = s3
        .create_multipart_upload()
        .bucket(&bucket)
        .key("full")
        .checksum_algorithm(ChecksumAlgorithm::Crc32)
        .checksum_type(ChecksumType::FullObject)
        .send()
        .await
        .expect("create")
        .upload_id()
        .expect("id")
        .to_string();
    let mut parts = Vec::new();
    for (n, data) in [(1, &a), (2, &b)] {
        let out = s3
            .upload_part()
            .bucket(&bucket)
            .key("full")
            .upload_id(&id)
            .part_number(n)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .body(data.clone().into())
            .send()
            .await
            .expect("part");
        parts.push(
            CompletedPart::builder()
                .part_number(n)
                .e_tag(out.e_tag().expect("etag"))
                .checksum_crc32(out.checksum_crc32().expect("crc32"))
                .build(),
        );
    }
    let mut whole = a.clone();
    whole.extend_from_slice(&b);
    let done = s3
        .complete_multipart_upload()
        .bucket(&bucket)
        .key("full")
        .upload_id(&id)
        .checksum_type(ChecksumType::FullObject)
        .checksum_crc32(crc32_base64(&whole))
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
        .send()
        .await
        .expect("complete");
    assert_eq!(done.checksum_crc32(), Some(crc32_base64(&whole).as_str()));
    assert_eq!(done.checksum_type(), Some(&ChecksumType::FullObject));
    let got =
        s3.get_object().bucket(&bucket).key("full").checksum_mode(ChecksumMode::Enabled).send().await.expect("get");
    assert_eq!(got.checksum_crc32(), Some(crc32_base64(&whole).as_str()));
    assert_eq!(body_bytes(got.body).await, whole);

    // A checksum type the algorithm cannot have is refused at creation.
    let r = s3
        .create_multipart_upload()
        .bucket(&bucket)
        .key("bad")
        .checksum_algorithm(ChecksumAlgorithm::Sha1)
        .checksum_type(ChecksumType::FullObject)
        .send()
        .await;
    expect_s3_error(r, 400, Some("InvalidRequest"));
}

/// The `<Code>` of an S3 error body.
fn error_code(body: &str) -> Option<&str> {
    body.split_once("<Code>").and_then(|(_, r)| r.split_once("</Code>")).map(|(c, _)| c)
}

#[tokio::test]
async fn uploads_without_a_length_in_plain_chunked_encoding_are_accepted_and_checked() {
    let (server, s3, bucket) = Server::start_with_bucket("pipe").await;
    // Three HTTP chunks of uneven sizes; more than two blocks of data.
    let data = random_bytes(2 * 1024 * 1024 + 300_000);
    let chunks: Vec<&[u8]> = vec![&data[..1000], &data[1000..1_500_000], &data[1_500_000..]];
    let signed = |key: &str, hash: &str, extra: &[(&str, &str)]| {
        let mut req = server.raw_request("PUT", &encode_path(&bucket, key));
        for (k, v) in extra {
            req = req.header(k, v);
        }
        server.sign_now(&mut req, hash);
        req
    };
    let send = |req: sigv4::RawRequest| {
        let server = &server;
        let chunks = chunks.clone();
        async move { server.send_chunked("PUT", &req.target(), &req.headers, &chunks).await }
    };

    // UNSIGNED-PAYLOAD: stored whole, ETag the MD5 of the data.
    let (status, body) = send(signed("unsigned", UNSIGNED_PAYLOAD, &[])).await;
    assert_eq!(status, 200, "chunked UNSIGNED-PAYLOAD PUT: {body}");
    assert!(get_bytes(&s3, &bucket, "unsigned").await == data, "chunked body stored whole");
    let head = s3.head_object().bucket(&bucket).key("unsigned").send().await.expect("head");
    assert_eq!(head.e_tag(), Some(etag_of(&data).as_str()));
    assert_eq!(head.content_length(), Some(data.len() as i64));

    // A signed payload hash is checked against what came.
    let (status, body) = send(signed("signed", &sigv4::sha256_hex(&data), &[])).await;
    assert_eq!(status, 200, "chunked signed-payload PUT: {body}");
    assert!(get_bytes(&s3, &bucket, "signed").await == data);
    let (status, body) = send(signed("forged", &sigv4::sha256_hex(b"other"), &[])).await;
    assert_eq!((status, error_code(&body)), (400, Some("XAmzContentSHA256Mismatch")), "{body}");
    assert_no_object(&s3, &bucket, "forged").await;

    // Content-MD5 and a declared checksum are checked too.
    let (status, body) = send(signed("md5", UNSIGNED_PAYLOAD, &[("content-md5", "AAAAAAAAAAAAAAAAAAAAAA==")])).await;
    assert_eq!((status, error_code(&body)), (400, Some("BadDigest")), "{body}");
    assert_no_object(&s3, &bucket, "md5").await;
    let (status, body) = send(signed("crc", UNSIGNED_PAYLOAD, &[("x-amz-checksum-crc32", "AAAAAA==")])).await;
    assert_eq!((status, error_code(&body)), (400, Some("BadDigest")), "{body}");
    assert_no_object(&s3, &bucket, "crc").await;

    // A wrong signature is still refused before anything is stored.
    let mut req = signed("badsig", UNSIGNED_PAYLOAD, &[]);
    req.headers.retain(|(k, _)| k != "authorization");
    let other = sigv4::Signer::new(&server.access_key, "not-the-secret", &server.region);
    other.sign(&mut req, UNSIGNED_PAYLOAD, std::time::SystemTime::now());
    // A small body: the refusal comes before the body is read, and a large one still being
    // sent can meet a closed connection instead of the answer.
    let (status, body) = server.send_chunked("PUT", &req.target(), &req.headers, &[b"small body"]).await;
    assert_eq!((status, error_code(&body)), (403, Some("SignatureDoesNotMatch")), "{body}");
    assert_no_object(&s3, &bucket, "badsig").await;

    // A presigned URL (what `curl -T -` uses).
    let presigned = s3
        .put_object()
        .bucket(&bucket)
        .key("presigned")
        .presigned(
            aws_sdk_s3::presigning::PresigningConfig::expires_in(std::time::Duration::from_secs(300)).expect("config"),
        )
        .await
        .expect("presign");
    let uri: http::Uri = presigned.uri().parse().expect("presigned uri");
    let mut headers: Vec<(String, String)> = presigned.headers().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    headers.push(("host".into(), uri.authority().expect("authority").to_string()));
    let target = uri.path_and_query().expect("target").to_string();
    let (status, body) = server.send_chunked("PUT", &target, &headers, &chunks).await;
    assert_eq!(status, 200, "chunked PUT to a presigned URL: {body}");
    assert!(get_bytes(&s3, &bucket, "presigned").await == data);

    // UploadPart without a length: the part is kept and completes the object.
    let up = s3.create_multipart_upload().bucket(&bucket).key("parts").send().await.expect("create upload");
    let upload_id = up.upload_id().expect("upload id").to_string();
    let mut req = server
        .raw_request("PUT", &encode_path(&bucket, "parts"))
        .query("partNumber", "1")
        .query("uploadId", &upload_id);
    server.sign_now(&mut req, UNSIGNED_PAYLOAD);
    let (status, body) = send(req).await;
    assert_eq!(status, 200, "chunked UploadPart: {body}");
    let parts = s3.list_parts().bucket(&bucket).key("parts").upload_id(&upload_id).send().await.expect("list parts");
    let part = &parts.parts()[0];
    assert_eq!(part.size(), Some(data.len() as i64));
    let done = aws_sdk_s3::types::CompletedMultipartUpload::builder()
        .parts(aws_sdk_s3::types::CompletedPart::builder().part_number(1).e_tag(part.e_tag().expect("etag")).build())
        .build();
    s3.complete_multipart_upload()
        .bucket(&bucket)
        .key("parts")
        .upload_id(&upload_id)
        .multipart_upload(done)
        .send()
        .await
        .expect("complete");
    assert!(get_bytes(&s3, &bucket, "parts").await == data);
}
