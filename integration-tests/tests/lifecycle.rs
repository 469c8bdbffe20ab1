//! Lifecycle rules through the `aws-sdk-s3` crate: configurations set, read, refused when
//! invalid, and applied by the data nodes' worker, with a "day" shortened to two seconds
//! (`lifecycle_day_secs`) so that rules saying one day act within the test.

use std::time::Duration;

use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, ExpirationStatus, LifecycleExpiration, LifecycleRule,
    LifecycleRuleAndOperator, LifecycleRuleFilter, Tag, Transition, TransitionStorageClass,
};
use hangar_integration_tests::*;

fn rule(id: &str, filter: LifecycleRuleFilter) -> aws_sdk_s3::types::builders::LifecycleRuleBuilder {
    LifecycleRule::builder().id(id).status(ExpirationStatus::Enabled).filter(filter)
}

fn expire_after(days: i32) -> LifecycleExpiration {
    LifecycleExpiration::builder().days(days).build()
}

async fn exists(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> bool {
    s3.head_object().bucket(bucket).key(key).send().await.is_ok()
}

#[tokio::test]
async fn rules_expire_objects_and_abort_uploads_after_their_days() {
    let (server, s3, bucket) = Server::builder().env("HANGAR_LIFECYCLE_DAY_SECS", 2).start_with_bucket("life").await;
    expect_s3_error(
        s3.get_bucket_lifecycle_configuration().bucket(&bucket).send().await,
        404,
        Some("NoSuchLifecycleConfiguration"),
    );
    let tmp = rule("tmp", LifecycleRuleFilter::builder().prefix("tmp/").build())
        .expiration(expire_after(1))
        .build()
        .expect("rule");
    let tagged_big = rule(
        "tagged-big",
        LifecycleRuleFilter::builder()
            .and(
                LifecycleRuleAndOperator::builder()
                    .tags(Tag::builder().key("expire").value("yes").build().expect("tag"))
                    .object_size_greater_than(100)
                    .build(),
            )
            .build(),
    )
    .expiration(expire_after(1))
    .build()
    .expect("rule");
    let uploads = rule("uploads", LifecycleRuleFilter::builder().prefix("up/").build())
        .abort_incomplete_multipart_upload(AbortIncompleteMultipartUpload::builder().days_after_initiation(1).build())
        .build()
        .expect("rule");
    let cfg = BucketLifecycleConfiguration::builder().rules(tmp).rules(tagged_big).rules(uploads).build().expect("cfg");
    s3.put_bucket_lifecycle_configuration().bucket(&bucket).lifecycle_configuration(cfg).send().await.expect("put");
    let got = s3.get_bucket_lifecycle_configuration().bucket(&bucket).send().await.expect("get");
    let ids: Vec<_> = got.rules().iter().filter_map(|r| r.id()).collect();
    assert_eq!(ids, ["tmp", "tagged-big", "uploads"]);
    assert_eq!(got.rules()[0].expiration().and_then(|e| e.days()), Some(1));

    put_bytes(&s3, &bucket, "tmp/a", b"temporary").await;
    put_bytes(&s3, &bucket, "keep/b", b"kept").await;
    let put_tagged = |key: &'static str, size: usize| {
        s3.put_object().bucket(&bucket).key(key).tagging("expire=yes").body(random_bytes(size).into()).send()
    };
    put_tagged("data/big", 1000).await.expect("put big");
    put_tagged("data/small", 10).await.expect("put small");
    let upload = create_upload(&s3, &bucket, "up/x").await;
    let other_upload = create_upload(&s3, &bucket, "other/y").await;

    let gone = wait_until(Duration::from_secs(30), || async {
        !exists(&s3, &bucket, "tmp/a").await && !exists(&s3, &bucket, "data/big").await
    })
    .await;
    assert!(gone, "the rules did not expire tmp/a and data/big\n{}", server.log());
    assert!(exists(&s3, &bucket, "keep/b").await, "an object no rule names stays");
    assert!(exists(&s3, &bucket, "data/small").await, "a tagged object below the size filter stays");
    let aborted = wait_until(Duration::from_secs(30), || async {
        s3.list_parts().bucket(&bucket).key("up/x").upload_id(&upload).send().await.is_err()
    })
    .await;
    assert!(aborted, "the upload under up/ was not aborted");
    s3.list_parts()
        .bucket(&bucket)
        .key("other/y")
        .upload_id(&other_upload)
        .send()
        .await
        .expect("the other upload stays");

    // The worker says what it did, and runs on demand.
    let workers = server.cli_ok(["worker", "list"]).await;
    assert!(workers.contains("lifecycle"), "{workers}");
    let out = server.cli_ok(["repair", "lifecycle"]).await;
    assert!(out.contains("lifecycle pass started"), "{out}");
    let listed = wait_until(Duration::from_secs(20), || async {
        let w = server.cli_ok(["worker", "list"]).await;
        w.contains("objects expired") && w.contains("uploads aborted")
    })
    .await;
    assert!(listed, "worker list shows no lifecycle progress: {}", server.cli_ok(["worker", "list"]).await);

    s3.delete_bucket_lifecycle().bucket(&bucket).send().await.expect("delete");
    expect_s3_error(
        s3.get_bucket_lifecycle_configuration().bucket(&bucket).send().await,
        404,
        Some("NoSuchLifecycleConfiguration"),
    );
    put_bytes(&s3, &bucket, "tmp/c", b"no rule now").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(exists(&s3, &bucket, "tmp/c").await, "without rules nothing expires");
}

