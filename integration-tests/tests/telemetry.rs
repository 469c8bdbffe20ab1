//! Telemetry end to end: traces exported over OTLP to a receiver inside the test (the
//! OpenTelemetry collector's trace service, served with tonic), metrics scraped from every
//! component's `/metrics`, the metrics token.
//!
//! The receiver stands in for a collector or a tracing backend: it accepts exactly the
//! OTLP/gRPC export calls they accept, and keeps the spans for the assertions.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_sdk_s3::operation::RequestId;
use aws_sdk_s3::primitives::ByteStream;
use hangar_integration_tests::cluster::Cluster;
use hangar_integration_tests::otlp::{Received, Receiver};
use hangar_integration_tests::{Server, random_bytes, wait_until};

const SPAN_KIND_SERVER: i32 = 2;
const SPAN_KIND_CLIENT: i32 = 3;

fn is_trace_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) && id != "0".repeat(32)
}

/// Every span of the trace has its parent in the trace, except the one root.
fn check_tree(spans: &[Received]) -> Result<(), String> {
    let ids: BTreeSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let roots: Vec<&Received> = spans.iter().filter(|s| s.parent.is_empty()).collect();
    if roots.len() != 1 {
        return Err(format!("{} roots", roots.len()));
    }
    match spans.iter().find(|s| !s.parent.is_empty() && !ids.contains(s.parent.as_str())) {
        Some(orphan) => Err(format!("span {} ({}) has no parent in the trace", orphan.name, orphan.service)),
        None => Ok(()),
    }
}

