//! Calls to a data node that runs in this process (`hangar server`, and a data node's own
//! workers calling itself) reach its service implementation directly: the same request
//! (layout version and trace context in its metadata), the same checks in the service (the
//! layout gate, the disk guard, the rebuild state), the same quorum logic and timeout in
//! `Cluster::call`, but no socket, no HTTP/2 framing and no protobuf encoding, so block
//! data is handed over as the `Bytes` it already is. Every other node is called over gRPC.
//! The clients below have the methods of the generated gRPC clients callers use, so a call
//! site does not know which way its call goes.

use std::sync::Arc;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use hangar_proto::block::{
    BlockChunk, GetBlockRequest, HasBlocksReply, HasBlocksRequest, PutBlockChunk, PutBlockReply,
};
use hangar_proto::metadata::metadata_service_server::MetadataService;
use hangar_proto::metadata::*;
use tonic::{IntoRequest, Request, Response, Status};

use crate::rpc::{AuthChannel, MetaGrpc, block_client};

/// The chunks of a block as a GetBlock call returns them, from either side.
pub type BlockChunks = BoxStream<'static, Result<BlockChunk, Status>>;

/// The mark of a PutBlock call from this process whose sender hashed the block's bytes
/// itself, in memory (the write path: `Blocks::put`): the data node takes the hash as given
/// instead of hashing the same bytes a second time on the same cores. Request extensions
/// never travel over gRPC, so no other process can set it; a block copied from another
/// node (a repair) is sent without it and hashed on arrival.
#[derive(Clone, Copy, Debug)]
pub struct HashedByCaller;

/// A data node's block service as this process calls it. (The generated gRPC trait takes
/// its incoming stream as `tonic::Streaming`, which only a decoder can make.)
#[tonic::async_trait]
pub trait LocalBlocks: Send + Sync + 'static {
    async fn put_block(
        &self,
        req: Request<BoxStream<'static, Result<PutBlockChunk, Status>>>,
    ) -> Result<Response<PutBlockReply>, Status>;
    /// The block as one chunk (nothing to reassemble).
    async fn get_block(&self, req: Request<GetBlockRequest>) -> Result<Response<BlockChunks>, Status>;
    async fn has_blocks(&self, req: Request<HasBlocksRequest>) -> Result<Response<HasBlocksReply>, Status>;
}

/// The data node of this process: its id in the layout and its services.
#[derive(Clone)]
pub struct LocalNode {
    pub id: Arc<str>,
    pub meta: Arc<dyn MetadataService>,
    pub blocks: Arc<dyn LocalBlocks>,
}

/// A metadata client: over gRPC, or straight into this process's data node.
// Made for one call and dropped with it: boxing the gRPC client would cost an allocation
// per remote call to save stack space nobody keeps.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub enum MetaClient {
    Remote(MetaGrpc),
    Local(Arc<dyn MetadataService>),
}

/// One method per unary call of the metadata service, dispatched either way.
macro_rules! unary {
    ($($method:ident: $req:ty => $reply:ty;)*) => {
        impl MetaClient {
            $(
                pub async fn $method(&mut self, req: impl IntoRequest<$req>) -> Result<Response<$reply>, Status> {
                    match self {
                        MetaClient::Remote(c) => c.$method(req).await,
                        MetaClient::Local(s) => s.$method(req.into_request()).await,
                    }
                }
            )*
        }
    };
}

unary! {
    insert: InsertRequest => InsertReply;
    get: GetRequest => GetReply;
    range: RangeRequest => RangeReply;
    sync_range: SyncRangeRequest => RangeReply;
    prepare: PrepareRequest => PrepareReply;
    accept: AcceptRequest => AcceptReply;
    merkle_roots: MerkleRootsRequest => MerkleRootsReply;
    merkle_leaves: MerkleLeavesRequest => MerkleLeavesReply;
    leaf_entries: LeafEntriesRequest => LeafEntriesReply;
    drop_tombstones: InsertRequest => InsertReply;
}

/// A block client: over gRPC, or straight into this process's data node. GetBlock over
/// gRPC is read by `block_wire` (block data taken from the frames without a copy), the
/// other calls by the generated client.
// Made for one call and dropped with it: boxing the channel would cost an allocation
// per remote call to save stack space nobody keeps.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub enum BlockClient {
    Remote(AuthChannel),
    Local(Arc<dyn LocalBlocks>),
}

impl BlockClient {
    pub async fn put_block<S>(&mut self, req: Request<S>) -> Result<Response<PutBlockReply>, Status>
    where
        S: Stream<Item = PutBlockChunk> + Send + 'static,
    {
        match self {
            BlockClient::Remote(c) => block_client(c.clone()).put_block(req).await,
            BlockClient::Local(s) => s.put_block(req.map(|chunks| chunks.map(Ok).boxed())).await,
        }
    }

    pub async fn get_block(&mut self, req: Request<GetBlockRequest>) -> Result<Response<BlockChunks>, Status> {
        match self {
            BlockClient::Remote(c) => crate::block_wire::get_block(c.clone(), req).await,
            BlockClient::Local(s) => s.get_block(req).await,
        }
    }

    pub async fn has_blocks(&mut self, req: Request<HasBlocksRequest>) -> Result<Response<HasBlocksReply>, Status> {
        match self {
            BlockClient::Remote(c) => block_client(c.clone()).has_blocks(req).await,
            BlockClient::Local(s) => s.has_blocks(req).await,
        }
    }
}
