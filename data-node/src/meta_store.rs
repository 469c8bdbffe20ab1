//! Metadata tables in sled: one tree per table, each value a prost-encoded `Entry`. Every
//! insert merges by the table's rule (the model crate's `schema::merge`), so replaying or
//! reordering inserts converges to the same state.
//!
//! A merge can imply local work, recorded in the same database before the insert is
//! acknowledged: an object value that lost puts its data versions on the release queue; a
//! block whose last live reference went puts the block on the deletion queue with its
//! deadline (and one that got a reference back leaves it).
//!
//! Every change of an entry also updates the Merkle index (`merkle`) in the same sled
//! transaction, so anti-entropy compares trees that always describe the tables.

use hangar_common::telemetry::metrics;
use hangar_common::telemetry::metrics::{TableLabel, table_label};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hangar_common::hash::BlockHash;
use hangar_common::ids::now_ms;
use hangar_model::schema::{Effect, TABLES, merge, merge_entries, partition_of};
use hangar_proto::metadata::{AcceptorState, Ballot, Entry, MerkleLeaf, MerkleRoot, Table};
use prost::Message;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::DataError;
use crate::merkle::{self, Merkle};

pub struct MetaStore {
    pub db: sled::Db,
    trees: HashMap<i32, sled::Tree>,
    /// Data versions that lost a merge here: dv -> not before (ms, u64 BE) ++ the object
    /// table key whose value used them.
    pub release_queue: sled::Tree,
    /// Releases put off — by a replica that does not lead the object's partition (the
    /// leader releases at once), or after a try that could not ask every replica: due (ms,
    /// u64 BE) ++ dv -> the object table key. Keyed by time, so the releaser finds the next
    /// due one without walking the others.
    pub release_later: sled::Tree,
    /// Blocks with no live reference here: hash -> deadline (ms, u64 BE) after which the
    /// file may go (if no replica has a reference either).
    pub unreferenced: sled::Tree,
    /// The disk checksum of each block file: hash -> CRC-64/NVME of its bytes (u64 BE),
    /// recorded when the block was stored or its hash last verified. The hash names the
    /// content, so an entry stays true for as long as the block exists, and outlives a
    /// deleted block harmlessly.
    pub block_sums: sled::Tree,
    gc_delay: Duration,
    /// Blocks this node should hold and does not (block resync queue):
    /// hash -> `ResyncItem` (next try, errors, last error).
    pub resync: sled::Tree,
    pub merkle: Merkle,
    /// Wakes the workers when work was queued.
    pub wake: std::sync::Arc<tokio::sync::Notify>,
    /// Makes writes durable, concurrent writers sharing fsyncs.
    pub commit: crate::group_commit::GroupCommit,
}

fn ballot(b: &Option<Ballot>) -> (u64, u64) {
    b.as_ref().map(|b| (b.round, b.proposer)).unwrap_or((0, 0))
}

impl MetaStore {
    pub fn open(path: &Path, gc_delay: Duration) -> Result<Self, DataError> {
        let db = sled::Config::new().path(path).open()?;
        let mut trees = HashMap::new();
        for t in TABLES {
            trees.insert(*t as i32, db.open_tree(t.as_str_name())?);
        }
        Ok(Self {
            commit: crate::group_commit::GroupCommit::new(db.clone()),
            merkle: Merkle::open(&db)?,
            resync: db.open_tree("block_resync_queue")?,
            release_queue: db.open_tree("release_queue")?,
            release_later: db.open_tree("release_later")?,
            unreferenced: db.open_tree("block_unreferenced")?,
            block_sums: db.open_tree("block_sums")?,
            db,
            trees,
            gc_delay,
            wake: Default::default(),
        })
    }

    pub fn tree(&self, table: i32) -> Result<&sled::Tree, DataError> {
        self.trees.get(&table).ok_or_else(|| DataError::Invalid(format!("unknown table {table}")))
    }

    fn table(t: i32) -> Result<Table, DataError> {
        Table::try_from(t).map_err(|_| DataError::Invalid(format!("unknown table {t}")))
    }

