//! The frontend's view of the data nodes: the metadata tables and the blocks, reached only
//! through their gRPC services at the replicas the layout names.

use hangar_common::cluster::Cluster;
use hangar_common::meta_client::MetaClient;
use hangar_common::model::Catalog;

use crate::blocks::Blocks;

#[derive(Clone)]
pub struct Backend {
    pub meta: MetaClient,
    pub blocks: Blocks,
    pub catalog: Catalog,
}

impl Backend {
    pub fn new(cluster: Cluster) -> Self {
        let meta = MetaClient::new(cluster.clone());
        Self { catalog: Catalog::new(meta.clone()), meta, blocks: Blocks::new(cluster) }
    }
}
