//! The Merkle trees anti-entropy compares: per table and partition, 256 leaves and a root.
//!
//! - The **index** (`merkle_index`) holds, for every local entry, `table ‖ partition ‖ leaf
//!   ‖ key → blake2b(encoded entry)`. The leaf is the last byte of blake2b(key), which is
//!   independent of the partition (the first byte of a hash). The index is written in the
//!   same sled transaction as the entry itself, so it never disagrees with the table, even
//!   after a crash.
//! - The same transaction marks the leaf **dirty** (`merkle_todo`, `table ‖ partition ‖ leaf
//!   → a fresh mark`). `refresh` recomputes the dirty leaves (blake2b over their keys and
//!   entry hashes, in key order), marks their partitions' roots dirty (`table ‖ partition`),
//!   then recomputes those roots (blake2b over the non-empty leaves). A mark goes only after
//!   what it asks for is written, and only if it is still the same mark (a change made
//!   meanwhile leaves a new one), so a crash at any point leaves the work listed. A change
//!   costs one index write on the request path and a leaf's worth of hashing later.
//!
//! Two replicas whose roots for (table, partition) are equal hold the same entries there;
//! when they differ, the leaves say which 1/256th of the partition to exchange.

use std::sync::Mutex;

use hangar_common::hash::{BlockHash, Hasher};
use hangar_model::schema::{TABLES, partition_of};
use hangar_proto::metadata::{MerkleLeaf, MerkleRoot, Table};
use sled::transaction::{TransactionalTree, UnabortableTransactionError};

use crate::DataError;

/// Keys of one page, and where the next page starts (None at the end).
pub type KeyPage = (Vec<Vec<u8>>, Option<Vec<u8>>);

/// Leaves per partition.
pub const LEAVES: usize = 256;

pub struct Merkle {
    pub index: sled::Tree,
    pub todo: sled::Tree,
    /// table ‖ partition ‖ leaf → leaf hash ‖ entry count (u64 BE).
    leaves: sled::Tree,
    /// table ‖ partition → root hash ‖ entry count (u64 BE).
    roots: sled::Tree,
    /// One refresh at a time: two would race to write a partition's root.
    refreshing: Mutex<()>,
}

/// The leaf of a key.
pub fn leaf_of(key: &[u8]) -> u8 {
    BlockHash::of(key).0[31]
}

/// Where `key` of `table` sits in the index: table ‖ partition ‖ leaf ‖ key.
pub fn index_key(table: Table, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 3);
    k.push(table as u8);
    k.push(partition_of(table, key) as u8);
    k.push(leaf_of(key));
    k.extend_from_slice(key);
    k
}

/// Records in transaction (`index`, `todo`) that `key` of `table` now holds `encoded` (None:
/// it was removed).
pub fn note(
    index: &TransactionalTree,
    todo: &TransactionalTree,
    table: Table,
    key: &[u8],
    encoded: Option<&[u8]>,
) -> Result<(), UnabortableTransactionError> {
    let ik = index_key(table, key);
    match encoded {
        Some(bytes) => index.insert(ik.as_slice(), &BlockHash::of(bytes).0[..])?,
        None => index.remove(ik.as_slice())?,
    };
    // A new mark each time, so that a refresh that read the leaf before this change does
    // not take the mark away.
    todo.insert(&ik[..3], &hangar_common::ids::random_id()[..])?;
    Ok(())
}

fn bit(map: &[u8], i: usize) -> bool {
    map.is_empty() || map.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
}

fn split(v: &[u8]) -> Option<(Vec<u8>, u64)> {
    let (h, n) = v.split_at_checked(32)?;
    Some((h.to_vec(), u64::from_be_bytes(n.try_into().ok()?)))
}

/// Stores a tree node (hash ‖ entry count) under `key`, or removes it when it covers nothing.
fn put_node(tree: &sled::Tree, key: &[u8], h: Hasher, n: u64) -> Result<(), DataError> {
    if n == 0 {
        tree.remove(key)?;
    } else {
        let mut v = h.finish().0.to_vec();
        v.extend_from_slice(&n.to_be_bytes());
        tree.insert(key, v)?;
    }
    Ok(())
}

impl Merkle {
    pub fn open(db: &sled::Db) -> Result<Self, DataError> {
        let m = Self {
            index: db.open_tree("merkle_index")?,
            todo: db.open_tree("merkle_todo")?,
            leaves: db.open_tree("merkle_leaves")?,
            roots: db.open_tree("merkle_roots")?,
            refreshing: Mutex::new(()),
        };
        // Databases from before the trees existed get an index of what they hold, once.
        let meta = db.open_tree("merkle_meta")?;
        if meta.get(b"built")?.is_none() {
            for t in [&m.index, &m.todo, &m.leaves, &m.roots] {
                t.clear()?;
            }
            for &t in TABLES {
                for item in db.open_tree(t.as_str_name())?.iter() {
                    let (k, v) = item?;
                    let ik = index_key(t, &k);
                    m.index.insert(&ik, &BlockHash::of(&v).0[..])?;
                    m.todo.insert(&ik[..3], &[0u8][..])?;
                }
            }
            meta.insert(b"built", &[])?;
            db.flush()?;
        }
        Ok(m)
    }

