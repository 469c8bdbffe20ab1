//! The admin API: keys, buckets, permissions and cluster status.

use std::sync::Arc;

use hangar_common::Error;
use hangar_common::meta_client::Found;
use hangar_common::model::Catalog;
use hangar_proto::control::admin_service_server::AdminService;
use hangar_proto::control::*;
use hangar_proto::metadata::Table;
use hangar_proto::model::{AccessKey, Bucket, BucketPermission, Object};
use tonic::{Request, Response, Status};

use crate::layout::LayoutManager;
use crate::membership::Members;

pub struct AdminRpc {
    pub catalog: Catalog,
    pub layout: Arc<LayoutManager>,
    pub members: Arc<Members>,
}

fn status(e: Error) -> Status {
    match e {
        Error::NotFound(_) => Status::not_found(e.to_string()),
        Error::Conflict(_) => Status::already_exists(e.to_string()),
        Error::Invalid(_) => Status::invalid_argument(e.to_string()),
        _ => Status::internal(e.to_string()),
    }
}

impl AdminRpc {
    async fn key_info(&self, key: &AccessKey, with_secret: bool) -> Result<KeyInfo, Error> {
        let mut buckets = Vec::new();
        for (id, p) in &key.buckets {
            let name = match hex::decode(id) {
                Ok(raw) => self.catalog.bucket_by_id(&raw).await?.map(|b| b.name).unwrap_or_default(),
                Err(_) => String::new(),
            };
            buckets.push(BucketGrant {
                bucket_id: id.clone(),
                bucket_name: name,
                read: p.read,
                write: p.write,
                owner: p.owner,
            });
        }
        Ok(KeyInfo {
            access_key_id: key.id.clone(),
            name: key.name.clone(),
            secret_access_key: if with_secret { key.secret.clone() } else { String::new() },
            allow_create_bucket: key.allow_create_bucket,
            created_ms: key.created_ms,
            buckets,
        })
    }

    async fn bucket_info(&self, b: &Bucket, with_usage: bool) -> Result<BucketInfo, Error> {
        let hex_id = hex::encode(&b.id);
        let keys = self
            .catalog
            .list_keys()
            .await?
            .into_iter()
            .filter_map(|Found { value: k, .. }| {
                k.buckets.get(&hex_id).map(|p| KeyGrant {
                    access_key_id: k.id.clone(),
                    key_name: k.name.clone(),
                    read: p.read,
                    write: p.write,
                    owner: p.owner,
                })
            })
            .collect();
        let (mut objects, mut bytes) = (0, 0);
        if with_usage {
            // A full scan of the bucket's objects: an admin call, not a hot path.
            for o in self.catalog.meta.scan_prefix::<Object>(Table::Object, &b.id).await? {
                objects += 1;
                bytes += o.value.size;
            }
        }
        Ok(BucketInfo { id: hex_id, name: b.name.clone(), created_ms: b.created_ms, keys, objects, bytes })
    }
}

