//! The repair side of the admin API: commands fanned out to the data nodes
//! (`NodeAdminService`), block information gathered from the tables and the nodes, and the
//! removal of a node that is gone for good.

use hangar_common::call::Method;
use hangar_common::cluster::{NodeRef, block_partition};
use hangar_common::hash::BlockHash;
use hangar_model::Store;
use hangar_model::keys::prefix_end;
use hangar_model::schema::{PendingVersions, parse_block_ref_key, pending_key};
use hangar_proto::control::*;
use hangar_proto::metadata::Table;
use tonic::Status;

use crate::layout::LayoutManager;
use crate::membership::Members;

/// The data nodes a command goes to: every one heard from or in the layout, or the one
/// `node` names (its id or a unique prefix).
pub fn data_nodes(members: &Members, layout: &LayoutManager, node: &str) -> Result<Vec<NodeRef>, Status> {
    let mut all: Vec<NodeRef> = members
        .list()
        .into_iter()
        .filter(|m| m.node.role == NodeRole::Data as i32)
        .map(|m| NodeRef { id: m.node.id.as_str().into(), addr: m.node.rpc_addr.as_str().into() })
        .collect();
    for a in layout.current().nodes {
        if !all.iter().any(|n| *n.id == a.node_id) && !a.rpc_addr.is_empty() {
            all.push(NodeRef { id: a.node_id.as_str().into(), addr: a.rpc_addr.as_str().into() });
        }
    }
    all.sort();
    if node.is_empty() {
        return Ok(all);
    }
    if let Some(exact) = all.iter().find(|n| &*n.id == node) {
        return Ok(vec![exact.clone()]);
    }
    let matching: Vec<NodeRef> = all.into_iter().filter(|n| n.id.starts_with(node)).collect();
    match matching.len() {
        0 => Err(Status::not_found(format!("no data node has an id starting with `{node}`"))),
        1 => Ok(matching),
        _ => Err(Status::invalid_argument(format!("`{node}` names more than one data node; give more of the id"))),
    }
}

/// Sends one command to each node; each answer or error, by node.
pub async fn fan_out<M, R, F, Fut>(
    store: &Store,
    nodes: &[NodeRef],
    msg: M,
    call: F,
) -> Vec<(NodeRef, Result<R, hangar_common::Error>)>
where
    M: Clone,
    F: Fn(hangar_common::rpc::NodeAdminGrpc, tonic::Request<M>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<R>, tonic::Status>>,
{
    let cluster = store.cluster();
    let version = cluster.view().version();
    let mut out = Vec::new();
    for n in nodes {
        let answer = match cluster.node_admin(n) {
            Ok(c) => cluster.call(n, Method::NodeAdmin, version, msg.clone(), |r| call(c, r)).await,
            Err(e) => Err(e),
        };
        out.push((n.clone(), answer));
    }
    out
}

/// The data versions that reference a block, and which nodes hold its file.
pub async fn block_info(
    store: &Store,
    members: &Members,
    layout: &LayoutManager,
    hex_hash: &str,
) -> Result<BlockInfoReply, Status> {
    let hash = hex::decode(hex_hash.trim())
        .ok()
        .and_then(|b| BlockHash::from_slice(&b))
        .ok_or_else(|| Status::invalid_argument(format!("`{hex_hash}` is not a block hash (64 hex digits)")))?;
    let p = block_partition(&hash.0);
    let (entries, _) = store
        .tables
        .range_entries(Table::BlockRef, &hash.0, &prefix_end(&hash.0), 10_000)
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut uses = Vec::new();
    for e in entries {
        let Some((_, dv)) = parse_block_ref_key(&e.key) else { continue };
        let pending = store.tables.get::<PendingVersions>(&pending_key(&dv)).await.ok().flatten();
        let pending_for = pending
            .map(|f| {
                let v = f.value;
                if v.upload_id.is_empty() {
                    format!("object {}/{}", hex::encode(&v.bucket_id), v.key)
                } else {
                    format!("part {} of upload {}", v.part_number, hex::encode(&v.upload_id))
                }
            })
            .unwrap_or_default();
        uses.push(BlockUse { data_version: dv.into(), deleted: e.tombstone, timestamp: e.timestamp, pending_for });
    }
    let view = store.cluster().view();
    let replicas = view.holders(p);
    let mut holders = Vec::new();
    for n in data_nodes(members, layout, "")? {
        let (present, error) = match store.blocks.has(&n, vec![hash.0.to_vec()]).await {
            Ok(v) => (v.first().copied().unwrap_or(false), String::new()),
            Err(e) => (false, e.to_string()),
        };
        holders.push(BlockHolder {
            replica: replicas.iter().any(|r| r.id == n.id),
            node: n.id.to_string(),
            present,
            error,
        });
    }
    Ok(BlockInfoReply { hash: hash.to_hex(), partition: p as u32, uses, holders })
}
