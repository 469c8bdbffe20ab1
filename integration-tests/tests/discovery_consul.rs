//! Consul discovery with the real binaries against `fakes/consul_agent.py`, a stand-in of
//! a Consul agent's HTTP API (agent and catalog register and deregister, TTL checks,
//! health with blocking queries, ACL token). `fakes/test_consul_fake.py` drives the same
//! stand-in with an independent client (PyPI `py-consul`) in CI.
//!
//! What real Consul does differently: Raft, gossip and several agents (here one agent is
//! the whole catalog); its reaper removes services critical for longer than
//! `DeregisterCriticalServiceAfter` only every 30 s and never sooner than a minute; ACL
//! policies rather than one token.

use std::time::{Duration, Instant};

use hangar_integration_tests::cluster::{Cluster, Discovery};
use hangar_integration_tests::fakes::Fake;
use hangar_integration_tests::*;

const TOKEN: &str = "consul-test-token";
/// How soon a change must show in `hangar status` (the TTL is 15 s).
const NOTICE: Duration = Duration::from_secs(30);

fn discovery(consul: &Fake, api: &str) -> Discovery {
    Discovery {
        sections: format!(
            "[consul_discovery]\napi = \"{api}\"\nconsul_http_addr = \"{}\"\nservice_name = \"hangar\"\n\
             token = \"{TOKEN}\"\ntags = [\"s3\"]\nmeta = {{ cluster = \"test\" }}\n\n\
             [layout]\nauto_assign = true\ndefault_capacity = \"1T\"\n",
            consul.url
        ),
        env: vec![],
        auto_layout: true,
    }
}