#[tonic::async_trait]
impl AdminService for AdminRpc {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        let layout = self.layout.current();
        let held = crate::layout::counts(&layout);
        let members = self.members.list();
        let mut nodes = Vec::new();
        for a in &layout.nodes {
            let m = members.iter().find(|(n, _, _)| n.id == a.node_id);
            nodes.push(NodeStatus {
                node: Some(m.map(|(n, _, _)| n.clone()).unwrap_or_else(|| NodeInfo {
                    id: a.node_id.clone(),
                    rpc_addr: a.rpc_addr.clone(),
                    role: NodeRole::Data as i32,
                    ..Default::default()
                })),
                healthy: m.is_some_and(|(_, _, h)| *h),
                last_seen_ms: m.map(|(_, s, _)| *s).unwrap_or(0),
                zone: a.zone.clone(),
                capacity: a.capacity,
                partitions: held.get(&a.node_id).copied().unwrap_or(0),
            });
        }
        for (n, seen, healthy) in members {
            if !layout.nodes.iter().any(|a| a.node_id == n.id) {
                nodes.push(NodeStatus { node: Some(n), healthy, last_seen_ms: seen, ..Default::default() });
            }
        }
        Ok(Response::new(StatusReply {
            layout_version: layout.version,
            nodes,
            replication_factor: layout.replication_factor,
        }))
    }

    async fn create_key(&self, req: Request<CreateKeyRequest>) -> Result<Response<KeyInfo>, Status> {
        let r = req.into_inner();
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let (id, secret) = (opt(&r.access_key_id), opt(&r.secret_access_key));
        let key = self.catalog.create_key(&r.name, id.as_deref(), secret.as_deref()).await.map_err(status)?;
        Ok(Response::new(self.key_info(&key, true).await.map_err(status)?))
    }

    async fn list_keys(&self, _: Request<ListKeysRequest>) -> Result<Response<ListKeysReply>, Status> {
        let mut keys = Vec::new();
        for k in self.catalog.list_keys().await.map_err(status)? {
            keys.push(self.key_info(&k.value, false).await.map_err(status)?);
        }
        Ok(Response::new(ListKeysReply { keys }))
    }

    async fn get_key(&self, req: Request<KeyRef>) -> Result<Response<KeyInfo>, Status> {
        let k = self.catalog.find_key(&req.get_ref().key).await.map_err(status)?;
        Ok(Response::new(self.key_info(&k.value, true).await.map_err(status)?))
    }

    async fn delete_key(&self, req: Request<KeyRef>) -> Result<Response<DeleteReply>, Status> {
        self.catalog.delete_key(&req.get_ref().key).await.map_err(status)?;
        Ok(Response::new(DeleteReply {}))
    }

    async fn set_key_create_bucket(
        &self,
        req: Request<SetKeyCreateBucketRequest>,
    ) -> Result<Response<KeyInfo>, Status> {
        let r = req.get_ref();
        let key = self.catalog.set_allow_create_bucket(&r.key, r.allow).await.map_err(status)?;
        Ok(Response::new(self.key_info(&key, false).await.map_err(status)?))
    }

    async fn create_bucket(&self, req: Request<CreateBucketRequest>) -> Result<Response<BucketInfo>, Status> {
        let b = self.catalog.create_bucket(&req.get_ref().name, None).await.map_err(status)?;
        Ok(Response::new(self.bucket_info(&b, false).await.map_err(status)?))
    }

    async fn list_buckets(&self, _: Request<ListBucketsRequest>) -> Result<Response<ListBucketsReply>, Status> {
        let mut buckets = Vec::new();
        for b in self.catalog.list_buckets().await.map_err(status)? {
            buckets.push(self.bucket_info(&b, false).await.map_err(status)?);
        }
        Ok(Response::new(ListBucketsReply { buckets }))
    }

    async fn get_bucket(&self, req: Request<BucketRef>) -> Result<Response<BucketInfo>, Status> {
        let b = self.catalog.resolve_bucket(&req.get_ref().bucket).await.map_err(status)?;
        Ok(Response::new(self.bucket_info(&b, true).await.map_err(status)?))
    }

    async fn delete_bucket(&self, req: Request<BucketRef>) -> Result<Response<DeleteReply>, Status> {
        let b = self.catalog.resolve_bucket(&req.get_ref().bucket).await.map_err(status)?;
        self.catalog.delete_bucket(&b).await.map_err(status)?;
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
        let b = self.catalog.resolve_bucket(&r.bucket).await.map_err(status)?;
        let perm = BucketPermission { read: r.read, write: r.write, owner: r.owner };
        self.catalog.set_bucket_permission(&r.key, &b.id, perm, r.allow).await.map_err(status)?;
        Ok(Response::new(self.bucket_info(&b, false).await.map_err(status)?))
    }

    async fn stage_layout_change(&self, req: Request<StagedRole>) -> Result<Response<LayoutPlan>, Status> {
        let mut known: Vec<String> = self
            .members
            .list()
            .into_iter()
            .filter(|(n, _, _)| n.role == NodeRole::Data as i32)
            .map(|(n, _, _)| n.id)
            .collect();
        known.extend(self.layout.current().nodes.into_iter().map(|n| n.node_id));
        known.sort();
        known.dedup();
        self.layout.stage(req.into_inner(), &known).map_err(control_status)?;
        Ok(Response::new(self.layout.plan().map_err(control_status)?))
    }

    async fn show_layout(&self, _: Request<ShowLayoutRequest>) -> Result<Response<LayoutPlan>, Status> {
        Ok(Response::new(self.layout.plan().map_err(control_status)?))
    }

    async fn apply_layout(&self, req: Request<ApplyLayoutRequest>) -> Result<Response<LayoutPlan>, Status> {
        let members = self.members.list();
        let addr_of = |id: &str| members.iter().find(|(n, _, _)| n.id == id).map(|(n, _, _)| n.rpc_addr.clone());
        self.layout.apply(req.get_ref().version, addr_of).map_err(control_status)?;
        Ok(Response::new(self.layout.plan().map_err(control_status)?))
    }

    async fn revert_layout(&self, _: Request<ShowLayoutRequest>) -> Result<Response<LayoutPlan>, Status> {
        self.layout.revert().map_err(control_status)?;
        Ok(Response::new(self.layout.plan().map_err(control_status)?))
    }
}

fn control_status(e: crate::ControlError) -> Status {
    match e {
        crate::ControlError::Invalid(m) => Status::failed_precondition(m),
        other => Status::internal(other.to_string()),
    }
}
