//! Blocks over the cluster. A block goes to the replicas of its partition in every live
//! layout version (a quorum of each must store it durably, with its owner's reference). A
//! read tries the read set first, then the other holders, takes the first copy that its
//! data node could check (a data node checks a block's bytes as it reads them), and copies the block to replicas found without it (block read repair). The
//! replicas of the read set not read from are asked whether they hold the block too, in the
//! background and in batches: one HasBlocks call per replica for every block read within
//! `CHECK_WINDOW`, not one per block.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hangar_common::call::Method;
use hangar_common::cluster::{Cluster, NodeRef, block_partition};
use hangar_common::hash::{BlockHash, DiskSum};
use hangar_common::local::HashedByCaller;
use hangar_common::quorum::quorum_sets;
use hangar_common::rpc::BLOCK_CHUNK;
use hangar_common::{Error, Result};
use hangar_proto::block::{BlockRef, GetBlockRequest, HasBlocksRequest, PutBlockChunk};

/// How long a block read waits for a replica to start answering (the node has read the
/// block from its disk) before it asks the next as well. Long enough that a live node
/// answers within it almost always (a slower one only costs a second read), short enough
/// that a client barely notices an unreachable one.
const HEDGE_AFTER: Duration = Duration::from_secs(1);

/// How long the checks of blocks just read gather before they are sent, one HasBlocks call
/// per replica: short beside the time a node takes to come back, long enough that a busy
/// frontend sends one call for dozens of block reads.
const CHECK_WINDOW: Duration = Duration::from_millis(20);
/// Most checks gathered into one round (each replica gets one call for its share).
const CHECK_BATCH: usize = 512;
/// Checks waiting to be sent at most; past it, more are dropped (a check is best effort:
/// anti-entropy finds what a dropped one would have).
const CHECKS_QUEUED: usize = 8192;

/// A block read from `source`, to be looked for on `node`.
struct Check {
    node: NodeRef,
    source: NodeRef,
    hash: Vec<u8>,
    owner: Vec<u8>,
}

#[derive(Clone)]
pub struct Blocks {
    cluster: Cluster,
    /// The checker's queue, made with the first check (a runtime is needed to start it).
    checks: Arc<std::sync::OnceLock<tokio::sync::mpsc::Sender<Check>>>,
}

/// The messages of a PutBlock stream. `timestamp` 0 marks a read repair.
fn put_messages(hash: &BlockHash, owner: &[u8], data: &Bytes, timestamp: u64, sum: Option<u64>) -> Vec<PutBlockChunk> {
    (0..data.len().max(1))
        .step_by(BLOCK_CHUNK)
        .enumerate()
        .map(|(i, off)| PutBlockChunk {
            header: (i == 0).then(|| BlockRef {
                hash: hash.0.to_vec().into(),
                owner: owner.to_vec().into(),
                repair: timestamp == 0,
                timestamp,
                sum,
            }),
            data: data.slice(off.min(data.len())..(off + BLOCK_CHUNK).min(data.len())),
        })
        .collect()
}

impl Blocks {
    pub fn new(cluster: Cluster) -> Self {
        Self { cluster, checks: Default::default() }
    }

    /// Sends one block to node `n` (chosen with layout `version`) with `owner`'s reference
    /// stamped `timestamp` (0: a read repair, which never overrides what the node knows of
    /// that reference). `sum`, the `DiskSum` of `data`, only when this process computed
    /// `hash` from `data` itself: a data node in this process then takes the hash as it is
    /// (`HashedByCaller`), one across the network checks the sum instead of hashing again;
    /// without it, the node hashes the bytes (a repair's copy, which this process did not
    /// hash).
    #[allow(clippy::too_many_arguments)]
    pub async fn put_to(
        &self,
        n: &NodeRef,
        version: u64,
        hash: &BlockHash,
        owner: &[u8],
        data: &Bytes,
        timestamp: u64,
        sum: Option<u64>,
    ) -> Result<()> {
        let mut c = self.cluster.blocks(n)?;
        let msgs = futures::stream::iter(put_messages(hash, owner, data, timestamp, sum));
        self.cluster
            .call(n, Method::PutBlock, version, msgs, |mut r| async move {
                if sum.is_some() {
                    r.extensions_mut().insert(HashedByCaller);
                }
                c.put_block(r).await
            })
            .await?;
        Ok(())
    }