    /// Rehashes the leaves dirty when it starts and the roots above them (changes made
    /// meanwhile wait for the next refresh, so it always ends). Blocking: async callers run it
    /// with `spawn_blocking`.
    pub fn refresh(&self) -> Result<(), DataError> {
        let _one = self.refreshing.lock().unwrap_or_else(|p| p.into_inner());
        let marks: Vec<(sled::IVec, sled::IVec)> = self.todo.iter().collect::<Result<_, _>>()?;
        for (leaf, mark) in marks.iter().filter(|(k, _)| k.len() == 3) {
            let mut h = Hasher::default();
            let mut n = 0u64;
            for item in self.index.scan_prefix(leaf) {
                let (k, v) = item?;
                let key = &k[3..];
                h.update(&(key.len() as u32).to_be_bytes());
                h.update(key);
                h.update(&v);
                n += 1;
            }
            put_node(&self.leaves, leaf, h, n)?;
            self.todo.insert(&leaf[..2], &[])?;
            let _ = self.todo.compare_and_swap(leaf, Some(mark), None::<&[u8]>)?;
        }
        let parts: Vec<sled::IVec> =
            self.todo.iter().keys().filter(|k| k.as_ref().is_ok_and(|k| k.len() == 2)).collect::<Result<_, _>>()?;
        for p in parts {
            let mut h = Hasher::default();
            let mut n = 0u64;
            for item in self.leaves.scan_prefix(&p) {
                let (k, v) = item?;
                let (hash, count) = split(&v).ok_or_else(|| DataError::Invalid("bad merkle leaf".into()))?;
                h.update(&k[2..3]);
                h.update(&hash);
                n += count;
            }
            put_node(&self.roots, &p, h, n)?;
            // Leaves change only in a refresh, and refreshes take turns.
            self.todo.remove(&p)?;
        }
        self.report_todo();
        Ok(())
    }

    /// Publishes how many leaves of each table wait for a refresh.
    fn report_todo(&self) {
        let mut per_table = std::collections::BTreeMap::<u8, i64>::new();
        for k in self.todo.iter().keys().flatten().filter(|k| k.len() == 3) {
            *per_table.entry(k[0]).or_default() += 1;
        }
        let m = hangar_common::telemetry::metrics();
        for &t in TABLES {
            let label = hangar_common::telemetry::metrics::TableLabel {
                table_name: hangar_common::telemetry::metrics::table_label(t),
            };
            m.table_merkle_updater_todo_queue_length
                .get_or_create(&label)
                .set(per_table.get(&(t as u8)).copied().unwrap_or(0));
        }
    }

    /// The roots of the partitions set in `partitions` (empty: all), after a refresh.
    pub fn roots(&self, partitions: &[u8]) -> Result<Vec<MerkleRoot>, DataError> {
        self.refresh()?;
        let mut out = Vec::new();
        for item in self.roots.iter() {
            let (k, v) = item?;
            let (Some(&t), Some(&p)) = (k.first(), k.get(1)) else { continue };
            if !bit(partitions, p as usize) {
                continue;
            }
            let Some((hash, entries)) = split(&v) else { continue };
            out.push(MerkleRoot { table: t as i32, partition: p as u32, hash: hash.into(), entries });
        }
        Ok(out)
    }

    /// The non-empty leaves of `table`'s partition `p`, after a refresh.
    pub fn leaves(&self, table: Table, p: u8) -> Result<Vec<MerkleLeaf>, DataError> {
        self.refresh()?;
        let mut out = Vec::new();
        for item in self.leaves.scan_prefix([table as u8, p]) {
            let (k, v) = item?;
            let Some((hash, _)) = split(&v) else { continue };
            out.push(MerkleLeaf { leaf: k[2] as u32, hash: hash.into() });
        }
        Ok(out)
    }

    /// Keys of `table`'s partition `p` in the leaves set in `leaves` (empty: all), from
    /// `start` (leaf ‖ key; empty: the beginning), at most `limit`; and where the next page
    /// starts (None at the end).
    pub fn keys(&self, table: Table, p: u8, leaves: &[u8], start: &[u8], limit: usize) -> Result<KeyPage, DataError> {
        let prefix = [table as u8, p];
        let mut from = prefix.to_vec();
        from.extend_from_slice(start);
        let mut out = Vec::new();
        for item in self.index.range(from..) {
            let (k, _) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            if !bit(leaves, k[2] as usize) {
                continue;
            }
            if out.len() == limit {
                return Ok((out, Some(k[2..].to_vec())));
            }
            out.push(k[3..].to_vec());
        }
        Ok((out, None))
    }

    /// Every key of `table`'s partition `p` (to drop the partition).
    pub fn partition_keys(&self, table: Table, p: u8) -> Result<Vec<Vec<u8>>, DataError> {
        let mut out = Vec::new();
        for item in self.index.scan_prefix([table as u8, p]).keys() {
            out.push(item?[3..].to_vec());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_do_not_follow_partitions() {
        // Keys of one partition spread over many leaves.
        let leaves: std::collections::BTreeSet<u8> = (0u32..2000)
            .map(|i| i.to_be_bytes())
            .filter(|k| partition_of(Table::Bucket, k) == 7)
            .map(|k| leaf_of(&k))
            .collect();
        assert!(leaves.len() > 3, "{leaves:?}");
    }
}
