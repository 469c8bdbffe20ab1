//! A data node's tables as a peer sees them: its metadata gRPC service with the cluster
//! secret, for tests that read replicas one by one or write as another writer would.

use std::future::Future;
use std::time::Duration;

use hangar_common::call::LAYOUT_VERSION_HEADER;
use hangar_common::rpc::{MetaGrpc, add_secret, lazy_channel, meta_client};
use hangar_proto::metadata::Entry;

use crate::cluster::Cluster;

/// How long one call may take.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// A metadata client of data node `i` with the cluster secret (what its peers use).
pub fn meta(cluster: &Cluster, i: usize) -> MetaGrpc {
    let channel = lazy_channel(&cluster.data[i].addr.to_string()).expect("channel to a data node");
    meta_client(channel, add_secret(&cluster.rpc_secret).expect("cluster secret"))
}

/// `msg` stamped with the layout version, as every internal call is (a call without one
/// counts as made with a retired version and is refused).
pub fn at_layout<T>(msg: T, version: u64) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert(LAYOUT_VERSION_HEADER, version.into());
    req
}

/// The reply of a gRPC call, or why there was none.
pub async fn rpc<T>(call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>) -> Result<T, String> {
    match tokio::time::timeout(RPC_TIMEOUT, call).await {
        Ok(Ok(reply)) => Ok(reply.into_inner()),
        Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
        Err(_) => Err(format!("no answer within {RPC_TIMEOUT:?}")),
    }
}

/// Whether an object-table entry is for object `key` (the entry key is the bucket id, then
/// the object key, terminated by 0x00 0x01). Callers' keys never end with another's key,
/// so the suffix names one object.
pub fn is_for(entry: &Entry, key: &str) -> bool {
    let mut suffix = key.as_bytes().to_vec();
    suffix.extend_from_slice(&[0x00, 0x01]);
    entry.key.ends_with(&suffix)
}
