//! Typed access to the metadata tables, replicated over the data nodes of the layout
//! history.
//!
//! A write goes to every replica of its partition in every live layout version and returns
//! once each of those sets has a quorum of durable copies. A read asks the partition's read
//! set, merges the first quorum of answers by the table's rule and sends the merged entry to
//! the replicas that answered with something else (read repair). Listings across partitions
//! ask every node of the read sets and need a read quorum of every partition.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use hangar_common::call::Method;
use hangar_common::cluster::{Cluster, NodeRef, View};
use hangar_common::ids::{next_timestamp, random_u64};
use hangar_common::quorum::{call_all, quorum_sets};
use hangar_common::telemetry::metrics;
use hangar_common::telemetry::metrics::table_label;
use hangar_common::{Error, Result};
use hangar_proto::metadata::{Entry, GetRequest, InsertRequest, RangeRequest, Table};
use prost::Message;
use tracing::Instrument;

use crate::keys::{prefix_end, successor};
use crate::schema::{Schema, merge_entries, partition_of, range_in_one_partition};

/// Most entries one range call returns.
pub const PAGE: u32 = 1000;

/// A live entry decoded, with the timestamp a later write must exceed.
#[derive(Clone, Debug)]
pub struct Found<T> {
    pub key: Vec<u8>,
    pub value: T,
    pub timestamp: u64,
}

/// A new value for `key`, written after (LWW-newer than) `after` when given.
pub fn entry<T: Message>(key: Vec<u8>, value: &T, after: Option<u64>) -> Entry {
    Entry {
        key: key.into(),
        value: value.encode_to_vec().into(),
        timestamp: stamp(after),
        tiebreak: random_u64(),
        tombstone: false,
    }
}

/// A deletion of `key`.
pub fn tombstone(key: Vec<u8>, after: Option<u64>) -> Entry {
    Entry {
        key: key.into(),
        value: Default::default(),
        timestamp: stamp(after),
        tiebreak: random_u64(),
        tombstone: true,
    }
}

/// A write timestamp: now, or just after `after` when the clock has not passed it.
pub fn stamp(after: Option<u64>) -> u64 {
    let t = next_timestamp();
    match after {
        Some(a) if a >= t => a + 1,
        _ => t,
    }
}

pub fn decode<T: Message + Default>(e: Entry) -> Result<Found<T>> {
    Ok(Found { value: T::decode(e.value)?, key: e.key.to_vec(), timestamp: e.timestamp })
}

#[derive(Clone)]
pub struct Tables {
    cluster: Cluster,
}

