//! Partition assignment: which R data nodes hold each of the 256 partitions.
//!
//! Goals, in order: every partition's replicas are distinct nodes in distinct zones where
//! there are enough zones; each node holds partitions in proportion to its capacity; and
//! as few partitions as possible move from the previous assignment.
//!
//! Method: targets come from water-filling capacity shares under the caps (a node holds a
//! partition at most once; a zone at most `zone_cap` times per partition). Then every
//! partition keeps the previous replicas that still fit, the free slots go to the eligible
//! node furthest below its target, and a last pass moves single replicas from nodes above
//! their target to nodes below it (each such move is one the balance needs). Deterministic: ties break on node id.

use std::collections::BTreeMap;

pub const PARTITIONS: usize = 256;

#[derive(Clone, Debug, PartialEq)]
pub struct NodeRole {
    pub id: String,
    pub zone: String,
    pub capacity: u64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AssignError {
    #[error("the layout has no node with a role")]
    NoNodes,
    #[error("replication factor {0} needs at least {0} nodes with a role; there are {1}")]
    TooFewNodes(usize, usize),
    #[error("node {0} has zero capacity")]
    ZeroCapacity(String),
}

/// Replicas of each partition, as indexes into the node list.
pub type Assignment = Vec<Vec<usize>>;

/// How many replicas of one partition a zone may hold.
fn zone_cap(replication: usize, zones: usize) -> usize {
    replication.div_ceil(zones)
}

/// Integer slot targets per node: capacity-proportional, respecting node and zone caps.
pub fn targets(nodes: &[NodeRole], replication: usize) -> Vec<usize> {
    let zones: BTreeMap<&str, Vec<usize>> = nodes.iter().enumerate().fold(BTreeMap::new(), |mut m, (i, n)| {
        m.entry(n.zone.as_str()).or_insert_with(Vec::new).push(i);
        m
    });
    let zcap = zone_cap(replication, zones.len());
    let total = (PARTITIONS * replication) as f64;
    // Water-filling: fix the nodes (and zones) whose share exceeds their cap, spread the rest.
    let mut fixed: Vec<Option<f64>> = vec![None; nodes.len()];
    loop {
        let fixed_sum: f64 = fixed.iter().flatten().sum();
        let free_cap: f64 = nodes.iter().zip(&fixed).filter(|(_, f)| f.is_none()).map(|(n, _)| n.capacity as f64).sum();
        let shares: Vec<f64> = (0..nodes.len())
            .map(|i| fixed[i].unwrap_or((total - fixed_sum) * nodes[i].capacity as f64 / free_cap.max(1.0)))
            .collect();
        let mut changed = false;
        for i in 0..nodes.len() {
            if fixed[i].is_none() && shares[i] > PARTITIONS as f64 {
                fixed[i] = Some(PARTITIONS as f64);
                changed = true;
            }
        }
        if changed {
            continue;
        }
        for members in zones.values() {
            let limit = (PARTITIONS * zcap.min(members.len())) as f64;
            let zone_sum: f64 = members.iter().map(|&i| shares[i]).sum();
            if zone_sum > limit + 1e-9 && members.iter().any(|&i| fixed[i].is_none()) {
                let zone_fixed: f64 = members.iter().filter_map(|&i| fixed[i]).sum();
                let zone_free_cap: f64 =
                    members.iter().filter(|&&i| fixed[i].is_none()).map(|&i| nodes[i].capacity as f64).sum();
                for &i in members {
                    if fixed[i].is_none() {
                        fixed[i] = Some((limit - zone_fixed) * nodes[i].capacity as f64 / zone_free_cap.max(1.0));
                    }
                }
                changed = true;
            }
        }
        if !changed {
            return round_shares(&shares, PARTITIONS * replication);
        }
    }
}

/// Largest-remainder rounding that keeps the sum.
fn round_shares(shares: &[f64], total: usize) -> Vec<usize> {
    let mut out: Vec<usize> = shares.iter().map(|s| s.floor() as usize).collect();
    let mut rest: Vec<(usize, f64)> = shares.iter().enumerate().map(|(i, s)| (i, s - s.floor())).collect();
    rest.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let missing = total.saturating_sub(out.iter().sum());
    for (i, _) in rest.into_iter().take(missing) {
        out[i] += 1;
    }
    out
}

/// Computes the assignment for `nodes`, moving as little as possible from `previous`
/// (whose entries are node ids).
pub fn assign(nodes: &[NodeRole], replication: usize, previous: &[Vec<String>]) -> Result<Assignment, AssignError> {
    if nodes.is_empty() {
        return Err(AssignError::NoNodes);
    }
    if let Some(n) = nodes.iter().find(|n| n.capacity == 0) {
        return Err(AssignError::ZeroCapacity(n.id.clone()));
    }
    if nodes.len() < replication {
        return Err(AssignError::TooFewNodes(replication, nodes.len()));
    }
    let zone_of: Vec<&str> = nodes.iter().map(|n| n.zone.as_str()).collect();
    let zones = zone_of.iter().collect::<std::collections::BTreeSet<_>>().len();
    let zcap = zone_cap(replication, zones);
    let target = targets(nodes, replication);
    let index: BTreeMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (n.id.as_str(), i)).collect();
    let mut count = vec![0usize; nodes.len()];
    let fits = |part: &[usize], i: usize| {
        !part.contains(&i) && part.iter().filter(|&&j| zone_of[j] == zone_of[i]).count() < zcap
    };