fn describe(spans: &[Received]) -> String {
    spans.iter().map(|s| format!("{} [{}] {} <- {}\n", s.service, s.name, s.span_id, s.parent)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_put_object_is_one_trace_across_frontend_and_data_nodes() {
    let (receiver, endpoint) = Receiver::start().await;
    let cluster = Cluster::start_with_admin(3, 1, &format!("trace_sink = \"{endpoint}\"")).await;
    let s3 = cluster.s3_client(0);
    s3.create_bucket().bucket("traced").send().await.expect("create bucket");
    // Larger than a block of inline data: the PUT writes blocks to the data nodes.
    let out = s3
        .put_object()
        .bucket("traced")
        .key("obj")
        .body(ByteStream::from(random_bytes(300 * 1024)))
        .send()
        .await
        .expect("put");
    let id = out.request_id().expect("x-amz-request-id").to_string();
    assert!(is_trace_id(&id), "the request id is not a trace id: {id:?}");

    // Spans leave in batches (every 5 s); wait for the whole tree.
    let complete = |spans: &[Received]| {
        spans.iter().any(|s| s.name == "PutObject")
            && spans.iter().any(|s| s.service == "hangar-data-node")
            && check_tree(spans).is_ok()
    };
    let arrived = wait_until(Duration::from_secs(30), || async { complete(&receiver.trace(&id)) }).await;
    let spans = receiver.trace(&id);
    assert!(arrived, "the PutObject trace did not arrive whole:\n{}\n{}", describe(&spans), cluster.logs());

    let root = spans.iter().find(|s| s.parent.is_empty()).expect("root");
    assert_eq!(root.name, "PutObject");
    assert_eq!(root.service, "hangar-s3-frontend");
    assert_eq!(root.kind, SPAN_KIND_SERVER);
    assert_eq!(root.attributes.get("bucket").map(String::as_str), Some("traced"), "{:?}", root.attributes);
    assert_eq!(root.attributes.get("http.response.status_code").map(String::as_str), Some("200"));
    assert_eq!(root.attributes.get("http.request.body.size").map(String::as_str), Some("307200"));
    let names: BTreeSet<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    for step in [
        // The key comes from the frontend's cache (CreateBucket read it just before); the
        // bucket, forgotten as it was created, is read.
        "key lookup",
        "bucket lookup",
        "get bucket_alias",
        "get bucket",
        "permission check",
        "get object",
        "put block",
        "insert object",
        "quorum wait",
    ] {
        assert!(names.contains(step), "no `{step}` span in the trace:\n{}", describe(&spans));
    }
    // Every data-node span hangs below a frontend call span (the context travelled in the
    // call's metadata).
    let by_id: BTreeMap<&str, &Received> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let served: Vec<&Received> = spans.iter().filter(|s| s.service == "hangar-data-node").collect();
    assert!(served.iter().any(|s| s.name == "BlockService/PutBlock"), "{}", describe(&spans));
    assert!(served.iter().any(|s| s.name == "MetadataService/Insert"), "{}", describe(&spans));
    for s in served.iter().filter(|s| s.kind == SPAN_KIND_SERVER) {
        let parent = by_id[s.parent.as_str()];
        assert_eq!(parent.service, "hangar-s3-frontend", "{}", describe(&spans));
        assert_eq!(parent.kind, SPAN_KIND_CLIENT, "{}", describe(&spans));
        assert_eq!(s.name.rsplit('/').next(), Some(parent.name.as_str()), "{}", describe(&spans));
    }

    // A failing request is found by its request id too.
    let err = s3.get_object().bucket("traced").key("missing").send().await.expect_err("404");
    let failed = err.request_id().expect("request id").to_string();
    assert!(is_trace_id(&failed), "{failed:?}");
    let found = wait_until(Duration::from_secs(30), || async {
        receiver.trace(&failed).iter().any(|s| s.name == "GetObject" && s.parent.is_empty())
    })
    .await;
    assert!(found, "the failed GetObject's trace did not arrive:\n{}", describe(&receiver.all()));
    let root = receiver.trace(&failed).into_iter().find(|s| s.parent.is_empty()).expect("root");
    assert_eq!(root.attributes.get("http.response.status_code").map(String::as_str), Some("404"));

    // Background chatter (heartbeats, probes, workers) is never exported on its own: every
    // trace received starts at an S3 request or an admin call.
    let roots: BTreeSet<String> = receiver
        .all()
        .into_iter()
        .filter(|s| s.parent.is_empty())
        .map(|s| format!("{} {}", s.service, s.name))
        .collect();
    for r in &roots {
        assert!(
            r.starts_with("hangar-s3-frontend ") || r.starts_with("hangar-control-plane AdminService/"),
            "a trace that is no request: {r}\nall roots: {roots:?}"
        );
    }
}

#[tokio::test]
async fn standard_variables_sampling_and_flush_on_shutdown() {
    // OTEL_* variables alone: the endpoint, the service name and resource attributes. The
    // batch delay is long, so the spans arrive only because shutdown flushes them.
    let (receiver, endpoint) = Receiver::start().await;
    let server = Server::builder()
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_SERVICE_NAME", "my-hangar")
        .env("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
        .env("OTEL_BSP_SCHEDULE_DELAY", 600_000)
        .start()
        .await;
    let s3 = server.s3_client();
    let out = s3.create_bucket().bucket("flushed").send().await.expect("create bucket");
    let id = out.request_id().expect("request id").to_string();
    assert!(is_trace_id(&id), "{id:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(receiver.trace(&id).is_empty(), "spans left before shutdown despite the batch delay");
    server.stop().await;
    let spans = receiver.trace(&id);
    let root = spans.iter().find(|s| s.parent.is_empty() && s.name == "CreateBucket");
    let root = root.unwrap_or_else(|| panic!("no CreateBucket span after shutdown:\n{}", describe(&spans)));
    assert_eq!(root.service, "my-hangar");
    assert_eq!(root.resource.get("deployment.environment").map(String::as_str), Some("test"));

    // Sampling ratio 0, by the standard variables or by the config: nothing is exported,
    // request ids stay trace-shaped.
    let by_env = [("OTEL_TRACES_SAMPLER", "traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "0")];
    let by_config = [("HANGAR_ADMIN_TRACE_SAMPLE_RATIO", "0.0")];
    for env in [&by_env[..], &by_config[..]] {
        let (receiver, endpoint) = Receiver::start().await;
        let mut builder = Server::builder().env("HANGAR_ADMIN_TRACE_SINK", &endpoint);
        for (k, v) in env {
            builder = builder.env(*k, v);
        }
        let server = builder.start().await;
        let s3 = server.s3_client();
        for i in 0..5 {
            let out = s3.create_bucket().bucket(format!("unsampled-{i}")).send().await.expect("create bucket");
            assert!(is_trace_id(out.request_id().unwrap_or_default()));
        }
        server.stop().await;
        assert!(
            receiver.all().is_empty(),
            "spans exported at sampling ratio 0 ({env:?}): {}",
            describe(&receiver.all())
        );
    }
}

#[tokio::test]
async fn without_a_sink_request_ids_are_random_trace_shaped_ids() {
    let server = Server::start().await;
    let s3 = server.s3_client();
    let mut ids = BTreeSet::new();
    for i in 0..3 {
        let out = s3.create_bucket().bucket(format!("plain-{i}")).send().await.expect("create bucket");
        let id = out.request_id().expect("request id").to_string();
        assert!(is_trace_id(&id), "{id:?}");
        ids.insert(id);
    }
    assert_eq!(ids.len(), 3);
}

/// The value of the sample `name{labels}` (labels as `k="v"` pairs, in any order), summed
/// over the samples that carry at least those labels.
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(ref h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            prometheus_parse::Value::Summary(_) => 0.0,
        })
        .sum()
}

async fn scrape(addr: std::net::SocketAddr, token: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new().get(format!("http://{addr}/metrics"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("scrape");
    (resp.status().as_u16(), resp.text().await.expect("body"))
}

fn parse(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text format")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_component_serves_garage_named_metrics_that_move_with_traffic() {
    const TOKEN: &str = "scrape-me-0123456789";
    let cluster = Cluster::start_with_admin(3, 1, &format!("metrics_token = \"{TOKEN}\"")).await;
    let fe = cluster.frontends[0].admin_addr;
    let data = cluster.data[0].admin_addr;
    let cp = cluster.control_plane.admin_addr;
    // The token is required on every component.
    for addr in [fe, data, cp] {
        assert_eq!(scrape(addr, None).await.0, 401, "{addr}");
        assert_eq!(scrape(addr, Some("wrong-token-0123456789")).await.0, 401, "{addr}");
    }
    let before = parse(&scrape(fe, Some(TOKEN)).await.1);
    let s3 = cluster.s3_client(0);
    s3.create_bucket().bucket("counted").send().await.expect("create bucket");
    for i in 0..5 {
        s3.put_object()
            .bucket("counted")
            .key(format!("k{i}"))
            .body(ByteStream::from(random_bytes(200 * 1024)))
            .send()
            .await
            .expect("put");
    }
    for _ in 0..3 {
        let _ = s3.get_object().bucket("counted").key("missing").send().await;
    }
    let (status, text) = scrape(fe, Some(TOKEN)).await;
    assert_eq!(status, 200);
    let after = parse(&text);
    let puts = |s: &prometheus_parse::Scrape| value(s, "api_s3_request_counter", &[("api_endpoint", "PutObject")]);
    assert_eq!(puts(&after) - puts(&before), 5.0, "{text}");
    assert_eq!(
        value(&after, "api_s3_error_counter", &[("api_endpoint", "GetObject"), ("status_code", "404")]),
        3.0,
        "{text}"
    );
    assert_eq!(value(&after, "api_s3_request_bytes_received", &[("api_endpoint", "PutObject")]), 5.0 * 200.0 * 1024.0);
    assert!(value(&after, "api_s3_request_duration_count", &[("api_endpoint", "PutObject")]) >= 5.0, "{text}");
    assert!(value(&after, "table_put_request_counter", &[("table_name", "object")]) >= 5.0, "{text}");
    // Each PUT reads the key's previous object; the access key comes from the frontend's
    // cache after the first request.
    assert!(value(&after, "table_get_request_counter", &[("table_name", "object")]) >= 5.0, "{text}");
    assert!(value(&after, "frontend_cache_hit_counter", &[("cache", "key")]) >= 5.0, "{text}");
    assert!(value(&after, "frontend_cache_miss_counter", &[("cache", "key")]) >= 1.0, "{text}");
    assert!(value(&after, "rpc_request_counter", &[("rpc_endpoint", "PutBlock")]) >= 5.0, "{text}");
    assert_eq!(value(&after, "hangar_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), 1.0, "{text}");
    assert_eq!(value(&after, "hangar_replication_factor", &[]), 3.0, "{text}");
    // Counters keep Garage's names: no `_total`.
    for s in &after.samples {
        assert!(!s.metric.ends_with("_total") || s.metric == "hangar_local_disk_total", "{}", s.metric);
    }
    // Cluster health, as the frontend sees it (its probe runs every 2 s).
    let healthy = wait_until(Duration::from_secs(10), || async {
        let s = parse(&scrape(fe, Some(TOKEN)).await.1);
        value(&s, "cluster_healthy", &[]) == 1.0
            && value(&s, "cluster_storage_nodes_ok", &[]) == 3.0
            && value(&s, "cluster_partitions_quorum", &[]) == 256.0
    })
    .await;
    assert!(healthy, "{}", scrape(fe, Some(TOKEN)).await.1);

    // Data nodes: blocks written to disk, disk space, table changes.
    let written = wait_until(Duration::from_secs(10), || async {
        let s = parse(&scrape(data, Some(TOKEN)).await.1);
        value(&s, "block_bytes_written", &[]) >= 5.0 * 200.0 * 1024.0
            && value(&s, "block_write_duration_count", &[]) >= 5.0
            && value(&s, "hangar_local_disk_total", &[("volume", "data")]) > 0.0
            && value(&s, "table_internal_update_counter", &[("table_name", "object")]) >= 5.0
            && value(&s, "hangar_layout_version", &[]) == 1.0
            && value(&s, "hangar_layout_sync_progress", &[("version", "1")]) == 1.0
    })
    .await;
    assert!(written, "{}", scrape(data, Some(TOKEN)).await.1);
    let d = parse(&scrape(data, Some(TOKEN)).await.1);
    // A data node does not watch the cluster: no cluster_* value, rather than a false 0.
    assert!(!d.samples.iter().any(|s| s.metric.starts_with("cluster_")), "a data node reports cluster health");
    for family in
        ["block_resync_queue_length", "block_resync_errored_blocks", "hangar_worker_state", "hangar_layout_version"]
    {
        assert!(d.samples.iter().any(|s| s.metric == family), "data node has no {family}");
    }

    // The control plane sees the cluster from heartbeats.
    let seen = wait_until(Duration::from_secs(15), || async {
        let s = parse(&scrape(cp, Some(TOKEN)).await.1);
        value(&s, "cluster_storage_nodes", &[]) == 3.0 && value(&s, "cluster_healthy", &[]) == 1.0
    })
    .await;
    assert!(seen, "{}", scrape(cp, Some(TOKEN)).await.1);
}
