//! Typed access to the metadata tables, replicated over the data nodes the layout names.
//!
//! Writes go to every replica of the entry's partition and return once a write quorum has
//! them durably. Reads ask the replicas, merge the first read quorum of answers with
//! last-writer-wins, and send the merged entry to the replicas that answered with an older
//! one (read repair).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hangar_proto::metadata::{Entry, GetRequest, InsertRequest, RangeRequest, Table};
use prost::Message;

use crate::cluster::{Cluster, NodeRef, entry_partition, quorum, range_is_partitioned};
use crate::ids::{next_timestamp, random_u64};
use crate::{Error, Result};

/// Most entries one range call returns.
pub const PAGE: u32 = 1000;
/// Longest wait for one replica's answer.
const RPC_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Clone)]
pub struct MetaClient {
    cluster: Cluster,
}

/// A live entry decoded, with the timestamp a later write must exceed.
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

fn stamp(after: Option<u64>) -> u64 {
    let t = next_timestamp();
    match after {
        Some(a) if a >= t => a + 1,
        _ => t,
    }
}

/// True when `a` wins over `b` under last-writer-wins.
pub fn newer(a: &Entry, b: &Entry) -> bool {
    (a.timestamp, a.tiebreak) > (b.timestamp, b.tiebreak)
}

/// One replica's answer, or a timeout error naming the node.
async fn bounded<T>(node: NodeRef, fut: impl Future<Output = Result<T>>) -> (NodeRef, Result<T>) {
    let r = match tokio::time::timeout(RPC_TIMEOUT, fut).await {
        Ok(r) => r,
        Err(_) => Err(Error::Rpc(tonic::Status::deadline_exceeded(format!("node {} did not answer", node.id)))),
    };
    (node, r)
}

/// Answers that arrive after a quorum call returned.
pub type LateAnswers<T> = tokio::sync::mpsc::Receiver<(NodeRef, Result<T>)>;

/// Runs `call` on every node; returns once `need` succeeded (their results, with the node),
/// or fails when that can no longer happen. Calls still running go on in the background, so
/// every replica still gets a write the quorum already acknowledged.
pub async fn quorum_call<T, F, Fut>(nodes: &[NodeRef], need: usize, call: F) -> Result<Vec<(NodeRef, T)>>
where
    T: Send + 'static,
    F: Fn(NodeRef) -> Fut,
    Fut: Future<Output = Result<T>> + Send + 'static,
{
    quorum_call_with_late(nodes, need, call).await.map(|(ok, _)| ok)
}

/// `quorum_call`, also handing back the answers that come after the quorum (read repair
/// uses them to find replicas that were behind).
pub async fn quorum_call_with_late<T, F, Fut>(
    nodes: &[NodeRef],
    need: usize,
    call: F,
) -> Result<(Vec<(NodeRef, T)>, LateAnswers<T>)>
where
    T: Send + 'static,
    F: Fn(NodeRef) -> Fut,
    Fut: Future<Output = Result<T>> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel(nodes.len().max(1));
    for n in nodes {
        let answer = bounded(n.clone(), call(n.clone()));
        let tx = tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(answer.await).await;
        });
    }
    drop(tx);
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    while let Some((node, r)) = rx.recv().await {
        match r {
            Ok(v) => {
                ok.push((node, v));
                if ok.len() >= need {
                    return Ok((ok, rx));
                }
            }
            Err(e) => {
                tracing::debug!(node = %node.id, error = %e, "replica call failed");
                failed.push(format!("{}: {e}", node.id));
                if nodes.len() - failed.len() < need {
                    break;
                }
            }
        }
    }
    Err(Error::Rpc(tonic::Status::unavailable(format!(
        "quorum not reached ({} of {} needed answered; {})",
        ok.len(),
        need,
        failed.join("; ")
    ))))
}

/// Runs `call` on every node and waits for every answer (each bounded by a timeout).
pub async fn call_all<T, F, Fut>(nodes: &[NodeRef], call: F) -> Vec<(NodeRef, Result<T>)>
where
    F: Fn(NodeRef) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    futures::future::join_all(nodes.iter().map(|n| bounded(n.clone(), call(n.clone())))).await
}