    /// Merges entries and fsyncs (with the work they imply); returns, for each, the
    /// timestamp of the local value that beats it (0 when it is the value now, or merged
    /// into it).
    pub async fn insert(&self, table: i32, entries: Vec<Entry>) -> Result<Vec<u64>, DataError> {
        let beaten_by = self.merge_in(table, entries)?;
        self.commit.flush().await?;
        Ok(beaten_by)
    }

    /// Merges entries without waiting for the fsync (callers flush); returns what `insert`
    /// does.
    pub fn merge_in(&self, table: i32, entries: Vec<Entry>) -> Result<Vec<u64>, DataError> {
        let t = Self::table(table)?;
        if t == Table::Register {
            // Acceptor states arrive here only from sync; their merge keeps the highest
            // ballots, like Prepare and Accept do.
            for e in &entries {
                self.merge_register(e)?;
            }
            return Ok(vec![0; entries.len()]);
        }
        let mut effects = Vec::new();
        let mut beaten_by = Vec::with_capacity(entries.len());
        for e in entries {
            let (mut fx, beaten) = self.update(t, &e.key, |local| {
                let m = merge(t, local.as_ref(), &e);
                let won = m.entry.timestamp == e.timestamp && m.entry.tiebreak == e.tiebreak;
                let beaten = if won { 0 } else { m.entry.timestamp };
                // A value that loses has effects too (its data is released).
                Ok((m.changed.then_some(m.entry), (m.effects, beaten)))
            })?;
            effects.append(&mut fx);
            beaten_by.push(beaten);
        }
        self.apply(effects)?;
        Ok(beaten_by)
    }

    /// Reads the local entry of `key` in `table`; `decide` returns its replacement (None:
    /// leave it) and a result. The entry and its Merkle index change in one transaction.
    fn update<R>(
        &self,
        t: Table,
        key: &[u8],
        decide: impl Fn(Option<Entry>) -> Result<(Option<Entry>, R), DataError>,
    ) -> Result<R, DataError> {
        let tree = self.tree(t as i32)?;
        // Set by the transaction's last (committed) attempt.
        let changed = std::cell::Cell::new(false);
        let r = (tree, &self.merkle.index, &self.merkle.todo).transaction(|(tree, index, todo)| {
            let local = match tree.get(key)? {
                None => None,
                Some(v) => Some(Entry::decode(v.as_ref()).map_err(|e| ConflictableTransactionError::Abort(e.into()))?),
            };
            let (new, r) = decide(local).map_err(ConflictableTransactionError::Abort)?;
            changed.set(new.is_some());
            if let Some(n) = new {
                let bytes = n.encode_to_vec();
                tree.insert(key, bytes.as_slice())?;
                merkle::note(index, todo, t, key, Some(&bytes))?;
            }
            Ok(r)
        });
        let r = r.map_err(tx_err)?;
        if changed.get() {
            let label = TableLabel { table_name: table_label(t) };
            metrics().table_internal_update_counter.get_or_create(&label).inc();
        }
        Ok(r)
    }

    /// Removes `key` of `table` if its local entry is still exactly `expected`; true when it
    /// was removed. (Not flushed.)
    pub fn remove_if(&self, t: Table, key: &[u8], expected: &Entry) -> Result<bool, DataError> {
        let tree = self.tree(t as i32)?;
        let want = expected.encode_to_vec();
        let r = (tree, &self.merkle.index, &self.merkle.todo).transaction(|(tree, index, todo)| {
            if tree.get(key)?.as_deref() != Some(want.as_slice()) {
                return Ok(false);
            }
            tree.remove(key)?;
            merkle::note(index, todo, t, key, None)?;
            Ok(true)
        });
        r.map_err(tx_err)
    }

    /// Removes every entry of partition `p` of every table (the node no longer holds it).
    pub fn drop_partition(&self, p: u8) -> Result<usize, DataError> {
        let mut n = 0;
        for &t in TABLES {
            for key in self.merkle.partition_keys(t, p)? {
                let tree = self.tree(t as i32)?;
                let r = (tree, &self.merkle.index, &self.merkle.todo).transaction(|(tree, index, todo)| {
                    tree.remove(key.as_slice())?;
                    merkle::note(index, todo, t, &key, None)?;
                    Ok(())
                });
                r.map_err(tx_err)?;
                n += 1;
            }
        }
        Ok(n)
    }

