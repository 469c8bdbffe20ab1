//! Self-healing on a real cluster (replication factor 3): the data nodes find and repair
//! what they lost or missed by themselves, with no client reading anything.
//!
//! - a data node whose disks were wiped comes back under its old id and refills: every
//!   block and the same metadata as its peers (equal Merkle roots), with no reads;
//! - scrub finds bytes flipped in block files on two nodes, moves the files to
//!   `corrupt/` and fetches sound copies from the other replicas;
//! - a replica that was down while 1000 objects were written and 200 deleted converges
//!   (object table, tombstones included, and block files) through anti-entropy alone;
//! - the blocks of deleted objects and aborted uploads leave every node while no block in
//!   use ever does, and the tombstones of the deleted objects are collected once every
//!   replica holds them;
//! - an upload left open longer than `multipart_max_age_secs` is aborted and its parts'
//!   blocks freed everywhere;
//! - removing a dead node (`hangar node remove`) rebuilds its partitions on the survivors:
//!   each holds every block again, and any one of them may then go.
//!
//! Convergence is observed from outside the processes: block files on each node's disk
//! (named by the blake2b-256 of their content), and each node's tables through its own
//! metadata gRPC service (`MerkleRoots`, `Range` with tombstones), called like a peer with
//! the cluster secret. Every test ends by reading every object back byte for byte.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use futures::StreamExt;
use hangar_integration_tests::cluster::{BLOCK_SIZE, Cluster, INLINE_MAX, expected_block_names};
use hangar_integration_tests::peer::{at_layout, is_for, meta, rpc};
use hangar_integration_tests::*;
use hangar_proto::metadata::{Entry, MerkleRoot, MerkleRootsRequest, RangeRequest, Table};

const MIB: usize = 1 << 20;

/// Short delays (as in storage_core.rs), and every background repair at full speed:
/// anti-entropy every 2 s, scrub and resync without pauses.
const FAST: &str = "block_gc_delay_secs = 2\npending_write_grace_secs = 5\noffload_delay_secs = 2\n\
                    sync_tranquility = 0\nscrub_tranquility = 0\nresync_tranquility = 0\n\
                    anti_entropy_interval_secs = 2\n";
/// How long a repair may take before the test gives up.
const REPAIR_WAIT: Duration = Duration::from_secs(120);
/// How long a data node may take to copy what the others acknowledged without it.
const REPLICATE_WAIT: Duration = Duration::from_secs(60);
/// S3 requests in flight at once when writing or reading many objects.
const CONCURRENCY: usize = 16;

// ---- objects and blocks ---------------------------------------------------------------

fn blake2b_hex(data: &[u8]) -> String {
    hex::encode(Blake2b::<U32>::digest(data))
}

/// The blocks of every object in `objects` (stored as single PUTs).
fn blocks_of<'a>(objects: impl IntoIterator<Item = &'a Vec<u8>>) -> BTreeSet<String> {
    objects.into_iter().flat_map(|d| expected_block_names(d)).collect()
}

/// The blocks of one multipart part. Each part is a data version of its own, so its blocks
/// start at the part's first byte; parts are never inline, however small.
fn part_block_names(data: &[u8]) -> BTreeSet<String> {
    data.chunks(BLOCK_SIZE).map(blake2b_hex).collect()
}

/// `n` objects under `prefix` of mixed sizes: a tenth inline, a tenth of 1-3 MiB (several
/// blocks), the rest 4-260 KiB (one block each).
fn mixed_objects(prefix: &str, n: usize) -> BTreeMap<String, Vec<u8>> {
    (0..n)
        .map(|i| {
            let len = match i % 10 {
                0 => 1 + (i * 37) % INLINE_MAX,
                5 => MIB + (i * 7919) % (2 * MIB),
                _ => 4096 + (i * 104_729) % (256 * 1024),
            };
            (format!("{prefix}{i:04}"), random_bytes(len))
        })
        .collect()
}

/// PUTs every object, `CONCURRENCY` at a time, spread over `clients`.
async fn put_all(clients: &[Client], bucket: &str, objects: &BTreeMap<String, Vec<u8>>) {
    futures::stream::iter(objects.iter().enumerate())
        .for_each_concurrent(CONCURRENCY, |(n, (key, data))| async move {
            put_bytes(&clients[n % clients.len()], bucket, key, data).await;
        })
        .await;
}

