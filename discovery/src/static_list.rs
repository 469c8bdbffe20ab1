//! The static backend: the control plane's addresses written in `bootstrap_peers`. Nodes
//! announce themselves by their heartbeats to it, so there is nothing to register and
//! nothing to follow.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;

use crate::{Backend, Node, Result, Role};

pub const NAME: &str = "static";

pub struct StaticList {
    peers: Vec<String>,
}

impl StaticList {
    pub fn new(peers: Vec<String>) -> Self {
        Self { peers }
    }
}

#[async_trait::async_trait]
impl Backend for StaticList {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn announce(&self, _me: &Node) -> Result<()> {
        Ok(())
    }

    fn refresh_every(&self) -> std::time::Duration {
        std::time::Duration::from_secs(3600)
    }

    async fn withdraw(&self, _me: &Node) -> Result<()> {
        Ok(())
    }

    async fn list(&self) -> Result<Vec<Node>> {
        self.peers.iter().map(|p| Node::at(p, p, Role::Control)).collect()
    }

    /// Nothing to follow: the control plane learns of members from their heartbeats.
    async fn follow(&self, _tx: &watch::Sender<Option<Arc<BTreeMap<String, Node>>>>) -> Result<()> {
        std::future::pending().await
    }
}