    fn apply(&self, effects: Vec<Effect>) -> Result<(), DataError> {
        let mut woke = false;
        for e in effects {
            match e {
                Effect::Release { object_key, data_versions } => {
                    for dv in data_versions {
                        let mut v = now_ms().to_be_bytes().to_vec();
                        v.extend_from_slice(&object_key);
                        self.release_queue.insert(dv, v)?;
                    }
                    woke = true;
                }
                Effect::BlockRefs(hash) => {
                    if self.live_refs(&hash)? == 0 {
                        self.queue_unreferenced(&hash)?;
                    } else {
                        self.unreferenced.remove(hash.0)?;
                    }
                }
            }
        }
        if woke {
            self.wake.notify_waiters();
        }
        Ok(())
    }

    /// Queues a block for resync (kept as it is when queued already).
    pub fn queue_resync(&self, hash: &BlockHash) -> Result<(), DataError> {
        let item = ResyncItem::default().encode();
        if self.resync.compare_and_swap(hash.0, None::<&[u8]>, Some(item))?.is_ok() {
            self.wake.notify_waiters();
        }
        Ok(())
    }

    /// Puts a block without live references here on the deletion queue, to go after the
    /// deletion delay (kept as it is when queued already).
    pub fn queue_unreferenced(&self, hash: &BlockHash) -> Result<(), DataError> {
        let deadline = now_ms() + self.gc_delay.as_millis() as u64;
        let _ = self.unreferenced.compare_and_swap(hash.0, None::<&[u8]>, Some(&deadline.to_be_bytes()[..]))?;
        Ok(())
    }

    /// Live references to a block held here.
    pub fn live_refs(&self, hash: &BlockHash) -> Result<usize, DataError> {
        let mut n = 0;
        for item in self.tree(Table::BlockRef as i32)?.scan_prefix(hash.0) {
            let (_, v) = item?;
            if !Entry::decode(v.as_ref())?.tombstone {
                n += 1;
            }
        }
        Ok(n)
    }

    pub fn get(&self, table: i32, key: &[u8]) -> Result<Option<Entry>, DataError> {
        match self.tree(table)?.get(key)? {
            Some(v) => Ok(Some(Entry::decode(v.as_ref())?)),
            None => Ok(None),
        }
    }

