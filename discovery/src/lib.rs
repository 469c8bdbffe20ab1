//! How Hangar's processes find each other. One seam, [`Backend`], with one module per
//! backend: `static_list` (the addresses in `bootstrap_peers`), `kubernetes` (a
//! `HangarNode` custom resource per node) and `consul` (a service per node in the Consul
//! catalog). Every process announces itself through the configured backend; nodes look the
//! control plane and the data nodes up through it; the control plane follows the listing
//! and adds its own health checks (heartbeats).

pub mod consul;
pub mod kubernetes;
pub mod static_list;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hangar_common::config::Config;
use hangar_common::follower::{PeerList, Peers};
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    #[error("kubernetes configuration: {0}")]
    KubeConfig(String),
    #[error("consul: {0}")]
    Consul(String),
    #[error("{0}")]
    Invalid(String),
}

impl From<reqwest::Error> for Error {
    fn from(e: reqwest::Error) -> Self {
        Error::Consul(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// What a process is in the cluster.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Control,
    Data,
    Frontend,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Control => "control",
            Role::Data => "data",
            Role::Frontend => "frontend",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "control" => Some(Role::Control),
            "data" => Some(Role::Data),
            "frontend" => Some(Role::Frontend),
            _ => None,
        }
    }
}

/// A process as it announces itself: its id, where its gRPC service (a frontend: its S3
/// service) listens, its role, and for a data node its zone and data disk size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub id: String,
    pub hostname: String,
    /// Host name or IP address others dial.
    pub address: String,
    pub port: u16,
    pub role: Role,
    pub zone: String,
    pub capacity: u64,
}

impl Node {
    /// `address:port` (IPv6 addresses in brackets).
    pub fn addr(&self) -> String {
        if self.address.contains(':') && !self.address.starts_with('[') {
            format!("[{}]:{}", self.address, self.port)
        } else {
            format!("{}:{}", self.address, self.port)
        }
    }

    /// A node announcing `id` at `addr` (`host:port`) with `role`.
    pub fn at(id: &str, addr: &str, role: Role) -> Result<Node> {
        let (host, port) = addr
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(|c| c == '[' || c == ']'), p.parse::<u16>().ok()?)))
            .ok_or_else(|| Error::Invalid(format!("`{addr}` is not host:port")))?;
        Ok(Node {
            id: id.to_string(),
            hostname: hangar_common::ids::hostname(),
            address: host.to_string(),
            port,
            role,
            zone: String::new(),
            capacity: 0,
        })
    }
}

/// The nodes a backend lists, by id. None until the first complete listing.
pub type Listing = watch::Receiver<Option<Arc<BTreeMap<String, Node>>>>;

/// One way of finding the cluster. A new backend is one module implementing this.
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    /// `static`, `kubernetes` or `consul` (as `hangar status` shows it).
    fn name(&self) -> &'static str;

    /// Makes `me` known, or refreshes it (idempotent).
    async fn announce(&self, me: &Node) -> Result<()>;

    /// How often `announce` runs again (a TTL check's refresh, a deleted resource put back).
    fn refresh_every(&self) -> Duration {
        Duration::from_secs(30)
    }

    /// Removes `me` (a clean shutdown).
    async fn withdraw(&self, me: &Node) -> Result<()>;

    /// Every node listed now.
    async fn list(&self) -> Result<Vec<Node>>;

    /// Follows the listing, sending each complete one to `tx` as it changes. Returns only
    /// on an error; the caller starts it again after a pause.
    async fn follow(&self, tx: &watch::Sender<Option<Arc<BTreeMap<String, Node>>>>) -> Result<()>;

    /// Shows the control plane's view of a node where the backend can (Kubernetes: the
    /// resource's status), and removes the entries of nodes silent for long where the
    /// backend would keep them forever (Consul's catalog). `last_seen_ms`: the node's last
    /// heartbeat, 0 if it was never heard from.
    async fn report(&self, _node: &Node, _healthy: bool, _last_seen_ms: u64) -> Result<()> {
        Ok(())
    }
}

/// The backend the configuration names: Kubernetes, Consul, or the static list.
pub async fn from_config(cfg: &Config) -> Result<Arc<dyn Backend>> {
    if let Some(k) = cfg.kubernetes() {
        return Ok(Arc::new(kubernetes::Kubernetes::connect(k).await?));
    }
    if let Some(c) = &cfg.consul_discovery {
        return Ok(Arc::new(consul::Consul::new(c.clone())?));
    }
    Ok(Arc::new(static_list::StaticList::new(cfg.bootstrap_peers.clone())))
}

