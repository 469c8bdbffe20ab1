//! Hangar's model layer: every metadata table declared once (`schema`), typed quorum access
//! to them (`client`), compare-and-swap registers (`cas`), blocks over the cluster
//! (`blocks`), and the logic the S3 frontend, the admin API and the background workers
//! share: data versions and their release (`version`), objects (`object`), multipart
//! uploads (`multipart`), buckets, names, keys and grants (`catalog`). Nothing outside this
//! crate builds a table key by hand.

pub mod blocks;
pub mod cas;
pub mod catalog;
pub mod client;
pub mod keys;
pub mod multipart;
pub mod object;
pub mod schema;
pub mod version;

pub use client::{Found, Tables};
pub use hangar_common::{Error, Result};

use hangar_common::cluster::Cluster;

/// Everything the model logic works through. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub tables: Tables,
    pub blocks: blocks::Blocks,
    pub registers: cas::Registers,
    /// Settings the logic needs.
    pub block_size: usize,
}

impl Store {
    pub fn new(cluster: Cluster, block_size: usize) -> Self {
        Self {
            tables: Tables::new(cluster.clone()),
            blocks: blocks::Blocks::new(cluster.clone()),
            registers: cas::Registers::new(cluster),
            block_size,
        }
    }

    pub fn cluster(&self) -> &Cluster {
        self.tables.cluster()
    }
}
