//! Computing a layout: partitions assigned to 10 and 100 nodes in 3 zones (replication 3),
//! from nothing and after one node more. `cargo bench -p hangar-control-plane --bench layout`.

use criterion::{Criterion, criterion_group, criterion_main};
use hangar_control_plane::assign::{NodeRole, assign, to_ids};

fn nodes(n: usize) -> Vec<NodeRole> {
    (0..n)
        .map(|i| NodeRole {
            id: format!("{i:016x}"),
            zone: format!("zone-{}", i % 3),
            capacity: 1_000_000_000_000 + (i as u64 % 4) * 500_000_000_000,
        })
        .collect()
}

fn layout(c: &mut Criterion) {
    let mut g = c.benchmark_group("layout");
    for n in [10, 100] {
        let all = nodes(n + 1);
        let before = &all[..n];
        g.bench_function(format!("{n} nodes, first layout"), |b| {
            b.iter(|| assign(std::hint::black_box(before), 3, &[]).expect("assign"))
        });
        let previous = to_ids(before, &assign(before, 3, &[]).expect("assign"));
        g.bench_function(format!("{n} nodes, one added"), |b| {
            b.iter(|| assign(std::hint::black_box(&all), 3, &previous).expect("assign"))
        });
    }
    g.finish();
}

criterion_group!(benches, layout);
criterion_main!(benches);