/// Announces `me` now and every `refresh_every`, until [`Announcer::stop`] withdraws it.
pub struct Announcer {
    task: tokio::task::JoinHandle<()>,
    backend: Arc<dyn Backend>,
    me: Node,
}

impl Announcer {
    /// Refuses an address others cannot dial (`0.0.0.0`, `::`): through a discovery
    /// backend it would send every peer to itself.
    pub fn start(backend: Arc<dyn Backend>, me: Node) -> Result<Announcer> {
        let unspecified = me.address.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_unspecified());
        if unspecified && backend.name() != static_list::NAME {
            return Err(Error::Invalid(format!(
                "rpc_public_addr: this process would announce {}, which others cannot dial; set \
                 rpc_public_addr (HANGAR_RPC_PUBLIC_ADDR) to the address they reach it at, e.g. the pod's IP",
                me.addr()
            )));
        }
        let (b, node) = (backend.clone(), me.clone());
        let task = tokio::spawn(async move {
            loop {
                let every = match b.announce(&node).await {
                    Ok(()) => b.refresh_every(),
                    Err(e) => {
                        tracing::warn!(backend = b.name(), error = %e, "cannot announce this node; retrying");
                        Duration::from_secs(2)
                    }
                };
                tokio::time::sleep(every).await;
            }
        });
        Ok(Announcer { task, backend, me })
    }

    /// Stops refreshing and withdraws the announcement (bounded: a shutdown never hangs on it).
    pub async fn stop(self) {
        self.task.abort();
        match tokio::time::timeout(Duration::from_secs(5), self.backend.withdraw(&self.me)).await {
            Ok(Ok(())) => tracing::info!(backend = self.backend.name(), "announcement withdrawn"),
            Ok(Err(e)) => tracing::warn!(backend = self.backend.name(), error = %e, "cannot withdraw the announcement"),
            Err(_) => tracing::warn!(backend = self.backend.name(), "withdrawing the announcement timed out"),
        }
    }
}

/// How often nodes look up the control plane and the data nodes again.
const LOOKUP_EVERY: Duration = Duration::from_secs(10);

/// Where a node finds the cluster: `bootstrap_peers` (control planes), plus whatever the
/// backend lists (control planes, and data nodes other than `own_addr` as layout sources),
/// looked up again every few seconds.
pub fn peers(backend: Arc<dyn Backend>, bootstrap: Vec<String>, own_addr: Option<String>) -> PeerList {
    let (tx, rx) = watch::channel(Arc::new(Peers { control: bootstrap.clone(), data: vec![] }));
    if backend.name() == static_list::NAME {
        return rx;
    }
    tokio::spawn(async move {
        let mut found_control = false;
        loop {
            match backend.list().await {
                Ok(nodes) => {
                    found_control = nodes.iter().any(|n| n.role == Role::Control);
                    let mut p = Peers { control: bootstrap.clone(), data: vec![] };
                    for n in nodes {
                        match n.role {
                            Role::Control => p.control.push(n.addr()),
                            Role::Data if Some(n.addr()) != own_addr => p.data.push(n.addr()),
                            Role::Data | Role::Frontend => {}
                        }
                    }
                    for list in [&mut p.control, &mut p.data] {
                        list.sort();
                        list.dedup();
                    }
                    tx.send_if_modified(|cur| {
                        let changed = **cur != p;
                        if changed {
                            tracing::info!(control = ?p.control, data = p.data.len(), "cluster found through discovery");
                            *cur = Arc::new(p);
                        }
                        changed
                    });
                }
                Err(e) => tracing::warn!(backend = backend.name(), error = %e, "cannot look the cluster up"),
            }
            if tx.is_closed() {
                return;
            }
            // Until a control plane is listed, look again every second.
            let wait = if found_control { LOOKUP_EVERY } else { Duration::from_secs(1) };
            tokio::time::sleep(wait).await;
        }
    });
    rx
}

/// Follows the backend's listing for as long as the task runs, starting again after errors.
pub fn follow(backend: Arc<dyn Backend>) -> Listing {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        loop {
            if let Err(e) = backend.follow(&tx).await {
                tracing::warn!(backend = backend.name(), error = %e, "discovery stream broke; following again");
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    rx
}
