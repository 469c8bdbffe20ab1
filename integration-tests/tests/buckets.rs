//! Bucket operations: create/list/head/delete/location and their errors.

use aws_sdk_s3::primitives::ByteStream;
use hangar_integration_tests::*;

#[tokio::test]
async fn bucket_lifecycle() {
    let (server, s3, bucket) = Server::start_with_bucket("life").await;

    let list = s3.list_buckets().send().await.expect("list buckets");
    let listed = list.buckets().iter().find(|b| b.name() == Some(bucket.as_str())).expect("new bucket is listed");
    assert!(listed.creation_date().is_some(), "bucket has a creation date");

    s3.head_bucket().bucket(&bucket).send().await.expect("head bucket");

    let loc = s3.get_bucket_location().bucket(&bucket).send().await.expect("get bucket location");
    // S3 reports us-east-1 as an empty LocationConstraint; accept either spelling.
    let constraint = loc.location_constraint().map(|c| c.as_str().to_string()).unwrap_or_default();
    assert!(
        constraint.is_empty() || constraint == server.region,
        "unexpected location constraint {constraint:?} (region {})",
        server.region
    );

    s3.delete_bucket().bucket(&bucket).send().await.expect("delete bucket");
    expect_s3_error(s3.head_bucket().bucket(&bucket).send().await, 404, None);
    let list = s3.list_buckets().send().await.expect("list buckets");
    assert!(list.buckets().iter().all(|b| b.name() != Some(bucket.as_str())), "deleted bucket is still listed");
}

#[tokio::test]
async fn list_buckets_is_sorted_by_name() {
    let server = Server::start().await;
    let s3 = server.s3_client();
    for name in ["sort-c", "sort-a", "sort-b"] {
        s3.create_bucket().bucket(name).send().await.expect("create bucket");
    }
    let list = s3.list_buckets().send().await.expect("list buckets");
    let names: Vec<&str> = list.buckets().iter().filter_map(|b| b.name()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "ListBuckets is not sorted");
    for name in ["sort-a", "sort-b", "sort-c"] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
}

#[tokio::test]
async fn creating_an_owned_bucket_again_is_already_owned_by_you() {
    let (_server, s3, bucket) = Server::start_with_bucket("dup").await;
    expect_s3_error(s3.create_bucket().bucket(&bucket).send().await, 409, Some("BucketAlreadyOwnedByYou"));
}

#[tokio::test]
async fn deleting_a_non_empty_bucket_fails() {
    let (_server, s3, bucket) = Server::start_with_bucket("full").await;
    put_bytes(&s3, &bucket, "k", b"x").await;

    expect_s3_error(s3.delete_bucket().bucket(&bucket).send().await, 409, Some("BucketNotEmpty"));
    // Still there, object intact.
    s3.head_object().bucket(&bucket).key("k").send().await.expect("object survives");

    s3.delete_object().bucket(&bucket).key("k").send().await.expect("delete object");
    s3.delete_bucket().bucket(&bucket).send().await.expect("delete emptied bucket");
}

#[tokio::test]
async fn operations_on_a_missing_bucket_are_no_such_bucket() {
    let server = Server::start().await;
    let s3 = server.s3_client();
    let b = "no-such-bucket-here";
    expect_s3_error(s3.get_object().bucket(b).key("k").send().await, 404, Some("NoSuchBucket"));
    expect_s3_error(
        s3.put_object().bucket(b).key("k").body(ByteStream::from_static(b"x")).send().await,
        404,
        Some("NoSuchBucket"),
    );
    expect_s3_error(s3.list_objects_v2().bucket(b).send().await, 404, Some("NoSuchBucket"));
    expect_s3_error(s3.list_objects().bucket(b).send().await, 404, Some("NoSuchBucket"));
    expect_s3_error(s3.delete_bucket().bucket(b).send().await, 404, Some("NoSuchBucket"));
    expect_s3_error(s3.get_bucket_location().bucket(b).send().await, 404, Some("NoSuchBucket"));
    expect_s3_error(s3.create_multipart_upload().bucket(b).key("k").send().await, 404, Some("NoSuchBucket"));
    // HEAD errors have no body, so only the status is defined.
    expect_s3_error(s3.head_bucket().bucket(b).send().await, 404, None);
}

#[tokio::test]
async fn invalid_bucket_names_are_rejected() {
    let server = Server::start().await;
    let s3 = server.s3_client();
    let too_long = "a".repeat(64);
    for name in [
        "ab",
        too_long.as_str(),
        "Upper-Case",
        "under_score",
        "-leading-dash",
        "trailing-dash-",
        "double..dot",
        "192.168.5.4",
    ] {
        let result = s3.create_bucket().bucket(name).send().await;
        let err = match result {
            Ok(_) => panic!("bucket name {name:?} was accepted"),
            Err(e) => e,
        };
        assert_eq!(err_status(&err), Some(400), "{name:?}: {err:?}");
        assert_eq!(err_code(&err).as_deref(), Some("InvalidBucketName"), "{name:?}: {err:?}");
    }
    // Boundary cases that are valid.
    let max_len = "b".repeat(63);
    for name in ["abc", max_len.as_str(), "with.dots-and-dashes1"] {
        s3.create_bucket().bucket(name).send().await.unwrap_or_else(|e| panic!("valid name {name:?} rejected: {e:?}"));
    }
}

#[tokio::test]
async fn configured_region_is_used() {
    let server = Server::builder().env("HANGAR_S3_REGION", "hangar-test-1").start().await;
    assert_eq!(server.region, "hangar-test-1", "AWS_DEFAULT_REGION line should print the configured region");
    let s3 = server.s3_client();
    let bucket = new_bucket(&s3, "region").await;
    let loc = s3.get_bucket_location().bucket(&bucket).send().await.expect("get bucket location");
    assert_eq!(loc.location_constraint().map(|c| c.as_str()), Some("hangar-test-1"), "location constraint");
}

#[tokio::test]
async fn versioning_reads_as_never_enabled() {
    let (server, s3, bucket) = Server::start_with_bucket("vers").await;
    let out = s3.get_bucket_versioning().bucket(&bucket).send().await.expect("GetBucketVersioning");
    assert!(out.status().is_none() && out.mfa_delete().is_none(), "{out:?}");
    expect_s3_error(s3.get_bucket_versioning().bucket("no-such-bucket-here").send().await, 404, Some("NoSuchBucket"));
    let stranger = server.create_key("stranger").await;
    let other = server.s3_client_for_key(&stranger);
    expect_s3_error(other.get_bucket_versioning().bucket(&bucket).send().await, 403, Some("AccessDenied"));
}
