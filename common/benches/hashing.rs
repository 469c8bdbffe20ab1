//! Hashing a block: blake2b-256 (block ids, checked on every write and every read from disk)
//! and MD5 (every PUT's ETag), per core. `cargo bench -p hangar-common --bench hashing`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hangar_common::hash::BlockHash;
use md5::Digest;

fn block(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn hashing(c: &mut Criterion) {
    let mut g = c.benchmark_group("hash");
    for (name, len) in [("4KiB", 4 * 1024), ("1MiB", 1024 * 1024)] {
        let data = block(len);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(format!("blake2b-256/{name}"), |b| b.iter(|| BlockHash::of(std::hint::black_box(&data))));
        g.bench_function(format!("md5/{name}"), |b| b.iter(|| md5::Md5::digest(std::hint::black_box(&data))));
    }
    g.finish();
}

criterion_group!(benches, hashing);
criterion_main!(benches);
