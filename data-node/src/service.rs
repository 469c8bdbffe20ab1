//! The data node's gRPC services over its block and metadata stores. Writes pass the
//! layout gate (refused when made with an outdated layout) and the disk guard (refused
//! below the free-space reserve). The same implementations answer calls from this process
//! (`hangar_common::local`), with the same checks.

use std::pin::Pin;
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use hangar_common::call::layout_version_of;
use hangar_common::hash::BlockHash;
use hangar_common::local::{BlockChunks, HashedByCaller, LocalBlocks};
use hangar_common::rpc::BLOCK_REPLY_CHUNK;
use hangar_common::telemetry::metrics;
use hangar_proto::block::block_service_server::BlockService;
use hangar_proto::block::*;
use hangar_proto::metadata::metadata_service_server::MetadataService;
use hangar_proto::metadata::*;
use tonic::{Request, Response, Status, Streaming};

use crate::block_store::{BlockStore, Owner};
use crate::disk::DiskGuard;
use crate::gate::WriteGate;
use crate::meta_store::MetaStore;
use hangar_model::object::summarize;

/// Most entries one Range or SyncRange answer carries.
const MAX_RANGE: usize = 10_000;

pub struct BlockRpc {
    pub store: Arc<BlockStore>,
    pub gate: Arc<WriteGate>,
    pub disk: Arc<DiskGuard>,
    /// Space taken per incoming block before its size is known.
    pub block_size: u64,
}

pub struct MetadataRpc {
    pub store: Arc<MetaStore>,
    pub gate: Arc<WriteGate>,
    pub disk: Arc<DiskGuard>,
    /// Set while the node rebuilds after its directories were lost: it takes writes and
    /// answers anti-entropy, but refuses reads and register rounds, whose answers would be
    /// missing what it lost (the other replicas serve them).
    pub rebuilding: Arc<std::sync::atomic::AtomicBool>,
}

impl MetadataRpc {
    fn check_rebuilt(&self) -> Result<(), Status> {
        if self.rebuilding.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Status::unavailable("this data node is rebuilding its data from the other replicas"));
        }
        Ok(())
    }
}

fn table_arg(t: i32) -> Result<Table, Status> {
    Table::try_from(t)
        .ok()
        .filter(|t| *t != Table::Unspecified)
        .ok_or_else(|| Status::invalid_argument("unknown table"))
}

fn partition_arg(p: u32) -> Result<u8, Status> {
    u8::try_from(p).map_err(|_| Status::invalid_argument("partition must be below 256"))
}

