//! Blocks over the cluster: each block goes to the replicas of its partition (a write
//! quorum must store it durably); a read takes the first replica that has it, and copies
//! it to replicas found without it (read repair).

use bytes::Bytes;
use futures::StreamExt;
use hangar_common::cluster::{Cluster, NodeRef, block_partition, quorum};
use hangar_common::hash::BlockHash;
use hangar_common::meta_client::quorum_call;
use hangar_common::rpc::BLOCK_CHUNK;
use hangar_common::{Error, Result};
use hangar_proto::block::{BlockRef, BlockRefs, GetBlockRequest, HasBlocksRequest, PutBlockChunk};
use std::collections::BTreeMap;

#[derive(Clone)]
pub struct Blocks {
    cluster: Cluster,
}

fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::Rpc(tonic::Status::unavailable(e.to_string()))
}

fn put_messages(hash: &BlockHash, owner: &[u8], data: &Bytes) -> Vec<PutBlockChunk> {
    (0..data.len().max(1))
        .step_by(BLOCK_CHUNK)
        .enumerate()
        .map(|(i, off)| PutBlockChunk {
            header: (i == 0).then(|| BlockRef { hash: hash.0.to_vec().into(), owner: owner.to_vec().into() }),
            data: data.slice(off.min(data.len())..(off + BLOCK_CHUNK).min(data.len())),
        })
        .collect()
}

impl Blocks {
    pub fn new(cluster: Cluster) -> Self {
        Self { cluster }
    }

    fn replicas(&self, hash: &[u8]) -> Result<Vec<NodeRef>> {
        self.cluster.replicas(block_partition(hash)).map_err(unavailable)
    }

    /// Stores a block with `owner`'s reference on a write quorum of its replicas.
    pub async fn put(&self, hash: BlockHash, owner: Vec<u8>, data: Bytes) -> Result<()> {
        let nodes = self.replicas(&hash.0)?;
        let cluster = self.cluster.clone();
        quorum_call(&nodes, quorum(nodes.len()), move |n| {
            let msgs = put_messages(&hash, &owner, &data);
            let cluster = cluster.clone();
            async move {
                cluster.blocks(&n)?.put_block(futures::stream::iter(msgs)).await?;
                Ok(())
            }
        })
        .await?;
        Ok(())
    }

    /// The block's bytes from the first replica that has it.
    pub async fn get(&self, hash: &[u8], owner: &[u8]) -> Result<Bytes> {
        let nodes = self.replicas(hash)?;
        let mut lacking = Vec::new();
        let mut last_err = None;
        for (i, n) in nodes.iter().enumerate() {
            match self.get_from(n, hash).await {
                Ok(data) => {
                    self.repair(hash, owner, &data, lacking);
                    self.check_others(hash, owner, &data, nodes[i + 1..].to_vec());
                    return Ok(data);
                }
                Err(Error::Rpc(s)) if matches!(s.code(), tonic::Code::NotFound | tonic::Code::DataLoss) => {
                    lacking.push(n.clone());
                    last_err = Some(Error::Rpc(s));
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| unavailable("block has no replica")))
    }

    async fn get_from(&self, n: &NodeRef, hash: &[u8]) -> Result<Bytes> {
        let mut stream =
            self.cluster.blocks(n)?.get_block(GetBlockRequest { hash: hash.to_vec().into() }).await?.into_inner();
        let mut chunks = Vec::new();
        while let Some(c) = stream.next().await {
            chunks.push(c?.data);
        }
        let data = if chunks.len() == 1 { chunks.remove(0) } else { Bytes::from(chunks.concat()) };
        // The node verified the hash; verify again so a fault on the way is not served either.
        if BlockHash::of(&data).0 != hash {
            return Err(Error::Rpc(tonic::Status::data_loss("block arrived corrupted")));
        }
        Ok(data)
    }

    /// Asks the replicas not read from whether they hold the block (a node that was down
    /// during the write does not) and repairs those that do not; in the background.
    fn check_others(&self, hash: &[u8], owner: &[u8], data: &Bytes, nodes: Vec<NodeRef>) {
        if nodes.is_empty() {
            return;
        }
        let (this, hash, owner, data) = (self.clone(), hash.to_vec(), owner.to_vec(), data.clone());
        tokio::spawn(async move {
            let mut lacking = Vec::new();
            for n in nodes {
                let req = HasBlocksRequest { hashes: vec![hash.clone().into()] };
                let has = match this.cluster.blocks(&n) {
                    Ok(mut c) => {
                        c.has_blocks(req).await.map(|r| r.into_inner().present.first().copied().unwrap_or(false))
                    }
                    Err(_) => continue,
                };
                if let Ok(false) = has {
                    lacking.push(n);
                }
            }
            this.repair(&hash, &owner, &data, lacking);
        });
    }

    /// Copies a block to replicas that did not have it; best effort, in the background.
    fn repair(&self, hash: &[u8], owner: &[u8], data: &Bytes, nodes: Vec<NodeRef>) {
        let Some(hash) = BlockHash::from_slice(hash) else { return };
        for n in nodes {
            let msgs = put_messages(&hash, owner, data);
            let cluster = self.cluster.clone();
            tokio::spawn(async move {
                let r = match cluster.blocks(&n) {
                    Ok(mut c) => c.put_block(futures::stream::iter(msgs)).await.map(|_| ()).map_err(Error::from),
                    Err(e) => Err(e),
                };
                match r {
                    Ok(()) => tracing::info!(node = %n.id, block = %hash, "repaired a missing block"),
                    Err(e) => tracing::warn!(node = %n.id, block = %hash, error = %e, "block repair failed"),
                }
            });
        }
    }

    fn by_partition(refs: Vec<BlockRef>) -> BTreeMap<usize, Vec<BlockRef>> {
        let mut groups: BTreeMap<usize, Vec<BlockRef>> = BTreeMap::new();
        for r in refs {
            groups.entry(block_partition(&r.hash)).or_default().push(r);
        }
        groups
    }

    /// Adds references to stored blocks; returns the blocks no answering replica holds.
    pub async fn add_refs(&self, refs: Vec<BlockRef>) -> Result<Vec<Vec<u8>>> {
        let mut missing = Vec::new();
        for (partition, group) in Self::by_partition(refs) {
            let nodes = self.cluster.replicas(partition).map_err(unavailable)?;
            let cluster = self.cluster.clone();
            let answers = quorum_call(&nodes, quorum(nodes.len()), move |n| {
                let (cluster, refs) = (cluster.clone(), group.clone());
                async move { Ok(cluster.blocks(&n)?.add_block_refs(BlockRefs { refs }).await?.into_inner().missing) }
            })
            .await?;
            let mut counts: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
            for (_, m) in &answers {
                for h in m {
                    *counts.entry(h.to_vec()).or_default() += 1;
                }
            }
            missing.extend(counts.into_iter().filter(|(_, c)| *c == answers.len()).map(|(h, _)| h));
        }
        Ok(missing)
    }

    /// Drops references on a write quorum of each block's replicas.
    pub async fn delete_refs(&self, refs: Vec<BlockRef>) -> Result<()> {
        for (partition, group) in Self::by_partition(refs) {
            let nodes = self.cluster.replicas(partition).map_err(unavailable)?;
            let cluster = self.cluster.clone();
            quorum_call(&nodes, quorum(nodes.len()), move |n| {
                let (cluster, refs) = (cluster.clone(), group.clone());
                async move {
                    cluster.blocks(&n)?.delete_block_refs(BlockRefs { refs }).await?;
                    Ok(())
                }
            })
            .await?;
        }
        Ok(())
    }
}