impl MetaClient {
    pub fn new(cluster: Cluster) -> Self {
        Self { cluster }
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    fn replicas_of(&self, table: Table, key: &[u8]) -> Result<Vec<NodeRef>> {
        self.cluster
            .replicas(entry_partition(table, key))
            .map_err(|e| Error::Rpc(tonic::Status::unavailable(e.to_string())))
    }

    /// The merged entry (tombstones included) after asking a read quorum; repairs replicas
    /// that answered with an older value.
    pub async fn get_entry(&self, table: Table, key: &[u8]) -> Result<Option<Entry>> {
        let nodes = self.replicas_of(table, key)?;
        let cluster = self.cluster.clone();
        let req = GetRequest { table: table as i32, key: key.to_vec().into() };
        let (answers, mut late) = quorum_call_with_late(&nodes, quorum(nodes.len()), move |n| {
            let (cluster, req) = (cluster.clone(), req.clone());
            async move { Ok(cluster.meta(&n)?.get(req).await?.into_inner().entry) }
        })
        .await?;
        let merged = answers.iter().filter_map(|(_, e)| e.clone()).reduce(|a, b| if newer(&b, &a) { b } else { a });
        if let Some(m) = &merged {
            let behind = |e: &Option<Entry>| e.as_ref().is_none_or(|e| newer(m, e));
            let stale: Vec<NodeRef> = answers.iter().filter(|(_, e)| behind(e)).map(|(n, _)| n.clone()).collect();
            self.repair(table, m.clone(), stale);
            // Replicas that answer after the quorum are checked too, off the request's path.
            let (this, m) = (self.clone(), m.clone());
            tokio::spawn(async move {
                while let Some((n, r)) = late.recv().await {
                    if let Ok(e) = r
                        && e.as_ref().is_none_or(|e| newer(&m, e))
                    {
                        this.repair(table, m.clone(), vec![n]);
                    }
                }
            });
        }
        Ok(merged)
    }

    /// Sends the merged entry to replicas that were behind; best effort, in the background.
    fn repair(&self, table: Table, entry: Entry, nodes: Vec<NodeRef>) {
        for n in nodes {
            let (cluster, entry) = (self.cluster.clone(), entry.clone());
            tokio::spawn(async move {
                let req = InsertRequest { table: table as i32, entries: vec![entry], if_absent: false };
                match cluster.meta(&n) {
                    Ok(mut c) => {
                        if let Err(e) = c.insert(req).await {
                            tracing::debug!(node = %n.id, error = %e, "read repair failed");
                        } else {
                            tracing::debug!(node = %n.id, "read repair sent");
                        }
                    }
                    Err(e) => tracing::debug!(node = %n.id, error = %e, "read repair failed"),
                }
            });
        }
    }

    pub async fn get<T: Message + Default>(&self, table: Table, key: &[u8]) -> Result<Option<Found<T>>> {
        match self.get_entry(table, key).await? {
            Some(e) if !e.tombstone => Ok(Some(decode(e)?)),
            _ => Ok(None),
        }
    }

    /// Writes entries, each to its partition's replicas; returns once every partition
    /// involved has a write quorum.
    pub async fn insert(&self, table: Table, entries: Vec<Entry>) -> Result<()> {
        self.insert_with(table, entries, false).await.map(|_| ())
    }

    async fn insert_with(&self, table: Table, entries: Vec<Entry>, if_absent: bool) -> Result<Vec<bool>> {
        let mut groups: BTreeMap<usize, Vec<Entry>> = BTreeMap::new();
        for e in entries {
            groups.entry(entry_partition(table, &e.key)).or_default().push(e);
        }
        let mut pending = FuturesUnordered::new();
        for (partition, group) in groups {
            let nodes =
                self.cluster.replicas(partition).map_err(|e| Error::Rpc(tonic::Status::unavailable(e.to_string())))?;
            let cluster = self.cluster.clone();
            let req = InsertRequest { table: table as i32, entries: group, if_absent };
            pending.push(async move {
                let need = quorum(nodes.len());
                let answers = quorum_call(&nodes, need, move |n| {
                    let (cluster, req) = (cluster.clone(), req.clone());
                    async move { Ok(cluster.meta(&n)?.insert(req).await?.into_inner().applied) }
                })
                .await?;
                // An entry counts as applied when a quorum applied it.
                let len = answers.first().map(|(_, a)| a.len()).unwrap_or(0);
                Ok::<_, Error>(
                    (0..len)
                        .map(|i| answers.iter().filter(|(_, a)| a.get(i).copied().unwrap_or(false)).count() >= need)
                        .collect::<Vec<_>>(),
                )
            });
        }
        let mut applied = Vec::new();
        while let Some(r) = pending.next().await {
            applied.extend(r?);
        }
        Ok(applied)
    }

    pub async fn put<T: Message>(&self, table: Table, key: Vec<u8>, value: &T, after: Option<u64>) -> Result<()> {
        self.insert(table, vec![entry(key, value, after)]).await
    }

    /// Writes only when no live entry exists; false when one did.
    pub async fn put_if_absent<T: Message>(&self, table: Table, key: Vec<u8>, value: &T) -> Result<bool> {
        let applied = self.insert_with(table, vec![entry(key, value, None)], true).await?;
        Ok(applied.first().copied().unwrap_or(false))
    }

    pub async fn delete(&self, table: Table, key: Vec<u8>, after: Option<u64>) -> Result<()> {
        self.insert(table, vec![tombstone(key, after)]).await
    }

    /// One page of live entries with start <= key < end; `more` when the range goes on
    /// (then the page holds at least one entry).
    pub async fn range<T: Message + Default>(
        &self,
        table: Table,
        start: Vec<u8>,
        end: Vec<u8>,
        limit: u32,
    ) -> Result<(Vec<Found<T>>, bool)> {
        let mut start = start;
        loop {
            let (entries, horizon) = self.range_entries(table, &start, &end, limit).await?;
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
    async fn range_entries(
        &self,
        table: Table,
        start: &[u8],
        end: &[u8],
        limit: u32,
    ) -> Result<(Vec<Entry>, Option<Vec<u8>>)> {
        let req = RangeRequest {
            table: table as i32,
            start: start.to_vec().into(),
            end: end.to_vec().into(),
            limit,
            include_tombstones: true,
        };
        let cluster = self.cluster.clone();
        let call = move |n: NodeRef| {
            let (cluster, req) = (cluster.clone(), req.clone());
            async move {
                let r = cluster.meta(&n)?.range(req).await?.into_inner();
                Ok((r.entries, r.more))
            }
        };
        let mut late = None;
        let answers = if range_is_partitioned(table) {
            let nodes = self.replicas_of(table, start)?;
            let (answers, rest) = quorum_call_with_late(&nodes, quorum(nodes.len()), call).await?;
            late = Some(rest);
            answers
        } else {
            // Consecutive keys live in every partition: ask every node, then check that each
            // partition heard from a read quorum of its replicas.
            let nodes = self.cluster.all_nodes();
            let answers: Vec<_> = call_all(&nodes, call)
                .await
                .into_iter()
                .filter_map(|(n, r)| match r {
                    Ok(v) => Some((n, v)),
                    Err(e) => {
                        tracing::debug!(node = %n.id, error = %e, "node missed a listing");
                        None
                    }
                })
                .collect();
            let answered: Vec<usize> = answers.iter().filter_map(|(n, _)| nodes.iter().position(|m| m == n)).collect();
            for members in self.cluster.partition_members() {
                if members.iter().filter(|i| answered.contains(i)).count() < quorum(members.len()) {
                    return Err(Error::Rpc(tonic::Status::unavailable(
                        "a listing needs a read quorum of every partition; too many nodes are down",
                    )));
                }
            }
            answers
        };
        // Complete up to the smallest last key among replicas that stopped at their limit.
        let horizon = answers
            .iter()
            .filter(|(_, (_, more))| *more)
            .filter_map(|(_, (entries, _))| entries.last().map(|e| e.key.to_vec()))
            .min();
        let answered_now: Vec<(NodeRef, (Vec<Entry>, bool))> =
            if late.is_some() { answers.clone() } else { Vec::new() };
        let mut merged: BTreeMap<Vec<u8>, Entry> = BTreeMap::new();
        for (_, (entries, _)) in answers {
            for e in entries {
                if horizon.as_ref().is_some_and(|h| e.key.as_ref() > h.as_slice()) {
                    continue;
                }
                match merged.get(e.key.as_ref()) {
                    Some(old) if !newer(&e, old) => {}
                    _ => {
                        merged.insert(e.key.to_vec(), e);
                    }
                }
            }
        }
        if let Some(mut late) = late {
            // Read repair for a partition's replicas: those that answered (now or later)
            // without entries, or with older ones, get the merged entries.
            let this = self.clone();
            let merged = merged.clone();
            tokio::spawn(async move {
                for (n, (entries, more)) in &answered_now {
                    this.repair_range(table, &merged, n, entries, *more);
                }
                while let Some((n, r)) = late.recv().await {
                    if let Ok((entries, more)) = r {
                        this.repair_range(table, &merged, &n, &entries, more);
                    }
                }
            });
        }
        Ok((merged.into_values().collect(), horizon))
    }

    /// Sends `node` the merged entries its answer lacked or held older (within the part of
    /// the range its answer covered).
    fn repair_range(
        &self,
        table: Table,
        merged: &BTreeMap<Vec<u8>, Entry>,
        node: &NodeRef,
        entries: &[Entry],
        more: bool,
    ) {
        let covered = |k: &[u8]| !more || entries.last().is_some_and(|l| k <= l.key.as_ref());
        let had: BTreeMap<&[u8], &Entry> = entries.iter().map(|e| (e.key.as_ref(), e)).collect();
        let behind: Vec<Entry> = merged
            .iter()
            .filter(|(k, _)| covered(k))
            .filter(|(k, m)| had.get(k.as_slice()).is_none_or(|e| newer(m, e)))
            .map(|(_, m)| m.clone())
            .collect();
        if behind.is_empty() {
            return;
        }
        let (cluster, node) = (self.cluster.clone(), node.clone());
        tokio::spawn(async move {
            let n = behind.len();
            let req = InsertRequest { table: table as i32, entries: behind, if_absent: false };
            match cluster.meta(&node) {
                Ok(mut c) => match c.insert(req).await {
                    Ok(_) => tracing::info!(node = %node.id, entries = n, "read repair of a range"),
                    Err(e) => tracing::debug!(node = %node.id, error = %e, "range read repair failed"),
                },
                Err(e) => tracing::debug!(node = %node.id, error = %e, "range read repair failed"),
            }
        });
    }

    /// Every live entry whose key starts with `prefix` (for small tables and bounded scans).
    pub async fn scan_prefix<T: Message + Default>(&self, table: Table, prefix: &[u8]) -> Result<Vec<Found<T>>> {
        let end = prefix_end(prefix);
        let mut start = prefix.to_vec();
        let mut out = Vec::new();
        loop {
            let (page, more) = self.range::<T>(table, start.clone(), end.clone(), PAGE).await?;
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

fn decode<T: Message + Default>(e: Entry) -> Result<Found<T>> {
    Ok(Found { value: T::decode(e.value)?, key: e.key.to_vec(), timestamp: e.timestamp })
}

/// The smallest key greater than `key`.
pub fn successor(key: &[u8]) -> Vec<u8> {
    let mut k = key.to_vec();
    k.push(0);
    k
}

/// The smallest key greater than every key starting with `prefix` (empty: unbounded).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_bounds_the_prefix() {
        assert_eq!(prefix_end(b"ab"), b"ac".to_vec());
        assert_eq!(prefix_end(&[1, 0xff]), vec![2]);
        assert_eq!(prefix_end(&[0xff, 0xff]), Vec::<u8>::new());
    }

    #[test]
    fn later_writes_order_after_what_they_read() {
        let far = next_timestamp() + 1_000_000_000;
        let e = tombstone(b"k".to_vec(), Some(far));
        assert_eq!(e.timestamp, far + 1);
    }

    #[tokio::test]
    async fn quorum_call_returns_at_quorum_and_fails_when_unreachable() {
        let nodes: Vec<NodeRef> = (0..3).map(|i| NodeRef { id: format!("n{i}"), addr: String::new() }).collect();
        let ok = quorum_call(&nodes, 2, |n| async move {
            if n.id == "n0" { Err(Error::Invalid("down".into())) } else { Ok(n.id.clone()) }
        })
        .await
        .unwrap();
        assert_eq!(ok.len(), 2);
        let err = quorum_call(&nodes, 2, |n| async move {
            if n.id == "n2" { Ok(()) } else { Err(Error::Invalid("down".into())) }
        })
        .await
        .err()
        .unwrap();
        assert!(err.to_string().contains("quorum not reached"), "{err}");
    }
}