/// GETs every object (spread over `clients`) and asserts it is byte-identical.
async fn assert_all_read(clients: &[Client], bucket: &str, objects: &BTreeMap<String, Vec<u8>>, when: &str) {
    futures::stream::iter(objects.iter().enumerate())
        .for_each_concurrent(CONCURRENCY, |(n, (key, want))| async move {
            let got = match clients[n % clients.len()].get_object().bucket(bucket).key(key).send().await {
                Ok(o) => body_bytes(o.body).await,
                Err(e) => panic!("{when}: GET {key}: {e:?}"),
            };
            assert!(
                got == *want,
                "{when}: {key} is not byte-identical ({} bytes, md5 {}; want {} bytes, md5 {})",
                got.len(),
                md5_hex(&got),
                want.len(),
                md5_hex(want)
            );
        })
        .await;
}

/// Asserts that GET of every key is a 404 NoSuchKey.
async fn assert_all_gone(s3: &Client, bucket: &str, keys: impl IntoIterator<Item = &String>) {
    for key in keys {
        expect_s3_error(s3.get_object().bucket(bucket).key(key).send().await, 404, Some("NoSuchKey"));
    }
}

// ---- block files on disk ----------------------------------------------------------------

/// Where a block file belongs: `<data_dir>/xx/yy/<hash>`.
fn block_path(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join(&name[0..2]).join(&name[2..4]).join(name)
}

/// The names of data node `i`'s block files that are in their place (`block_names` also
/// counts files moved aside to `corrupt/`, which are no longer served).
fn blocks_in_place(cluster: &Cluster, i: usize) -> BTreeSet<String> {
    let data_dir = cluster.data_dir(i);
    cluster
        .block_files(i)
        .into_iter()
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_string();
            (p == block_path(&data_dir, &name)).then_some(name)
        })
        .collect()
}

/// "N missing, M extra" of the blocks a node holds against those it should.
fn set_diff(have: &BTreeSet<String>, want: &BTreeSet<String>) -> String {
    let missing: Vec<_> = want.difference(have).collect();
    let extra: Vec<_> = have.difference(want).collect();
    format!("{} missing (e.g. {:?}), {} extra (e.g. {:?})", missing.len(), missing.first(), extra.len(), extra.first())
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Flips bytes at the start, middle and end of a block file in place (its length stays):
/// what a failing disk does. Returns the damaged content.
fn flip_bytes(path: &Path) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {} for writing: {e}", path.display()));
    for at in [0, data.len() / 2, data.len() - 1] {
        data[at] ^= 0x5a;
        file.write_all_at(&data[at..=at], at as u64).expect("flip a byte");
    }
    file.sync_all().expect("fsync the damaged block");
    data
}

