//! Measures the partition assignment: partitions moved when one node joins a cluster of N
//! (against the ideal 256·R/(N+1)), and the largest deviation from capacity-proportional
//! shares. `cargo run --release -p hangar-control-plane --example layout_moves`

use hangar_control_plane::assign::{NodeRole, assign, moved, targets, to_ids};

fn node(i: usize, zones: usize, capacity: u64) -> NodeRole {
    NodeRole { id: format!("node{i:02}"), zone: format!("z{}", i % zones), capacity }
}

/// Largest |held - ideal| / ideal over nodes, ideal = 256·R·capacity/total.
fn deviation(nodes: &[NodeRole], ids: &[Vec<String>], r: usize) -> f64 {
    let total: u64 = nodes.iter().map(|n| n.capacity).sum();
    nodes
        .iter()
        .map(|n| {
            let held = ids.iter().filter(|p| p.contains(&n.id)).count() as f64;
            let ideal = 256.0 * r as f64 * n.capacity as f64 / total as f64;
            (held - ideal).abs() / ideal
        })
        .fold(0.0, f64::max)
}

/// Largest |held - target| over nodes, in partitions (targets already include zone limits).
fn off_target(nodes: &[NodeRole], ids: &[Vec<String>], r: usize) -> usize {
    let t = targets(nodes, r);
    nodes
        .iter()
        .zip(t)
        .map(|(n, t)| (ids.iter().filter(|p| p.contains(&n.id)).count() as i64 - t as i64).unsigned_abs() as usize)
        .max()
        .unwrap_or(0)
}

fn main() {
    let r = 3;
    println!(
        "| N | zones | capacities | moved when one node joins | ideal 256·R/(N+1) | max deviation from capacity share after | max distance from target after |"
    );
    println!("|---|---|---|---|---|---|---|");
    // zones = 0 means every node in its own zone (only capacity constrains placement).
    for (n, zones, mixed) in
        [(3, 0, false), (5, 0, false), (10, 0, false), (5, 0, true), (10, 0, true), (10, 3, false), (10, 3, true)]
    {
        let cap = |i: usize| if mixed { [1000, 2000, 500][i % 3] } else { 1000 };
        let z = |i: usize| if zones == 0 { i + 1000 } else { i };
        let mut nodes: Vec<NodeRole> =
            (0..n).map(|i| node(z(i), if zones == 0 { usize::MAX } else { zones }, cap(i))).collect();
        let before = to_ids(&nodes, &assign(&nodes, r, &[]).expect("assignable"));
        nodes.push(node(z(n), if zones == 0 { usize::MAX } else { zones }, cap(n)));
        let after = to_ids(&nodes, &assign(&nodes, r, &before).expect("assignable"));
        let new_share = 256.0 * r as f64 * cap(n) as f64 / nodes.iter().map(|n| n.capacity).sum::<u64>() as f64;
        println!(
            "| {n} | {} | {} | {} | {:.1} | {:.1}% | {} |",
            if zones == 0 { "one per node".to_string() } else { zones.to_string() },
            if mixed { "1T/2T/0.5T" } else { "equal" },
            moved(&before, &after),
            if mixed { new_share } else { 256.0 * r as f64 / (n as f64 + 1.0) },
            deviation(&nodes, &after, r) * 100.0,
            off_target(&nodes, &after, r),
        );
    }
}
