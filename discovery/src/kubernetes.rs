//! The Kubernetes backend: one namespaced `HangarNode` custom resource per process, named
//! by its node id and labelled with the cluster's service name (several clusters can share
//! a namespace). A pod's resource has an owner reference to the pod (from the downward
//! API's `POD_NAME` and `POD_UID`), so Kubernetes deletes it with the pod. The control
//! plane watches the resources (kube-runtime's watcher: it lists, then watches from the
//! list's resourceVersion, and lists again after a dropped watch or a `410 Gone`) and
//! writes each node's health and last sign of life into the status subresource.
//!
//! The process applies the CustomResourceDefinition itself only when `skip_crd` is off;
//! it is installed beforehand (`hangar kubernetes-crd | kubectl apply -f -`), so a normal install
//! needs only namespaced rights.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hangar_common::config::KubernetesDiscovery;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, CustomResource, CustomResourceExt, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::{Backend, Error, Node, Result, Role};

/// The label carrying the cluster's service name.
pub const SERVICE_LABEL: &str = "hangar.dev/service";
/// The field manager of every server-side apply.
const MANAGER: &str = "hangar";
/// How often a status is written again even when nothing changed (last-seen moves on).
const STATUS_EVERY: Duration = Duration::from_secs(30);

/// A Hangar process: where it listens and what it is.
// Each printer column repeats `type_`: clippy takes the macro's arguments for attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "hangar.dev",
    version = "v1",
    kind = "HangarNode",
    plural = "hangarnodes",
    shortname = "hn",
    namespaced,
    status = "HangarNodeStatus",
    doc = "A Hangar process (control plane, data node or S3 frontend) as it announces itself",
    printcolumn(name = "Role", type_ = "string", json_path = ".spec.role"),
    printcolumn(name = "Zone", type_ = "string", json_path = ".spec.zone"),
    printcolumn(name = "Address", type_ = "string", json_path = ".spec.address"),
    printcolumn(name = "Port", type_ = "integer", json_path = ".spec.port", priority = "1"),
    printcolumn(name = "Health", type_ = "string", json_path = ".status.health"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct HangarNodeSpec {
    /// The host the process runs on (the pod's name in Kubernetes).
    pub hostname: String,
    /// The address others dial (the pod's IP or a stable DNS name).
    #[schemars(length(min = 1))]
    pub address: String,
    /// Its gRPC port (a frontend: its S3 port).
    pub port: u16,
    pub role: Role,
    /// The zone automatic layout places a data node in.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub zone: String,
    /// A data node's data disk size in bytes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub capacity: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What the control plane sees of the node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HangarNodeStatus {
    /// `healthy` (heartbeating) or `failed`.
    #[serde(default)]
    pub health: String,
    /// When the control plane last heard from it (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
}

pub struct Kubernetes {
    cfg: KubernetesDiscovery,
    api: Api<HangarNode>,
    /// The last status written per node, and when (so unchanged ones are not rewritten).
    reported: Mutex<HashMap<String, (String, Instant)>>,
}

impl Kubernetes {
    /// A client from the in-cluster service account or `KUBECONFIG`; applies the CRD
    /// unless `skip_crd`.
    pub async fn connect(cfg: KubernetesDiscovery) -> Result<Kubernetes> {
        hangar_common::tls::init_crypto();
        let client = Client::try_default().await.map_err(|e| Error::KubeConfig(e.to_string()))?;
        if !cfg.skip_crd {
            let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
            let crd = HangarNode::crd();
            let name = crd.metadata.name.clone().unwrap_or_default();
            crds.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&crd)).await?;
            tracing::info!(crd = %name, "custom resource definition applied");
        }
        let api = Api::namespaced(client, &cfg.namespace);
        Ok(Kubernetes { cfg, api, reported: Mutex::default() })
    }

    fn selector(&self) -> String {
        format!("{SERVICE_LABEL}={}", self.cfg.service_name)
    }

    /// The resource announcing `me`, owned by this pod when the downward API names it.
    fn resource(&self, me: &Node) -> HangarNode {
        let spec = HangarNodeSpec {
            hostname: me.hostname.clone(),
            address: me.address.clone(),
            port: me.port,
            role: me.role,
            zone: me.zone.clone(),
            capacity: me.capacity,
        };
        let mut r = HangarNode::new(&me.id, spec);
        r.metadata.namespace = Some(self.cfg.namespace.clone());
        r.metadata.labels = Some(BTreeMap::from([(SERVICE_LABEL.to_string(), self.cfg.service_name.clone())]));
        if let (Ok(pod), Ok(uid)) = (std::env::var("POD_NAME"), std::env::var("POD_UID")) {
            r.metadata.owner_references = Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Pod".into(),
                name: pod,
                uid,
                ..Default::default()
            }]);
        }
        r
    }
}