/// Deletes everything data node `i` keeps (its metadata and block directories) and leaves
/// them empty: a node whose disks were replaced.
fn wipe(cluster: &Cluster, i: usize) {
    for dir in [cluster.metadata_dir(i), cluster.data_dir(i)] {
        std::fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("remove {}: {e}", dir.display()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    }
}

// ---- a data node's tables, as a peer sees them ------------------------------------------

/// Data node `i`'s Merkle roots of every non-empty (table, partition), in that order.
async fn merkle_roots(cluster: &Cluster, i: usize, layout: u64) -> Result<Vec<MerkleRoot>, String> {
    let mut client = meta(cluster, i);
    let req = at_layout(MerkleRootsRequest { partitions: Default::default() }, layout);
    let mut roots =
        rpc(client.merkle_roots(req)).await.map_err(|e| format!("MerkleRoots on node {}: {e}", i + 1))?.roots;
    roots.sort_by_key(|r| (r.table, r.partition));
    Ok(roots)
}

/// Which (table, partition) roots of two nodes differ, briefly.
fn roots_diff(a: &[MerkleRoot], b: &[MerkleRoot]) -> String {
    let by_key = |v: &[MerkleRoot]| -> BTreeMap<(i32, u32), (Vec<u8>, u64)> {
        v.iter().map(|r| ((r.table, r.partition), (r.hash.to_vec(), r.entries))).collect()
    };
    let (a, b) = (by_key(a), by_key(b));
    let keys: BTreeSet<_> = a.keys().chain(b.keys()).collect();
    let differ: Vec<String> = keys
        .iter()
        .filter(|k| a.get(k) != b.get(k))
        .map(|&&(table, partition)| {
            let name = Table::try_from(table).map(|t| t.as_str_name().to_string()).unwrap_or(table.to_string());
            let count = |m: &BTreeMap<(i32, u32), (Vec<u8>, u64)>| m.get(&(table, partition)).map_or(0, |v| v.1);
            format!("{name}/{partition} ({} vs {} entries)", count(&a), count(&b))
        })
        .collect();
    format!("{} of {} roots differ, e.g. {:?}", differ.len(), keys.len(), &differ[..differ.len().min(5)])
}

/// Every entry of data node `i`'s object table, tombstones included, in key order.
async fn object_entries(cluster: &Cluster, i: usize, layout: u64) -> Result<Vec<Entry>, String> {
    let mut client = meta(cluster, i);
    let mut out: Vec<Entry> = Vec::new();
    let mut start = Vec::new();
    loop {
        let req = RangeRequest {
            table: Table::Object as i32,
            start: start.clone().into(),
            end: Default::default(),
            limit: 1000,
            include_tombstones: true,
            summaries: false,
        };
        let reply =
            rpc(client.range(at_layout(req, layout))).await.map_err(|e| format!("Range on node {}: {e}", i + 1))?;
        let more = reply.more && !reply.entries.is_empty();
        out.extend(reply.entries);
        if !more {
            return Ok(out);
        }
        // The next page starts right after the last key.
        start = out.last().expect("a page with entries").key.to_vec();
        start.push(0);
    }
}

/// How two nodes' object tables differ, briefly.
fn entries_diff(a: &[Entry], b: &[Entry]) -> String {
    let tombstones = |v: &[Entry]| v.iter().filter(|e| e.tombstone).count();
    let first = a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
    format!(
        "{} entries ({} tombstones) vs {} ({} tombstones), first difference at #{first}",
        a.len(),
        tombstones(a),
        b.len(),
        tombstones(b)
    )
}

// ---- waiting ------------------------------------------------------------------------------

/// Polls `probe` (every 250 ms) until it says the cluster is where it should be (`Ok`);
/// returns how long that took. After `timeout`, panics naming `what`, with what the last
/// probe found missing and the processes' logs.
async fn converge<F, Fut>(cluster: &Cluster, what: &str, timeout: Duration, mut probe: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    loop {
        let last = match probe().await {
            Ok(()) => return started.elapsed(),
            Err(why) => why,
        };
        if started.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}; last: {last}\n{}", cluster.logs());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until the control plane reports node `id` unhealthy (it stopped heartbeating).
async fn wait_reported_down(cluster: &Cluster, id: &str) {
    cluster
        .wait_for(&format!("the control plane to see {id} stop heartbeating"), Duration::from_secs(30), || async {
            cluster.status().await.node(id).is_some_and(|n| !n.healthy)
        })
        .await;
}

/// Waits until every data node holds every block of `want` (a PUT is acknowledged once two
/// replicas hold its blocks; the third gets them a moment later).
async fn wait_everywhere(cluster: &Cluster, want: &BTreeSet<String>) {
    converge(cluster, "every data node to hold every block written", REPLICATE_WAIT, || async {
        for i in 0..cluster.data.len() {
            let have = blocks_in_place(cluster, i);
            if !have.is_superset(want) {
                return Err(format!("node {}: {}", i + 1, set_diff(&have, want)));
            }
        }
        Ok(())
    })
    .await;
}

/// A multipart upload a test started: its key and id, its parts' data and ETags.
struct Upload {
    key: String,
    id: String,
    parts: Vec<Vec<u8>>,
    etags: Vec<String>,
}

// ---- tests --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_refills_without_readers() {
    let mut cluster = Cluster::start_with(3, 1, FAST).await;
    let s3 = [cluster.s3_client(0)];
    let bucket = new_bucket(&s3[0], "refill").await;
    let objects = mixed_objects("o/", 150);
    put_all(&s3, &bucket, &objects).await;
    let want = blocks_of(objects.values());
    // Two intact copies of everything remain after the wipe, not just the quorum that acked.
    wait_everywhere(&cluster, &want).await;
    let layout = cluster.status().await.layout_version;

    // Its disks are replaced: nothing is left, not even its id.
    let wiped = 1;
    let old_id = cluster.node_id(wiped);
    cluster.kill9_data(wiped);
    wipe(&cluster, wiped);
    // Restarted at once: the control plane still counts the old node as alive, so the new
    // process waits until it is seen gone, then takes its id back.
    cluster.restart_data(wiped).await;
    assert_eq!(
        cluster.node_id(wiped),
        old_id,
        "the wiped node did not take its old id back (same address, old node silent)\n{}",
        cluster.logs()
    );

    // No client reads anything: read repair cannot be what refills it.
    let took = converge(&cluster, "the wiped node to refill", REPAIR_WAIT, || async {
        let have = blocks_in_place(&cluster, wiped);
        if have != want {
            return Err(format!("blocks: {}", set_diff(&have, &want)));
        }
        let mine = merkle_roots(&cluster, wiped, layout).await?;
        for peer in (0..3).filter(|&p| p != wiped) {
            let theirs = merkle_roots(&cluster, peer, layout).await?;
            if mine != theirs {
                return Err(format!("metadata against node {}: {}", peer + 1, roots_diff(&mine, &theirs)));
            }
        }
        Ok(())
    })
    .await;
    eprintln!("the wiped node refilled {} blocks and its tables in {took:?}", want.len());

    // What it fetched is sound, not just named right.
    for name in &want {
        let path = block_path(&cluster.data_dir(wiped), name);
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        assert_eq!(blake2b_hex(&data), *name, "{} does not hold its block", path.display());
    }
    let workers = cluster.cli_ok(["worker", "list"]).await;
    assert!(workers.contains("anti_entropy") && workers.contains("block_resync"), "worker list:\n{workers}");
    assert_all_read(&s3, &bucket, &objects, "after the wiped node refilled").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrub_repairs_flipped_bytes_on_two_nodes() {
    let cluster = Cluster::start_with(3, 1, FAST).await;
    let s3 = [cluster.s3_client(0)];
    let bucket = new_bucket(&s3[0], "scrub").await;
    let objects: BTreeMap<String, Vec<u8>> =
        (0..6).map(|i| (format!("o/{i}"), random_bytes(2 * MIB + 1000 * i))).collect();
    put_all(&s3, &bucket, &objects).await;
    let want = blocks_of(objects.values());
    wait_everywhere(&cluster, &want).await;

    // Block A rots on node 1, a different block B on node 2; each keeps two sound copies.
    let first_block = |key: &str| -> String {
        let data = &objects[key];
        blake2b_hex(&data[..BLOCK_SIZE])
    };
    let damaged: Vec<(usize, String, PathBuf, Vec<u8>)> = [(0, first_block("o/0")), (1, first_block("o/1"))]
        .into_iter()
        .map(|(node, hash)| {
            let path = block_path(&cluster.data_dir(node), &hash);
            let bad = flip_bytes(&path);
            (node, hash, path, bad)
        })
        .collect();

    // No client reads before the scrub has found both: reads check hashes too, and then we
    // could not tell which of the two found the damage.
    cluster.cli_ok(["repair", "scrub", "start"]).await;
    converge(&cluster, "scrub to move both damaged files aside", REPAIR_WAIT, || async {
        for (node, hash, _, bad) in &damaged {
            let corrupt = cluster.data_dir(*node).join("corrupt");
            let moved = files_under(&corrupt).iter().any(|f| std::fs::read(f).is_ok_and(|d| d == *bad));
            if !moved {
                return Err(format!("node {} has not moved {hash} to {}", node + 1, corrupt.display()));
            }
        }
        Ok(())
    })
    .await;
    assert_all_read(&s3, &bucket, &objects, "once scrub moved the damaged files aside").await;

    converge(&cluster, "the damaged blocks to be restored from the other replicas", REPAIR_WAIT, || async {
        for (node, hash, path, _) in &damaged {
            match std::fs::read(path) {
                Ok(d) if blake2b_hex(&d) == *hash => {}
                Ok(_) => return Err(format!("node {}: {hash} still has the wrong content", node + 1)),
                Err(e) => return Err(format!("node {}: {hash} is not back: {e}", node + 1)),
            }
        }
        Ok(())
    })
    .await;

    // Nothing else was lost or damaged on the way.
    for i in 0..3 {
        let have = blocks_in_place(&cluster, i);
        assert_eq!(have, want, "node {}: {}\n{}", i + 1, set_diff(&have, &want), cluster.logs());
        for name in &have {
            let data = std::fs::read(block_path(&cluster.data_dir(i), name)).expect("read block");
            assert_eq!(blake2b_hex(&data), *name, "node {}: block {name} is not sound", i + 1);
        }
    }
    let workers = cluster.cli_ok(["worker", "list"]).await;
    assert!(workers.contains("scrub"), "worker list:\n{workers}");
    assert_all_read(&s3, &bucket, &objects, "after the repair").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_replica_converges() {
    // Tombstones stay for the whole test, so the deletes the node missed can be compared.
    let mut cluster = Cluster::start_with(3, 2, &format!("{FAST}tombstone_gc_delay_secs = 3600\n")).await;
    let clients = [cluster.s3_client(0), cluster.s3_client(1)];
    let bucket = new_bucket(&clients[0], "return").await;
    let layout = cluster.status().await.layout_version;

    let away = 2;
    cluster.stop_data(away).await;
    // Mostly inline objects (metadata only), one in twelve with a block, one in 120 with two
    // (never deleted below: 120 * k + 12 is not a multiple of 5).
    let size = |i: usize| match i {
        i if i % 120 == 12 => MIB + (i * 7919) % MIB,
        i if i % 12 == 0 => 4096 + (i * 7919) % (512 * 1024),
        i => 1 + (i * 31) % INLINE_MAX,
    };
    let mut objects: BTreeMap<String, Vec<u8>> =
        (0..1000).map(|i| (format!("o/{i:04}"), random_bytes(size(i)))).collect();
    let started = Instant::now();
    put_all(&clients, &bucket, &objects).await;
    let deleted: Vec<String> = (0..1000).step_by(5).map(|i| format!("o/{i:04}")).collect();
    futures::stream::iter(deleted.iter().enumerate())
        .for_each_concurrent(CONCURRENCY, |(n, key)| {
            let (s3, bucket) = (&clients[n % 2], &bucket);
            async move {
                s3.delete_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("delete {key}: {e:?}"));
            }
        })
        .await;
    for key in &deleted {
        objects.remove(key);
    }
    eprintln!("1000 PUTs and 200 DELETEs with a node down took {:?}", started.elapsed());
    let want = blocks_of(objects.values());

    // It comes back; nobody reads.
    cluster.restart_data(away).await;
    let took = converge(&cluster, "the returning node to converge", REPAIR_WAIT, || async {
        let mine = object_entries(&cluster, away, layout).await?;
        for peer in (0..3).filter(|&p| p != away) {
            let theirs = object_entries(&cluster, peer, layout).await?;
            if mine != theirs {
                return Err(format!("object table against node {}: {}", peer + 1, entries_diff(&mine, &theirs)));
            }
        }
        // The deleted objects' blocks are gone from the others by now, too.
        for i in 0..3 {
            let have = blocks_in_place(&cluster, i);
            if have != want {
                return Err(format!("blocks of node {}: {}", i + 1, set_diff(&have, &want)));
            }
        }
        Ok(())
    })
    .await;
    eprintln!("the returning node converged in {took:?}");

    // It holds the deletes it missed as tombstones, and every object it missed.
    let entries = object_entries(&cluster, away, layout).await.expect("object table of the returning node");
    for key in &deleted {
        assert!(entries.iter().any(|e| is_for(e, key) && e.tombstone), "no tombstone for {key} on the returning node");
    }
    for key in objects.keys() {
        assert!(entries.iter().any(|e| is_for(e, key) && !e.tombstone), "{key} is not live on the returning node");
    }
    assert_all_read(&clients, &bucket, &objects, "after the node returned").await;
    assert_all_gone(&clients[1], &bucket, &deleted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_and_aborted_data_is_collected_everywhere() {
    let cluster = Cluster::start_with(3, 1, &format!("{FAST}tombstone_gc_delay_secs = 3\n")).await;
    let s3 = cluster.s3_client(0);
    let clients = [s3.clone()];
    let bucket = new_bucket(&s3, "collect").await;
    let layout = cluster.status().await.layout_version;

    let keep: BTreeMap<String, Vec<u8>> =
        (0..6).map(|i| (format!("keep/{i}"), random_bytes(MIB + MIB / 2 + 10_000 * i))).collect();
    // Deleted: six with blocks, four inline (those leave only a tombstone behind).
    let del: BTreeMap<String, Vec<u8>> =
        (0..10).map(|i| (format!("del/{i}"), random_bytes(if i < 6 { MIB + 4096 * i + 1 } else { 100 * i }))).collect();
    put_all(&clients, &bucket, &keep).await;
    put_all(&clients, &bucket, &del).await;

    // Three uploads with two parts each (the first of several blocks); the last stays open,
    // with a first part big enough to complete it at the end.
    let mut uploads = Vec::new();
    for j in 0..3 {
        let key = format!("mpu/{j}");
        let id = create_upload(&s3, &bucket, &key).await;
        let parts = vec![random_bytes(if j == 2 { 5 * MIB } else { MIB + MIB / 2 }), random_bytes(100_000 + j)];
        let mut etags = Vec::new();
        for (n, part) in parts.iter().enumerate() {
            etags.push(upload_part(&s3, &bucket, &key, &id, n as i32 + 1, part).await);
        }
        uploads.push(Upload { key, id, parts, etags });
    }
    let open = uploads.pop().expect("three uploads");
    let aborted = uploads;

    let mut in_use = blocks_of(keep.values());
    in_use.extend(open.parts.iter().flat_map(|p| part_block_names(p)));
    let mut written = in_use.clone();
    written.extend(blocks_of(del.values()));
    written.extend(aborted.iter().flat_map(|u| u.parts.iter().flat_map(|p| part_block_names(p))));
    // From here on every node holds every block in use, which the wait below checks.
    wait_everywhere(&cluster, &written).await;

    for Upload { key, id, .. } in &aborted {
        s3.abort_multipart_upload().bucket(&bucket).key(key).upload_id(id).send().await.expect("abort upload");
    }
    for key in del.keys() {
        s3.delete_object().bucket(&bucket).key(key).send().await.expect("delete object");
    }

    let took = converge(&cluster, "deleted and aborted blocks to leave every node", REPAIR_WAIT, || async {
        for i in 0..3 {
            let have = blocks_in_place(&cluster, i);
            let lost: Vec<_> = in_use.difference(&have).collect();
            assert!(lost.is_empty(), "node {} deleted blocks still in use: {lost:?}\n{}", i + 1, cluster.logs());
            if have != in_use {
                return Err(format!("node {}: {}", i + 1, set_diff(&have, &in_use)));
            }
        }
        Ok(())
    })
    .await;
    eprintln!("unused blocks left every node in {took:?}");

    // Every node holds the tombstones, so every node may drop them; the kept objects stay.
    converge(&cluster, "the deleted objects' tombstones to be collected everywhere", REPAIR_WAIT, || async {
        for i in 0..3 {
            let entries = object_entries(&cluster, i, layout).await?;
            for key in keep.keys() {
                assert!(
                    entries.iter().any(|e| is_for(e, key) && !e.tombstone),
                    "node {}: the entry of {key} was collected\n{}",
                    i + 1,
                    cluster.logs()
                );
            }
            let left: Vec<&String> = del.keys().filter(|k| entries.iter().any(|e| is_for(e, k))).collect();
            if !left.is_empty() {
                return Err(format!("node {} still has entries for {left:?}", i + 1));
            }
        }
        Ok(())
    })
    .await;

    assert_all_read(&clients, &bucket, &keep, "after the collection").await;
    assert_all_gone(&s3, &bucket, del.keys()).await;
    // The open upload's parts survived every collection: it completes whole.
    let Upload { key, id, parts, etags } = &open;
    let listed = s3.list_multipart_uploads().bucket(&bucket).send().await.expect("list uploads");
    let ids: Vec<_> = listed.uploads().iter().filter_map(|u| u.upload_id()).collect();
    assert_eq!(ids, [id.as_str()], "only the open upload is listed");
    complete_upload(&s3, &bucket, key, id, &[(1, &etags[0]), (2, &etags[1])]).send().await.expect("complete");
    let completed: BTreeMap<String, Vec<u8>> = [(key.clone(), parts.concat())].into();
    assert_all_read(&clients, &bucket, &completed, "the completed upload").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_left_open_expires() {
    let cluster = Cluster::start_with(3, 1, &format!("{FAST}multipart_max_age_secs = 5\n")).await;
    let s3 = cluster.s3_client(0);
    let bucket = new_bucket(&s3, "expire").await;
    let keep: BTreeMap<String, Vec<u8>> = [("keep".to_string(), random_bytes(MIB + 5000))].into();
    put_all(std::slice::from_ref(&s3), &bucket, &keep).await;
    let want = blocks_of(keep.values());
    wait_everywhere(&cluster, &want).await;

    let id = create_upload(&s3, &bucket, "stale").await;
    let parts = [random_bytes(MIB + MIB / 2), random_bytes(100_000)];
    let mut etags = Vec::new();
    for (n, part) in parts.iter().enumerate() {
        etags.push(upload_part(&s3, &bucket, "stale", &id, n as i32 + 1, part).await);
    }
    let part_blocks: BTreeSet<String> = parts.iter().flat_map(|p| part_block_names(p)).collect();
    // The parts are on disk (on two nodes at least: the upload was acknowledged).
    let stored: BTreeSet<String> = (0..3).flat_map(|i| blocks_in_place(&cluster, i)).collect();
    assert!(stored.is_superset(&part_blocks), "the parts are not on disk: {}", set_diff(&stored, &part_blocks));

    let took = converge(&cluster, "the upload left open to expire", REPAIR_WAIT, || async {
        let listed = s3.list_multipart_uploads().bucket(&bucket).send().await.map_err(|e| format!("{e:?}"))?;
        if listed.uploads().iter().any(|u| u.upload_id() == Some(id.as_str())) {
            return Err("the upload is still listed".into());
        }
        for i in 0..3 {
            let have = blocks_in_place(&cluster, i);
            assert!(have.is_superset(&want), "node {} deleted a block in use\n{}", i + 1, cluster.logs());
            if have != want {
                return Err(format!("node {}: {}", i + 1, set_diff(&have, &want)));
            }
        }
        Ok(())
    })
    .await;
    eprintln!("the open upload was aborted and its blocks freed in {took:?}");

    let late = complete_upload(&s3, &bucket, "stale", &id, &[(1, &etags[0]), (2, &etags[1])]).send().await;
    expect_s3_error(late, 404, Some("NoSuchUpload"));
    assert_all_read(&[s3], &bucket, &keep, "after the upload expired").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_dead_node_restores_three_copies() {
    let mut cluster = Cluster::start_with(4, 1, FAST).await;
    let s3 = [cluster.s3_client(0)];
    let bucket = new_bucket(&s3[0], "remove").await;
    let objects = mixed_objects("o/", 60);
    put_all(&s3, &bucket, &objects).await;
    let want = blocks_of(objects.values());

    // Node 4 dies for good, its disks with it: with four nodes, each block had one copy
    // there and two on the others.
    let dead = 3;
    let dead_id = cluster.node_id(dead);
    cluster.kill9_data(dead);
    wipe(&cluster, dead);
    wait_reported_down(&cluster, &dead_id).await;
    let version = cluster.status().await.layout_version;
    cluster.cli_ok(["node", "remove", &dead_id, "--yes"]).await;
    cluster.wait_layout_settled(version + 1, REPAIR_WAIT).await;

    // Three nodes, three copies: every survivor holds every block.
    let took = converge(&cluster, "every survivor to hold every block", REPAIR_WAIT, || async {
        for i in 0..3 {
            let have = blocks_in_place(&cluster, i);
            if !have.is_superset(&want) {
                return Err(format!("node {}: {}", i + 1, set_diff(&have, &want)));
            }
        }
        Ok(())
    })
    .await;
    eprintln!("the survivors held every block {took:?} after the layout settled");
    assert_all_read(&s3, &bucket, &objects, "after the dead node was removed").await;

    // Any one survivor may now go too: the other two serve everything.
    cluster.stop_data(0).await;
    assert_all_read(&s3, &bucket, &objects, "with one survivor stopped").await;
}

/// The operator commands answer with what they did, and refuse bad input with a readable
/// line (and a failing exit status), changing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_commands_answer_and_refuse_bad_input() {
    let cluster = Cluster::start_with(3, 1, FAST).await;
    let s3 = cluster.s3_client(0);
    let bucket = new_bucket(&s3, "cmds").await;
    let data = random_bytes(MIB + 10);
    put_bytes(&s3, &bucket, "one", &data).await;
    let want = blocks_of([&data]);
    wait_everywhere(&cluster, &want).await;
    let refused = |out: std::process::Output, says: &str| {
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "expected a refusal mentioning {says:?}, got success: {out:?}");
        assert!(err.contains(says), "expected {says:?} in: {err}");
    };

    // One line per data node.
    for verb in [&["repair", "tables"][..], &["repair", "blocks"], &["repair", "scrub", "start"]] {
        let out = cluster.cli_ok(verb.iter().copied()).await;
        assert_eq!(out.lines().count(), 3, "{verb:?}:\n{out}");
    }
    let out = cluster.cli_ok(["repair", "scrub", "pause", "--node", &cluster.node_id(0)]).await;
    assert!(out.contains(&cluster.node_id(0)) && out.lines().count() == 1, "{out}");

    // Worker variables: set on every node, kept, refused when malformed.
    let out = cluster.cli_ok(["worker", "set", "scrub-interval", "12h"]).await;
    assert_eq!(out.matches("43200s").count(), 3, "{out}");
    let out = cluster.cli_ok(["worker", "get"]).await;
    assert_eq!(out.matches("43200s").count(), 3, "{out}");
    refused(cluster.cli(["worker", "set", "scrub-interval", "soon"]).await, "not a duration");
    refused(cluster.cli(["worker", "set", "resync-worker-count", "99"]).await, "1 to 8");
    refused(cluster.cli(["worker", "set", "no-such-thing", "1"]).await, "unknown worker variable");
    assert_eq!(cluster.cli_ok(["worker", "get"]).await.matches("43200s").count(), 3, "a refusal changes nothing");
    let workers = cluster.cli_ok(["worker", "list"]).await;
    for w in ["anti_entropy", "tombstone_gc", "block_resync", "block_scan", "scrub", "block_gc"] {
        assert_eq!(workers.matches(&format!("  {w}  ")).count(), 3, "{w} on every data node:\n{workers}");
    }

    // A block: who uses it, who has it.
    let hash = want.iter().next().expect("a block");
    let info = cluster.cli_ok(["block", "info", hash]).await;
    assert!(info.contains("live"), "{info}");
    for i in 0..3 {
        let row = info.lines().find(|l| l.starts_with(&cluster.node_id(i))).unwrap_or_else(|| panic!("{info}"));
        assert!(row.split_whitespace().skip(1).all(|w| w == "yes"), "node {} is a replica with the file: {row}", i + 1);
    }
    refused(cluster.cli(["block", "info", "xyz"]).await, "not a block hash");
    assert!(cluster.cli_ok(["block", "list-errors"]).await.contains("No block resync is failing"));
    refused(cluster.cli(["block", "retry-now"]).await, "--all");
    cluster.cli_ok(["block", "retry-now", "--all"]).await;

    // Removing a node: only with --yes, never one that still heartbeats unless forced.
    let id = cluster.node_id(2);
    refused(cluster.cli(["node", "remove", &id]).await, "--yes");
    refused(cluster.cli(["node", "remove", &id, "--yes"]).await, "still heartbeating");
    refused(cluster.cli(["node", "remove", "nosuchnode", "--yes"]).await, "no node");
    assert_eq!(cluster.status().await.layout_version, 1, "nothing was applied");
    assert_eq!(body_bytes(s3.get_object().bucket(&bucket).key("one").send().await.expect("get").body).await, data);
}
