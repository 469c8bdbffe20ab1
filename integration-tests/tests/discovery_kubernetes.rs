//! Kubernetes discovery with the real binaries, reached by an ordinary `kube::Client`
//! (through `KUBECONFIG`) against `fakes/kube_api.py`, a stand-in of the API server for the
//! paths discovery uses: definition apply, list with a label selector, watch with
//! `resourceVersion` and bookmarks, `410 Gone` forcing a relist, create, replace, patch,
//! delete and the status subresource.
//!
//! What a real API server does that the stand-in does not: it validates the whole schema
//! (the stand-in checks required fields; the schema itself is unit-tested in the discovery
//! crate), enforces rights, runs admission, and garbage-collects a pod's resources on its
//! own (here the test says when a pod is gone, `/_fake/delete-pod`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use hangar_integration_tests::cluster::{Cluster, Discovery};
use hangar_integration_tests::fakes::Fake;
use hangar_integration_tests::*;

const NS: &str = "hangar-test";
const NODES: &str = "/apis/hangar.dev/v1/namespaces/hangar-test/hangarnodes";
/// How soon a change must show in `hangar status` (a dead node also needs its heartbeats
/// to stop counting, 7 s), with room for a loaded machine.
const NOTICE: Duration = Duration::from_secs(30);

/// A kubeconfig naming the fake, and the discovery settings of every process: the
/// processes apply the definition themselves (`skip_crd = false`) and the control plane
/// assigns roles (`auto_assign`).
fn discovery(api: &Fake, dir: &std::path::Path) -> Discovery {
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    \
             user: fake\n    namespace: {NS}\ncurrent-context: fake\n",
            api.url
        ),
    )
    .unwrap();
    Discovery {
        sections: format!(
            "[kubernetes_discovery]\nnamespace = \"{NS}\"\nservice_name = \"hangar\"\nskip_crd = false\n\n\
             [layout]\nauto_assign = true\ndefault_capacity = \"1T\"\n"
        ),
        env: vec![("KUBECONFIG".into(), kubeconfig.display().to_string())],
        auto_layout: true,
    }
}

/// The HangarNode resources of the cluster.
async fn resources(api: &Fake) -> Vec<serde_json::Value> {
    let (status, list) = api.call("GET", &format!("{NODES}?labelSelector=hangar.dev%2Fservice%3Dhangar"), None).await;
    assert_eq!(status, 200, "{list}");
    list["items"].as_array().cloned().unwrap_or_default()
}