async fn get(consul: &Fake, path: &str) -> serde_json::Value {
    let (status, body) = consul.call_with("GET", path, None, &[("X-Consul-Token", TOKEN)]).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// The ids of the passing instances of the `hangar` service.
async fn passing(consul: &Fake) -> Vec<String> {
    let list = get(consul, "/v1/health/service/hangar?passing=1").await;
    list.as_array().unwrap().iter().filter_map(|e| e["Service"]["ID"].as_str().map(str::to_string)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agent_registrations_carry_a_ttl_check_and_leave_when_a_node_dies_or_stops() {
    let consul = Fake::start("consul_agent.py", &["--token", TOKEN]);
    let mut cluster = Cluster::start_discovered(3, 2, discovery(&consul, "agent")).await;
    let ids: Vec<String> = (0..3).map(|i| cluster.node_id(i)).collect();

    // Each process registered with the agent: meta with role, node id and zone, and a TTL
    // check that is passing because the process passes it.
    cluster.wait_for("six passing instances", NOTICE, || async { passing(&consul).await.len() == 6 }).await;
    let services = get(&consul, "/v1/agent/services").await;
    let services = services.as_object().unwrap();
    assert_eq!(services.len(), 6, "control plane, 3 data nodes, 2 frontends: {services:?}");
    let d1 = &services[&ids[0]];
    assert_eq!(d1["Service"], "hangar");
    assert_eq!(d1["Meta"]["hangar_role"], "data");
    assert_eq!(d1["Meta"]["hangar_zone"], "a");
    assert_eq!(d1["Meta"]["hangar_node_id"], ids[0].as_str());
    assert_eq!(d1["Meta"]["cluster"], "test", "the configured meta is added");
    assert_eq!(d1["Tags"], serde_json::json!(["s3"]));
    let checks = get(&consul, "/v1/agent/checks").await;
    let c1 = &checks[&format!("service:{}", ids[0])];
    assert_eq!(c1["Type"], "ttl", "{checks}");
    assert_eq!(c1["Status"], "passing");

    cluster
        .wait_for("every node healthy in status, found by consul", NOTICE, || async {
            let s = cluster.status().await;
            ids.iter().zip(["a", "b", "c"]).all(|(id, z)| {
                s.node(id).is_some_and(|n| n.healthy && n.zone == z && n.found_by == "consul" && n.partitions > 0)
            }) && s.nodes.iter().filter(|n| n.role == "s3" && n.found_by == "consul").count() == 2
        })
        .await;
    let bucket = new_bucket(&cluster.s3_client(0), "consul").await;
    let data = random_bytes(150_000);
    put_bytes(&cluster.s3_client(0), &bucket, "k", &data).await;
    assert_eq!(get_bytes(&cluster.s3_client(1), &bucket, "k").await, data);

    // Blocking queries: an instance registered by somebody else reaches the control plane
    // at once (a poll would take up to its interval; the bound leaves room for the CLI on
    // a loaded machine).
    let ghost = serde_json::json!({
        "ID": "ghost-frontend", "Name": "hangar", "Address": "127.0.0.9", "Port": 3900,
        "Meta": { "hangar_role": "frontend", "hangar_node_id": "ghost-frontend" },
        "Check": { "TTL": "60s", "Status": "passing" },
    });
    let t0 = Instant::now();
    let (status, _) =
        consul.call_with("PUT", "/v1/agent/service/register", Some(ghost), &[("X-Consul-Token", TOKEN)]).await;
    assert_eq!(status, 200);
    cluster
        .wait_for("the registered instance in status", Duration::from_secs(5), || async {
            cluster.status().await.node("ghost-frontend").is_some()
        })
        .await;
    eprintln!("a registration reached `hangar status` after {:?}", t0.elapsed());

    // A clean shutdown deregisters.
    let s3_ids: Vec<String> =
        services.iter().filter(|(_, s)| s["Meta"]["hangar_role"] == "frontend").map(|(k, _)| k.clone()).collect();
    cluster.stop_frontend(1).await;
    let left: Vec<String> = get(&consul, "/v1/agent/services").await.as_object().unwrap().keys().cloned().collect();
    assert_eq!(s3_ids.len(), 2);
    assert_eq!(s3_ids.iter().filter(|id| left.contains(id)).count(), 1, "one frontend deregistered: {left:?}");

    // A node killed with kill -9 leaves the passing set when its TTL runs out (15 s), and
    // the control plane marks it gone.
    let t0 = Instant::now();
    cluster.kill9_data(2);
    cluster
        .wait_for("data node 3 out of the passing set", NOTICE, || async { !passing(&consul).await.contains(&ids[2]) })
        .await;
    // The TTL is 15 s and passed every 5 s: it runs out 10 to 15 s after the last pass.
    let out = t0.elapsed();
    assert!(out >= Duration::from_secs(9), "it left when its TTL ran out, not before: {out:?}");
    cluster
        .wait_for("data node 3 marked gone", NOTICE, || async {
            cluster.status().await.node(&ids[2]).is_some_and(|n| n.health == "gone")
        })
        .await;
    // It is still registered (critical) until DeregisterCriticalServiceAfter.
    let checks = get(&consul, "/v1/agent/checks").await;
    assert_eq!(checks[&format!("service:{}", ids[2])]["Status"], "critical");
    let services = get(&consul, "/v1/agent/services").await;
    assert_eq!(services[&ids[2]]["Meta"]["hangar_role"], "data");

    // Two of three replicas: everything still reads.
    assert_eq!(get_bytes(&cluster.s3_client(0), &bucket, "k").await, data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn catalog_registrations_list_every_node_and_leave_on_a_clean_stop_or_a_minute_of_silence() {
    let consul = Fake::start("consul_agent.py", &["--token", TOKEN]);
    let mut cluster = Cluster::start_discovered(3, 1, discovery(&consul, "catalog")).await;
    let ids: Vec<String> = (0..3).map(|i| cluster.node_id(i)).collect();

    cluster
        .wait_for("five catalog entries", NOTICE, || async {
            get(&consul, "/v1/catalog/service/hangar").await.as_array().unwrap().len() == 5
        })
        .await;
    let entries = get(&consul, "/v1/catalog/service/hangar").await;
    let entries = entries.as_array().unwrap();
    let d1 = entries.iter().find(|e| e["ServiceID"] == ids[0].as_str()).expect("data node 1 in the catalog");
    assert_eq!(d1["ServiceMeta"]["hangar_role"], "data");
    assert_eq!(d1["Node"], format!("hangar-{}", ids[0]), "an external node per process");
    assert_eq!(passing(&consul).await.len(), 5);
    cluster
        .wait_for("data nodes healthy in status, found by consul", NOTICE, || async {
            let s = cluster.status().await;
            ids.iter().all(|id| s.node(id).is_some_and(|n| n.healthy && n.found_by == "consul"))
        })
        .await;

    cluster.stop_frontend(0).await;
    let entries = get(&consul, "/v1/catalog/service/hangar").await;
    assert_eq!(entries.as_array().unwrap().len(), 4, "the frontend's entry removed: {entries}");
    let nodes = get(&consul, "/v1/catalog/nodes").await;
    assert_eq!(nodes.as_array().unwrap().len(), 1 + 4, "its external node went with it: {nodes}");
    cluster.restart_frontend(0).await;
    let bucket = new_bucket(&cluster.s3_client(0), "catalog").await;
    put_bytes(&cluster.s3_client(0), &bucket, "k", b"catalog").await;
    assert_eq!(get_bytes(&cluster.s3_client(0), &bucket, "k").await, b"catalog");
    cluster
        .wait_for("the restarted frontend in the catalog", NOTICE, || async {
            get(&consul, "/v1/catalog/service/hangar").await.as_array().unwrap().len() == 5
        })
        .await;

    // Consul never runs the check of a catalog entry: a node killed with kill -9 stays
    // `passing` there. The control plane removes the entry of a node silent for a minute.
    cluster.kill9_data(2);
    cluster
        .wait_for("the dead node's catalog entry removed by the control plane", Duration::from_secs(120), || async {
            let entries = get(&consul, "/v1/catalog/service/hangar").await;
            !entries.as_array().unwrap().iter().any(|e| e["ServiceID"] == ids[2].as_str())
        })
        .await;
    cluster
        .wait_for("data node 3 marked gone", Duration::from_secs(10), || async {
            cluster.status().await.node(&ids[2]).is_some_and(|n| n.health == "gone")
        })
        .await;
    assert_eq!(get_bytes(&cluster.s3_client(0), &bucket, "k").await, b"catalog");
}