    /// Entries with start <= key < end (end empty: unbounded), at most `limit`.
    pub fn range(
        &self,
        table: i32,
        start: &[u8],
        end: &[u8],
        limit: usize,
        include_tombstones: bool,
    ) -> Result<(Vec<Entry>, bool), DataError> {
        let tree = self.tree(table)?;
        let iter = if end.is_empty() { tree.range(start.to_vec()..) } else { tree.range(start.to_vec()..end.to_vec()) };
        let mut out = Vec::new();
        for item in iter {
            let (_, v) = item?;
            let e = Entry::decode(v.as_ref())?;
            if e.tombstone && !include_tombstones {
                continue;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(e);
        }
        Ok((out, false))
    }

    /// Entries of the partitions set in `wanted` (a 256-bit map), from `start`, at most
    /// `limit`, tombstones included.
    pub fn sync_range(
        &self,
        table: i32,
        wanted: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<(Vec<Entry>, bool), DataError> {
        let t = Self::table(table)?;
        let want = |p: usize| wanted.get(p / 8).is_some_and(|b| b & (1 << (p % 8)) != 0);
        let mut out = Vec::new();
        for item in self.tree(table)?.range(start.to_vec()..) {
            let (k, v) = item?;
            if !want(partition_of(t, &k)) {
                continue;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(Entry::decode(v.as_ref())?);
        }
        Ok((out, false))
    }

    /// `Merkle::roots` off the async threads (a refresh may hash many leaves).
    pub async fn merkle_roots(self: &Arc<Self>, partitions: Vec<u8>) -> Result<Vec<MerkleRoot>, DataError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.merkle.roots(&partitions))
            .await
            .map_err(|e| DataError::Invalid(format!("merkle refresh: {e}")))?
    }

    /// `Merkle::leaves` off the async threads.
    pub async fn merkle_leaves(self: &Arc<Self>, t: Table, p: u8) -> Result<Vec<MerkleLeaf>, DataError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.merkle.leaves(t, p))
            .await
            .map_err(|e| DataError::Invalid(format!("merkle refresh: {e}")))?
    }

    /// Entries of `t`'s partition `p` in the leaves set in `leaves` (empty: all), in (leaf,
    /// key) order from `start`, at most `limit`; and where the next page starts.
    pub fn leaf_entries(
        &self,
        t: Table,
        p: u8,
        leaves: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<(Vec<Entry>, Option<Vec<u8>>), DataError> {
        let (keys, next) = self.merkle.keys(t, p, leaves, start, limit)?;
        let tree = self.tree(t as i32)?;
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            // Removed since the index was read: nothing to send.
            if let Some(v) = tree.get(&k)? {
                out.push(Entry::decode(v.as_ref())?);
            }
        }
        Ok((out, next))
    }

    // ---- CASPaxos acceptor -------------------------------------------------------------------

    fn update_register<R>(
        &self,
        key: &[u8],
        f: impl Fn(&mut AcceptorState) -> R,
    ) -> Result<(R, AcceptorState), DataError> {
        self.update(Table::Register, key, |old| {
            let mut state = old.and_then(|e| AcceptorState::decode(e.value.as_ref()).ok()).unwrap_or_default();
            let r = f(&mut state);
            let entry = Entry { key: key.to_vec().into(), value: state.encode_to_vec().into(), ..Default::default() };
            Ok((Some(entry), (r, state)))
        })
    }

    /// Phase 1: promises `b` if it is above every ballot promised so far. A missing ballot
    /// only reports the state.
    pub async fn prepare(&self, key: &[u8], b: Option<Ballot>) -> Result<(bool, AcceptorState), DataError> {
        if ballot(&b) == (0, 0) {
            let state = self
                .get(Table::Register as i32, key)?
                .and_then(|e| AcceptorState::decode(e.value.as_ref()).ok())
                .unwrap_or_default();
            return Ok((false, state));
        }
        let (promised, state) = self.update_register(key, |s| {
            if ballot(&b) > ballot(&s.promised) {
                s.promised = b;
                true
            } else {
                false
            }
        })?;
        self.commit.flush().await?;
        Ok((promised, state))
    }

    /// Phase 2: accepts `value` with ballot `b` unless a higher ballot was promised.
    pub async fn accept(
        &self,
        key: &[u8],
        b: Option<Ballot>,
        value: &[u8],
    ) -> Result<(bool, AcceptorState), DataError> {
        let (accepted, state) = self.update_register(key, |s| {
            if ballot(&b) >= ballot(&s.promised) {
                s.promised = b;
                s.accepted = b;
                s.value = value.to_vec().into();
                true
            } else {
                false
            }
        })?;
        self.commit.flush().await?;
        Ok((accepted, state))
    }

    fn merge_register(&self, incoming: &Entry) -> Result<(), DataError> {
        self.update(Table::Register, &incoming.key, |old| {
            let merged = match old {
                Some(local) => merge_entries(Table::Register, &local, incoming),
                None => incoming.clone(),
            };
            Ok((Some(merged), ()))
        })
    }
}

/// A block waiting in the resync queue.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResyncItem {
    /// Not before (ms since the epoch).
    pub next_try_ms: u64,
    pub errors: u32,
    pub last_try_ms: u64,
    pub last_error: String,
}

impl ResyncItem {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(20 + self.last_error.len());
        v.extend_from_slice(&self.next_try_ms.to_be_bytes());
        v.extend_from_slice(&self.errors.to_be_bytes());
        v.extend_from_slice(&self.last_try_ms.to_be_bytes());
        v.extend_from_slice(self.last_error.as_bytes());
        v
    }

    pub fn decode(v: &[u8]) -> Self {
        let u64_at = |i: usize| v.get(i..i + 8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0);
        Self {
            next_try_ms: u64_at(0),
            errors: v.get(8..12).and_then(|b| b.try_into().ok()).map(u32::from_be_bytes).unwrap_or(0),
            last_try_ms: u64_at(12),
            last_error: v.get(20..).map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default(),
        }
    }
}

