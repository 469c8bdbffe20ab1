//! The one path every internal call takes. It stamps every call with the layout version of
//! the view its replicas were chosen from (data nodes refuse writes made with an outdated
//! layout, and reads made with a retired one), bounds the call by the
//! configured timeout, opens a tracing span, puts the span's trace context into the call's
//! metadata (so the callee's spans join the caller's trace) and counts the call in the
//! metrics. Quorum calls, streams and block transfers all come through `Cluster::call` and
//! `Cluster::next_message`.

use std::future::Future;
use std::time::Instant;

use tonic::metadata::MetadataValue;
use tracing::Instrument;

use crate::cluster::{Cluster, NodeRef};
use crate::telemetry::metrics;
use crate::{Error, Result};

/// Metadata header carrying the layout version the caller chose its replicas with.
pub const LAYOUT_VERSION_HEADER: &str = "x-hangar-layout-version";

/// Every internal call a client makes: its name (a metric label) and whether it writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Insert,
    Range,
    SyncRange,
    Prepare,
    Accept,
    PutBlock,
    GetBlock,
    HasBlocks,
    MerkleRoots,
    MerkleLeaves,
    LeafEntries,
    DropTombstones,
    /// A repair or worker command to a data node.
    NodeAdmin,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Get => "Get",
            Method::Insert => "Insert",
            Method::Range => "Range",
            Method::SyncRange => "SyncRange",
            Method::Prepare => "Prepare",
            Method::Accept => "Accept",
            Method::PutBlock => "PutBlock",
            Method::GetBlock => "GetBlock",
            Method::HasBlocks => "HasBlocks",
            Method::MerkleRoots => "MerkleRoots",
            Method::MerkleLeaves => "MerkleLeaves",
            Method::LeafEntries => "LeafEntries",
            Method::DropTombstones => "DropTombstones",
            Method::NodeAdmin => "NodeAdmin",
        }
    }

    /// Writes are refused by nodes that know a newer layout than the one they were made
    /// with; reads only by nodes that retired it.
    pub fn writes(self) -> bool {
        matches!(self, Method::Insert | Method::Prepare | Method::Accept | Method::PutBlock | Method::DropTombstones)
    }
}

/// The layout version a request carries (0 when absent).
pub fn layout_version_of<T>(req: &tonic::Request<T>) -> u64 {
    req.metadata().get(LAYOUT_VERSION_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

impl Cluster {
    /// Calls `node`, chosen from the view of layout `version`: `call` receives the prepared
    /// request and performs the gRPC call.
    pub async fn call<M, R, F, Fut>(&self, node: &NodeRef, method: Method, version: u64, msg: M, call: F) -> Result<R>
    where
        F: FnOnce(tonic::Request<M>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let mut req = tonic::Request::new(msg);
        req.metadata_mut().insert(LAYOUT_VERSION_HEADER, MetadataValue::from(version));
        let span = tracing::debug_span!("rpc.call", otel.name = method.name(), otel.kind = "client", node = %node.id);
        crate::telemetry::traces::inject(&span, req.metadata_mut());
        let start = Instant::now();
        let (result, timed_out) = match tokio::time::timeout(self.timeout(), call(req)).instrument(span).await {
            Ok(Ok(resp)) => (Ok(resp.into_inner()), false),
            Ok(Err(status)) => (Err(Error::from(status)), false),
            Err(_) => (
                Err(Error::Unavailable(format!(
                    "node {} did not answer {} within {:?}",
                    node.id,
                    method.name(),
                    self.timeout()
                ))),
                true,
            ),
        };
        metrics().rpc_call(method.name(), &node.id, result.as_ref().err(), timed_out, start.elapsed());
        result
    }

    /// The next message of a stream a call returned, within the call timeout.
    pub async fn next_message<T, S>(&self, node: &NodeRef, stream: &mut S) -> Result<Option<T>>
    where
        S: futures::Stream<Item = std::result::Result<T, tonic::Status>> + Unpin,
    {
        use futures::StreamExt;
        match tokio::time::timeout(self.timeout(), stream.next()).await {
            Ok(r) => r.transpose().map_err(Error::from),
            Err(_) => Err(Error::Unavailable(format!("node {} stalled mid-stream for {:?}", node.id, self.timeout()))),
        }
    }

    /// Runs `attempt` with the current view; when a data node says the view is outdated,
    /// waits (a few seconds at most) for a newer one and runs it again.
    pub async fn with_fresh_view<T, F, Fut>(&self, mut attempt: F) -> Result<T>
    where
        F: FnMut(std::sync::Arc<crate::cluster::View>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut tries = 0;
        loop {
            let view = self.view();
            let version = view.version();
            match attempt(view).await {
                Err(Error::StaleLayout(why)) if tries < 3 => {
                    tries += 1;
                    tracing::debug!(%why, "a data node knows a newer layout; waiting for it");
                    self.wait_newer(version, std::time::Duration::from_secs(5)).await;
                }
                r => return r,
            }
        }
    }

    /// Waits (at most `limit`) until the history's current version is above `version`.
    pub async fn wait_newer(&self, version: u64, limit: std::time::Duration) -> bool {
        let mut rx = self.watch();
        let wait = async {
            loop {
                if rx.borrow_and_update().versions.last().map(|l| l.version).unwrap_or(0) > version {
                    return true;
                }
                if rx.changed().await.is_err() {
                    return false;
                }
            }
        };
        tokio::time::timeout(limit, wait).await.unwrap_or(false)
    }
}