    /// Stores a block with `owner`'s reference (stamped `timestamp`) on a quorum of every
    /// write set. `hash` must be the hash of `data` computed by the caller, in this process.
    #[tracing::instrument(name = "block.put", level = "debug", skip_all, fields(otel.name = "put block", bytes = data.len()))]
    pub async fn put(&self, hash: BlockHash, owner: Vec<u8>, timestamp: u64, data: Bytes) -> Result<()> {
        let sum = Some(DiskSum::of(&data));
        self.cluster
            .with_fresh_view(|view| {
                let (this, owner, data) = (self.clone(), owner.clone(), data.clone());
                async move {
                    let sets =
                        view.write_sets(block_partition(&hash.0)).map_err(|e| Error::Unavailable(e.to_string()))?;
                    let version = view.version();
                    quorum_sets(&sets, move |n| {
                        let (this, owner, data) = (this.clone(), owner.clone(), data.clone());
                        async move { this.put_to(&n, version, &hash, &owner, &data, timestamp, sum).await }
                    })
                    .await
                    .map(|_| ())
                }
            })
            .await
    }

    /// The block's bytes from the first replica that has it. Replicas of the read set found
    /// without it get a copy with `owner`'s reference (a reference-preserving repair).
    ///
    /// Replicas are asked one at a time (this process's data node first, when it is one of
    /// them), the next when one fails, or when none of those
    /// asked has started answering within `HEDGE_AFTER`: an unreachable node (cut off by the
    /// network, or gone without closing its connections) costs that delay, not the call
    /// timeout. A replica that answers is waited for, however long its block takes.
    #[tracing::instrument(name = "block.get", level = "debug", skip_all, fields(otel.name = "get block"))]
    pub async fn get(&self, hash: &[u8], owner: &[u8]) -> Result<Bytes> {
        let view = self.cluster.view();
        let p = block_partition(hash);
        let mut readers = view.read_set(p).map_err(|e| Error::Unavailable(e.to_string()))?;
        self.cluster.local_first(&mut readers);
        let mut order = readers.clone();
        order.extend(view.holders(p).into_iter().filter(|n| !readers.contains(n)));
        let answering = Arc::new(AtomicUsize::new(0));
        let mut attempts = FuturesUnordered::new();
        let mut asked = 0;
        let (mut lacking, mut failed, mut last_err) = (Vec::new(), Vec::new(), None);
        loop {
            if attempts.is_empty() {
                let Some(n) = order.get(asked) else { break };
                attempts.push(self.attempt(n.clone(), view.version(), hash, answering.clone()));
                asked += 1;
            }
            let hedge = asked < order.len() && answering.load(Ordering::SeqCst) == 0;
            tokio::select! {
                Some((n, r)) = attempts.next() => match r {
                    Ok(data) => {
                        let rest: Vec<NodeRef> =
                            readers.iter().filter(|m| **m != n && !failed.contains(*m)).cloned().collect();
                        self.repair(hash, owner, &data, lacking);
                        self.check_others(hash, owner, &n, rest);
                        return Ok(data);
                    }
                    Err(e) => {
                        if matches!(e.code(), Some(tonic::Code::NotFound | tonic::Code::DataLoss)) && readers.contains(&n) {
                            lacking.push(n.clone());
                        }
                        failed.push(n);
                        last_err = Some(e);
                    }
                },
                // Checked again: a replica may have started answering while the timer ran.
                _ = tokio::time::sleep(HEDGE_AFTER), if hedge => if answering.load(Ordering::SeqCst) == 0 {
                    attempts.push(self.attempt(order[asked].clone(), view.version(), hash, answering.clone()));
                    asked += 1;
                },
            }
        }
        Err(last_err.unwrap_or_else(|| Error::Unavailable("block has no replica".into())))
    }