fn tx_err(e: TransactionError<DataError>) -> DataError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hangar_model::schema::block_ref_key;
    use hangar_proto::model::{Object, PartData};

    fn e(key: &[u8], val: &[u8], ts: u64, tomb: bool) -> Entry {
        Entry { key: key.to_vec().into(), value: val.to_vec().into(), timestamp: ts, tiebreak: 0, tombstone: tomb }
    }

    #[tokio::test]
    async fn last_writer_wins_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        let a = MetaStore::open(&dir.path().join("a"), Duration::ZERO).unwrap();
        let b = MetaStore::open(&dir.path().join("b"), Duration::ZERO).unwrap();
        let t = Table::Bucket as i32;
        let writes = vec![e(b"k", b"one", 1, false), e(b"k", b"two", 3, false), e(b"k", b"", 2, true)];
        for w in writes.clone() {
            a.insert(t, vec![w]).await.unwrap();
        }
        for w in writes.into_iter().rev() {
            b.insert(t, vec![w]).await.unwrap();
        }
        let ga = a.get(t, b"k").unwrap().unwrap();
        assert_eq!(ga, b.get(t, b"k").unwrap().unwrap());
        assert_eq!(&ga.value[..], b"two");
    }

    #[tokio::test]
    async fn an_overwritten_object_queues_its_data_for_release() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path(), Duration::ZERO).unwrap();
        let obj = |dv: u8| Object {
            parts: vec![PartData { data_version: vec![dv; 16].into(), ..Default::default() }],
            ..Default::default()
        };
        let t = Table::Object as i32;
        s.insert(t, vec![e(b"o", &obj(1).encode_to_vec(), 10, false)]).await.unwrap();
        assert!(s.release_queue.is_empty());
        // An older write arriving late loses, and is the one released.
        s.insert(t, vec![e(b"o", &obj(2).encode_to_vec(), 5, false)]).await.unwrap();
        assert!(s.release_queue.contains_key([2u8; 16]).unwrap());
        s.insert(t, vec![e(b"o", b"", 20, true)]).await.unwrap();
        assert!(s.release_queue.contains_key([1u8; 16]).unwrap());
    }

    #[tokio::test]
    async fn blocks_enter_and_leave_the_deletion_queue_with_their_references() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path(), Duration::ZERO).unwrap();
        let h = BlockHash::of(b"data");
        let t = Table::BlockRef as i32;
        let live = |dv: u8, ts| e(&block_ref_key(&h.0, &[dv; 16]), b"", ts, false);
        let dead = |dv: u8, ts| e(&block_ref_key(&h.0, &[dv; 16]), b"", ts, true);
        s.insert(t, vec![live(1, 1), live(2, 1)]).await.unwrap();
        assert_eq!(s.live_refs(&h).unwrap(), 2);
        s.insert(t, vec![dead(1, 2)]).await.unwrap();
        assert!(s.unreferenced.is_empty());
        s.insert(t, vec![dead(2, 2)]).await.unwrap();
        assert!(s.unreferenced.contains_key(h.0).unwrap());
        // A stale live reference (older than the deletion) does not come back.
        s.insert(t, vec![live(2, 1)]).await.unwrap();
        assert_eq!(s.live_refs(&h).unwrap(), 0);
        s.insert(t, vec![live(3, 5)]).await.unwrap();
        assert!(s.unreferenced.is_empty());
    }

    #[tokio::test]
    async fn acceptor_promises_and_accepts_in_ballot_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open(dir.path(), Duration::ZERO).unwrap();
        let b = |r| Some(Ballot { round: r, proposer: 7 });
        assert!(s.prepare(b"r", b(5)).await.unwrap().0);
        assert!(!s.prepare(b"r", b(4)).await.unwrap().0, "lower ballot refused");
        assert!(!s.accept(b"r", b(4), b"x").await.unwrap().0, "accept below the promise refused");
        assert!(s.accept(b"r", b(5), b"y").await.unwrap().0);
        let (promised, state) = s.prepare(b"r", b(6)).await.unwrap();
        assert!(promised);
        assert_eq!(&state.value[..], b"y");
        assert_eq!(state.accepted, b(5));
        // A report does not promise.
        let (promised, state) = s.prepare(b"r", None).await.unwrap();
        assert!(!promised);
        assert_eq!(state.promised, b(6));
    }

    #[tokio::test]
    async fn merkle_trees_agree_exactly_when_the_tables_do() {
        let dir = tempfile::tempdir().unwrap();
        let a = MetaStore::open(&dir.path().join("a"), Duration::ZERO).unwrap();
        let b = MetaStore::open(&dir.path().join("b"), Duration::ZERO).unwrap();
        let t = Table::Bucket as i32;
        let writes: Vec<Entry> = (0u32..300)
            .map(|i| e(&i.to_be_bytes(), format!("v{i}").as_bytes(), u64::from(i) + 1, i % 7 == 0))
            .collect();
        a.insert(t, writes.clone()).await.unwrap();
        b.insert(t, writes.iter().rev().cloned().collect()).await.unwrap();
        let roots = |s: &MetaStore| s.merkle.roots(&[]).unwrap();
        assert!(!roots(&a).is_empty());
        assert_eq!(roots(&a), roots(&b), "same entries, any order: same trees");
        assert_eq!(roots(&a).iter().map(|r| r.entries).sum::<u64>(), 300);

        // One newer value on b: exactly one root and one of its leaves differ.
        let key = 42u32.to_be_bytes();
        b.insert(t, vec![e(&key, b"newer", 1000, false)]).await.unwrap();
        let (ra, rb) = (roots(&a), roots(&b));
        let differ: Vec<_> = ra.iter().zip(&rb).filter(|(x, y)| x != y).collect();
        assert_eq!(differ.len(), 1);
        let p = partition_of(Table::Bucket, &key) as u8;
        assert_eq!(differ[0].0.partition, p as u32);
        let (la, lb) = (a.merkle.leaves(Table::Bucket, p).unwrap(), b.merkle.leaves(Table::Bucket, p).unwrap());
        let leaf = crate::merkle::leaf_of(&key) as u32;
        for (x, y) in la.iter().zip(&lb) {
            assert_eq!(x.leaf, y.leaf);
            assert_eq!(x.hash == y.hash, x.leaf != leaf, "only the changed key's leaf differs");
        }
        // That leaf's entries, merged into a, make the trees equal again.
        let mut bits = vec![0u8; 32];
        bits[leaf as usize / 8] |= 1 << (leaf % 8);
        let (entries, next) = b.leaf_entries(Table::Bucket, p, &bits, &[], 1000).unwrap();
        assert!(next.is_none());
        assert!(entries.iter().any(|x| x.key[..] == key));
        a.insert(t, entries).await.unwrap();
        assert_eq!(roots(&a), roots(&b));

        // A removal changes the tree; removing what changed meanwhile does nothing.
        let gone = e(&7u32.to_be_bytes(), b"v7", 8, true);
        assert!(!a.remove_if(Table::Bucket, &gone.key, &e(&7u32.to_be_bytes(), b"", 1, true)).unwrap());
        assert!(a.remove_if(Table::Bucket, &gone.key, &gone).unwrap());
        assert_ne!(roots(&a), roots(&b));
        assert!(b.remove_if(Table::Bucket, &gone.key, &gone).unwrap());
        assert_eq!(roots(&a), roots(&b));

        // A database from before the trees had them built at open, the same.
        drop(a);
        let db = sled::open(dir.path().join("a")).unwrap();
        db.open_tree("merkle_meta").unwrap().clear().unwrap();
        for name in ["merkle_index", "merkle_leaves", "merkle_roots"] {
            db.open_tree(name).unwrap().clear().unwrap();
        }
        db.flush().unwrap();
        drop(db);
        let a = MetaStore::open(&dir.path().join("a"), Duration::ZERO).unwrap();
        assert_eq!(roots(&a), roots(&b));
    }
}
