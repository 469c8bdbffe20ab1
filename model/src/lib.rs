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
pub mod conditional;
pub mod keys;
pub mod lifecycle;
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
    /// Size objects are cut into.
    pub block_size: usize,
    /// How often a writer renews its pending entry: often enough that no collector, which
    /// waits `pending_write_grace_secs`, ever takes a live writer for a dead one.
    pub renew_every: std::time::Duration,
    /// How long a data version may stay pending before the collector may release it.
    pub pending_grace: std::time::Duration,
}

impl Store {
    pub fn new(cluster: Cluster, cfg: &hangar_common::config::Config) -> Self {
        let grace = std::time::Duration::from_secs(cfg.pending_write_grace_secs);
        Self {
            tables: Tables::new(cluster.clone()),
            blocks: blocks::Blocks::new(cluster.clone()),
            registers: cas::Registers::new(cluster),
            block_size: cfg.block_size,
            pending_grace: grace,
            renew_every: (grace / 4).clamp(std::time::Duration::from_millis(250), version::REFRESH_EVERY),
        }
    }

    pub fn cluster(&self) -> &Cluster {
        self.tables.cluster()
    }
}
