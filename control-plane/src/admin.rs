//! The admin API: keys, buckets, permissions and cluster status.

use std::sync::Arc;

use hangar_common::Error;
use hangar_common::cluster::{PARTITIONS, View};
use hangar_model::Store;
use hangar_model::catalog::{Created, Rights};
use hangar_proto::control::admin_service_server::AdminService;
use hangar_proto::control::*;
use hangar_proto::model::{AccessKey, Bucket};
use tonic::{Request, Response, Status};

use crate::layout::LayoutManager;
use crate::membership::Members;
use crate::repair;

pub struct AdminRpc {
    pub store: Store,
    pub layout: Arc<LayoutManager>,
    pub members: Arc<Members>,
    /// This control plane, as `hangar status` lists it.
    pub info: NodeInfo,
}

fn status(e: Error) -> Status {
    match e {
        Error::NotFound(_) => Status::not_found(e.to_string()),
        Error::Conflict(_) => Status::already_exists(e.to_string()),
        Error::Invalid(_) => Status::invalid_argument(e.to_string()),
        Error::Unavailable(_) => Status::unavailable(e.to_string()),
        _ => Status::internal(e.to_string()),
    }
}

impl AdminRpc {
    async fn key_info(&self, key: &AccessKey, with_secret: bool) -> Result<KeyInfo, Error> {
        let mut buckets = Vec::new();
        for (id, r) in self.store.grants_of(&key.id).await? {
            let name = self.store.bucket_by_id(&id).await?.map(|b| b.name).unwrap_or_default();
            buckets.push(BucketGrant {
                bucket_id: hex::encode(&id),
                bucket_name: name,
                read: r.read,
                write: r.write,
                owner: r.owner,
            });
        }
        Ok(KeyInfo {
            access_key_id: key.id.clone(),
            name: key.name.clone(),
            secret_access_key: if with_secret { key.secret.clone() } else { String::new() },
            allow_create_bucket: key.allow_create_bucket,
            created_ms: key.created_ms,
            buckets,
            root: key.root,
        })
    }

    async fn bucket_info(&self, b: &Bucket, with_usage: bool) -> Result<BucketInfo, Error> {
        let aliases = self.store.aliases_of(&b.id).await?;
        self.bucket_info_named(b, with_usage, aliases).await
    }

    /// A bucket's info, its names given. It is shown under the name it was created with
    /// while that name is still one of its names, else under its first name.
    async fn bucket_info_named(&self, b: &Bucket, with_usage: bool, aliases: Vec<String>) -> Result<BucketInfo, Error> {
        let mut keys = Vec::new();
        for (key_id, r) in self.store.grants_on(&b.id).await? {
            let name = self.store.get_key(&key_id).await?.map(|k| k.value.name).unwrap_or_default();
            keys.push(KeyGrant { access_key_id: key_id, key_name: name, read: r.read, write: r.write, owner: r.owner });
        }
        let (objects, bytes) = if with_usage { self.store.bucket_usage(&b.id).await? } else { (0, 0) };
        let uploads = if with_usage { self.store.upload_count(&b.id).await? } else { 0 };
        let name = if aliases.is_empty() || aliases.contains(&b.name) { b.name.clone() } else { aliases[0].clone() };
        Ok(BucketInfo {
            id: hex::encode(&b.id),
            name,
            created_ms: b.created_ms,
            keys,
            objects,
            bytes,
            aliases,
            max_size: b.max_size,
            max_objects: b.max_objects,
            uploads,
            website: b.website.is_some(),
            website_index: b.website.as_ref().map(|w| w.index_document.clone()).unwrap_or_default(),
            website_error: b.website.as_ref().map(|w| w.error_document.clone()).unwrap_or_default(),
        })
    }
}

