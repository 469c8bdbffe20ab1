//! The metadata store on disk: sled inserts (one entry merged with its Merkle index, then
//! fsynced, as every acknowledged write; 16 concurrent writers through the group commit, and
//! the same 16 each calling sled's flush, as before it) and a range scan of 1000 entries.
//! `cargo bench -p hangar-data-node --bench meta_store`.
//! Measured on the temp dir's disk: run it where the data will live.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hangar_data_node::meta_store::MetaStore;
use hangar_proto::metadata::{Entry, Table};

fn entry(i: u64) -> Entry {
    let mut key = vec![7u8; 16];
    key.extend_from_slice(format!("photos/img-{i:012}.jpg").as_bytes());
    Entry { key: key.into(), value: vec![1u8; 200].into(), timestamp: 1_000 + i, tiebreak: 0, tombstone: false }
}

fn meta_store(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(MetaStore::open(&dir.path().join("meta"), Duration::from_secs(3600)).expect("open"));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let next = AtomicU64::new(0);
    let table = Table::Object as i32;

    let mut g = c.benchmark_group("sled");
    g.throughput(Throughput::Elements(1));
    g.bench_function("insert + fsync, 1 writer", |b| {
        b.iter(|| rt.block_on(store.insert(table, vec![entry(next.fetch_add(1, Ordering::Relaxed))])).expect("insert"))
    });
    g.throughput(Throughput::Elements(16));
    g.bench_function("insert + fsync, 16 concurrent writers", |b| {
        b.iter(|| {
            rt.block_on(async {
                let writes = (0..16).map(|_| {
                    let store = store.clone();
                    let e = entry(next.fetch_add(1, Ordering::Relaxed));
                    tokio::spawn(async move { store.insert(table, vec![e]).await })
                });
                for w in futures::future::join_all(writes).await {
                    w.expect("task").expect("insert");
                }
            })
        })
    });
    g.bench_function("insert + fsync, 16 concurrent writers, a sled flush each", |b| {
        b.iter(|| {
            rt.block_on(async {
                let writes = (0..16).map(|_| {
                    let store = store.clone();
                    let e = entry(next.fetch_add(1, Ordering::Relaxed));
                    tokio::spawn(async move {
                        store.merge_in(table, vec![e]).expect("merge");
                        let db = store.db.clone();
                        tokio::task::spawn_blocking(move || db.flush()).await.expect("task").expect("flush");
                    })
                });
                for w in futures::future::join_all(writes).await {
                    w.expect("task");
                }
            })
        })
    });
    g.throughput(Throughput::Elements(1000));
    let start = entry(0).key.to_vec();
    g.bench_function("range scan, 1000 entries", |b| {
        b.iter(|| store.range(table, &start, &[], 1000, false).expect("range"))
    });
    g.finish();
}

criterion_group!(benches, meta_store);
criterion_main!(benches);
