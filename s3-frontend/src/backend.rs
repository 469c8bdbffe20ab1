//! The frontend's view of the data nodes: the metadata tables and the block service,
//! reached only through their gRPC clients.

use hangar_common::meta_client::MetaClient;
use hangar_common::model::Catalog;
use hangar_common::rpc::BlockGrpc;

#[derive(Clone)]
pub struct Backend {
    pub meta: MetaClient,
    pub blocks: BlockGrpc,
    pub catalog: Catalog,
}

impl Backend {
    pub fn new(meta: MetaClient, blocks: BlockGrpc) -> Self {
        Self { catalog: Catalog::new(meta.clone()), meta, blocks }
    }
}
