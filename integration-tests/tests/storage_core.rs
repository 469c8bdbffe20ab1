//! The storage core under layout changes and races, on a real cluster:
//!
//! - a layout change with a stale replica loses nothing for readers, before, during and
//!   after the move, with a writer and a reader running through both frontends;
//! - a node added to a loaded cluster, then another removed: every block ends on exactly
//!   the nodes of the final layout, and the node that left keeps nothing;
//! - concurrent CreateBucket of one name through two frontends: one winner, everywhere;
//! - concurrent grants through two frontends and the CLI: all survive;
//! - a node that missed a block's reference never deletes the block while it is in use;
//! - one object overwritten 1000 times: the frontend's work per PUT stays the same, and
//!   the old versions' space is freed on every node.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_sdk_s3::Client;
use hangar_integration_tests::cluster::{Cluster, expected_block_names};
use hangar_integration_tests::*;
use tokio::sync::Mutex;

const FAST: &str =
    "block_gc_delay_secs = 2\npending_write_grace_secs = 5\noffload_delay_secs = 2\nsync_tranquility = 0\n";
const SETTLE: Duration = Duration::from_secs(180);

/// Writes keys through alternating frontends and reads back random acknowledged ones,
/// until stopped; every failure is recorded.
struct Traffic {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    fn start(clients: [Client; 2], bucket: &str, prefix: &str) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let acked: Arc<Mutex<BTreeMap<String, Vec<u8>>>> = Default::default();
        let failures: Arc<Mutex<Vec<String>>> = Default::default();
        let writer = {
            let (stop, acked, clients) = (stop.clone(), acked.clone(), clients.clone());
            let (bucket, prefix) = (bucket.to_string(), prefix.to_string());
            tokio::spawn(async move {
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("{prefix}{i}");
                    let data = random_bytes(4096 + (i % 7) * 3000);
                    let s3 = &clients[i % 2];
                    match s3.put_object().bucket(&bucket).key(&key).body(data.clone().into()).send().await {
                        Ok(_) => {
                            acked.lock().await.insert(key, data);
                        }
                        // A write that fails is not acknowledged: allowed, only noted.
                        Err(e) => eprintln!("traffic: write {key} failed: {:?}", err_code(&e)),
                    }
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        let reader = {
            let (stop, acked, failures, clients) = (stop.clone(), acked.clone(), failures.clone(), clients);
            let bucket = bucket.to_string();
            tokio::spawn(async move {
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let pick = {
                        let a = acked.lock().await;
                        let len = a.len();
                        (len > 0).then(|| a.iter().nth(n * 7919 % len).map(|(k, v)| (k.clone(), v.clone()))).flatten()
                    };
                    if let Some((key, want)) = pick {
                        let s3 = &clients[n % 2];
                        match s3.get_object().bucket(&bucket).key(&key).send().await {
                            Ok(out) => {
                                let got = body_bytes(out.body).await;
                                if got != want {
                                    failures
                                        .lock()
                                        .await
                                        .push(format!("{key}: stale or wrong data ({} bytes)", got.len()));
                                }
                            }
                            Err(e) => {
                                failures.lock().await.push(format!("{key}: {:?} {:?}", err_status(&e), err_code(&e)))
                            }
                        }
                    }
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        };
        Traffic { stop, acked, failures, tasks: vec![writer, reader] }
    }

    /// Stops the traffic; the acknowledged objects.
    async fn stop(self) -> BTreeMap<String, Vec<u8>> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("traffic task");
        }
        let failures = self.failures.lock().await;
        assert!(
            failures.is_empty(),
            "{} reads failed, first: {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        self.acked.lock().await.clone()
    }
}

async fn assert_all_read(clients: &[Client], bucket: &str, objects: &BTreeMap<String, Vec<u8>>, when: &str) {
    for (i, s3) in clients.iter().enumerate() {
        for (key, data) in objects {
            let got = s3.get_object().bucket(bucket).key(key).send().await;
            let got = match got {
                Ok(o) => body_bytes(o.body).await,
                Err(e) => panic!("{when}: {key} through frontend {}: {e:?}", i + 1),
            };
            assert!(&got == data, "{when}: {key} through frontend {} is stale or wrong", i + 1);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layout_change_with_a_stale_replica_loses_nothing() {
    let mut cluster = Cluster::start_with(3, 2, FAST).await;
    let clients = [cluster.s3_client(0), cluster.s3_client(1)];
    let bucket = new_bucket(&clients[0], "move").await;

    // B misses 120 writes.
    cluster.kill9_data(1);
    let mut objects = BTreeMap::new();
    for i in 0..120 {
        let data = random_bytes(if i % 3 == 0 { 1000 } else { 5000 + i * 100 });
        put_bytes(&clients[i % 2], &bucket, &format!("before/{i}"), &data).await;
        objects.insert(format!("before/{i}"), data);
    }
    cluster.restart_data(1).await;

    // D replaces C while C keeps running, with traffic through both frontends.
    let traffic = Traffic::start(clients.clone(), &bucket, "during/");
    let d = cluster.add_data_node().await;
    let d_id = cluster.node_id(d);
    cluster.remove_data_node(2).await;
    let assigned = wait_until(Duration::from_secs(20), || async {
        cluster.cli(["layout", "assign", &d_id, "--zone", "c", "--capacity", "1T"]).await.status.success()
    })
    .await;
    assert!(assigned, "could not assign the new node");
    cluster.apply_layout(2).await;
    cluster.wait_layout_settled(2, SETTLE).await;
    let written = traffic.stop().await;
    assert!(written.len() > 20, "the writer got only {} writes through", written.len());
    objects.extend(written);
    assert_all_read(&clients, &bucket, &objects, "after the move").await;

    // C's copies are no longer needed, and A may die: B and D hold everything.
    cluster.stop_data(2).await;
    cluster.kill9_data(0);
    assert_all_read(&clients, &bucket, &objects, "with C stopped and A dead").await;
}

/// Which data nodes hold each block of `objects`.
fn holders(cluster: &Cluster, objects: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, BTreeSet<usize>> {
    let mut want: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    for data in objects.values() {
        for b in expected_block_names(data) {
            want.entry(b).or_default();
        }
    }
    for i in 0..cluster.data.len() {
        for b in cluster.block_names(i) {
            if let Some(h) = want.get_mut(&b) {
                h.insert(i);
            }
        }
    }
    want
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_follow_the_layout_when_nodes_join_and_leave() {
    let mut cluster = Cluster::start_with(3, 1, FAST).await;
    let s3 = cluster.s3_client(0);
    let bucket = new_bucket(&s3, "grow").await;
    let mut objects = BTreeMap::new();
    for i in 0..24 {
        let data = random_bytes((1 << 20) + 4096 * i);
        put_bytes(&s3, &bucket, &format!("o{i}"), &data).await;
        objects.insert(format!("o{i}"), data);
    }
    // A fourth node joins.
    let d = cluster.add_data_node().await;
    cluster.assign_data_node(d).await;
    cluster.apply_layout(2).await;
    cluster.wait_layout_settled(2, SETTLE).await;
    let settled =
        wait_until(Duration::from_secs(60), || async { holders(&cluster, &objects).values().all(|h| h.len() == 3) })
            .await;
    assert!(settled, "with four nodes, blocks are not on exactly three: {:?}", holders(&cluster, &objects));
    assert!(holders(&cluster, &objects).values().any(|h| h.contains(&d)), "the new node got nothing");

    // The first node leaves.
    cluster.remove_data_node(0).await;
    cluster.apply_layout(3).await;
    cluster.wait_layout_settled(3, SETTLE).await;
    let settled = wait_until(Duration::from_secs(60), || async {
        holders(&cluster, &objects).values().all(|h| h.len() == 3 && !h.contains(&0))
            && cluster.block_files(0).is_empty()
    })
    .await;
    assert!(
        settled,
        "after the node left: {:?}, {} files still on it",
        holders(&cluster, &objects),
        cluster.block_files(0).len()
    );
    cluster.stop_data(0).await;
    assert_all_read(&[s3], &bucket, &objects, "after the node left").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_of_one_name_have_one_winner_everywhere() {
    let cluster = Cluster::start_with(3, 2, FAST).await;
    let other = KeyInfo::parse(&cluster.cli_ok(["key", "create", "other"]).await).expect("key");
    cluster.cli_ok(["key", "allow", "--create-bucket", &other.id]).await;
    let (a, b) = (cluster.s3_client_no_retry(0), cluster.s3_client_no_retry_as(1, &other));
    let readers = [
        (cluster.s3_client_no_retry(0), cluster.s3_client_no_retry(1)),
        (cluster.s3_client_no_retry_as(0, &other), cluster.s3_client_no_retry_as(1, &other)),
    ];
    for round in 0..100 {
        let name = format!("{}-{round}", bucket_name("claim"));
        let (ra, rb) = tokio::join!(a.create_bucket().bucket(&name).send(), b.create_bucket().bucket(&name).send());
        let winner = match (&ra, &rb) {
            (Ok(_), Err(e)) | (Err(e), Ok(_)) => {
                assert_eq!(err_code(e).as_deref(), Some("BucketAlreadyExists"), "round {round}: {e:?}");
                usize::from(ra.is_err())
            }
            _ => panic!("round {round}: {ra:?} / {rb:?}"),
        };
        // Both frontends resolve the name to the winner's bucket: only the winner's key
        // sees it, through either.
        for (who, (f1, f2)) in readers.iter().enumerate() {
            for f in [f1, f2] {
                let r = f.head_bucket().bucket(&name).send().await;
                if who == winner {
                    r.unwrap_or_else(|e| panic!("round {round}: the winner cannot see its bucket: {e:?}"));
                } else {
                    assert_eq!(err_status(&r.expect_err("the loser sees the bucket")), Some(403), "round {round}");
                }
            }
        }
    }
    let listed = cluster.cli_ok(["bucket", "list"]).await;
    assert_eq!(listed.lines().filter(|l| l.contains("claim")).count(), 100, "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_grants_all_survive() {
    let cluster = Cluster::start_with(3, 2, FAST).await;
    let s3 = [cluster.s3_client(0), cluster.s3_client(1)];
    let shared = new_bucket(&s3[0], "shared").await;
    let mut keys = Vec::new();
    for i in 0..20 {
        keys.push(KeyInfo::parse(&cluster.cli_ok(["key", "create", &format!("k{i}")]).await).expect("key"));
    }
    // 20 grants through the CLI, while the cluster key creates 20 buckets through the two
    // frontends (each creation grants that key its owner right).
    let grants = futures::future::join_all(keys.iter().map(|k| {
        let cluster = &cluster;
        let (shared, id) = (shared.clone(), k.id.clone());
        async move { cluster.cli(["bucket", "allow", "--read", "--write", &shared, "--key", &id]).await }
    }));
    let creates = futures::future::join_all((0..20).map(|i| {
        let s3 = s3[i % 2].clone();
        async move {
            let name = format!("{}-{i}", bucket_name("owned"));
            s3.create_bucket().bucket(&name).send().await.map(|_| name)
        }
    }));
    let (grants, creates) = tokio::join!(grants, creates);
    for g in grants {
        assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));
    }
    let info = cluster.cli_ok(["bucket", "info", &shared]).await;
    for k in &keys {
        assert!(
            info.lines().any(|l| l.contains(&k.id) && l.trim_start().starts_with("RW")),
            "grant of {} lost:\n{info}",
            k.id
        );
    }
    for (i, k) in keys.iter().enumerate() {
        let c = cluster.s3_client_no_retry_as(i % 2, k);
        c.put_object().bucket(&shared).key(format!("from-{i}")).body(b"x".to_vec().into()).send().await.expect("put");
    }
    let key_info = cluster.cli_ok(["key", "info", &cluster.key.id]).await;
    for c in creates {
        let name = c.expect("create bucket");
        assert!(
            key_info.lines().any(|l| l.contains(&name) && l.trim_start().starts_with("RWO")),
            "{name} lost:\n{key_info}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_missed_a_reference_keeps_the_block() {
    let mut cluster = Cluster::start_with(3, 1, FAST).await;
    let s3 = cluster.s3_client(0);
    let bucket = new_bucket(&s3, "refs").await;
    let data = random_bytes(1 << 20);
    let block: String = expected_block_names(&data).into_iter().next().expect("one block");
    put_bytes(&s3, &bucket, "first", &data).await;
    // Node 3 misses the second object's reference on the same block...
    cluster.kill9_data(2);
    put_bytes(&s3, &bucket, "second", &data).await;
    cluster.restart_data(2).await;
    // ... then loses the only reference it knew of.
    s3.delete_object().bucket(&bucket).key("first").send().await.expect("delete");
    // Several deletion delays later it still holds the block: it learned the other
    // reference from its peers instead of deleting.
    tokio::time::sleep(Duration::from_secs(12)).await;
    for i in 0..3 {
        assert!(
            cluster.block_names(i).contains(&block),
            "node {} deleted a block still in use\n{}",
            i + 1,
            cluster.logs()
        );
    }
    assert_eq!(get_bytes(&s3, &bucket, "second").await, data);
    // With the last object gone, every node lets the block go.
    s3.delete_object().bucket(&bucket).key("second").send().await.expect("delete");
    let gone = wait_until(Duration::from_secs(60), || async { cluster.all_block_files().is_empty() }).await;
    assert!(gone, "the block outlived its last reference");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_overwrites_cost_the_same_and_leave_one_version() {
    let cluster = Cluster::start_with(3, 2, FAST).await;
    let s3 = [cluster.s3_client(0), cluster.s3_client(1)];
    let bucket = new_bucket(&s3[0], "overwrite").await;
    let calls = |m: &str| -> f64 {
        m.lines()
            .filter(|l| l.starts_with("rpc_request_counter{"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .sum()
    };
    let metrics = |i: usize| {
        let addr = cluster.frontends[i].admin_addr;
        async move { reqwest::get(format!("http://{addr}/metrics")).await.expect("metrics").text().await.expect("text") }
    };
    let mut per_put = Vec::new();
    let mut last = Vec::new();
    let mut started = std::time::Instant::now();
    let mut latencies = Vec::new();
    for round in 0..1000 {
        let i = round % 2;
        let measure = !(100..900).contains(&round);
        let before = if measure { calls(&metrics(i).await) } else { 0.0 };
        if measure {
            started = std::time::Instant::now();
        }
        last = random_bytes(8 * 1024 + round);
        put_bytes(&s3[i], &bucket, "hot", &last).await;
        if measure {
            latencies.push(started.elapsed());
            per_put.push(calls(&metrics(i).await) - before);
        }
    }
    // The frontend does the same internal calls for the 1000th overwrite as for the first:
    // releasing what an overwrite replaced is the data nodes' work, off the request path.
    // Medians: the PUT that finds the frontend's catalog cache expired (once a second)
    // also reads the key and the bucket, and slower rounds meet that more often.
    let (early, late) = per_put.split_at(100);
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    assert!(median(late) <= median(early), "internal calls per PUT grew from {} to {}", median(early), median(late));
    let med = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (mut a, mut b) = (latencies[..100].to_vec(), latencies[100..].to_vec());
    eprintln!("PUT latency median: first 100 {:?}, last 100 {:?}", med(&mut a), med(&mut b));
    assert_eq!(get_bytes(&s3[1], &bucket, "hot").await, last);
    // After the deletion delay every node holds the current version's block only.
    let want = expected_block_names(&last);
    let freed = wait_until(Duration::from_secs(90), || async { (0..3).all(|i| cluster.block_names(i) == want) }).await;
    assert!(freed, "old versions left: {:?}", (0..3).map(|i| cluster.block_names(i).len()).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overwrite_that_reached_one_replica_never_destroys_the_acknowledged_value() {
    let mut cluster = Cluster::start_with(3, 1, FAST).await;
    let s3 = cluster.s3_client_no_retry(0);
    let bucket = new_bucket(&s3, "partial").await;
    let v1 = random_bytes(2 << 20);
    put_bytes(&s3, &bucket, "k", &v1).await;
    // Only the first node takes the overwrite (an inline value: no blocks needed), so the
    // client is told it failed; on that node the acknowledged value lost the merge.
    cluster.kill9_data(1);
    cluster.kill9_data(2);
    let r = s3.put_object().bucket(&bucket).key("k").body(b"small".to_vec().into()).send().await;
    assert!(r.is_err(), "an overwrite without a quorum was acknowledged");
    // Long enough for its release worker to have tried, several deletion delays over.
    tokio::time::sleep(Duration::from_secs(8)).await;
    // The node that took the overwrite dies; the other two come back: the acknowledged value
    // is what they hold, and its data must still be there.
    cluster.kill9_data(0);
    cluster.restart_data(1).await;
    cluster.restart_data(2).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let s3 = cluster.s3_client(0);
    assert_eq!(get_bytes(&s3, &bucket, "k").await, v1, "the acknowledged value lost its data");
}

/// An overwrite's old data is released by the replica that leads the object's partition at
/// once, and by the other replicas one grace period later (`pending_write_grace_secs`), so
/// three releases of the same data do not compete with the requests that follow the
/// overwrite. Newer values are written to two data nodes only, as a writer would (through
/// their metadata service; anti-entropy is off and nobody reads), so the third never sees
/// its value lose: when it is not the leader of a key, the leader releases at once; when
/// it is, the two others release the data after the grace — and bring it the newer value,
/// as they check every replica first. Each data node in turn misses the overwrites of 30
/// keys of its own, so both cases occur whichever node leads which key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_partition_leader_releases_overwritten_data_at_once_the_others_after_the_grace() {
    use hangar_integration_tests::peer::{at_layout, is_for, meta, rpc};
    use hangar_proto::metadata::{InsertRequest, RangeRequest, Table};
    use prost::Message;

    const KEYS: usize = 30;
    const GRACE: Duration = Duration::from_secs(20);
    let config = format!(
        "block_gc_delay_secs = 2\npending_write_grace_secs = {}\nanti_entropy_interval_secs = 0\n",
        GRACE.as_secs()
    );
    let cluster = Cluster::start_with(3, 1, &config).await;
    let s3 = cluster.s3_client(0);
    let bucket = new_bucket(&s3, "release").await;
    let layout = cluster.status().await.layout_version;
    let newer = b"newer".to_vec();
    // Whether data version `dv` still has a live block list on data node `on`.
    let live = |dv: Vec<u8>, on: usize| {
        let cluster = &cluster;
        async move {
            let req = RangeRequest {
                table: Table::VersionBlock as i32,
                end: hangar_model::keys::prefix_end(&dv).into(),
                start: dv.into(),
                limit: 10,
                ..Default::default()
            };
            !rpc(meta(cluster, on).range(at_layout(req, layout))).await.expect("range").entries.is_empty()
        }
    };

    let (mut at_once, mut put_off) = (false, false);
    for (phase, missed_by) in [2usize, 0, 1].into_iter().enumerate() {
        let written: Vec<usize> = (0..3).filter(|i| *i != missed_by).collect();
        let keys: Vec<String> = (0..KEYS).map(|i| format!("phase-{phase}/object-{i}")).collect();
        for key in &keys {
            put_bytes(&s3, &bucket, key, &random_bytes(64 * 1024)).await;
        }
        let req = RangeRequest { table: Table::Object as i32, limit: 10_000, ..Default::default() };
        let objects = rpc(meta(&cluster, written[0]).range(at_layout(req, layout))).await.expect("range").entries;
        // The data versions the values use, and newer inline values of the same keys.
        let (mut old, mut overwrites) = (Vec::new(), Vec::new());
        for key in &keys {
            let mut e = objects.iter().find(|e| is_for(e, key)).expect("the object's entry").clone();
            let mut obj = hangar_proto::model::Object::decode(e.value.as_ref()).expect("an object entry");
            old.push(obj.parts[0].data_version.to_vec());
            obj.version_id = random_bytes(16).into();
            obj.size = newer.len() as u64;
            obj.etag = md5_hex(&newer);
            obj.parts.clear();
            obj.checksums.clear();
            obj.inline_data = Some(newer.clone().into());
            e.value = obj.encode_to_vec().into();
            e.timestamp += 1_000_000;
            overwrites.push(e);
        }
        let unreleased = || async {
            let mut n = 0;
            for dv in &old {
                n += usize::from(live(dv.clone(), written[0]).await);
            }
            n
        };
        assert_eq!(unreleased().await, KEYS, "phase {phase}: data released before its value lost");
        let overwritten = std::time::Instant::now();
        for &i in &written {
            let req = InsertRequest { table: Table::Object as i32, entries: overwrites.clone() };
            rpc(meta(&cluster, i).insert(at_layout(req, layout))).await.expect("insert");
        }
        // Leaders that took the overwrite release at once (30 releases take well under 6 s).
        tokio::time::sleep(Duration::from_secs(6)).await;
        let early = unreleased().await;
        let at = overwritten.elapsed();
        eprintln!(
            "phase {phase}: data node {} missed the overwrites; {early} of {KEYS} old versions left {at:?} after them (grace {GRACE:?})",
            missed_by + 1
        );
        assert!(at < GRACE, "phase {phase}: the check came too late to tell");
        at_once |= early < KEYS;
        put_off |= early > 0;
        let all = wait_until(GRACE + Duration::from_secs(40), || async { unreleased().await == 0 }).await;
        assert!(
            all,
            "phase {phase}: {} of {KEYS} old versions still unreleased {:?} after the overwrites",
            unreleased().await,
            overwritten.elapsed()
        );
        if early > 0 {
            assert!(overwritten.elapsed() >= GRACE, "phase {phase}: the followers released before the grace");
        }
        for key in &keys {
            assert_eq!(get_bytes(&s3, &bucket, key).await, newer, "{key}");
        }
    }
    assert!(at_once, "in no phase did a leader release the data it lost at once");
    assert!(put_off, "in no phase did the followers put a release off (some node leads some keys)");
}
