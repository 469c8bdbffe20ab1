//! The data node's gRPC services over its block and metadata stores.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use hangar_common::hash::BlockHash;
use hangar_common::rpc::BLOCK_CHUNK;
use hangar_common::telemetry::metrics;
use hangar_proto::block::block_service_server::BlockService;
use hangar_proto::block::*;
use hangar_proto::metadata::metadata_service_server::MetadataService;
use hangar_proto::metadata::*;
use tonic::{Request, Response, Status, Streaming};

use crate::block_store::BlockStore;
use crate::meta_store::MetaStore;

pub struct BlockRpc {
    pub store: Arc<BlockStore>,
}

pub struct MetadataRpc {
    pub store: Arc<MetaStore>,
}

fn hash_arg(b: &[u8]) -> Result<BlockHash, Status> {
    BlockHash::from_slice(b).ok_or_else(|| Status::invalid_argument("block hash must be 32 bytes"))
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<BlockChunk, Status>> + Send>>;

#[tonic::async_trait]
impl BlockService for BlockRpc {
    #[tracing::instrument(name = "rpc.put_block", skip_all)]
    async fn put_block(&self, req: Request<Streaming<PutBlockChunk>>) -> Result<Response<PutBlockReply>, Status> {
        metrics().rpc("PutBlock");
        let mut stream = req.into_inner();
        let first = stream.message().await?.ok_or_else(|| Status::invalid_argument("empty block stream"))?;
        let header = first.header.ok_or_else(|| Status::invalid_argument("first message must carry the header"))?;
        let hash = hash_arg(&header.hash)?;
        let mut inc = self.store.begin().await?;
        let mut chunk = Some(first.data);
        loop {
            if let Some(data) = chunk.take()
                && let Err(e) = inc.write(&data).await
            {
                return Err(e.into());
            }
            match stream.message().await {
                Ok(Some(m)) => chunk = Some(m.data),
                Ok(None) => break,
                Err(e) => {
                    inc.abandon().await;
                    return Err(e);
                }
            }
        }
        let deduplicated = self.store.commit(inc, hash, &header.owner).await?;
        Ok(Response::new(PutBlockReply { deduplicated }))
    }

    type GetBlockStream = ChunkStream;

    #[tracing::instrument(name = "rpc.get_block", skip_all)]
    async fn get_block(&self, req: Request<GetBlockRequest>) -> Result<Response<ChunkStream>, Status> {
        metrics().rpc("GetBlock");
        let hash = hash_arg(&req.get_ref().hash)?;
        let data = bytes::Bytes::from(self.store.read(&hash).await?);
        let chunks: Vec<_> = (0..data.len().max(1))
            .step_by(BLOCK_CHUNK)
            .map(|off| Ok(BlockChunk { data: data.slice(off..(off + BLOCK_CHUNK).min(data.len())) }))
            .collect();
        Ok(Response::new(futures::stream::iter(chunks).boxed()))
    }

    async fn has_blocks(&self, req: Request<HasBlocksRequest>) -> Result<Response<HasBlocksReply>, Status> {
        metrics().rpc("HasBlocks");
        let mut present = Vec::new();
        for h in &req.get_ref().hashes {
            present.push(self.store.has(&hash_arg(h)?).await?);
        }
        Ok(Response::new(HasBlocksReply { present }))
    }

    async fn delete_block_refs(&self, req: Request<BlockRefs>) -> Result<Response<DeleteBlockRefsReply>, Status> {
        metrics().rpc("DeleteBlockRefs");
        let refs = ref_args(req.into_inner())?;
        let queued_for_deletion = self.store.remove_refs(&refs).await?;
        Ok(Response::new(DeleteBlockRefsReply { queued_for_deletion }))
    }

    async fn add_block_refs(&self, req: Request<BlockRefs>) -> Result<Response<AddBlockRefsReply>, Status> {
        metrics().rpc("AddBlockRefs");
        let refs = ref_args(req.into_inner())?;
        let missing = self.store.add_refs(&refs).await?;
        Ok(Response::new(AddBlockRefsReply { missing: missing.into_iter().map(|h| h.0.to_vec().into()).collect() }))
    }
}

#[tonic::async_trait]
impl MetadataService for MetadataRpc {
    #[tracing::instrument(name = "rpc.meta_insert", skip_all)]
    async fn insert(&self, req: Request<InsertRequest>) -> Result<Response<InsertReply>, Status> {
        metrics().rpc("Insert");
        let r = req.into_inner();
        let applied = self.store.insert(r.table, r.entries, r.if_absent).await?;
        Ok(Response::new(InsertReply { applied }))
    }

    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetReply>, Status> {
        metrics().rpc("Get");
        let r = req.get_ref();
        Ok(Response::new(GetReply { entry: self.store.get(r.table, &r.key)? }))
    }

    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeReply>, Status> {
        metrics().rpc("Range");
        let r = req.get_ref();
        let limit = if r.limit == 0 { 1000 } else { r.limit.min(10_000) } as usize;
        let (entries, more) = self.store.range(r.table, &r.start, &r.end, limit, r.include_tombstones)?;
        Ok(Response::new(RangeReply { entries, more }))
    }
}

fn ref_args(r: BlockRefs) -> Result<Vec<(BlockHash, Vec<u8>)>, Status> {
    r.refs.into_iter().map(|r| Ok((hash_arg(&r.hash)?, r.owner.to_vec()))).collect()
}
