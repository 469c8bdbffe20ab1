//! RPC plumbing: connecting to peers, and the two credentials calls carry —
//! the cluster's `rpc_secret` on internal calls, the admin token on admin calls.

use std::sync::Arc;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use hangar_proto::block::block_service_client::BlockServiceClient;
use hangar_proto::control::admin_service_client::AdminServiceClient;
use hangar_proto::control::layout_service_client::LayoutServiceClient;
use hangar_proto::control::membership_service_client::MembershipServiceClient;
use hangar_proto::metadata::metadata_service_client::MetadataServiceClient;

pub const SECRET_HEADER: &str = "x-hangar-rpc-secret";
/// Largest gRPC message accepted: metadata range replies and block chunks stay well below.
pub const MAX_MESSAGE: usize = 32 * 1024 * 1024;
/// Block data a writer sends travels in messages of this size (a block is sent as the
/// frontend cuts it, before the whole block need be in one buffer).
pub const BLOCK_CHUNK: usize = 256 * 1024;
/// Block data a data node sends back travels in messages of up to this size: a block of
/// the default size (1 MiB) in one message and one HTTP/2 frame, which the reader takes as
/// it arrived (`block_wire`) instead of joining chunks into a new buffer (a copy of every
/// byte read). Below `MAX_MESSAGE`, so the largest block (64 MiB) goes in four.
pub const BLOCK_REPLY_CHUNK: usize = 16 * 1024 * 1024;

/// HTTP/2 between the processes of a cluster, both ways. Frames big enough for a block's
/// GetBlock message of the default size in one, which the reader then takes without a
/// copy (`block_wire`); at HTTP/2's default of 16 KiB, a 256 KiB chunk took seventeen
/// frames, each handled (and its reader woken) on its own. Flow-control windows big
/// enough for the blocks of many requests on one connection at once: with hyper's server
/// defaults (1 MiB per connection and per stream), a frontend's PutBlocks to one data node
/// could have only 1 MiB on the way. A window bounds what a peer may send before the
/// receiver reads it, and both ends read blocks as they arrive. Together these made blocks
/// between processes 15-40% faster (BENCHMARKS.md).
pub(crate) const FRAME_SIZE: u32 = 2 * 1024 * 1024;
pub(crate) const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
pub(crate) const CONNECTION_WINDOW: u32 = 32 * 1024 * 1024;

/// Adds a fixed header to every outgoing call.
#[derive(Clone)]
pub struct AddHeader {
    name: &'static str,
    value: MetadataValue<Ascii>,
}

impl Interceptor for AddHeader {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut().insert(self.name, self.value.clone());
        Ok(req)
    }
}

/// Refuses calls whose header does not equal the expected value (compared in constant time).
#[derive(Clone)]
pub struct RequireHeader {
    name: &'static str,
    expected: Arc<[u8]>,
    what: &'static str,
}

impl Interceptor for RequireHeader {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let given = req.metadata().get(self.name).map(|v| v.as_bytes()).unwrap_or_default();
        if constant_time_eq(given, &self.expected) {
            Ok(req)
        } else {
            Err(Status::unauthenticated(format!("missing or wrong {}", self.what)))
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn header_value(s: &str) -> Result<MetadataValue<Ascii>, crate::Error> {
    s.parse().map_err(|_| crate::Error::Config("secret or token holds characters not allowed in a header".into()))
}

/// Client side of the cluster secret.
pub fn add_secret(secret: &str) -> Result<AddHeader, crate::Error> {
    Ok(AddHeader { name: SECRET_HEADER, value: header_value(secret)? })
}

/// Server side of the cluster secret.
pub fn require_secret(secret: &str) -> RequireHeader {
    RequireHeader { name: SECRET_HEADER, expected: secret.as_bytes().into(), what: "cluster rpc secret" }
}

/// Client side of the admin token.
pub fn add_admin_token(token: &str) -> Result<AddHeader, crate::Error> {
    Ok(AddHeader { name: "authorization", value: header_value(&format!("Bearer {token}"))? })
}

/// Server side of the admin token.
pub fn require_admin_token(token: &str) -> RequireHeader {
    RequireHeader {
        name: "authorization",
        expected: format!("Bearer {token}").into_bytes().into(),
        what: "admin token (set HANGAR_ADMIN_TOKEN or --data-dir)",
    }
}

/// How often an open connection to a peer is pinged (by both ends), and how long the ping may go
/// unanswered before the connection counts as dead. A peer cut off by the network or gone
/// without closing its connections (a host that died, a container disconnected) is noticed
/// this way: every call on the connection fails at once and the next one dials again
/// (resolving a name again, so a peer that came back under a new IP is reached), instead
/// of each call waiting out its timeout on a connection nobody will ever answer.
/// The timeout is generous: a ping answer can queue behind block data on a busy link, and
/// dropping a live connection fails every call on it.
pub(crate) const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
pub(crate) const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// A channel that connects on first use and reconnects after failures; over TLS when the
/// process was configured with `[rpc_tls]` (see `tls::use_for_clients`).
pub fn lazy_channel(addr: &str) -> Result<Channel, crate::Error> {
    let tls = crate::tls::client();
    let host = addr.split("://").last().unwrap_or(addr);
    let uri = format!("{}://{host}", if tls.is_some() { "https" } else { "http" });
    let mut ep = Endpoint::from_shared(uri)
        .map_err(|e| crate::Error::Config(format!("bad rpc address `{addr}`: {e}")))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true)
        .max_frame_size(FRAME_SIZE)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW);
    if let Some(tls) = tls {
        ep = ep.tls_config(tls.clone()).map_err(|e| crate::Error::Config(format!("rpc TLS: {e}")))?;
    }
    Ok(ep.connect_lazy())
}