fn hash_arg(b: &[u8]) -> Result<BlockHash, Status> {
    BlockHash::from_slice(b).ok_or_else(|| Status::invalid_argument("block hash must be 32 bytes"))
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<BlockChunk, Status>> + Send>>;

/// Turns a storage error into a status, noting a full disk.
fn storage(disk: &DiskGuard, e: crate::DataError) -> Status {
    if e.is_full() {
        disk.invalidate();
    }
    e.into()
}

impl BlockRpc {
    /// Stores the block a PutBlock stream carries (from gRPC or from this process).
    #[tracing::instrument(name = "rpc.put_block", skip_all)]
    async fn receive<S>(&self, req: Request<S>) -> Result<Response<PutBlockReply>, Status>
    where
        S: Stream<Item = Result<PutBlockChunk, Status>> + Unpin,
    {
        let _admitted = self.gate.enter(layout_version_of(&req))?;
        // Only a call from this process can carry the mark: extensions do not cross gRPC.
        let hashed_by_caller = req.extensions().get::<HashedByCaller>().is_some();
        let _space = self.disk.reserve_block(self.block_size).map_err(|e| storage(&self.disk, e))?;
        let mut stream = req.into_inner();
        let first = stream.next().await.transpose()?.ok_or_else(|| Status::invalid_argument("empty block stream"))?;
        let header = first.header.ok_or_else(|| Status::invalid_argument("first message must carry the header"))?;
        let hash = hash_arg(&header.hash)?;
        if header.owner.len() != hangar_model::schema::ID_LEN {
            return Err(Status::invalid_argument("block owner must be a 16-byte data version id"));
        }
        // The temporary file goes away on every early return (IncomingBlock's drop).
        let mut inc = self.store.begin();
        if hashed_by_caller {
            inc.hashed_by_caller();
        } else if let Some(sum) = header.sum {
            inc.check_sum_sent(sum);
        }
        inc.write(first.data).await.map_err(|e| storage(&self.disk, e))?;
        while let Some(m) = stream.next().await.transpose()? {
            inc.write(m.data).await.map_err(|e| storage(&self.disk, e))?;
        }
        let timestamp = if header.repair { 0 } else { header.timestamp.max(1) };
        let owner = Owner { data_version: &header.owner, timestamp };
        let deduplicated = self.store.commit(inc, hash, owner).await.map_err(|e| storage(&self.disk, e))?;
        Ok(Response::new(PutBlockReply { deduplicated }))
    }

    /// A block's bytes, checked as they are read (`BlockStore::read`).
    #[tracing::instrument(name = "rpc.get_block", skip_all)]
    pub(crate) async fn read<T>(&self, req: &Request<T>, hash: &[u8]) -> Result<bytes::Bytes, Status> {
        self.gate.check_read(layout_version_of(req))?;
        Ok(bytes::Bytes::from(self.store.read(&hash_arg(hash)?).await?))
    }

    async fn has(&self, req: Request<HasBlocksRequest>) -> Result<Response<HasBlocksReply>, Status> {
        self.gate.check_read(layout_version_of(&req))?;
        let mut present = Vec::new();
        for h in &req.get_ref().hashes {
            present.push(self.store.has(&hash_arg(h)?).await?);
        }
        Ok(Response::new(HasBlocksReply { present }))
    }
}

#[tonic::async_trait]
impl BlockService for BlockRpc {
    async fn put_block(&self, req: Request<Streaming<PutBlockChunk>>) -> Result<Response<PutBlockReply>, Status> {
        self.receive(req).await
    }

    type GetBlockStream = ChunkStream;

    /// The block in chunks of at most BLOCK_REPLY_CHUNK bytes (slices of one buffer). Over
    /// the network `BlockRoutes` answers GetBlock itself, with the same messages and no
    /// copy into an encode buffer; this is the generated server's own answer.
    async fn get_block(&self, req: Request<GetBlockRequest>) -> Result<Response<ChunkStream>, Status> {
        let data = self.read(&req, &req.get_ref().hash).await?;
        let chunks: Vec<_> = (0..data.len().max(1))
            .step_by(BLOCK_REPLY_CHUNK)
            .map(|off| Ok(BlockChunk { data: data.slice(off..(off + BLOCK_REPLY_CHUNK).min(data.len())) }))
            .collect();
        Ok(Response::new(futures::stream::iter(chunks).boxed()))
    }

    async fn has_blocks(&self, req: Request<HasBlocksRequest>) -> Result<Response<HasBlocksReply>, Status> {
        self.has(req).await
    }
}

#[tonic::async_trait]
impl LocalBlocks for BlockRpc {
    async fn put_block(
        &self,
        req: Request<BoxStream<'static, Result<PutBlockChunk, Status>>>,
    ) -> Result<Response<PutBlockReply>, Status> {
        self.receive(req).await
    }

    async fn get_block(&self, req: Request<GetBlockRequest>) -> Result<Response<BlockChunks>, Status> {
        let data = self.read(&req, &req.get_ref().hash).await?;
        Ok(Response::new(futures::stream::once(async move { Ok(BlockChunk { data }) }).boxed()))
    }

    async fn has_blocks(&self, req: Request<HasBlocksRequest>) -> Result<Response<HasBlocksReply>, Status> {
        self.has(req).await
    }
}

#[tonic::async_trait]
impl MetadataService for MetadataRpc {
    #[tracing::instrument(name = "rpc.meta_insert", skip_all)]
    async fn insert(&self, req: Request<InsertRequest>) -> Result<Response<InsertReply>, Status> {
        let _admitted = self.gate.enter(layout_version_of(&req))?;
        if req.get_ref().table == Table::Register as i32 {
            return Err(Status::invalid_argument("registers are written with Prepare and Accept"));
        }
        // Tombstones free space: they pass down to half the reserve, like every entry.
        self.disk.check_metadata().map_err(|e| storage(&self.disk, e))?;
        let r = req.into_inner();
        // Block references that arrive without their block (a read repair of the reference
        // table, a copy, a late write to a node that was cut off) are queued for resync: the
        // worker fetches the block unless it is here already or no longer needed. A block
        // whose PutBlock never arrived is otherwise found only by a block scan.
        let refs: Vec<BlockHash> = if r.table == Table::BlockRef as i32 {
            r.entries
                .iter()
                .filter(|e| !e.tombstone)
                .filter_map(|e| hangar_model::schema::parse_block_ref_key(&e.key).map(|(h, _)| h))
                .collect()
        } else {
            Vec::new()
        };
        let beaten_by = self.store.insert(r.table, r.entries).await.map_err(|e| storage(&self.disk, e))?;
        // The entries are stored: a failure to queue does not fail the write (the block scan
        // finds such a block later).
        for hash in &refs {
            if let Err(e) = self.store.queue_resync(hash) {
                tracing::warn!(block = %hash, error = %e, "cannot queue a block for resync");
            }
        }
        Ok(Response::new(InsertReply { beaten_by }))
    }

    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetReply>, Status> {
        self.gate.check_read(layout_version_of(&req))?;
        self.check_rebuilt()?;
        let r = req.get_ref();
        Ok(Response::new(GetReply { entry: self.store.get(r.table, &r.key)? }))
    }

    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeReply>, Status> {
        self.gate.check_read(layout_version_of(&req))?;
        self.check_rebuilt()?;
        let r = req.get_ref();
        let limit = if r.limit == 0 { 1000 } else { (r.limit as usize).min(MAX_RANGE) };
        let (mut entries, more) = self.store.range(r.table, &r.start, &r.end, limit, r.include_tombstones)?;
        if r.summaries && r.table == Table::Object as i32 {
            for e in &mut entries {
                summarize(e).map_err(|e| Status::data_loss(format!("an object entry does not decode: {e}")))?;
            }
        }
        Ok(Response::new(RangeReply { entries, more }))
    }

    async fn sync_range(&self, req: Request<SyncRangeRequest>) -> Result<Response<RangeReply>, Status> {
        self.gate.check_read(layout_version_of(&req))?;
        self.check_rebuilt()?;
        let r = req.get_ref();
        let limit = if r.limit == 0 { 1000 } else { (r.limit as usize).min(MAX_RANGE) };
        let (entries, more) = self.store.sync_range(r.table, &r.partitions, &r.start, limit)?;
        count_sent(&req, r.table, entries.len());
        Ok(Response::new(RangeReply { entries, more }))
    }

    async fn prepare(&self, req: Request<PrepareRequest>) -> Result<Response<PrepareReply>, Status> {
        self.check_rebuilt()?;
        let reporting = req.get_ref().ballot.is_none_or(|b| b.round == 0 && b.proposer == 0);
        let _admitted = if reporting {
            self.gate.check_read(layout_version_of(&req))?;
            None
        } else {
            Some(self.gate.enter(layout_version_of(&req))?)
        };
        if !reporting {
            self.disk.check_metadata().map_err(|e| storage(&self.disk, e))?;
        }
        let r = req.into_inner();
        let (promised, state) = self.store.prepare(&r.key, r.ballot).await.map_err(|e| storage(&self.disk, e))?;
        Ok(Response::new(PrepareReply {
            promised,
            promised_ballot: state.promised,
            accepted_ballot: state.accepted,
            accepted_value: state.value,
        }))
    }

    async fn accept(&self, req: Request<AcceptRequest>) -> Result<Response<AcceptReply>, Status> {
        self.check_rebuilt()?;
        let _admitted = self.gate.enter(layout_version_of(&req))?;
        self.disk.check_metadata().map_err(|e| storage(&self.disk, e))?;
        let r = req.into_inner();
        let (accepted, state) =
            self.store.accept(&r.key, r.ballot, &r.value).await.map_err(|e| storage(&self.disk, e))?;
        Ok(Response::new(AcceptReply { accepted, promised_ballot: state.promised }))
    }

    async fn merkle_roots(&self, req: Request<MerkleRootsRequest>) -> Result<Response<MerkleRootsReply>, Status> {
        self.gate.check_read(layout_version_of(&req))?;
        let roots = self.store.merkle_roots(req.into_inner().partitions.to_vec()).await?;
        Ok(Response::new(MerkleRootsReply { roots }))
    }

    async fn merkle_leaves(&self, req: Request<MerkleLeavesRequest>) -> Result<Response<MerkleLeavesReply>, Status> {
        self.gate.check_read(layout_version_of(&req))?;
        let r = req.get_ref();
        let leaves = self.store.merkle_leaves(table_arg(r.table)?, partition_arg(r.partition)?).await?;
        Ok(Response::new(MerkleLeavesReply { leaves }))
    }

    async fn leaf_entries(&self, req: Request<LeafEntriesRequest>) -> Result<Response<LeafEntriesReply>, Status> {
        self.gate.check_read(layout_version_of(&req))?;
        let r = req.get_ref();
        let limit = if r.limit == 0 { 1000 } else { (r.limit as usize).min(MAX_RANGE) };
        let (entries, next) =
            self.store.leaf_entries(table_arg(r.table)?, partition_arg(r.partition)?, &r.leaves, &r.start, limit)?;
        count_sent(&req, r.table, entries.len());
        Ok(Response::new(LeafEntriesReply { entries, next: next.unwrap_or_default().into() }))
    }

    async fn drop_tombstones(&self, req: Request<InsertRequest>) -> Result<Response<InsertReply>, Status> {
        let _admitted = self.gate.enter(layout_version_of(&req))?;
        let r = req.into_inner();
        let t = table_arg(r.table)?;
        for e in r.entries.iter().filter(|e| e.tombstone) {
            self.store.remove_if(t, &e.key, e)?;
        }
        self.store.commit.flush().await?;
        Ok(Response::new(InsertReply::default()))
    }
}

/// Counts entries served to a syncing node, known by its address.
fn count_sent<T>(req: &Request<T>, table: i32, n: usize) {
    if let (Ok(t), true) = (Table::try_from(table), n > 0) {
        let to = req.remote_addr().map(|a| a.ip().to_string()).unwrap_or_else(|| "unknown".into());
        metrics().sync_sent(t, &to, n);
    }
}