async fn stat(api: &Fake, name: &str) -> u64 {
    api.call("GET", "/_fake/stats", None).await.1[name].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_announce_themselves_are_watched_and_leave_with_their_pod() {
    let api = Fake::start("kube_api.py", &[]);
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start_discovered(3, 2, discovery(&api, dir.path())).await;

    // The processes applied the definition (skip_crd = false).
    let (status, crd) =
        api.call("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/hangarnodes.hangar.dev", None).await;
    assert_eq!(status, 200, "definition applied: {crd}");

    // Everyone is in `hangar status` with role, zone and health, found through Kubernetes.
    let ids: Vec<String> = (0..3).map(|i| cluster.node_id(i)).collect();
    cluster
        .wait_for("every node healthy in status, found by kubernetes", NOTICE, || async {
            let s = cluster.status().await;
            let data_ok = ids.iter().zip(["a", "b", "c"]).all(|(id, zone)| {
                s.node(id)
                    .is_some_and(|n| n.healthy && n.zone == zone && n.found_by == "kubernetes" && n.partitions > 0)
            });
            let s3 = s.nodes.iter().filter(|n| n.role == "s3" && n.healthy && n.found_by == "kubernetes").count();
            data_ok && s3 == 2
        })
        .await;

    // One resource per process, owned by its pod, with the health the control plane wrote.
    cluster
        .wait_for("six resources, each with status.health = healthy", NOTICE, || async {
            let r = resources(&api).await;
            r.len() == 6 && r.iter().all(|n| n["status"]["health"] == "healthy")
        })
        .await;
    let all = resources(&api).await;
    let data1 = all.iter().find(|r| r["metadata"]["name"] == ids[0].as_str()).expect("data node 1's resource");
    assert_eq!(data1["spec"]["role"], "data");
    assert_eq!(data1["spec"]["zone"], "a");
    assert_eq!(data1["spec"]["address"], "127.0.0.1");
    assert_eq!(data1["metadata"]["ownerReferences"][0]["kind"], "Pod");
    assert_eq!(data1["metadata"]["ownerReferences"][0]["name"], "data1");
    assert!(data1["status"]["lastSeen"].as_str().is_some_and(|t| t.ends_with('Z')), "{data1}");
    let roles: Vec<&str> = all.iter().filter_map(|r| r["spec"]["role"].as_str()).collect();
    assert_eq!(roles.iter().filter(|r| **r == "control").count(), 1, "{roles:?}");

    // The cluster serves.
    let bucket = new_bucket(&cluster.s3_client(0), "k8s").await;
    let mut objects = Vec::new();
    for i in 0..20 {
        let data = random_bytes(if i % 2 == 0 { 1000 } else { 200_000 });
        put_bytes(&cluster.s3_client(0), &bucket, &format!("o{i}"), &data).await;
        objects.push((format!("o{i}"), data));
    }
    for (k, d) in &objects {
        assert_eq!(&get_bytes(&cluster.s3_client(1), &bucket, k).await, d);
    }

    // The watch breaks; the control plane watches again, and sees a pod go: data node 3
    // dies and Kubernetes deletes its resource with its pod.
    let watches = stat(&api, "watches").await;
    assert_eq!(api.call("POST", "/_fake/break-watches", None).await.0, 200);
    cluster.kill9_data(2);
    let (_, deleted) = api.call("POST", &format!("/_fake/delete-pod?namespace={NS}&name=data3"), None).await;
    assert_eq!(deleted["deleted"], serde_json::json!([ids[2]]), "{deleted}");
    cluster
        .wait_for("data node 3 marked gone", NOTICE, || async {
            cluster.status().await.node(&ids[2]).is_some_and(|n| n.health == "gone" && !n.healthy)
        })
        .await;
    assert!(stat(&api, "watches").await > watches, "the watch was resumed");

    // History compacted: the resumed watch gets 410 Gone, the control plane lists again
    // and still sees what changes after.
    assert_eq!(api.call("POST", "/_fake/compact", None).await.0, 200);
    cluster.wait_for("a watch answered 410 Gone", NOTICE, || async { stat(&api, "expired_410").await > 0 }).await;
    let s3_2 = cluster.status().await.nodes.iter().filter(|n| n.role == "s3").map(|n| n.id.clone()).collect::<Vec<_>>();
    cluster.kill9_frontend(1);
    api.call("POST", &format!("/_fake/delete-pod?namespace={NS}&name=s3-2"), None).await;
    cluster
        .wait_for("frontend 2 marked gone after the relist", NOTICE, || async {
            let s = cluster.status().await;
            s.nodes.iter().filter(|n| s3_2.contains(&n.id) && n.health == "gone").count() == 1
        })
        .await;

    // A frontend that starts while the control plane is down finds the data nodes through
    // discovery, takes the layout from one of them and serves at once.
    cluster.stop_control_plane().await;
    cluster
        .wait_for("the control plane's resource withdrawn on its clean stop", NOTICE, || async {
            resources(&api).await.iter().all(|r| r["spec"]["role"] != "control")
        })
        .await;
    cluster.stop_frontend(0).await;
    cluster.restart_frontend(0).await;
    cluster.wait_frontend_serving(0).await;
    for (k, d) in &objects {
        assert_eq!(&get_bytes(&cluster.s3_client(0), &bucket, k).await, d, "{k} after the restart");
    }
    // Ready (it probes every 2 s): two of three replicas of every partition answer.
    let health = format!("http://{}/health", cluster.frontends[0].admin_addr);
    cluster
        .wait_for("the restarted frontend's /health to answer 200", NOTICE, || async {
            http_get(&health).await.0 == 200
        })
        .await;
    // The second frontend is dead and data node 3 too; stop data node 2: no quorum left,
    // and /ready says which partition lacks one.
    cluster.stop_data(1).await;
    let ready = format!("http://{}/ready", cluster.frontends[0].admin_addr);
    cluster
        .wait_for("/ready to answer 503 without a quorum", NOTICE, || async {
            let (status, body) = http_get(&ready).await;
            status == 503 && body.contains("a quorum needs 2")
        })
        .await;
    assert_eq!(http_get(&format!("http://{}/live", cluster.frontends[0].admin_addr)).await.0, 200);
}

async fn http_get(url: &str) -> (u16, String) {
    let resp = reqwest::get(url).await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn automatic_layout_adds_a_fourth_data_node_while_clients_write_and_read() {
    let api = Fake::start("kube_api.py", &[]);
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start_discovered(3, 1, discovery(&api, dir.path())).await;
    assert_eq!(cluster.status().await.layout_version, 1, "the first layout came by itself");
    let bucket = new_bucket(&cluster.s3_client(0), "auto").await;

    // A writer and a reader through the change; the SDK's standard retries are the only
    // slack a request gets.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let written = Arc::new(std::sync::Mutex::new(Vec::<(String, Vec<u8>)>::new()));
    let client = {
        let (s3, bucket, stop, failures, written) =
            (cluster.s3_client(0), bucket.clone(), stop.clone(), failures.clone(), written.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let key = format!("w{i}");
                let data = random_bytes(if i % 3 == 0 { 300_000 } else { 2_000 });
                let put = s3.put_object().bucket(&bucket).key(&key).body(data.clone().into()).send().await;
                match put {
                    Ok(_) => written.lock().unwrap().push((key, data)),
                    Err(e) => {
                        eprintln!("PUT {key} failed: {e:?}");
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
                let last = written.lock().unwrap().last().cloned();
                if let Some((k, d)) = last {
                    let got = match s3.get_object().bucket(&bucket).key(&k).send().await {
                        Ok(o) => Ok(body_bytes(o.body).await),
                        Err(e) => Err(e),
                    };
                    if !matches!(&got, Ok(b) if *b == d) {
                        eprintln!("GET {k} failed or differed: {:?}", got.err());
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
                i += 1;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;

    // A fourth data node joins (a StatefulSet scaled to 4): no command.
    let i = cluster.add_data_node().await;
    let id4 = cluster.node_id(i);
    cluster
        .wait_for("automatic layout to give node 4 a role (version 2)", Duration::from_secs(30), || async {
            let s = cluster.status().await;
            s.layout_version == 2 && s.node(&id4).is_some_and(|n| n.partitions > 0 && n.zone == "d")
        })
        .await;
    cluster.wait_layout_settled(2, Duration::from_secs(180)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    client.await.unwrap();

    assert_eq!(failures.load(Ordering::SeqCst), 0, "no request failed through the change\n{}", cluster.logs());
    assert_eq!(cluster.status().await.layout_version, 2, "one change only");
    let written = written.lock().unwrap().clone();
    assert!(written.len() > 10, "the writer made progress: {}", written.len());
    for (k, d) in &written {
        assert_eq!(&get_bytes(&cluster.s3_client(0), &bucket, k).await, d, "{k}");
    }
}
