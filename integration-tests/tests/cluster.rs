//! A real multi-process cluster (control plane, data nodes, S3 frontends; replication
//! factor 3) under process failures: read-after-write across frontends, a data node down
//! and read repair after it returns, losing the write quorum, the control plane down and a
//! layout change after it returns, a frontend dying mid-upload, and kill -9 of any single
//! process never losing an acknowledged write.
//!
//! Each test starts its own cluster (see `hangar_integration_tests::cluster`); clusters take
//! a machine-wide lock, so these tests run one at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use futures::StreamExt;
use hangar_integration_tests::cluster::{Cluster, expected_block_names};
use hangar_integration_tests::sigv4::{RawRequest, Signer, UNSIGNED_PAYLOAD};
use hangar_integration_tests::*;

const MIB: usize = 1 << 20;
/// Multipart parts but the last must be at least this big.
const MIN_PART: usize = 5 * MIB;

/// Every key under `prefix`, following continuation tokens.
async fn list_keys(s3: &Client, bucket: &str, prefix: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let out = s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("list {bucket}/{prefix}: {e:?}"));
        keys.extend(out.contents().iter().filter_map(|o| o.key().map(str::to_string)));
        match out.next_continuation_token() {
            Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_string()),
            _ => return keys,
        }
    }
}

/// GETs `key` and asserts the body is exactly `want`.
#[track_caller]
fn assert_same(got: &[u8], want: &[u8], what: &str) {
    assert!(
        got == want,
        "{what}: not byte-identical ({} bytes, md5 {} vs {} bytes, md5 {})",
        got.len(),
        md5_hex(got),
        want.len(),
        md5_hex(want)
    );
}

async fn assert_reads_back(s3: &Client, bucket: &str, key: &str, want: &[u8], via: &str) {
    let got = get_bytes(s3, bucket, key).await;
    assert_same(&got, want, &format!("{key} read through {via}"));
}

