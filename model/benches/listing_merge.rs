//! The listing merge: the pages three replicas answered for one range of the object table
//! (1000 entries each, a tenth of them newer on one replica), merged by the table's rule.
//! `cargo bench -p hangar-model --bench listing_merge`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hangar_model::client::merge_pages;
use hangar_model::schema::object_key;
use hangar_proto::metadata::{Entry, Table};
use hangar_proto::model::Object;
use prost::Message;

fn page(replica: u64, n: usize) -> Vec<Entry> {
    (0..n)
        .map(|i| {
            // Every tenth key is newer on replica 0: the merge has work to do.
            let ts = if i % 10 == 0 && replica == 0 { 2_000 } else { 1_000 };
            let obj = Object { size: 4096 + i as u64, etag: format!("\"{i:032x}\""), ..Default::default() };
            Entry {
                key: object_key(&[7; 16], &format!("photos/2026/12/img-{i:06}.jpg")).into(),
                value: obj.encode_to_vec().into(),
                timestamp: ts,
                tiebreak: replica,
                tombstone: false,
            }
        })
        .collect()
}

fn merge(c: &mut Criterion) {
    let mut g = c.benchmark_group("listing merge");
    for n in [100, 1000] {
        let pages: Vec<Vec<Entry>> = (0..3).map(|r| page(r, n)).collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("3 replicas x {n} objects"), |b| {
            b.iter(|| merge_pages(Table::Object, pages.iter().map(|p| (p.as_slice(), false))))
        });
    }
    g.finish();
}

criterion_group!(benches, merge);
criterion_main!(benches);
