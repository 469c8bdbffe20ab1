//! The block service as a data node serves it over gRPC: GetBlock answered with the block's
//! buffer as the frame payload it is (`hangar_common::block_wire`), every other call by the
//! generated server. Both sit behind the same cluster-secret check and answer the same
//! contract.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use hangar_common::block_wire;
use hangar_proto::block::block_service_server::BlockServiceServer;
use tonic::body::Body;
use tonic::codegen::{Service, http};
use tonic::server::NamedService;

use crate::service::BlockRpc;

#[derive(Clone)]
pub struct BlockRoutes {
    rpc: Arc<BlockRpc>,
    generated: BlockServiceServer<BlockRpc>,
}

impl BlockRoutes {
    pub fn new(rpc: BlockRpc, max_message: usize) -> Self {
        let rpc = Arc::new(rpc);
        let generated = BlockServiceServer::from_arc(rpc.clone())
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_message);
        BlockRoutes { rpc, generated }
    }
}

impl NamedService for BlockRoutes {
    const NAME: &'static str = <BlockServiceServer<BlockRpc> as NamedService>::NAME;
}

impl Service<http::Request<Body>> for BlockRoutes {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if req.uri().path() != block_wire::GET_BLOCK_PATH {
            let mut generated = self.generated.clone();
            return Box::pin(async move { generated.call(req).await });
        }
        let rpc = self.rpc.clone();
        Box::pin(async move {
            let reply = async {
                let req = block_wire::read_request(req).await?;
                rpc.read(&req, &req.get_ref().hash).await
            };
            Ok(match reply.await {
                Ok(data) => block_wire::reply(data),
                Err(status) => status.into_http(),
            })
        })
    }
}