/// A multipart upload of `parts` through one client; returns the ETag CompleteMultipartUpload gave.
async fn multipart_put(s3: &Client, bucket: &str, key: &str, parts: &[&[u8]]) -> String {
    let upload_id = create_upload(s3, bucket, key).await;
    let mut etags = Vec::new();
    for (i, data) in parts.iter().enumerate() {
        etags.push(upload_part(s3, bucket, key, &upload_id, i as i32 + 1, data).await);
    }
    let list: Vec<(i32, &str)> = etags.iter().enumerate().map(|(i, e)| (i as i32 + 1, e.as_str())).collect();
    let out = complete_upload(s3, bucket, key, &upload_id, &list).send().await.expect("complete multipart upload");
    out.e_tag().expect("ETag").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_one_frontend_are_read_listed_and_deleted_through_the_other() {
    let cluster = Cluster::start(3, 2).await;
    let (fe1, fe2) = (cluster.s3_client(0), cluster.s3_client(1));
    let bucket = new_bucket(&fe1, "raw").await;
    // The bucket made through frontend 1 is visible through frontend 2 at once.
    assert!(bucket_names(&fe2).await.contains(&bucket), "bucket created through frontend 1 not listed by frontend 2");

    let small = random_bytes(1000); // inline in the object entry
    let large = random_bytes(2 * MIB + 4321); // three blocks
    assert_eq!(put_bytes(&fe1, &bucket, "dir/small", &small).await, etag_of(&small));
    assert_eq!(put_bytes(&fe1, &bucket, "dir/large", &large).await, etag_of(&large));

    assert_reads_back(&fe2, &bucket, "dir/small", &small, "frontend 2").await;
    assert_reads_back(&fe2, &bucket, "dir/large", &large, "frontend 2").await;
    let head = fe2.head_object().bucket(&bucket).key("dir/large").send().await.expect("head through frontend 2");
    assert_eq!(head.e_tag(), Some(etag_of(&large).as_str()));
    assert_eq!(head.content_length(), Some(large.len() as i64));
    assert_eq!(list_keys(&fe2, &bucket, "dir/").await, ["dir/large", "dir/small"]);

    // An overwrite through frontend 2 is what frontend 1 reads next.
    let newer = random_bytes(5000);
    put_bytes(&fe2, &bucket, "dir/small", &newer).await;
    assert_reads_back(&fe1, &bucket, "dir/small", &newer, "frontend 1 after an overwrite through frontend 2").await;

    fe2.delete_object().bucket(&bucket).key("dir/large").send().await.expect("delete through frontend 2");
    fe2.delete_object().bucket(&bucket).key("dir/small").send().await.expect("delete through frontend 2");
    for key in ["dir/large", "dir/small"] {
        expect_s3_error(fe1.get_object().bucket(&bucket).key(key).send().await, 404, Some("NoSuchKey"));
        assert_no_object(&fe1, &bucket, key).await;
    }
    assert!(list_keys(&fe1, &bucket, "").await.is_empty(), "deleted objects still listed by frontend 1");
}

/// The calls of `method` this process made to node `to` (to any node: ""), from its /metrics.
async fn rpc_calls(admin: std::net::SocketAddr, method: &str, to: &str) -> u64 {
    let text = reqwest::get(format!("http://{admin}/metrics")).await.expect("scrape").text().await.expect("metrics");
    let (endpoint, node) = (format!("rpc_endpoint=\"{method}\""), format!("to=\"{to}"));
    text.lines()
        .filter(|l| l.starts_with("rpc_request_counter{") && l.contains(&endpoint) && l.contains(&node))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// An object of at most 4 blocks carries its block list in its entry: its GETs, whole or
/// ranged, read the entry and the blocks and never the block list (no Range call from the
/// frontend); a larger object's GET pages through its list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_of_a_few_blocks_reads_no_block_list() {
    let cluster = Cluster::start(3, 1).await;
    let s3 = cluster.s3_client(0);
    let admin = cluster.frontends[0].admin_addr;
    let bucket = new_bucket(&s3, "lists").await;
    let (few, many) = (random_bytes(3 * MIB + 5), random_bytes(5 * MIB + 5)); // 4 blocks, 6
    put_bytes(&s3, &bucket, "few", &few).await;
    put_bytes(&s3, &bucket, "many", &many).await;

    let ranges_before = rpc_calls(admin, "Range", "").await;
    assert_reads_back(&s3, &bucket, "few", &few, "the frontend").await;
    for (start, end) in [(0, 10), (MIB - 3, 2 * MIB + 3), (3 * MIB, 3 * MIB + 4)] {
        let got = s3
            .get_object()
            .bucket(&bucket)
            .key("few")
            .range(format!("bytes={start}-{end}"))
            .send()
            .await
            .expect("ranged GET");
        let body = got.body.collect().await.expect("body").into_bytes();
        assert_same(&body, &few[start..=end], &format!("bytes {start}-{end} of `few`"));
    }
    assert_eq!(rpc_calls(admin, "Range", "").await, ranges_before, "a GET of 4 blocks read the block list");

    assert_reads_back(&s3, &bucket, "many", &many, "the frontend").await;
    assert!(rpc_calls(admin, "Range", "").await > ranges_before, "a GET of 6 blocks did not read the block list");
}

/// A data node whose config names an S3 address serves S3 itself: what it writes is read
/// through a separate frontend and the other way round, the blocks it reads come from its
/// own disk (its metrics count every GetBlock as a call to itself), it serves with another
/// data node killed, `hangar status` lists its frontend, and it stops cleanly on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_node_with_an_s3_address_serves_s3_and_reads_its_own_blocks() {
    let mut cluster = Cluster::start(3, 1).await;
    let (_, colocated) = cluster.serve_s3_on_data_node(0).await;
    let separate = cluster.s3_client(0);
    let bucket = new_bucket(&colocated, "colocated").await;
    let (small, large) = (random_bytes(5000), random_bytes(3 * MIB + 17)); // one block, four
    put_bytes(&colocated, &bucket, "small", &small).await;
    put_bytes(&separate, &bucket, "large", &large).await;
    for (key, want) in [("small", &small), ("large", &large)] {
        assert_reads_back(&colocated, &bucket, key, want, "the data node's frontend").await;
        assert_reads_back(&separate, &bucket, key, want, "the separate frontend").await;
    }

    let me = cluster.node_id(0);
    let admin = cluster.data[0].admin_addr;
    let local_before = rpc_calls(admin, "GetBlock", &me).await;
    for _ in 0..3 {
        assert_reads_back(&colocated, &bucket, "large", &large, "the data node's frontend").await;
    }
    assert!(rpc_calls(admin, "GetBlock", &me).await >= local_before + 12, "4 blocks × 3 reads from its own disk");
    for other in [1, 2] {
        let id = cluster.node_id(other);
        assert_eq!(rpc_calls(admin, "GetBlock", &id).await, 0, "a block fetched from data node {other}");
    }
    let status = cluster.status().await;
    assert!(
        status.nodes.iter().any(|n| n.role == "s3" && n.id == format!("{me}-s3")),
        "the co-located frontend is not listed:\n{}",
        status.raw
    );

    cluster.data[2].kill9();
    let during = random_bytes(2 * MIB);
    put_bytes(&colocated, &bucket, "during", &during).await;
    assert_reads_back(&colocated, &bucket, "during", &during, "the data node's frontend, data3 down").await;
    assert_reads_back(&colocated, &bucket, "large", &large, "the data node's frontend, data3 down").await;

    let exit = cluster.data[0].stop().await;
    assert!(exit.success(), "SIGTERM'd data node with a frontend exited with {exit}\n{}", cluster.data[0].log());
}