/// `s` as a DNS label (a node id is a resource name: Hangar's ids are hex, or `s3-` and
/// `control-` prefixed, the latter's hostname passed through here): lowercase letters, digits and `-`, not starting or ending with `-`,
/// 63 characters at most (empty: `fallback`).
pub fn dns_label(s: &str, fallback: &str) -> String {
    let mapped: String =
        s.to_ascii_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).take(63).collect();
    let trimmed = mapped.trim_matches('-');
    if trimmed.is_empty() { fallback.to_string() } else { trimmed.to_string() }
}

/// The node a resource announces (None for one that is not a usable announcement).
pub fn node_of(r: &HangarNode) -> Option<Node> {
    let id = r.metadata.name.clone()?;
    if r.spec.address.is_empty() || r.spec.port == 0 || r.metadata.deletion_timestamp.is_some() {
        return None;
    }
    Some(Node {
        id,
        hostname: r.spec.hostname.clone(),
        address: r.spec.address.clone(),
        port: r.spec.port,
        role: r.spec.role,
        zone: r.spec.zone.clone(),
        capacity: r.spec.capacity,
    })
}

#[async_trait::async_trait]
impl Backend for Kubernetes {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    /// Server-side apply: creates the resource, or puts it back if it was deleted while
    /// the process lives.
    async fn announce(&self, me: &Node) -> Result<()> {
        let r = self.resource(me);
        self.api.patch(&me.id, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&r)).await?;
        Ok(())
    }

    async fn withdraw(&self, me: &Node) -> Result<()> {
        match self.api.delete(&me.id, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn list(&self) -> Result<Vec<Node>> {
        let list = self.api.list(&ListParams::default().labels(&self.selector())).await?;
        Ok(list.items.iter().filter_map(node_of).collect())
    }

    async fn follow(&self, tx: &watch::Sender<Option<Arc<BTreeMap<String, Node>>>>) -> Result<()> {
        let config = watcher::Config::default().labels(&self.selector());
        let mut events = std::pin::pin!(watcher::watcher(self.api.clone(), config).default_backoff());
        let mut current: BTreeMap<String, Node> = BTreeMap::new();
        let mut building: BTreeMap<String, Node> = BTreeMap::new();
        let send = |m: &BTreeMap<String, Node>| {
            tx.send_replace(Some(Arc::new(m.clone())));
        };
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Init) => building.clear(),
                Ok(Event::InitApply(r)) => {
                    if let Some(n) = node_of(&r) {
                        building.insert(n.id.clone(), n);
                    }
                }
                Ok(Event::InitDone) => {
                    current = std::mem::take(&mut building);
                    tracing::info!(nodes = current.len(), "HangarNode resources listed");
                    send(&current);
                }
                Ok(Event::Apply(r)) => {
                    match node_of(&r) {
                        Some(n) => current.insert(n.id.clone(), n),
                        None => current.remove(&r.name_any()),
                    };
                    send(&current);
                }
                Ok(Event::Delete(r)) => {
                    tracing::info!(node = %r.name_any(), "HangarNode resource deleted");
                    current.remove(&r.name_any());
                    send(&current);
                }
                // The backoff retries; the watcher lists again after a 410 Gone.
                Err(e) => tracing::warn!(error = %e, "watching HangarNode resources failed; retrying"),
            }
        }
        Err(Error::Invalid("the HangarNode watch ended".into()))
    }

    async fn report(&self, node: &Node, healthy: bool, last_seen_ms: u64) -> Result<()> {
        let health = if healthy { "healthy" } else { "failed" }.to_string();
        {
            let reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((h, at)) = reported.get(&node.id)
                && *h == health
                && at.elapsed() < STATUS_EVERY
            {
                return Ok(());
            }
        }
        let last_seen = (last_seen_ms > 0).then(|| rfc3339(last_seen_ms));
        let patch = serde_json::json!({ "status": HangarNodeStatus { health: health.clone(), last_seen } });
        match self.api.patch_status(&node.id, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {}
            // Deleted meanwhile: the watch reports it.
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        self.reported.lock().unwrap_or_else(|e| e.into_inner()).insert(node.id.clone(), (health, Instant::now()));
        Ok(())
    }
}