impl Tables {
    pub fn new(cluster: Cluster) -> Self {
        Self { cluster }
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The merged entry (tombstones included) after asking a read quorum; repairs replicas
    /// that answered otherwise.
    pub async fn get_entry(&self, table: Table, key: &[u8]) -> Result<Option<Entry>> {
        let name = table_label(table);
        let span = tracing::debug_span!("table.get", otel.name = %format_args!("get {name}"), table = name);
        let start = Instant::now();
        let r = self.cluster.with_fresh_view(|view| self.get_entry_in(view, table, key)).instrument(span).await;
        metrics().table_request(table, false, start.elapsed());
        r
    }

    async fn get_entry_in(&self, view: Arc<View>, table: Table, key: &[u8]) -> Result<Option<Entry>> {
        let nodes = view.read_set(partition_of(table, key)).map_err(|e| Error::Unavailable(e.to_string()))?;
        let (cluster, version) = (self.cluster.clone(), view.version());
        let req = GetRequest { table: table as i32, key: key.to_vec().into() };
        let (answers, mut late) = quorum_sets(&[nodes], move |n| {
            let (cluster, req) = (cluster.clone(), req.clone());
            async move {
                let mut c = cluster.meta(&n)?;
                Ok(cluster.call(&n, Method::Get, version, req, |r| async move { c.get(r).await }).await?.entry)
            }
        })
        .await?;
        let merged = answers.iter().filter_map(|(_, e)| e.clone()).reduce(|a, b| merge_entries(table, &a, &b));
        if let Some(m) = &merged {
            let stale: Vec<NodeRef> =
                answers.iter().filter(|(_, e)| e.as_ref() != Some(m)).map(|(n, _)| n.clone()).collect();
            self.repair(table, vec![m.clone()], stale);
            // Replicas that answer after the quorum are checked too, off the request's path.
            let (this, m) = (self.clone(), m.clone());
            tokio::spawn(async move {
                while let Some((n, r)) = late.recv().await {
                    if let Ok(e) = r
                        && e.as_ref() != Some(&m)
                    {
                        let fixed = e.map(|e| merge_entries(table, &e, &m)).unwrap_or_else(|| m.clone());
                        this.repair(table, vec![fixed], vec![n]);
                    }
                }
            });
        }
        Ok(merged)
    }

    /// Sends entries to replicas that were behind; best effort, in the background.
    fn repair(&self, table: Table, entries: Vec<Entry>, nodes: Vec<NodeRef>) {
        let version = self.cluster.view().version();
        for n in nodes {
            let (cluster, entries) = (self.cluster.clone(), entries.clone());
            tokio::spawn(async move {
                let count = entries.len();
                let req = InsertRequest { table: table as i32, entries };
                let r = match cluster.meta(&n) {
                    Ok(mut c) => {
                        cluster.call(&n, Method::Insert, version, req, |r| async move { c.insert(r).await }).await
                    }
                    Err(e) => Err(e),
                };
                match r {
                    Ok(_) => tracing::debug!(node = %n.id, entries = count, "read repair sent"),
                    Err(e) => tracing::debug!(node = %n.id, error = %e, "read repair failed"),
                }
            });
        }
    }

    /// The entry (tombstones included) as every holder of its partition in every live
    /// version has it; fails unless all of them answer. For decisions that must not miss a
    /// value some replica holds (whether a data version is still used anywhere).
    pub async fn get_everywhere(&self, table: Table, key: &[u8]) -> Result<Vec<(NodeRef, Option<Entry>)>> {
        self.cluster
            .with_fresh_view(|view| async move {
                let version = view.version();
                let req = GetRequest { table: table as i32, key: key.to_vec().into() };
                let answers = call_all(&view.holders(partition_of(table, key)), |n| {
                    let (cluster, req) = (self.cluster.clone(), req.clone());
                    async move {
                        let mut c = cluster.meta(&n)?;
                        Ok(cluster.call(&n, Method::Get, version, req, |r| async move { c.get(r).await }).await?.entry)
                    }
                })
                .await;
                answers.into_iter().map(|(n, r)| r.map(|e| (n, e))).collect()
            })
            .await
    }

    /// Writes entries to the given nodes only (a targeted repair); fails unless all take them.
    pub async fn insert_at(&self, table: Table, entries: Vec<Entry>, nodes: &[NodeRef]) -> Result<()> {
        let version = self.cluster.view().version();
        let req = InsertRequest { table: table as i32, entries };
        for (_, r) in call_all(nodes, |n| {
            let (cluster, req) = (self.cluster.clone(), req.clone());
            async move {
                let mut c = cluster.meta(&n)?;
                cluster.call(&n, Method::Insert, version, req, |r| async move { c.insert(r).await }).await
            }
        })
        .await
        {
            r?;
        }
        Ok(())
    }

    /// A live entry of table `S`, decoded.
    pub async fn get<S: Schema>(&self, key: &[u8]) -> Result<Option<Found<S::Value>>> {
        match self.get_entry(S::TABLE, key).await? {
            Some(e) if !e.tombstone => Ok(Some(decode(e)?)),
            _ => Ok(None),
        }
    }

    /// Writes entries, each to its partition's write sets; returns once every partition
    /// involved has a quorum in each set. A node that knows a newer layout makes the write
    /// wait (a few seconds at most) for this process to learn it, then go again.
    pub async fn insert(&self, table: Table, entries: Vec<Entry>) -> Result<()> {
        self.insert_reporting(table, entries).await.map(|_| ())
    }

    /// `insert`, and what the replicas that answered said of the entries: the newest
    /// timestamp of a value that beats one of them there (0: none did), or None when some
    /// replica did not say (a node of an older release).
    pub async fn insert_reporting(&self, table: Table, entries: Vec<Entry>) -> Result<Option<u64>> {
        let name = table_label(table);
        let span = tracing::debug_span!("table.insert", otel.name = %format_args!("insert {name}"), table = name, entries = entries.len());
        let start = Instant::now();
        let r =
            self.cluster.with_fresh_view(|view| self.insert_in(view, table, entries.clone())).instrument(span).await;
        metrics().table_request(table, true, start.elapsed());
        r
    }

    /// One Insert call per node, carrying the entries of every partition it replicates
    /// (entries spread over many partitions, as block references are, cost one call per
    /// node, not one per partition and node); done once every write set of every partition
    /// involved has a quorum of them.
    async fn insert_in(&self, view: Arc<View>, table: Table, entries: Vec<Entry>) -> Result<Option<u64>> {
        if entries.is_empty() {
            return Ok(Some(0)); // nothing to write, nobody to ask
        }
        let mut groups: BTreeMap<usize, Vec<Entry>> = BTreeMap::new();
        for e in entries {
            groups.entry(partition_of(table, &e.key)).or_default().push(e);
        }
        let (mut sets, mut per_node) = (BTreeSet::new(), BTreeMap::<NodeRef, Vec<Entry>>::new());
        for (partition, group) in groups {
            let partition_sets = view.write_sets(partition).map_err(|e| Error::Unavailable(e.to_string()))?;
            let members: BTreeSet<&NodeRef> = partition_sets.iter().flatten().collect();
            for n in members {
                per_node.entry(n.clone()).or_default().extend(group.iter().cloned());
            }
            sets.extend(partition_sets);
        }
        let sets: Vec<Vec<NodeRef>> = sets.into_iter().collect();
        let version = view.version();
        let (cluster, per_node) = (self.cluster.clone(), Arc::new(per_node));
        let requests = per_node.clone();
        let (answers, _) = quorum_sets(&sets, move |n| {
            let cluster = cluster.clone();
            let entries = requests.get(&n).cloned().unwrap_or_default();
            async move {
                let req = InsertRequest { table: table as i32, entries };
                let mut c = cluster.meta(&n)?;
                cluster.call(&n, Method::Insert, version, req, |r| async move { c.insert(r).await }).await
            }
        })
        .await?;
        let told = answers.iter().all(|(n, r)| Some(r.beaten_by.len()) == per_node.get(n).map(Vec::len));
        Ok(told.then(|| answers.iter().flat_map(|(_, r)| r.beaten_by.iter().copied()).max().unwrap_or(0)))
    }

    /// Writes one value of table `S`, LWW-newer than `after` when given.
    pub async fn put<S: Schema>(&self, key: Vec<u8>, value: &S::Value, after: Option<u64>) -> Result<()> {
        self.insert(S::TABLE, vec![entry(key, value, after)]).await
    }

    pub async fn delete<S: Schema>(&self, key: Vec<u8>, after: Option<u64>) -> Result<()> {
        self.insert(S::TABLE, vec![tombstone(key, after)]).await
    }

    /// One page of live entries of table `S` with start <= key < end; `more` when the
    /// range goes on (then the page holds at least one entry).
    pub async fn range<S: Schema>(
        &self,
        start: Vec<u8>,
        end: Vec<u8>,
        limit: u32,
    ) -> Result<(Vec<Found<S::Value>>, bool)> {
        self.range_as::<S>(start, end, limit, false).await
    }

    /// `range` of the object table as a listing needs it: the values without inline data
    /// and block lists (see `object::summarize`).
    pub async fn range_summaries<S: Schema>(
        &self,
        start: Vec<u8>,
        end: Vec<u8>,
        limit: u32,
    ) -> Result<(Vec<Found<S::Value>>, bool)> {
        self.range_as::<S>(start, end, limit, true).await
    }

    async fn range_as<S: Schema>(
        &self,
        start: Vec<u8>,
        end: Vec<u8>,
        limit: u32,
        summaries: bool,
    ) -> Result<(Vec<Found<S::Value>>, bool)> {
        let mut start = start;
        loop {
            let (entries, horizon) = self.range_entries_as(S::TABLE, &start, &end, limit, summaries).await?;
            let live: Vec<Entry> = entries.into_iter().filter(|e| !e.tombstone).collect();
            let more = horizon.is_some() || live.len() > limit as usize;
            match horizon {
                // A page of tombstones only: go on past them.
                Some(h) if live.is_empty() => start = successor(&h),
                _ => {
                    let items = live.into_iter().take(limit as usize).map(decode).collect::<Result<Vec<_>>>()?;
                    return Ok((items, more));
                }
            }
        }
    }

    /// Merged entries (tombstones included) of one range call, and, when some replica had
    /// more past its page, the last key up to which the merge is complete.
    pub async fn range_entries(
        &self,
        table: Table,
        start: &[u8],
        end: &[u8],
        limit: u32,
    ) -> Result<(Vec<Entry>, Option<Vec<u8>>)> {
        self.range_entries_as(table, start, end, limit, false).await
    }

    async fn range_entries_as(
        &self,
        table: Table,
        start: &[u8],
        end: &[u8],
        limit: u32,
        summaries: bool,
    ) -> Result<(Vec<Entry>, Option<Vec<u8>>)> {
        let name = table_label(table);
        let span = tracing::debug_span!("table.range", otel.name = %format_args!("range {name}"), table = name, limit);
        let started = Instant::now();
        let r = self
            .cluster
            .with_fresh_view(|view| self.range_entries_in(view, table, start, end, limit, summaries))
            .instrument(span)
            .await;
        metrics().table_request(table, false, started.elapsed());
        r
    }

    async fn range_entries_in(
        &self,
        view: Arc<View>,
        table: Table,
        start: &[u8],
        end: &[u8],
        limit: u32,
        summaries: bool,
    ) -> Result<(Vec<Entry>, Option<Vec<u8>>)> {
        let version = view.version();
        let req = RangeRequest {
            table: table as i32,
            start: start.to_vec().into(),
            end: end.to_vec().into(),
            limit,
            include_tombstones: true,
            summaries,
        };
        let cluster = self.cluster.clone();
        let call = move |n: NodeRef| {
            let (cluster, req) = (cluster.clone(), req.clone());
            async move {
                let mut c = cluster.meta(&n)?;
                let r = cluster.call(&n, Method::Range, version, req, |r| async move { c.range(r).await }).await?;
                Ok((r.entries, r.more))
            }
        };
        let mut late = None;
        let answers = if range_in_one_partition(table) {
            let nodes = view.read_set(partition_of(table, start)).map_err(|e| Error::Unavailable(e.to_string()))?;
            let (answers, rest) = quorum_sets(&[nodes], call).await?;
            late = Some(rest);
            answers
        } else {
            // Consecutive keys live in every partition: ask every node of the read sets and
            // merge once each partition heard from a read quorum of its read set. Not waiting
            // for the rest keeps a listing fast when a node is unreachable rather than down
            // (a partition, a host gone without closing its connections).
            let sets = view.distinct_read_sets();
            if sets.iter().all(Vec::is_empty) {
                return Err(Error::Unavailable("no cluster layout yet".into()));
            }
            match quorum_sets(&sets, call).await {
                Ok((answers, _)) => answers,
                Err(Error::Unavailable(why)) => {
                    return Err(Error::Unavailable(format!(
                        "a listing needs a read quorum of every partition; too many nodes are down ({why})"
                    )));
                }
                Err(e) => return Err(e),
            }
        };
        let (merged, horizon) = merge_pages(table, answers.iter().map(|(_, (e, more))| (e.as_slice(), *more)));
        // Summaries are not what replicas hold: never written back.
        if let Some(mut late) = late.filter(|_| !summaries) {
            // Read repair within one partition: replicas that answered (now or later)
            // without entries, or with others, get the merged ones.
            let this = self.clone();
            let merged = merged.clone();
            tokio::spawn(async move {
                for (n, (entries, more)) in &answers {
                    this.repair_range(table, &merged, n, entries, *more);
                }
                while let Some((n, r)) = late.recv().await {
                    if let Ok((entries, more)) = r {
                        this.repair_range(table, &merged, &n, &entries, more);
                    }
                }
            });
        }
        Ok((merged, horizon))
    }
}

/// Merges the pages replicas answered for one range (`more`: the replica stopped at its
/// limit): complete up to the horizon, the smallest last key among replicas that stopped at
/// their limit; every entry up to it merged by the table's rule. Returns the merged entries
/// in key order and the horizon.
///
/// A replica answers its page in key order (a page out of order is put in order here), so
/// the pages are merged as sorted runs: no map, and no copy of a key per entry.
pub fn merge_pages<'a>(
    table: Table,
    pages: impl Iterator<Item = (&'a [Entry], bool)> + Clone,
) -> (Vec<Entry>, Option<Vec<u8>>) {
    let horizon =
        pages.clone().filter(|(_, more)| *more).filter_map(|(entries, _)| entries.last()).map(|e| e.key.to_vec()).min();
    let mut runs: Vec<Vec<&Entry>> = pages
        .map(|(entries, _)| {
            let mut run: Vec<&Entry> =
                entries.iter().filter(|e| horizon.as_ref().is_none_or(|h| e.key.as_ref() <= h.as_slice())).collect();
            if !run.is_sorted_by(|a, b| a.key <= b.key) {
                run.sort_by(|a, b| a.key.cmp(&b.key));
            }
            run
        })
        .collect();
    runs.retain(|r| !r.is_empty());
    let mut merged = Vec::with_capacity(runs.iter().map(Vec::len).max().unwrap_or(0));
    let mut heads = vec![0usize; runs.len()];
    // The smallest key not merged yet, then every run's entries of that key folded into one.
    while let Some(key) = runs.iter().zip(&heads).filter_map(|(r, &i)| r.get(i)).map(|e| &e.key).min().cloned() {
        let mut acc: Option<Entry> = None;
        for (run, head) in runs.iter().zip(heads.iter_mut()) {
            while let Some(e) = run.get(*head).filter(|e| e.key == key) {
                acc = Some(match acc {
                    Some(m) => merge_entries(table, &m, e),
                    None => (*e).clone(),
                });
                *head += 1;
            }
        }
        merged.extend(acc);
    }
    (merged, horizon)
}

impl Tables {
    /// Sends `node` the merged entries its answer lacked or held otherwise (within the part
    /// of the range its answer covered).
    fn repair_range(&self, table: Table, merged: &[Entry], node: &NodeRef, entries: &[Entry], more: bool) {
        let covered = |k: &[u8]| !more || entries.last().is_some_and(|l| k <= l.key.as_ref());
        let had: BTreeMap<&[u8], &Entry> = entries.iter().map(|e| (e.key.as_ref(), e)).collect();
        let behind: Vec<Entry> = merged
            .iter()
            .filter(|m| covered(&m.key))
            .filter(|m| had.get(m.key.as_ref()).is_none_or(|e| *e != *m))
            .cloned()
            .collect();
        if !behind.is_empty() {
            self.repair(table, behind, vec![node.clone()]);
        }
    }