impl AdminRpc {
    /// The layout plan with each node's sync progress as its last heartbeat told it.
    fn plan(&self) -> Result<LayoutPlan, Status> {
        let mut plan = self.layout.plan().map_err(control_status)?;
        let members = self.members.list();
        for n in &mut plan.nodes {
            n.sync_progress = members
                .iter()
                .find(|m| m.node.id == n.node_id)
                .and_then(|m| m.workers.iter().find(|w| w.name == "sync"))
                .map(|w| w.progress.clone())
                .unwrap_or_default();
        }
        Ok(plan)
    }
}

#[tonic::async_trait]
impl AdminService for AdminRpc {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        let history = self.layout.history();
        let layout = self.layout.current();
        let held = crate::layout::counts(&layout);
        let members = self.members.list();
        let view = View::new(history.clone());
        let read_version = (0..PARTITIONS).map(|p| view.read_version(p)).min().unwrap_or(0);
        let progress =
            |id: &str| (history.acked.get(id).copied().unwrap_or(0), history.synced.get(id).copied().unwrap_or(0));
        let mut nodes = Vec::new();
        for a in &layout.nodes {
            let m = members.iter().find(|m| m.node.id == a.node_id);
            let (acked_version, synced_version) = progress(&a.node_id);
            nodes.push(NodeStatus {
                node: Some(m.map(|m| m.node.clone()).unwrap_or_else(|| NodeInfo {
                    id: a.node_id.clone(),
                    rpc_addr: a.rpc_addr.clone(),
                    role: NodeRole::Data as i32,
                    ..Default::default()
                })),
                healthy: m.is_some_and(|m| m.healthy),
                last_seen_ms: m.map(|m| m.last_seen_ms).unwrap_or(0),
                zone: a.zone.clone(),
                capacity: a.capacity,
                tags: a.tags.clone(),
                partitions: held.get(&a.node_id).copied().unwrap_or(0),
                acked_version,
                synced_version,
                workers: m.map(|m| m.workers.clone()).unwrap_or_default(),
                discovery: m.map(|m| m.discovery.clone()).unwrap_or_default(),
            });
        }
        for m in members {
            if !layout.nodes.iter().any(|a| a.node_id == m.node.id) {
                let (acked_version, synced_version) = progress(&m.node.id);
                nodes.push(NodeStatus {
                    zone: m.node.zone.clone(),
                    capacity: m.node.capacity,
                    discovery: m.discovery,
                    node: Some(m.node),
                    healthy: m.healthy,
                    last_seen_ms: m.last_seen_ms,
                    acked_version,
                    synced_version,
                    workers: m.workers,
                    ..Default::default()
                });
            }
        }
        Ok(Response::new(StatusReply {
            control_plane: Some(self.info.clone()),
            layout_version: layout.version,
            nodes,
            replication_factor: layout.replication_factor,
            live_versions: history.versions.iter().map(|l| l.version).collect(),
            read_version,
        }))
    }

    async fn create_key(&self, req: Request<CreateKeyRequest>) -> Result<Response<KeyInfo>, Status> {
        let r = req.into_inner();
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let (id, secret) = (opt(&r.access_key_id), opt(&r.secret_access_key));
        let key = self.store.create_key(&r.name, id.as_deref(), secret.as_deref(), false).await.map_err(status)?;
        Ok(Response::new(self.key_info(&key, true).await.map_err(status)?))
    }

    async fn list_keys(&self, _: Request<ListKeysRequest>) -> Result<Response<ListKeysReply>, Status> {
        let mut keys = Vec::new();
        for k in self.store.list_keys().await.map_err(status)? {
            keys.push(self.key_info(&k.value, false).await.map_err(status)?);
        }
        Ok(Response::new(ListKeysReply { keys }))
    }

    async fn get_key(&self, req: Request<KeyRef>) -> Result<Response<KeyInfo>, Status> {
        let k = self.store.find_key(&req.get_ref().key).await.map_err(status)?;
        Ok(Response::new(self.key_info(&k.value, true).await.map_err(status)?))
    }

    async fn delete_key(&self, req: Request<KeyRef>) -> Result<Response<DeleteReply>, Status> {
        self.store.delete_key(&req.get_ref().key).await.map_err(status)?;
        Ok(Response::new(DeleteReply {}))
    }

    async fn set_key_create_bucket(
        &self,
        req: Request<SetKeyCreateBucketRequest>,
    ) -> Result<Response<KeyInfo>, Status> {
        let r = req.get_ref();
        let key = self.store.set_allow_create_bucket(&r.key, r.allow).await.map_err(status)?;
        Ok(Response::new(self.key_info(&key, false).await.map_err(status)?))
    }

    async fn create_bucket(&self, req: Request<CreateBucketRequest>) -> Result<Response<BucketInfo>, Status> {
        let name = &req.get_ref().name;
        match self.store.create_bucket(name, None).await.map_err(status)? {
            Created::New(b) => Ok(Response::new(self.bucket_info(&b, false).await.map_err(status)?)),
            Created::Taken(_) => Err(Status::already_exists(format!("bucket `{name}` already exists"))),
        }
    }

    async fn list_buckets(&self, _: Request<ListBucketsRequest>) -> Result<Response<ListBucketsReply>, Status> {
        let mut names: std::collections::HashMap<Vec<u8>, Vec<String>> = Default::default();
        for (name, id) in self.store.all_aliases().await.map_err(status)? {
            names.entry(id).or_default().push(name);
        }
        let mut buckets = Vec::new();
        for b in self.store.list_buckets().await.map_err(status)? {
            let aliases = names.remove(b.id.as_ref()).unwrap_or_default();
            buckets.push(self.bucket_info_named(&b, false, aliases).await.map_err(status)?);
        }
        Ok(Response::new(ListBucketsReply { buckets }))
    }

    async fn get_bucket(&self, req: Request<BucketRef>) -> Result<Response<BucketInfo>, Status> {
        let b = self.store.resolve_bucket(&req.get_ref().bucket).await.map_err(status)?;
        Ok(Response::new(self.bucket_info(&b, true).await.map_err(status)?))
    }

    async fn delete_bucket(&self, req: Request<BucketRef>) -> Result<Response<DeleteReply>, Status> {
        let b = self.store.resolve_bucket(&req.get_ref().bucket).await.map_err(status)?;
        self.store.delete_bucket(&b).await.map_err(status)?;
        Ok(Response::new(DeleteReply {}))
    }

    async fn set_bucket_permission(
        &self,
        req: Request<SetBucketPermissionRequest>,
    ) -> Result<Response<BucketInfo>, Status> {
        let r = req.into_inner();
        if !(r.read || r.write || r.owner) {
            return Err(Status::invalid_argument("name at least one of read, write, owner"));
        }
        let b = self.store.resolve_bucket(&r.bucket).await.map_err(status)?;
        let key = self.store.find_key(&r.key).await.map_err(status)?;
        let which = Rights { read: r.read, write: r.write, owner: r.owner };
        self.store.set_rights(&key.value.id, &b.id, which, r.allow).await.map_err(status)?;
        Ok(Response::new(self.bucket_info(&b, false).await.map_err(status)?))
    }

    async fn rename_key(&self, req: Request<RenameKeyRequest>) -> Result<Response<KeyInfo>, Status> {
        let r = req.get_ref();
        let key = self.store.rename_key(&r.key, &r.new_name).await.map_err(status)?;
        Ok(Response::new(self.key_info(&key, false).await.map_err(status)?))
    }

    async fn rotate_key_secret(&self, req: Request<KeyRef>) -> Result<Response<KeyInfo>, Status> {
        let key = self.store.rotate_secret(&req.get_ref().key, None).await.map_err(status)?;
        Ok(Response::new(self.key_info(&key, true).await.map_err(status)?))
    }

    async fn set_bucket_alias(&self, req: Request<SetBucketAliasRequest>) -> Result<Response<BucketInfo>, Status> {
        let r = req.get_ref();
        let b = self.store.resolve_bucket(&r.bucket).await.map_err(status)?;
        if r.add {
            self.store.add_alias(&b, &r.alias).await.map_err(status)?;
        } else {
            self.store.remove_alias(&b, &r.alias).await.map_err(status)?;
        }
        Ok(Response::new(self.bucket_info(&b, false).await.map_err(status)?))
    }

    async fn set_bucket_quotas(&self, req: Request<SetBucketQuotasRequest>) -> Result<Response<BucketInfo>, Status> {
        let r = req.get_ref();
        let b = self.store.resolve_bucket(&r.bucket).await.map_err(status)?;
        let b = self.store.set_quotas(&b, r.max_size, r.max_objects).await.map_err(status)?;
        Ok(Response::new(self.bucket_info(&b, false).await.map_err(status)?))
    }

    async fn set_bucket_website(&self, req: Request<SetBucketWebsiteRequest>) -> Result<Response<BucketInfo>, Status> {
        let r = req.get_ref();
        let b = self.store.resolve_bucket(&r.bucket).await.map_err(status)?;
        let website = if r.allow {
            for (what, doc) in [("index document", &r.index_document), ("error document", &r.error_document)] {
                if doc.len() > 1024 {
                    return Err(Status::invalid_argument(format!("the {what} is longer than 1024 bytes")));
                }
            }
            if r.index_document.contains('/') {
                return Err(Status::invalid_argument("the index document is a name without `/` (e.g. index.html)"));
            }
            // Routing rules set through the S3 API stay, and so do documents not named here;
            // serving the bucket's documents ends a redirection of every request.
            let kept = b.website.clone().unwrap_or_default();
            let or_kept = |given: &str, old: String| if given.is_empty() { old } else { given.to_string() };
            Some(hangar_proto::model::WebsiteConfig {
                index_document: or_kept(&r.index_document, kept.index_document),
                error_document: or_kept(&r.error_document, kept.error_document),
                redirect_all: None,
                routing_rules: kept.routing_rules,
            })
        } else {
            None
        };
        self.store.set_bucket_website(&b, website).await.map_err(status)?;
        let b = self.store.resolve_bucket(&r.bucket).await.map_err(status)?;
        Ok(Response::new(self.bucket_info(&b, false).await.map_err(status)?))
    }

    async fn cleanup_incomplete_uploads(
        &self,
        req: Request<CleanupUploadsRequest>,
    ) -> Result<Response<CleanupUploadsReply>, Status> {
        let r = req.get_ref();
        let b = self.store.resolve_bucket(&r.bucket).await.map_err(status)?;
        let aborted = self.store.abort_uploads_before(&b.id, r.older_than_ms).await.map_err(status)?;
        Ok(Response::new(CleanupUploadsReply { aborted }))
    }

    async fn stage_replication_factor(
        &self,
        req: Request<StageReplicationFactorRequest>,
    ) -> Result<Response<LayoutPlan>, Status> {
        self.layout.stage_replication_factor(req.get_ref().replication_factor).map_err(control_status)?;
        Ok(Response::new(self.plan()?))
    }

    async fn layout_versions(&self, _: Request<ShowLayoutRequest>) -> Result<Response<LayoutVersionsReply>, Status> {
        Ok(Response::new(LayoutVersionsReply { versions: self.layout.versions().map_err(control_status)? }))
    }

    async fn stage_layout_change(&self, req: Request<StagedRole>) -> Result<Response<LayoutPlan>, Status> {
        let mut known: Vec<String> = self
            .members
            .list()
            .into_iter()
            .filter(|m| m.node.role == NodeRole::Data as i32)
            .map(|m| m.node.id)
            .collect();
        known.extend(self.layout.current().nodes.into_iter().map(|n| n.node_id));
        known.sort();
        known.dedup();
        self.layout.stage(req.into_inner(), &known).map_err(control_status)?;
        Ok(Response::new(self.plan()?))
    }

    async fn show_layout(&self, _: Request<ShowLayoutRequest>) -> Result<Response<LayoutPlan>, Status> {
        Ok(Response::new(self.plan()?))
    }

    async fn apply_layout(&self, req: Request<ApplyLayoutRequest>) -> Result<Response<LayoutPlan>, Status> {
        let members = self.members.list();
        let addr_of = |id: &str| members.iter().find(|m| m.node.id == id).map(|m| m.node.rpc_addr.clone());
        self.layout.apply(req.get_ref().version, addr_of).map_err(control_status)?;
        Ok(Response::new(self.plan()?))
    }

    async fn revert_layout(&self, _: Request<ShowLayoutRequest>) -> Result<Response<LayoutPlan>, Status> {
        self.layout.revert().map_err(control_status)?;
        Ok(Response::new(self.plan()?))
    }

    async fn repair(&self, req: Request<RepairRequest>) -> Result<Response<RepairReply>, Status> {
        let r = req.into_inner();
        let nodes = repair::data_nodes(&self.members, &self.layout, &r.node)?;
        let answers = repair::fan_out(&self.store, &nodes, r, |mut c, r| async move { c.repair(r).await }).await;
        let results = answers
            .into_iter()
            .map(|(n, a)| match a {
                Ok(reply) => format!("{}: {}", n.id, reply.results.join("; ")),
                Err(e) => format!("{}: failed: {e}", n.id),
            })
            .collect();
        Ok(Response::new(RepairReply { results }))
    }

    async fn list_workers(&self, req: Request<ListWorkersRequest>) -> Result<Response<ListWorkersReply>, Status> {
        let node = req.into_inner().node;
        let nodes = self
            .members
            .list()
            .into_iter()
            .filter(|m| m.node.id.starts_with(&node))
            .map(|m| NodeWorkers { node: m.node.id.clone(), role: m.node.role, healthy: m.healthy, workers: m.workers })
            .collect();
        Ok(Response::new(ListWorkersReply { nodes }))
    }

    async fn set_worker_variable(
        &self,
        req: Request<WorkerVariableRequest>,
    ) -> Result<Response<WorkerVariablesReply>, Status> {
        let r = req.into_inner();
        let nodes = repair::data_nodes(&self.members, &self.layout, &r.node)?;
        let answers =
            repair::fan_out(&self.store, &nodes, r, |mut c, r| async move { c.set_worker_variable(r).await }).await;
        let mut variables = Vec::new();
        for (n, a) in answers {
            match a {
                Ok(reply) => variables
                    .extend(reply.variables.into_iter().map(|v| WorkerVariable { node: n.id.to_string(), ..v })),
                // A refused value is refused everywhere alike: say why once.
                Err(hangar_common::Error::Rpc(s)) if s.code() == tonic::Code::InvalidArgument => {
                    return Err(Status::invalid_argument(s.message()));
                }
                Err(e) => variables.push(WorkerVariable {
                    node: n.id.to_string(),
                    name: "error".into(),
                    value: e.to_string(),
                }),
            }
        }
        Ok(Response::new(WorkerVariablesReply { variables }))
    }

    async fn block_info(&self, req: Request<BlockInfoRequest>) -> Result<Response<BlockInfoReply>, Status> {
        let info = repair::block_info(&self.store, &self.members, &self.layout, &req.get_ref().hash).await?;
        Ok(Response::new(info))
    }

    async fn list_block_errors(&self, req: Request<BlockErrorsRequest>) -> Result<Response<BlockErrorsReply>, Status> {
        let r = req.into_inner();
        let nodes = repair::data_nodes(&self.members, &self.layout, &r.node)?;
        let answers = repair::fan_out(&self.store, &nodes, r, |mut c, r| async move { c.block_errors(r).await }).await;
        let (mut errors, mut total) = (Vec::new(), 0);
        for (n, a) in answers {
            match a {
                Ok(reply) => {
                    total += reply.total;
                    errors.extend(reply.errors.into_iter().map(|e| BlockError { node: n.id.to_string(), ..e }))
                }
                Err(e) => errors.push(BlockError {
                    node: n.id.to_string(),
                    last_error: format!("cannot ask: {e}"),
                    ..Default::default()
                }),
            }
        }
        Ok(Response::new(BlockErrorsReply { errors, total }))
    }

    async fn retry_blocks(&self, req: Request<RetryBlocksRequest>) -> Result<Response<RetryBlocksReply>, Status> {
        let r = req.into_inner();
        if !r.all && r.hashes.is_empty() {
            return Err(Status::invalid_argument("name the blocks to retry, or --all"));
        }
        let nodes = repair::data_nodes(&self.members, &self.layout, &r.node)?;
        let answers = repair::fan_out(&self.store, &nodes, r, |mut c, r| async move { c.retry_blocks(r).await }).await;
        let mut queued = 0;
        let mut failed = Vec::new();
        for (n, a) in answers {
            match a {
                Ok(reply) => queued += reply.queued,
                Err(e) => failed.push(format!("{}: {e}", n.id)),
            }
        }
        if !failed.is_empty() {
            return Err(Status::unavailable(format!(
                "{queued} block fetches queued; these nodes could not be asked: {}",
                failed.join("; ")
            )));
        }
        Ok(Response::new(RetryBlocksReply { queued }))
    }

    async fn remove_node(&self, req: Request<RemoveNodeRequest>) -> Result<Response<LayoutPlan>, Status> {
        let r = req.into_inner();
        let staged = self.layout.staged().map_err(control_status)?;
        if !staged.roles.is_empty() || staged.replication_factor != 0 {
            return Err(Status::failed_precondition(
                "other layout changes are staged; apply or revert them first (hangar layout show)",
            ));
        }
        let layout_ids: Vec<String> = self.layout.current().nodes.into_iter().map(|n| n.node_id).collect();
        let matching: Vec<&String> = layout_ids.iter().filter(|id| id.starts_with(&r.node)).collect();
        let id = match matching.as_slice() {
            [one] if !r.node.is_empty() => (*one).clone(),
            [] | [_] => {
                return Err(Status::not_found(format!("no node of the layout has an id starting with `{}`", r.node)));
            }
            _ => {
                return Err(Status::invalid_argument(format!(
                    "`{}` names more than one node; give more of the id",
                    r.node
                )));
            }
        };
        if !r.force && self.members.list().iter().any(|m| m.node.id == id && m.healthy) {
            return Err(Status::failed_precondition(format!(
                "node {id} is still heartbeating: stop it first, or use `hangar layout remove` to move its data away while it runs (--force removes it anyway)"
            )));
        }
        let version = self.layout.current().version + 1;
        self.layout
            .stage(StagedRole { node_id: id.clone(), remove: true, ..Default::default() }, &layout_ids)
            .map_err(control_status)?;
        let members = self.members.list();
        let addr_of = |n: &str| members.iter().find(|m| m.node.id == n).map(|m| m.node.rpc_addr.clone());
        if let Err(e) = self.layout.apply(version, addr_of) {
            let _ = self.layout.revert();
            return Err(control_status(e));
        }
        self.members.forget(&id);
        tracing::warn!(node = %id, version, "node removed for good; its partitions are rebuilt from the survivors");
        Ok(Response::new(self.plan()?))
    }
}

fn control_status(e: crate::ControlError) -> Status {
    match e {
        crate::ControlError::Invalid(m) => Status::failed_precondition(m),
        other => Status::internal(other.to_string()),
    }
}