fn rfc3339(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// The CustomResourceDefinition as YAML (`hangar kubernetes-crd`).
pub fn crd_yaml() -> String {
    serde_yaml::to_string(&HangarNode::crd()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CRD's schema for one version, as JSON Schema.
    fn schema() -> serde_json::Value {
        let crd = serde_json::to_value(HangarNode::crd()).unwrap();
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
    }

    fn validate(resource: &serde_json::Value) -> std::result::Result<(), String> {
        let validator = jsonschema::validator_for(&schema()).map_err(|e| e.to_string())?;
        let errors: Vec<String> = validator.iter_errors(resource).map(|e| e.to_string()).collect();
        if errors.is_empty() { Ok(()) } else { Err(errors.join("; ")) }
    }

    /// Every `kind: HangarNode` YAML block of docs/kubernetes.md.
    fn doc_samples() -> Vec<serde_json::Value> {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/kubernetes.md")).unwrap();
        doc.split("```yaml")
            .skip(1)
            .filter_map(|b| b.split("```").next())
            .filter(|b| b.contains("kind: HangarNode"))
            .map(|b| serde_yaml::from_str(b).unwrap())
            .collect()
    }

    #[test]
    fn the_schema_accepts_the_samples_in_the_docs() {
        let samples = doc_samples();
        assert!(!samples.is_empty(), "docs/kubernetes.md shows a HangarNode");
        for s in &samples {
            validate(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            let parsed: HangarNode = serde_json::from_value(s.clone()).unwrap();
            assert!(node_of(&parsed).is_some(), "a usable announcement: {s}");
        }
    }

    #[test]
    fn the_schema_refuses_a_node_without_an_address_or_with_a_bad_role() {
        let mut r = doc_samples().remove(0);
        validate(&r).unwrap();
        r["spec"].as_object_mut().unwrap().remove("address");
        let e = validate(&r).unwrap_err();
        assert!(e.contains("address"), "{e}");
        let mut r = doc_samples().remove(0);
        r["spec"]["address"] = "".into();
        assert!(validate(&r).is_err(), "an empty address is refused");
        let mut r = doc_samples().remove(0);
        r["spec"]["role"] = "boss".into();
        assert!(validate(&r).is_err(), "an unknown role is refused");
        let mut r = doc_samples().remove(0);
        r["spec"]["port"] = 70000.into();
        assert!(validate(&r).is_err(), "a port above 65535 is refused");
    }

    #[test]
    fn the_crd_is_namespaced_with_status_and_printer_columns() {
        let crd = serde_json::to_value(HangarNode::crd()).unwrap();
        assert_eq!(crd["metadata"]["name"], "hangarnodes.hangar.dev");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        let v = &crd["spec"]["versions"][0];
        assert!(v["subresources"]["status"].is_object());
        let columns: Vec<&str> =
            v["additionalPrinterColumns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        for c in ["Role", "Zone", "Address", "Health", "Age"] {
            assert!(columns.contains(&c), "{columns:?}");
        }
        assert!(crd_yaml().contains("kind: CustomResourceDefinition"));
    }
}