    /// Every live entry of table `S` whose key starts with `prefix` (small tables and
    /// bounded scans).
    pub async fn scan_prefix<S: Schema>(&self, prefix: &[u8]) -> Result<Vec<Found<S::Value>>> {
        let end = prefix_end(prefix);
        let mut start = prefix.to_vec();
        let mut out = Vec::new();
        loop {
            let (page, more) = self.range::<S>(start.clone(), end.clone(), PAGE).await?;
            let Some(last) = page.last() else { break };
            start = successor(&last.key);
            out.extend(page);
            if !more {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry of a last-writer-wins table (block lists) written at `ts` by `writer`.
    fn e(key: &str, ts: u64, writer: u64) -> Entry {
        Entry {
            key: key.as_bytes().to_vec().into(),
            value: format!("{key}@{ts}").into_bytes().into(),
            timestamp: ts,
            tiebreak: writer,
            tombstone: false,
        }
    }

    fn merged(pages: &[(Vec<Entry>, bool)]) -> (Vec<String>, Option<Vec<u8>>) {
        let (m, horizon) = merge_pages(Table::VersionBlock, pages.iter().map(|(p, more)| (p.as_slice(), *more)));
        (m.iter().map(|e| String::from_utf8_lossy(&e.value).into_owned()).collect(), horizon)
    }

    #[test]
    fn pages_merge_in_key_order_each_key_once_the_newest_winning() {
        let pages = vec![
            (vec![e("a", 1, 0), e("c", 5, 0), e("d", 1, 0)], false),
            (vec![e("a", 2, 1), e("b", 1, 1), e("d", 1, 1)], false),
            (vec![e("c", 3, 2), e("e", 1, 2)], false),
        ];
        assert_eq!(
            merged(&pages),
            (vec!["a@2", "b@1", "c@5", "d@1", "e@1"].into_iter().map(String::from).collect(), None)
        );
        // One replica: its page as it is.
        assert_eq!(merged(&pages[..1]).0, vec!["a@1", "c@5", "d@1"]);
        assert_eq!(merged(&[]), (vec![], None));
        assert_eq!(merged(&[(vec![], false), (vec![], true)]), (vec![], None));
    }

    #[test]
    fn a_replica_that_stopped_at_its_limit_bounds_the_merge() {
        let pages = vec![
            (vec![e("a", 1, 0), e("b", 1, 0), e("c", 1, 0)], true),
            (vec![e("a", 2, 1), e("c", 2, 1), e("d", 1, 1), e("e", 1, 1)], false),
        ];
        // Past "c" the first replica said nothing: "d" and "e" wait for the next page.
        assert_eq!(
            merged(&pages),
            (vec!["a@2", "b@1", "c@2"].into_iter().map(String::from).collect(), Some(b"c".to_vec()))
        );
    }

    #[test]
    fn a_page_out_of_key_order_is_merged_as_if_it_were_in_order() {
        let pages = vec![(vec![e("c", 1, 0), e("a", 1, 0)], false), (vec![e("a", 2, 1), e("b", 1, 1)], false)];
        assert_eq!(merged(&pages).0, vec!["a@2", "b@1", "c@1"]);
    }
}
