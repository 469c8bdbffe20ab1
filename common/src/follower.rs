//! How data nodes and frontends stay in touch with the control plane: they follow its
//! layout (WatchLayout, reconnecting whenever the stream breaks) and send heartbeats.
//! While the control plane is away they keep the last layout they saw.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hangar_proto::control::{GetLayoutRequest, HeartbeatRequest, LayoutHistory};
use tokio::sync::{Notify, watch};

use crate::rpc::{layout_client, lazy_channel, membership_client};

/// Time between heartbeats; the control plane marks a member failed after a few missed.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How long the layout is followed from a data node before the control planes are tried
/// again.
const FALLBACK_FOR: Duration = Duration::from_secs(20);

/// Where a node finds the cluster: the control plane's addresses (heartbeats and
/// identification go there) and data nodes' addresses, which serve the last layout they
/// received when no control plane answers. Filled from `bootstrap_peers` or discovery.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Peers {
    pub control: Vec<String>,
    pub data: Vec<String>,
}

pub type PeerList = watch::Receiver<Arc<Peers>>;

impl Peers {
    /// A list that never changes: the control plane's addresses.
    pub fn fixed(addrs: Vec<String>) -> PeerList {
        watch::channel(Arc::new(Peers { control: addrs, data: vec![] })).1
    }

    /// Where to ask for the layout, in order: control planes, then data nodes.
    fn layout_sources(&self) -> Vec<String> {
        let mut all = self.control.clone();
        all.extend(self.data.iter().filter(|a| !self.control.contains(a)).cloned());
        all
    }
}

/// Follows the layout history the control plane at one of `peers` publishes (or, while
/// none answers, a data node's copy), starting from `initial`. `on_update` sees every
/// newer history (data nodes persist it there).
pub fn follow_layout(
    peers: PeerList,
    secret: String,
    initial: LayoutHistory,
    on_update: impl Fn(&LayoutHistory) + Send + Sync + 'static,
) -> watch::Receiver<Arc<LayoutHistory>> {
    let (tx, rx) = watch::channel(Arc::new(initial));
    tokio::spawn(async move {
        let mut attempt = 0usize;
        loop {
            let (sources, control) = {
                let p = peers.borrow();
                (p.layout_sources(), p.control.clone())
            };
            // Each round starts with the control planes; a source that fails moves to the next.
            let peer = match sources.get(attempt % sources.len().max(1)) {
                Some(p) => p.clone(),
                None => {
                    tokio::time::sleep(RETRY_AFTER).await;
                    continue;
                }
            };
            // A data node is a fallback: its stream never ends by itself, so it is followed
            // for a while only, then the control planes are tried again.
            let fallback = !control.contains(&peer);
            let followed = if fallback {
                tokio::time::timeout(FALLBACK_FOR, watch_once(&peer, &secret, &tx, &on_update)).await.unwrap_or(Ok(()))
            } else {
                watch_once(&peer, &secret, &tx, &on_update).await
            };
            match followed {
                Ok(()) => {
                    if !fallback {
                        tracing::info!(peer = %peer, "layout stream ended; reconnecting");
                    }
                    attempt = 0;
                }
                Err(e) => {
                    tracing::debug!(peer = %peer, error = %e, "cannot follow the layout; trying the next source");
                    attempt += 1;
                }
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(RETRY_AFTER).await;
        }
    });
    rx
}

/// The newest layout version a history holds (0 before the first).
pub fn current_version(h: &LayoutHistory) -> u64 {
    h.versions.last().map(|l| l.version).unwrap_or(0)
}

async fn watch_once(
    peer: &str,
    secret: &str,
    tx: &watch::Sender<Arc<LayoutHistory>>,
    on_update: &(impl Fn(&LayoutHistory) + Send + Sync),
) -> Result<(), crate::Error> {
    let mut client = layout_client(lazy_channel(peer)?, secret)?;
    let mut stream = client.watch_layout(GetLayoutRequest {}).await?.into_inner();
    while let Some(history) = stream.next().await {
        let history = history?;
        let cur = tx.borrow().clone();
        // The control plane bumps the revision on every change (acks, syncs, addresses).
        if (current_version(&history), history.revision) > (current_version(&cur), cur.revision) {
            if current_version(&history) > current_version(&cur) {
                tracing::info!(version = current_version(&history), "layout received");
            }
            on_update(&history);
            tx.send_replace(Arc::new(history));
        }
    }
    Ok(())
}

/// Sends the heartbeat `make` builds to the control plane every HEARTBEAT_EVERY, and at
/// once whenever `nudge` is notified, for as long as the task runs.
pub fn spawn_heartbeat(
    peers: PeerList,
    secret: String,
    make: impl Fn() -> HeartbeatRequest + Send + Sync + 'static,
    nudge: Arc<Notify>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // One lazily connecting client per control plane, kept across heartbeats.
        let mut clients: std::collections::HashMap<String, crate::rpc::MembershipGrpc> = Default::default();
        let mut attempt = 0usize;
        loop {
            let control = peers.borrow().control.clone();
            let peer = control.get(attempt % control.len().max(1)).cloned().unwrap_or_default();
            let sent = async {
                if peer.is_empty() {
                    return Err(crate::Error::Config("no control plane known yet".into()));
                }
                let mut c = match clients.get(&peer) {
                    Some(c) => c.clone(),
                    None => {
                        let c = membership_client(lazy_channel(&peer)?, &secret)?;
                        clients.insert(peer.clone(), c.clone());
                        c
                    }
                };
                c.heartbeat(make()).await?;
                Ok::<_, crate::Error>(())
            };
            if let Err(e) = tokio::time::timeout(HEARTBEAT_EVERY, sent)
                .await
                .unwrap_or_else(|_| Err(crate::Error::Rpc(tonic::Status::deadline_exceeded("heartbeat timed out"))))
            {
                tracing::debug!(peer = %peer, error = %e, "heartbeat failed");
                attempt += 1;
            }
            tokio::select! {
                _ = tokio::time::sleep(HEARTBEAT_EVERY) => {}
                _ = nudge.notified() => {}
            }
        }
    })
}