#[tokio::test]
async fn invalid_lifecycle_rules_are_refused_with_aws_errors() {
    let (_server, s3, bucket) = Server::start_with_bucket("lifebad").await;
    let put = |r: LifecycleRule| {
        let cfg = BucketLifecycleConfiguration::builder().rules(r).build().expect("cfg");
        s3.put_bucket_lifecycle_configuration().bucket(&bucket).lifecycle_configuration(cfg).send()
    };
    let prefix = || LifecycleRuleFilter::builder().prefix("p/").build();
    let zero_days = rule("a", prefix()).expiration(expire_after(0)).build().expect("rule");
    expect_s3_error(put(zero_days).await, 400, Some("InvalidArgument"));
    let no_action = rule("a", prefix()).build().expect("rule");
    expect_s3_error(put(no_action).await, 400, Some("InvalidRequest"));
    let date = aws_sdk_s3::primitives::DateTime::from_secs(1_900_000_000 + 3600);
    let not_midnight = rule("a", prefix()).expiration(LifecycleExpiration::builder().date(date).build()).build();
    expect_s3_error(put(not_midnight.expect("rule")).await, 400, Some("InvalidArgument"));
    let transition = rule("a", prefix())
        .transitions(Transition::builder().days(30).storage_class(TransitionStorageClass::Glacier).build())
        .build()
        .expect("rule");
    expect_s3_error(put(transition).await, 501, Some("NotImplemented"));
    let tags_and_abort =
        rule("a", LifecycleRuleFilter::builder().tag(Tag::builder().key("k").value("v").build().expect("tag")).build())
            .abort_incomplete_multipart_upload(
                AbortIncompleteMultipartUpload::builder().days_after_initiation(1).build(),
            )
            .build()
            .expect("rule");
    expect_s3_error(put(tags_and_abort).await, 400, Some("InvalidArgument"));
    let midnight = aws_sdk_s3::primitives::DateTime::from_secs(1_900_051_200 - 1_900_051_200 % 86_400);
    let ok = rule("a", prefix()).expiration(LifecycleExpiration::builder().date(midnight).build()).build();
    put(ok.expect("rule")).await.expect("a date at midnight is fine");
    let got = s3.get_bucket_lifecycle_configuration().bucket(&bucket).send().await.expect("get");
    assert_eq!(got.rules()[0].expiration().and_then(|e| e.date()).map(|d| d.secs()), Some(midnight.secs()));
}