pub type AuthChannel = InterceptedService<Channel, AddHeader>;
pub type MetaGrpc = MetadataServiceClient<AuthChannel>;
pub type BlockGrpc = BlockServiceClient<AuthChannel>;
pub type AdminGrpc = AdminServiceClient<AuthChannel>;
pub type LayoutGrpc = LayoutServiceClient<AuthChannel>;
pub type MembershipGrpc = MembershipServiceClient<AuthChannel>;
pub type NodeAdminGrpc = hangar_proto::control::node_admin_service_client::NodeAdminServiceClient<AuthChannel>;

pub fn layout_client(ch: Channel, secret: &str) -> Result<LayoutGrpc, crate::Error> {
    Ok(LayoutServiceClient::with_interceptor(ch, add_secret(secret)?).max_decoding_message_size(MAX_MESSAGE))
}

pub fn membership_client(ch: Channel, secret: &str) -> Result<MembershipGrpc, crate::Error> {
    Ok(MembershipServiceClient::with_interceptor(ch, add_secret(secret)?))
}

/// A metadata client carrying `auth` (see `add_secret`).
pub fn meta_client(ch: Channel, auth: AddHeader) -> MetaGrpc {
    MetadataServiceClient::with_interceptor(ch, auth)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

/// A block client carrying `auth` (see `add_secret`).
pub fn block_client(ch: AuthChannel) -> BlockGrpc {
    BlockServiceClient::new(ch).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE)
}

pub fn admin_client(ch: Channel, token: &str) -> Result<AdminGrpc, crate::Error> {
    Ok(AdminServiceClient::with_interceptor(ch, add_admin_token(token)?))
}

/// Accepted connections of a gRPC server, with Nagle off: tonic applies its nodelay
/// setting only to listeners it binds itself, and a response's last small HTTP/2 frame
/// otherwise waits ~40 ms for the peer's delayed ACK.
pub fn incoming(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|s| {
        if let Ok(s) = &s {
            let _ = s.set_nodelay(true);
        }
        s
    })
}

/// Serves `router` on `listener` until `shutdown`, then gives open calls 10 s to finish:
/// long-lived streams (WatchLayout) would otherwise hold a graceful shutdown forever.
pub async fn serve_until(
    router: tonic::transport::server::Router,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), crate::Error> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(router.serve_with_incoming_shutdown(incoming(listener), async {
        let _ = stopped.await;
    }));
    tokio::select! {
        r = &mut server => return flatten(r),
        _ = shutdown => {}
    }
    let _ = stop.send(());
    match tokio::time::timeout(std::time::Duration::from_secs(10), &mut server).await {
        Ok(r) => flatten(r),
        Err(_) => {
            tracing::warn!("rpc calls still open after 10 s; stopping anyway");
            server.abort();
            Ok(())
        }
    }
}

fn flatten(r: Result<Result<(), tonic::transport::Error>, tokio::task::JoinError>) -> Result<(), crate::Error> {
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(crate::Error::Config(format!("rpc server failed: {e}"))),
        Err(e) => Err(crate::Error::Config(format!("rpc server task failed: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_round_trip() {
        let mut add = add_secret("s3cr3t").unwrap();
        let mut check = require_secret("s3cr3t");
        let req = add.call(Request::new(())).unwrap();
        assert!(check.call(req).is_ok());
        let mut wrong = require_secret("other");
        let req = add.call(Request::new(())).unwrap();
        assert_eq!(wrong.call(req).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert!(check.call(Request::new(())).is_err());
    }
}