/// How long a data node starting without an id waits for the control plane to say
/// whether it is a node that lost its directories (longer than the control plane takes to
/// see a node stop heartbeating).
const IDENTIFY_FOR: Duration = Duration::from_secs(20);

/// Asks the control plane (any of `peers`) whether the layout has a silent node at
/// `rpc_addr` whose id this node should take back. None: start as a new node (also when no
/// control plane answered within IDENTIFY_FOR).
pub async fn identify(peers: &PeerList, secret: &str, rpc_addr: &str) -> Option<String> {
    let deadline = tokio::time::Instant::now() + IDENTIFY_FOR;
    loop {
        let control = peers.borrow().control.clone();
        for peer in &control {
            let asked = async {
                let mut c = membership_client(lazy_channel(peer)?, secret)?;
                let req = hangar_proto::control::IdentifyRequest { rpc_addr: rpc_addr.to_string() };
                Ok::<_, crate::Error>(c.identify(req).await?.into_inner())
            };
            match tokio::time::timeout(HEARTBEAT_EVERY, asked).await {
                Ok(Ok(r)) if r.wait => {
                    tracing::info!(
                        "a node of the layout had this address moments ago; waiting to learn whether it is gone"
                    );
                }
                Ok(Ok(r)) => return (!r.node_id.is_empty()).then_some(r.node_id),
                Ok(Err(e)) => {
                    tracing::debug!(peer = %peer, error = %e, "cannot ask the control plane who this node is")
                }
                Err(_) => tracing::debug!(peer = %peer, "the control plane did not say who this node is in time"),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!("no control plane answered; starting as a new node");
            return None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
}