    // 1. Keep every previous replica that still fits; over-target nodes give up replicas
    //    only in step 3, one replica for one move.
    let mut parts: Assignment = (0..PARTITIONS).map(|_| Vec::with_capacity(replication)).collect();
    for (p, part) in parts.iter_mut().enumerate() {
        for id in previous.get(p).into_iter().flatten() {
            if let Some(&i) = index.get(id.as_str())
                && part.len() < replication
                && fits(part, i)
            {
                part.push(i);
                count[i] += 1;
            }
        }
    }
    // 2. Fill free slots with the eligible node furthest below its target.
    for part in parts.iter_mut() {
        while part.len() < replication {
            let best = (0..nodes.len()).filter(|&i| fits(part, i)).max_by(|&a, &b| {
                let da = target[a] as i64 - count[a] as i64;
                let db = target[b] as i64 - count[b] as i64;
                da.cmp(&db).then(nodes[b].id.cmp(&nodes[a].id))
            });
            let Some(i) = best else { break };
            part.push(i);
            count[i] += 1;
        }
    }
    // 3. Move single replicas from over-target nodes to under-target ones.
    for _ in 0..PARTITIONS * replication {
        let Some(under) = (0..nodes.len()).filter(|&i| count[i] < target[i]).max_by_key(|&i| target[i] - count[i])
        else {
            break;
        };
        let mut moved = false;
        'search: for part in parts.iter_mut() {
            for slot in 0..part.len() {
                let over = part[slot];
                if count[over] <= target[over] {
                    continue;
                }
                let others: Vec<usize> = part.iter().copied().filter(|&j| j != over).collect();
                if fits(&others, under) {
                    part[slot] = under;
                    count[over] -= 1;
                    count[under] += 1;
                    moved = true;
                    break 'search;
                }
            }
        }
        if !moved {
            break;
        }
    }
    Ok(parts)
}

/// Replicas that are new in `next` compared with `previous` (ids), summed over partitions.
pub fn moved(previous: &[Vec<String>], next: &[Vec<String>]) -> usize {
    next.iter()
        .enumerate()
        .map(|(p, part)| part.iter().filter(|id| !previous.get(p).is_some_and(|old| old.contains(id))).count())
        .sum()
}

/// The assignment as node ids.
pub fn to_ids(nodes: &[NodeRole], a: &Assignment) -> Vec<Vec<String>> {
    a.iter().map(|part| part.iter().map(|&i| nodes[i].id.clone()).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, zone: &str, cap: u64) -> NodeRole {
        NodeRole { id: id.into(), zone: zone.into(), capacity: cap }
    }

    fn counts(a: &Assignment, n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for part in a {
            for &i in part {
                c[i] += 1;
            }
        }
        c
    }

    fn zones_distinct(nodes: &[NodeRole], a: &Assignment) -> bool {
        a.iter().all(|p| {
            let z: std::collections::BTreeSet<_> = p.iter().map(|&i| &nodes[i].zone).collect();
            z.len() == p.len()
        })
    }

    #[test]
    fn three_zones_three_replicas() {
        let nodes = vec![node("a", "z1", 100), node("b", "z2", 100), node("c", "z3", 100)];
        let a = assign(&nodes, 3, &[]).unwrap();
        assert!(a.iter().all(|p| p.len() == 3));
        assert!(zones_distinct(&nodes, &a));
        assert_eq!(counts(&a, 3), vec![256, 256, 256]);
    }

    #[test]
    fn capacity_proportional_with_zone_spread() {
        let nodes = vec![
            node("a", "z1", 200),
            node("b", "z1", 100),
            node("c", "z2", 300),
            node("d", "z3", 150),
            node("e", "z3", 150),
        ];
        let a = assign(&nodes, 3, &[]).unwrap();
        assert!(zones_distinct(&nodes, &a));
        let t = targets(&nodes, 3);
        assert_eq!(counts(&a, nodes.len()), t);
        assert_eq!(t.iter().sum::<usize>(), 768);
        // Each zone holds one replica of every partition here (three zones, three replicas).
        assert_eq!(t[0] + t[1], 256);
        assert_eq!(t[2], 256);
    }

    #[test]
    fn fewer_zones_than_replicas_still_uses_distinct_nodes() {
        let nodes = vec![node("a", "z1", 1), node("b", "z1", 1), node("c", "z2", 1), node("d", "z2", 1)];
        let a = assign(&nodes, 3, &[]).unwrap();
        for p in &a {
            let mut q = p.clone();
            q.sort();
            q.dedup();
            assert_eq!(q.len(), 3);
        }
        assert_eq!(counts(&a, 4), vec![192, 192, 192, 192]);
    }

    #[test]
    fn errors_are_clear() {
        assert_eq!(assign(&[], 3, &[]), Err(AssignError::NoNodes));
        let two = vec![node("a", "z", 1), node("b", "z", 1)];
        assert_eq!(assign(&two, 3, &[]), Err(AssignError::TooFewNodes(3, 2)));
    }

    #[test]
    fn a_joining_node_moves_about_its_share_only() {
        for n in [3usize, 5, 10] {
            let mut nodes: Vec<_> = (0..n).map(|i| node(&format!("n{i:02}"), &format!("z{i}"), 100)).collect();
            let before = to_ids(&nodes, &assign(&nodes, 3, &[]).unwrap());
            nodes.push(node("new", "znew", 100));
            let after = to_ids(&nodes, &assign(&nodes, 3, &before).unwrap());
            let ideal = 256.0 * 3.0 / (n as f64 + 1.0);
            let m = moved(&before, &after) as f64;
            assert!(m <= ideal.ceil() + 1.0, "n={n}: moved {m}, ideal {ideal}");
            let again = to_ids(&nodes, &assign(&nodes, 3, &after).unwrap());
            assert_eq!(moved(&after, &again), 0, "a stable layout does not move");
        }
    }
}
