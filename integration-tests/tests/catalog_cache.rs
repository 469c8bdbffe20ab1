//! What a frontend keeps of the catalog (access keys, buckets, rights; `[s3_api]
//! catalog_cache_ms`, 1 s by default): what is created or granted anywhere is usable at
//! once, what is revoked, deleted or changed elsewhere is seen within the bound, and what
//! changes through a frontend is read back at once through that frontend. Two frontends of
//! a local cluster, the CLI through the control plane.

use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CorsConfiguration, CorsRule};
use hangar_integration_tests::cluster::Cluster;
use hangar_integration_tests::*;

/// Generous beside the 1 s bound: the machine running the tests is busy.
const SEEN_WITHIN: Duration = Duration::from_secs(4);

/// Repeats `attempt` until it returns true; how long that took. Panics after SEEN_WITHIN.
async fn seen<F, Fut>(what: &str, mut attempt: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if attempt().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < SEEN_WITHIN, "{what}: not seen within {SEEN_WITHIN:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn put_ok(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> bool {
    s3.put_object().bucket(bucket).key(key).body(ByteStream::from_static(b"x")).send().await.is_ok()
}

async fn error_code<T, E>(r: Result<T, aws_sdk_s3::error::SdkError<E>>) -> Option<String>
where
    E: aws_sdk_s3::error::ProvideErrorMetadata,
{
    r.err().and_then(|e| e.as_service_error().and_then(|s| s.code()).map(str::to_string))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_changes_are_seen_at_once_or_within_the_bound() {
    let cluster = Cluster::start(3, 2).await;
    let root = cluster.s3_client(0);
    root.create_bucket().bucket("shared").send().await.expect("create bucket");
    let out = cluster.cli_ok(["key", "create", "alice"]).await;
    let alice = KeyInfo::parse(&out).expect("key create output");
    let a0 = cluster.s3_client_no_retry_as(0, &alice);
    let a1 = cluster.s3_client_no_retry_as(1, &alice);

    // No right yet: refused, and the refusal is not kept — a grant works at once.
    assert_eq!(
        error_code(a0.get_object().bucket("shared").key("k").send().await).await.as_deref(),
        Some("AccessDenied")
    );
    cluster.cli_ok(["bucket", "allow", "--read", "--write", "shared", "--key", "alice"]).await;
    assert!(put_ok(&a0, "shared", "a").await, "a grant is usable at once");
    assert!(put_ok(&a1, "shared", "b").await, "a grant is usable at once through the other frontend");

    // A revocation through the CLI is seen by both frontends within the bound.
    cluster.cli_ok(["bucket", "deny", "--write", "shared", "--key", "alice"]).await;
    for (i, s3) in [&a0, &a1].into_iter().enumerate() {
        let took = seen("revoked write", || async { !put_ok(s3, "shared", "c").await }).await;
        eprintln!("frontend {i}: revoked write refused after {took:?}");
    }
    s3_get_ok(&a0, "shared", "a").await;

    // A deleted key stops working within the bound.
    cluster.cli_ok(["key", "delete", "alice", "--yes"]).await;
    for s3 in [&a0, &a1] {
        seen("deleted key", || async {
            error_code(s3.get_object().bucket("shared").key("a").send().await).await.as_deref()
                == Some("InvalidAccessKeyId")
        })
        .await;
    }

    // A bucket asked for before it exists is usable as soon as it is created elsewhere.
    let r1 = cluster.s3_client_no_retry(1);
    assert_eq!(error_code(r1.head_bucket().bucket("later").send().await).await.as_deref(), Some("NotFound"));
    root.create_bucket().bucket("later").send().await.expect("create through frontend 0");
    assert!(put_ok(&r1, "later", "k").await, "a new bucket is usable at once through the other frontend");

    // Settings changed through a frontend are read back at once through it.
    let rule = |origin: &str| {
        CorsConfiguration::builder()
            .cors_rules(CorsRule::builder().allowed_methods("GET").allowed_origins(origin).build().expect("rule"))
            .build()
            .expect("cors")
    };
    for origin in ["https://one.example", "https://two.example"] {
        r1.put_bucket_cors().bucket("later").cors_configuration(rule(origin)).send().await.expect("put cors");
        let got = r1.get_bucket_cors().bucket("later").send().await.expect("get cors");
        assert_eq!(got.cors_rules()[0].allowed_origins(), [origin.to_string()], "read back at once");
    }
    // ... and through the other frontend within the bound (preflights read the rules the
    // cache keeps).
    let http = reqwest::Client::new();
    let preflight = |i: usize| {
        let url = format!("http://{}/later/k", cluster.frontends[i].addr);
        let http = http.clone();
        async move {
            let resp = http
                .request(reqwest::Method::OPTIONS, url)
                .header("origin", "https://two.example")
                .header("access-control-request-method", "GET")
                .send()
                .await
                .expect("preflight");
            resp.status().as_u16() == 200
        }
    };
    seen("CORS rules changed through the other frontend", || preflight(0)).await;

    // A bucket deleted and made again under the same name through one frontend is the new
    // bucket there at once, and through the other within the bound.
    root.delete_object().bucket("later").key("k").send().await.expect("empty it");
    r1.delete_bucket().bucket("later").send().await.expect("delete through frontend 1");
    r1.create_bucket().bucket("later").send().await.expect("create again through frontend 1");
    assert!(put_ok(&r1, "later", "fresh").await, "the new bucket at once through frontend 1");
    seen("the new bucket through frontend 0", || async {
        root.get_object().bucket("later").key("fresh").send().await.is_ok()
    })
    .await;

    // Both frontends count what their cache answered.
    for i in 0..2 {
        let resp =
            http.get(format!("http://{}/metrics", cluster.frontends[i].admin_addr)).send().await.expect("scrape");
        assert_eq!(resp.status().as_u16(), 200);
        let text = resp.text().await.expect("metrics");
        for family in ["frontend_cache_hit_counter", "frontend_cache_miss_counter"] {
            let total: f64 = text
                .lines()
                .filter(|l| l.starts_with(family) && l.contains("cache=\"key\""))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            assert!(total > 0.0, "frontend {i}: {family}{{cache=\"key\"}} is {total}\n{text}");
        }
    }
}

async fn s3_get_ok(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) {
    s3.get_object().bucket(bucket).key(key).send().await.expect("read right kept");
}
