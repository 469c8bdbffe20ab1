//! The repair and worker commands a data node takes from the control plane
//! (`NodeAdminService`, cluster secret): start a repair, set worker variables, list and
//! retry the blocks whose resync fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hangar_common::hash::BlockHash;
use hangar_common::worker::Workers;
use hangar_proto::control::node_admin_service_server::NodeAdminService;
use hangar_proto::control::*;
use tonic::{Request, Response, Status};

use crate::meta_store::{MetaStore, ResyncItem};
use crate::work::{block_scan, lifecycle, scrub, vars::Vars};

pub struct NodeAdminRpc {
    pub meta: Arc<MetaStore>,
    pub vars: Vars,
    pub workers: Workers,
    /// Asks the anti-entropy worker for a round now.
    pub force_tables: Arc<AtomicBool>,
    /// Where the block scan's request is kept.
    pub repair_state: sled::Tree,
    pub scrub_state: sled::Tree,
}

/// Failing blocks listed per node, at most (the total is counted).
const MAX_LISTED: usize = 1000;

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

#[tonic::async_trait]
impl NodeAdminService for NodeAdminRpc {
    async fn repair(&self, req: Request<RepairRequest>) -> Result<Response<RepairReply>, Status> {
        let r = req.into_inner();
        let msg = match r.kind() {
            RepairKind::Tables => {
                self.force_tables.store(true, Ordering::SeqCst);
                "anti-entropy round started".to_string()
            }
            RepairKind::Blocks => {
                block_scan::request(&self.repair_state).map_err(internal)?;
                "block scan started".to_string()
            }
            RepairKind::Lifecycle => {
                lifecycle::request(&self.repair_state).map_err(internal)?;
                "lifecycle pass started".to_string()
            }
            RepairKind::Scrub => {
                let cmd = match r.scrub() {
                    ScrubCommand::Start => scrub::Command::Start,
                    ScrubCommand::Pause => scrub::Command::Pause,
                    ScrubCommand::Resume => scrub::Command::Resume,
                    ScrubCommand::Cancel => scrub::Command::Cancel,
                    ScrubCommand::Unspecified => {
                        return Err(Status::invalid_argument("scrub needs start, pause, resume or cancel"));
                    }
                };
                scrub::command(&self.scrub_state, cmd).map_err(internal)?
            }
            RepairKind::Unspecified => {
                return Err(Status::invalid_argument("repair needs tables, blocks, scrub or lifecycle"));
            }
        };
        self.workers.wake();
        Ok(Response::new(RepairReply { results: vec![msg] }))
    }

    async fn set_worker_variable(
        &self,
        req: Request<WorkerVariableRequest>,
    ) -> Result<Response<WorkerVariablesReply>, Status> {
        let r = req.into_inner();
        if !r.name.is_empty() {
            self.vars.set(&r.name, &r.value).map_err(Status::invalid_argument)?;
            self.workers.wake();
        }
        let variables = self
            .vars
            .list()
            .into_iter()
            .map(|(name, value)| WorkerVariable { node: String::new(), name, value })
            .collect();
        Ok(Response::new(WorkerVariablesReply { variables }))
    }

    async fn block_errors(&self, _req: Request<BlockErrorsRequest>) -> Result<Response<BlockErrorsReply>, Status> {
        let mut errors = Vec::new();
        let mut total = 0;
        for item in self.meta.resync.iter() {
            let (k, v) = item.map_err(internal)?;
            let it = ResyncItem::decode(&v);
            if it.errors > 0 {
                total += 1;
                if errors.len() == MAX_LISTED {
                    continue;
                }
                errors.push(BlockError {
                    node: String::new(),
                    hash: k.to_vec().into(),
                    errors: it.errors,
                    last_try_ms: it.last_try_ms,
                    next_try_ms: it.next_try_ms,
                    last_error: it.last_error,
                });
            }
        }
        Ok(Response::new(BlockErrorsReply { errors, total }))
    }

    async fn retry_blocks(&self, req: Request<RetryBlocksRequest>) -> Result<Response<RetryBlocksReply>, Status> {
        let r = req.into_inner();
        let mut queued = 0;
        if r.all {
            for item in self.meta.resync.iter() {
                let (k, v) = item.map_err(internal)?;
                let mut it = ResyncItem::decode(&v);
                if it.errors > 0 {
                    it.next_try_ms = 0;
                    let _ = self.meta.resync.compare_and_swap(&k, Some(v), Some(it.encode())).map_err(internal)?;
                    queued += 1;
                }
            }
        }
        for h in &r.hashes {
            let hash = hex::decode(h)
                .ok()
                .and_then(|b| BlockHash::from_slice(&b))
                .ok_or_else(|| Status::invalid_argument(format!("`{h}` is not a block hash (64 hex digits)")))?;
            let retried = self
                .meta
                .resync
                .update_and_fetch(hash.0, |old| {
                    old.map(|v| ResyncItem { next_try_ms: 0, ..ResyncItem::decode(v) }.encode())
                })
                .map_err(internal)?;
            if retried.is_some() {
                queued += 1;
            } else if self.meta.live_refs(&hash).map_err(internal)? > 0 {
                // Referenced here but not queued: it is looked for again.
                self.meta.queue_resync(&hash).map_err(internal)?;
                queued += 1;
            }
        }
        self.workers.wake();
        Ok(Response::new(RetryBlocksReply { queued }))
    }
}