    /// One replica's read for `get`: counted in `answering` from its answer to its end.
    async fn attempt(
        &self,
        n: NodeRef,
        version: u64,
        hash: &[u8],
        answering: Arc<AtomicUsize>,
    ) -> (NodeRef, Result<Bytes>) {
        struct Answered(Option<Arc<AtomicUsize>>);
        impl Drop for Answered {
            fn drop(&mut self) {
                if let Some(a) = &self.0 {
                    a.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
        let mut guard = Answered(None);
        let r = self
            .fetch(&n, version, hash, || {
                answering.fetch_add(1, Ordering::SeqCst);
                guard.0 = Some(answering.clone());
            })
            .await;
        (n, r)
    }

    /// The whole block from node `n` (chosen with layout `version`), its hash checked again
    /// here, so a copy between data nodes that arrives damaged fails here and the caller
    /// tries another source (the receiving store would refuse it too).
    pub async fn get_from(&self, n: &NodeRef, version: u64, hash: &[u8]) -> Result<Bytes> {
        let data = self.fetch(n, version, hash, || {}).await?;
        if BlockHash::of(&data).0 != hash {
            return Err(Error::Rpc(tonic::Status::data_loss("block arrived corrupted")));
        }
        Ok(data)
    }

    /// The whole block from node `n`, calling `answered` once the node has accepted the
    /// call. Not hashed here: the data node checked it as it read it from its disk, where a
    /// mismatch is quarantined and repaired from another replica; the way between them is
    /// TCP's (and TLS's, when on) to guard.
    async fn fetch(&self, n: &NodeRef, version: u64, hash: &[u8], answered: impl FnOnce()) -> Result<Bytes> {
        let mut c = self.cluster.blocks(n)?;
        let req = GetBlockRequest { hash: hash.to_vec().into() };
        let mut stream =
            self.cluster.call(n, Method::GetBlock, version, req, |r| async move { c.get_block(r).await }).await?;
        answered();
        let mut chunks = Vec::new();
        while let Some(c) = self.cluster.next_message(n, &mut stream).await? {
            chunks.push(c.data);
        }
        Ok(if chunks.len() == 1 { chunks.remove(0) } else { Bytes::from(chunks.concat()) })
    }

    /// Which of `hashes` node `n` holds.
    pub async fn has(&self, n: &NodeRef, hashes: Vec<Vec<u8>>) -> Result<Vec<bool>> {
        let mut c = self.cluster.blocks(n)?;
        let req = HasBlocksRequest { hashes: hashes.into_iter().map(Into::into).collect() };
        let version = self.cluster.view().version();
        Ok(self
            .cluster
            .call(n, Method::HasBlocks, version, req, |r| async move { c.has_blocks(r).await })
            .await?
            .present)
    }

    /// Queues the question whether the replicas not read from hold the block (a node that
    /// was down during the write does not); the checker asks them in batches and repairs
    /// those that do not with a copy from `source`, the replica it was read from.
    fn check_others(&self, hash: &[u8], owner: &[u8], source: &NodeRef, nodes: Vec<NodeRef>) {
        let queue = self.checks.get_or_init(|| {
            let (tx, rx) = tokio::sync::mpsc::channel(CHECKS_QUEUED);
            // Without the queue, so the checker ends once the last `Blocks` is dropped.
            tokio::spawn(Blocks::new(self.cluster.clone()).checker(rx));
            tx
        });
        for node in nodes {
            let check = Check { node, source: source.clone(), hash: hash.to_vec(), owner: owner.to_vec() };
            if queue.try_send(check).is_err() {
                tracing::debug!("block checks queue full; a check was dropped");
            }
        }
    }

    /// Gathers checks for `CHECK_WINDOW` (at most `CHECK_BATCH`) and asks each node about
    /// its share in one call, until every sender is gone.
    async fn checker(self, mut rx: tokio::sync::mpsc::Receiver<Check>) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            let until = tokio::time::Instant::now() + CHECK_WINDOW;
            while batch.len() < CHECK_BATCH {
                match tokio::time::timeout_at(until, rx.recv()).await {
                    Ok(Some(c)) => batch.push(c),
                    _ => break,
                }
            }
            let mut by_node: std::collections::BTreeMap<NodeRef, Vec<Check>> = Default::default();
            for c in batch {
                by_node.entry(c.node.clone()).or_default().push(c);
            }
            for (node, checks) in by_node {
                tokio::spawn(self.clone().check_node(node, checks));
            }
        }
    }

    /// Asks `node` which of the checked blocks it holds, and repairs it with the others.
    async fn check_node(self, node: NodeRef, checks: Vec<Check>) {
        let hashes = checks.iter().map(|c| c.hash.clone()).collect();
        let present = match self.has(&node, hashes).await {
            Ok(p) => p,
            Err(e) => return tracing::debug!(node = %node.id, error = %e, "block check failed"),
        };
        let version = self.cluster.view().version();
        for (c, _) in checks.into_iter().zip(present).filter(|(_, here)| !here) {
            match self.get_from(&c.source, version, &c.hash).await {
                Ok(data) => self.repair(&c.hash, &c.owner, &data, vec![node.clone()]),
                Err(e) => tracing::debug!(block = %hex::encode(&c.hash), error = %e, "cannot fetch a block to repair"),
            }
        }
    }

    /// Copies a block to replicas that did not have it; best effort, in the background.
    fn repair(&self, hash: &[u8], owner: &[u8], data: &Bytes, nodes: Vec<NodeRef>) {
        let Some(hash) = BlockHash::from_slice(hash) else { return };
        for n in nodes {
            let (this, owner, data) = (self.clone(), owner.to_vec(), data.clone());
            tokio::spawn(async move {
                let version = this.cluster.view().version();
                match this.put_to(&n, version, &hash, &owner, &data, 0, None).await {
                    Ok(()) => tracing::info!(node = %n.id, block = %hash, "repaired a missing block"),
                    Err(e) => tracing::warn!(node = %n.id, block = %hash, error = %e, "block repair failed"),
                }
            });
        }
    }
}