/// A data node that cannot take its S3 address says so and does not start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_node_whose_s3_port_is_taken_exits_with_the_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let config = dir.path().join("data.toml");
    std::fs::write(
        &config,
        format!(
            "metadata_dir = \"{0}/meta\"\ndata_dir = \"{0}/blocks\"\nrpc_secret = \"{1}\"\n\
             bootstrap_peers = [\"127.0.0.1:1\"]\nrpc_bind_addr = \"127.0.0.1:0\"\n\
             [s3_api]\napi_bind_addr = \"127.0.0.1:{port}\"\n[admin]\napi_bind_addr = \"127.0.0.1:0\"\n",
            dir.path().display(),
            "0".repeat(64)
        ),
    )
    .expect("write config");
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(hangar_bin())
            .args(["data-node", "--config"])
            .arg(&config)
            .env("HANGAR_LOG", "error")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the data node exits")
    .expect("run hangar data-node");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started although its S3 port is taken: {stderr}");
    assert!(stderr.contains(&format!("[s3_api] api_bind_addr: cannot listen on 127.0.0.1:{port}")), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_data_node_down_everything_works_and_reads_repair_it_when_back() {
    const DOWN: usize = 2;
    // Anti-entropy only on command, so what reaches the restarted node is read repair's doing
    // (tests/self_healing.rs shows a node catching up with nobody reading).
    let mut cluster = Cluster::start_with(3, 2, "anti_entropy_interval_secs = 0\n").await;
    let (fe1, fe2) = (cluster.s3_client(0), cluster.s3_client(1));
    let bucket = new_bucket(&fe1, "repair").await;
    let before = random_bytes(MIB + 77);
    put_bytes(&fe1, &bucket, "before", &before).await;

    cluster.kill9_data(DOWN);

    // Writes of every kind while one of three replicas is gone.
    let small = random_bytes(1500);
    let mid = random_bytes(3 * MIB + 12_345);
    let (part1, part2) = (random_bytes(MIN_PART), random_bytes(MIB + 3));
    assert_eq!(put_bytes(&fe1, &bucket, "down/small", &small).await, etag_of(&small));
    assert_eq!(put_bytes(&fe2, &bucket, "down/mid", &mid).await, etag_of(&mid));
    let etag = multipart_put(&fe1, &bucket, "down/multipart", &[&part1, &part2]).await;
    assert_eq!(etag, multipart_etag(&[&part1, &part2]));
    let whole = [part1.as_slice(), part2.as_slice()].concat();

    let written: Vec<(&str, &[u8])> =
        vec![("before", &before), ("down/small", &small), ("down/mid", &mid), ("down/multipart", &whole)];
    for (key, data) in &written {
        assert_reads_back(&fe1, &bucket, key, data, "frontend 1, one node down").await;
        assert_reads_back(&fe2, &bucket, key, data, "frontend 2, one node down").await;
    }
    assert_eq!(list_keys(&fe2, &bucket, "").await, ["before", "down/mid", "down/multipart", "down/small"]);

    // The blocks written meanwhile are on the other two nodes only.
    let mut missed: BTreeSet<String> = expected_block_names(&mid);
    missed.extend(expected_block_names(&part1));
    missed.extend(expected_block_names(&part2));
    assert_eq!(missed.len(), 4 + 5 + 2);
    for i in [0, 1] {
        let names = cluster.block_names(i);
        assert!(missed.is_subset(&names), "data node {} lacks blocks written while node {} was down", i + 1, DOWN + 1);
    }
    assert!(cluster.block_names(DOWN).is_disjoint(&missed), "a dead node received blocks");

    cluster.restart_data(DOWN).await;
    // With automatic anti-entropy off, nothing copies them on its own: reads do.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(cluster.block_names(DOWN).is_disjoint(&missed), "blocks reached the restarted node before any read");

    let started = Instant::now();
    for (key, data) in &written {
        assert_reads_back(&fe2, &bucket, key, data, "frontend 2 after the restart").await;
    }
    let repaired = wait_until(Duration::from_secs(10), || async { missed.is_subset(&cluster.block_names(DOWN)) }).await;
    let lacking: Vec<String> = missed.difference(&cluster.block_names(DOWN)).cloned().collect();
    assert!(
        repaired,
        "10 s after reading them, the restarted node still lacks {} of {} blocks: {lacking:?}",
        lacking.len(),
        missed.len()
    );
    eprintln!(
        "read repair copied {} blocks to the restarted node within {:?} of the first GET",
        missed.len(),
        started.elapsed()
    );
    // Metadata repair is sent with the same reads (before the blocks are fetched).
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Now make the restarted node the only one that holds those objects: nodes 1 and 2 lose
    // their disks (same identities, empty metadata and blocks). Each knows it lost its
    // database, refuses reads until it has rebuilt from the others, and node 3 — the one
    // read repair filled — is the only one with anything to give.
    cluster.kill9_data(0);
    cluster.kill9_data(1);
    for i in [0, 1] {
        std::fs::remove_dir_all(cluster.metadata_dir(i).join("db")).expect("wipe a node's metadata");
        std::fs::remove_dir_all(cluster.data_dir(i)).expect("wipe a node's blocks");
    }
    cluster.restart_data(0).await;
    cluster.restart_data(1).await;
    // Until one of them has rebuilt, no read quorum is there (503); then reads work.
    let probe = cluster.s3_client_no_retry(0);
    cluster
        .wait_for("a read quorum after the wiped nodes rebuilt", Duration::from_secs(60), || async {
            probe.head_object().bucket(&bucket).key("before").send().await.is_ok()
        })
        .await;
    for (key, data) in &written {
        assert_reads_back(&fe1, &bucket, key, data, "frontend 1 after rebuilding from the repaired node").await;
    }
    assert_eq!(
        list_keys(&fe1, &bucket, "").await,
        ["before", "down/mid", "down/multipart", "down/small"],
        "listing after rebuilding from the repaired node"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_write_quorum_puts_fail_with_503_and_leave_nothing_half_there() {
    let mut cluster = Cluster::start(3, 2).await;
    let fe1 = cluster.s3_client(0);
    let bucket = new_bucket(&fe1, "quorum").await;
    let existing = random_bytes(MIB + 5);
    put_bytes(&fe1, &bucket, "existing", &existing).await;

    cluster.kill9_data(1);
    cluster.kill9_data(2);

    // No retries: the test sees the frontend's own answer.
    let once = [cluster.s3_client_no_retry(0), cluster.s3_client_no_retry(1)];
    let failed = [("failed/small", random_bytes(800)), ("failed/large", random_bytes(2 * MIB + 9))];
    for (i, s3) in once.iter().enumerate() {
        for (key, data) in &failed {
            let started = Instant::now();
            let r = s3.put_object().bucket(&bucket).key(*key).body(ByteStream::from(data.clone())).send().await;
            expect_s3_error(r, 503, Some("ServiceUnavailable"));
            assert!(started.elapsed() < Duration::from_secs(15), "the 503 took {:?}", started.elapsed());
        }
        // Reads need a quorum too: they fail the same way rather than answer from one node.
        expect_s3_error(s3.get_object().bucket(&bucket).key("existing").send().await, 503, Some("ServiceUnavailable"));
        eprintln!("frontend {}: PUT and GET answered 503 ServiceUnavailable", i + 1);
    }

    // With two of three nodes back, writes succeed again.
    cluster.restart_data(1).await;
    let after = random_bytes(MIB + 1);
    let s3 = &once[0];
    cluster
        .wait_for("a PUT to succeed with two of three data nodes up", Duration::from_secs(20), || async {
            s3.put_object().bucket(&bucket).key("after").body(ByteStream::from(after.clone())).send().await.is_ok()
        })
        .await;
    assert_reads_back(&fe1, &bucket, "after", &after, "frontend 1").await;

    // Once every node is back, the failed large PUT left no object (its first write, the
    // pending entry, found no quorum), and nothing else changed. A small PUT is one write,
    // its object entry: the one replica that was up kept it, and it may spread once the
    // others are back — a PUT answered 503 may still take effect, as a 5xx from AWS S3 may
    // have (clients retry such PUTs) — but when it shows, it is whole.
    cluster.restart_data(2).await;
    let (small_key, small) = &failed[0];
    for s3 in [cluster.s3_client(0), cluster.s3_client(1)] {
        assert_no_object(&s3, &bucket, failed[1].0).await;
        match s3.get_object().bucket(&bucket).key(*small_key).send().await {
            Ok(o) => assert_eq!(&body_bytes(o.body).await, small, "the failed small PUT shows with other data"),
            Err(e) => assert_eq!(err_code(&e).as_deref(), Some("NoSuchKey"), "{e:?}"),
        }
        let listed: Vec<String> = list_keys(&s3, &bucket, "").await.into_iter().filter(|k| k != small_key).collect();
        assert_eq!(listed, ["after", "existing"]);
        assert_reads_back(&s3, &bucket, "existing", &existing, "a frontend after the outage").await;
        assert_reads_back(&s3, &bucket, "after", &after, "a frontend after the outage").await;
    }
}

/// Sends a PUT by hand so that the body can stop half-way: (status, S3 error code).
/// `between` runs after `first` bytes of the body were sent.
async fn put_in_two_halves(
    cluster: &mut Cluster,
    frontend: usize,
    bucket: &str,
    key: &str,
    data: &[u8],
    first: usize,
    between: impl AsyncFnOnce(&mut Cluster),
) -> (u16, Option<String>) {
    let addr = cluster.frontends[frontend].addr;
    let mut req = RawRequest::new("PUT", &addr.to_string(), &format!("/{bucket}/{key}"));
    Signer::new(&cluster.key.id, &cluster.key.secret, hangar_integration_tests::cluster::REGION).sign(
        &mut req,
        UNSIGNED_PAYLOAD,
        SystemTime::now(),
    );
    let mut head = format!("PUT {} HTTP/1.1\r\n", req.target());
    for (k, v) in &req.headers {
        head += &format!("{k}: {v}\r\n");
    }
    head += &format!("content-length: {}\r\nconnection: close\r\n\r\n", data.len());

    let mut conn = std::net::TcpStream::connect(addr).expect("connect to the frontend");
    conn.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    conn.write_all(head.as_bytes()).expect("send head");
    conn.write_all(&data[..first]).expect("send the first half");
    between(cluster).await;
    // The frontend may answer before reading everything; what it answers is the point.
    let _ = conn.write_all(&data[first..]);
    let mut response = Vec::new();
    let _ = conn.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, xml_value(&text, "Code"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_that_loses_its_quorum_mid_body_leaves_the_previous_version() {
    let mut cluster = Cluster::start(3, 2).await;
    let fe1 = cluster.s3_client(0);
    let bucket = new_bucket(&fe1, "midbody").await;
    let v1 = random_bytes(2 * MIB + 10);
    put_bytes(&fe1, &bucket, "k", &v1).await;

    // Four blocks; two of them are stored before the data nodes go away.
    let v2 = random_bytes(3 * MIB + 100);
    let first_blocks: BTreeSet<String> = v2[..2 * MIB].chunks(MIB).flat_map(expected_block_names).collect();
    let (status, code) = put_in_two_halves(&mut cluster, 0, &bucket, "k", &v2, 2 * MIB, async |c: &mut Cluster| {
        c.wait_for("the first blocks of the PUT on data node 1", Duration::from_secs(20), || async {
            first_blocks.is_subset(&c.block_names(0))
        })
        .await;
        c.kill9_data(1);
        c.kill9_data(2);
    })
    .await;
    assert_eq!((status, code.as_deref()), (503, Some("ServiceUnavailable")), "answer to a PUT that lost its quorum");

    cluster.restart_data(1).await;
    cluster.restart_data(2).await;
    for s3 in [cluster.s3_client(0), cluster.s3_client(1)] {
        let head = s3.head_object().bucket(&bucket).key("k").send().await.expect("head after the failed overwrite");
        assert_eq!(head.e_tag(), Some(etag_of(&v1).as_str()), "the failed PUT replaced the object");
        assert_reads_back(&s3, &bucket, "k", &v1, "a frontend after the failed overwrite").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_down_changes_nothing_and_a_later_layout_change_reaches_everyone() {
    let mut cluster = Cluster::start(3, 2).await;
    let fes = [cluster.s3_client(0), cluster.s3_client(1)];
    let bucket = new_bucket(&fes[0], "cp").await;
    let mut objects: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let before = random_bytes(MIB + 300);
    put_bytes(&fes[0], &bucket, "before", &before).await;
    objects.insert("before".into(), before);

    cluster.kill9_control_plane();
    // Longer than a heartbeat interval, so the others have noticed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (i, s3) in fes.iter().enumerate() {
        for (name, len) in [("small", 700), ("large", 2 * MIB + 1)] {
            let key = format!("cp-down/{name}-{}", i + 1);
            let data = random_bytes(len);
            put_bytes(s3, &bucket, &key, &data).await;
            assert_reads_back(&fes[1 - i], &bucket, &key, &data, "the other frontend, control plane down").await;
            objects.insert(key, data);
        }
        let listed = list_keys(s3, &bucket, "").await;
        assert_eq!(listed, objects.keys().cloned().collect::<Vec<_>>(), "listing with the control plane down");
    }

    cluster.restart_control_plane().await;
    cluster
        .wait_for("the restarted control plane to hear from all three data nodes", Duration::from_secs(15), || async {
            let s = cluster.status().await;
            s.layout_version == 1 && s.nodes.iter().filter(|n| n.role == "data" && n.healthy).count() == 3
        })
        .await;

    // Grow the cluster: a fourth data node in its own zone, layout version 2.
    let n4 = cluster.add_data_node().await;
    cluster.assign_data_node(n4).await;
    cluster.apply_layout(2).await;
    let id4 = cluster.node_id(n4);
    cluster
        .wait_for("status to show node 4 healthy in layout version 2", Duration::from_secs(15), || async {
            let s = cluster.status().await;
            s.layout_version == 2 && s.node(&id4).is_some_and(|n| n.healthy && n.partitions > 0)
        })
        .await;
    let status = cluster.status().await;
    let partitions: Vec<u32> = status.nodes.iter().filter(|n| n.role == "data").map(|n| n.partitions).collect();
    assert_eq!(partitions.iter().sum::<u32>(), 256 * 3, "every partition has three replicas:\n{}", status.raw);
    eprintln!("layout version 2, partitions per data node: {partitions:?}");

    // Both frontends follow version 2: blocks written through each reach node 4.
    for (i, s3) in fes.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut theirs = BTreeSet::new();
        let mut n = 0;
        while theirs.is_disjoint(&cluster.block_names(n4)) {
            assert!(Instant::now() < deadline, "no block written through frontend {} reached node 4 in 30 s", i + 1);
            n += 1;
            let key = format!("v2/fe{}-{n}", i + 1);
            let data = random_bytes(2 * MIB);
            put_bytes(s3, &bucket, &key, &data).await;
            theirs.extend(expected_block_names(&data));
            objects.insert(key, data);
        }
        eprintln!("frontend {}: {n} object(s) of 2 MiB until a block landed on node 4", i + 1);
    }
    // Small writes keep working through both, and everything reads back through both.
    for i in 0..20 {
        let key = format!("v2/small-{i:02}");
        let data = random_bytes(100 + 997 * i);
        put_bytes(&fes[i % 2], &bucket, &key, &data).await;
        objects.insert(key, data);
    }
    for (i, s3) in fes.iter().enumerate() {
        for (key, data) in &objects {
            assert_reads_back(s3, &bucket, key, data, &format!("frontend {} in layout version 2", i + 1)).await;
        }
        assert_eq!(list_keys(s3, &bucket, "").await, objects.keys().cloned().collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_upload_survives_the_death_of_the_frontend_it_started_on() {
    let mut cluster = Cluster::start(3, 2).await;
    let (fe1, fe2) = (cluster.s3_client(0), cluster.s3_client(1));
    let bucket = new_bucket(&fe1, "mpu").await;
    let (part1, part2) = (random_bytes(MIN_PART), random_bytes(MIB + 17));

    let upload_id = create_upload(&fe1, &bucket, "big").await;
    let etag1 = upload_part(&fe1, &bucket, "big", &upload_id, 1, &part1).await;
    cluster.kill9_frontend(0);

    let etag2 = upload_part(&fe2, &bucket, "big", &upload_id, 2, &part2).await;
    let parts = fe2.list_parts().bucket(&bucket).key("big").upload_id(&upload_id).send().await.expect("list parts");
    let listed: Vec<(Option<i32>, Option<&str>)> = parts.parts().iter().map(|p| (p.part_number(), p.e_tag())).collect();
    assert_eq!(listed, [(Some(1), Some(etag1.as_str())), (Some(2), Some(etag2.as_str()))]);
    let done = complete_upload(&fe2, &bucket, "big", &upload_id, &[(1, &etag1), (2, &etag2)])
        .send()
        .await
        .expect("complete through frontend 2");
    assert_eq!(done.e_tag(), Some(multipart_etag(&[&part1, &part2]).as_str()));

    let whole = [part1.as_slice(), part2.as_slice()].concat();
    assert_reads_back(&fe2, &bucket, "big", &whole, "frontend 2").await;
    cluster.restart_frontend(0).await;
    assert_reads_back(&fe1, &bucket, "big", &whole, "the restarted frontend 1").await;
    let head = fe1.head_object().bucket(&bucket).key("big").send().await.expect("head");
    assert_eq!(head.content_length(), Some(whole.len() as i64));
    let uploads = fe1.list_multipart_uploads().bucket(&bucket).send().await.expect("list uploads");
    assert!(uploads.uploads().is_empty(), "completed upload still listed: {:?}", uploads.uploads());
}

struct Acked {
    key: String,
    data: Vec<u8>,
    at: Instant,
}

/// PUTs small objects `prefix/NNNN` until `stop`; returns those acknowledged (200) and the
/// number of failed PUTs.
async fn writer(s3: Client, bucket: String, prefix: String, stop: Arc<AtomicBool>) -> (Vec<Acked>, usize) {
    let (mut acked, mut failed) = (Vec::new(), 0);
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let key = format!("{prefix}/{n:04}");
        // Inline objects and single-block ones.
        let data = random_bytes([300, 6_000, 50_000][n % 3]);
        let r = s3.put_object().bucket(&bucket).key(&key).body(ByteStream::from(data.clone())).send().await;
        match r {
            Ok(out) if out.e_tag() == Some(etag_of(&data).as_str()) => {
                acked.push(Acked { key, data, at: Instant::now() })
            }
            Ok(out) => panic!("PUT {key} acknowledged with the wrong ETag {:?}", out.e_tag()),
            Err(_) => {
                failed += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    (acked, failed)
}

#[derive(Clone, Copy, Debug)]
enum Victim {
    Data(usize),
    ControlPlane,
    Frontend(usize),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_write_is_lost_when_any_single_process_is_killed() {
    let mut cluster = Cluster::start(3, 2).await;
    let bucket = new_bucket(&cluster.s3_client(0), "acked").await;
    let rounds = [
        Victim::Data(0),
        Victim::ControlPlane,
        Victim::Frontend(0),
        Victim::Data(1),
        Victim::Frontend(1),
        Victim::Data(2),
    ];
    let mut all: Vec<Acked> = Vec::new();

    for (round, victim) in rounds.into_iter().enumerate() {
        // Write through a frontend that stays up.
        let via = match victim {
            Victim::Frontend(k) => 1 - k,
            _ => round % 2,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let task =
            tokio::spawn(writer(cluster.s3_client_no_retry(via), bucket.clone(), format!("r{round}"), stop.clone()));
        tokio::time::sleep(Duration::from_millis(700)).await;
        let killed = Instant::now();
        match victim {
            Victim::Data(i) => cluster.kill9_data(i),
            Victim::ControlPlane => cluster.kill9_control_plane(),
            Victim::Frontend(i) => cluster.kill9_frontend(i),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let restarted = Instant::now();
        match victim {
            Victim::Data(i) => cluster.restart_data(i).await,
            Victim::ControlPlane => cluster.restart_control_plane().await,
            Victim::Frontend(i) => cluster.restart_frontend(i).await,
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        stop.store(true, Ordering::Relaxed);
        let (acked, failed) = task.await.expect("writer task");
        let round_time = killed.elapsed();
        let while_down = acked.iter().filter(|a| a.at > killed && a.at < restarted).count();
        eprintln!(
            "round {round}: killed {victim:?}, writing through frontend {}: {} acknowledged ({while_down} while it was down), {failed} failed; back after {:?}, round {round_time:?}",
            via + 1,
            acked.len(),
            restarted.elapsed()
        );
        assert!(while_down > 0, "no PUT through frontend {} succeeded while {victim:?} was down", via + 1);
        all.extend(acked);
    }

    // Every acknowledged write is there: both frontends list them all, and each reads back
    // byte for byte (through the frontends in turn).
    let verify = Instant::now();
    let fes = [cluster.s3_client(0), cluster.s3_client(1)];
    for (i, s3) in fes.iter().enumerate() {
        let listed: BTreeSet<String> = list_keys(s3, &bucket, "").await.into_iter().collect();
        let lost: Vec<&str> = all.iter().map(|a| a.key.as_str()).filter(|k| !listed.contains(*k)).collect();
        assert!(lost.is_empty(), "frontend {} does not list {} acknowledged keys: {lost:?}", i + 1, lost.len());
    }
    let vias = ["frontend 1".to_string(), "frontend 2".to_string()];
    futures::stream::iter(all.iter().enumerate())
        .map(|(n, a)| assert_reads_back(&fes[n % 2], &bucket, &a.key, &a.data, &vias[n % 2]))
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
    eprintln!("{} acknowledged writes all listed and read back in {:?}", all.len(), verify.elapsed());
}
