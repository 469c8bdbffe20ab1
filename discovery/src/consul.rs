//! The Consul backend. Each process registers a service (id = its node id; meta with its
//! role, node id, zone and capacity) with a health check Consul can evaluate, and
//! deregisters on a clean shutdown. The control plane follows the service's passing
//! instances with blocking queries, so a change reaches it at once.
//!
//! - `api = "agent"`: registration with the local agent, with a TTL check the process
//!   passes every few seconds and `DeregisterCriticalServiceAfter`, so a crashed process
//!   leaves the passing set when its TTL runs out and the catalog a minute later.
//! - `api = "catalog"` (Garage's default): registration in the catalog as an external
//!   node, whose check Consul does not run: the process writes it `passing` again every
//!   few seconds, and the control plane deregisters the entry of a node that heartbeated
//!   and then fell silent for `STALE_AFTER` (Consul alone would keep it forever).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hangar_common::config::{ConsulApi, ConsulDiscovery};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;

use crate::{Backend, Error, Node, Result, Role};

/// A TTL check's time to live; the process passes it every third of it.
const TTL: Duration = Duration::from_secs(15);
/// Consul's own lower bound for automatic deregistration.
const DEREGISTER_AFTER: &str = "1m";
/// How long a blocking query waits for a change.
const WAIT: &str = "30s";
/// A catalog entry of a node silent this long is removed by the control plane.
const STALE_AFTER: Duration = Duration::from_secs(60);

const META_ROLE: &str = "hangar_role";
const META_ID: &str = "hangar_node_id";
const META_ZONE: &str = "hangar_zone";
const META_CAPACITY: &str = "hangar_capacity";

pub struct Consul {
    cfg: ConsulDiscovery,
    http: reqwest::Client,
    base: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HealthEntry {
    node: CatalogNode,
    service: ServiceEntry,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CatalogNode {
    #[serde(default)]
    node: String,
    #[serde(default)]
    address: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceEntry {
    #[serde(rename = "ID")]
    id: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    port: u16,
    #[serde(default)]
    meta: Option<BTreeMap<String, String>>,
}

impl Consul {
    pub fn new(cfg: ConsulDiscovery) -> Result<Consul> {
        hangar_common::tls::init_crypto();
        let read = |p: &std::path::PathBuf, key: &str| {
            std::fs::read(p)
                .map_err(|e| Error::Invalid(format!("[consul_discovery] {key}: cannot read {}: {e}", p.display())))
        };
        let mut b = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
        if let Some(ca) = &cfg.ca_cert {
            b = b.add_root_certificate(reqwest::Certificate::from_pem(&read(ca, "ca_cert")?)?);
        }
        if let (Some(cert), Some(key)) = (&cfg.client_cert, &cfg.client_key) {
            let mut pem = read(cert, "client_cert")?;
            pem.extend(read(key, "client_key")?);
            b = b.identity(reqwest::Identity::from_pem(&pem)?);
        }
        if cfg.tls_skip_verify {
            b = b.tls_danger_accept_invalid_certs(true);
        }
        let base = cfg.consul_http_addr.trim_end_matches('/').to_string();
        Ok(Consul { http: b.build()?, base, cfg })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base)).timeout(Duration::from_secs(10));
        match &self.cfg.token {
            Some(t) => r.header("X-Consul-Token", t),
            None => r,
        }
    }

    /// Sends a request; a non-2xx answer is an error carrying Consul's message.
    async fn send(&self, r: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let resp = r.send().await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        Err(Error::Consul(format!("{status}: {}", text.trim())))
    }

    /// The catalog node name of an entry registered through the catalog.
    fn catalog_node(&self, id: &str) -> String {
        format!("{}-{id}", self.cfg.service_name)
    }

    fn meta(&self, me: &Node) -> BTreeMap<String, String> {
        let mut meta = self.cfg.meta.clone();
        meta.insert(META_ROLE.into(), me.role.as_str().into());
        meta.insert(META_ID.into(), me.id.clone());
        if !me.zone.is_empty() {
            meta.insert(META_ZONE.into(), me.zone.clone());
        }
        if me.capacity > 0 {
            meta.insert(META_CAPACITY.into(), me.capacity.to_string());
        }
        meta
    }

    fn check_id(id: &str) -> String {
        format!("service:{id}")
    }

    async fn register_agent(&self, me: &Node) -> Result<()> {
        let body = json!({
            "ID": me.id, "Name": self.cfg.service_name, "Tags": self.cfg.tags,
            "Address": me.address, "Port": me.port, "Meta": self.meta(me),
            "Check": {
                "CheckID": Self::check_id(&me.id), "Name": "hangar heartbeat",
                "TTL": format!("{}s", TTL.as_secs()), "Status": "passing",
                "DeregisterCriticalServiceAfter": DEREGISTER_AFTER,
            },
        });
        self.send(self.request(reqwest::Method::PUT, "/v1/agent/service/register").json(&body)).await?;
        Ok(())
    }

    async fn register_catalog(&self, me: &Node) -> Result<()> {
        let body = json!({
            "Node": self.catalog_node(&me.id), "Address": me.address,
            "NodeMeta": { "external-node": "true", "external-probe": "false" },
            "Service": {
                "ID": me.id, "Service": self.cfg.service_name, "Tags": self.cfg.tags,
                "Address": me.address, "Port": me.port, "Meta": self.meta(me),
            },
            "Checks": [{
                "CheckID": Self::check_id(&me.id), "Name": "hangar heartbeat", "Status": "passing",
                // A constant output: a registration that changes nothing does not wake
                // every blocking query.
                "ServiceID": me.id, "Output": "written by the process itself",
            }],
        });
        self.send(self.request(reqwest::Method::PUT, "/v1/catalog/register").json(&body)).await?;
        Ok(())
    }

    /// The passing instances, waiting for a change past `index` (0: answer at once).
    async fn health(&self, index: u64) -> Result<(Vec<Node>, u64)> {
        let path = format!("/v1/health/service/{}", self.cfg.service_name);
        let mut r = self.request(reqwest::Method::GET, &path).query(&[("passing", "1")]);
        if index > 0 {
            // Consul answers after `wait` at most (plus up to a sixteenth of it).
            r = r.query(&[("index", index.to_string()), ("wait", WAIT.to_string())]).timeout(Duration::from_secs(45));
        }
        let resp = self.send(r).await?;
        let new_index = resp
            .headers()
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let entries: Vec<HealthEntry> = resp.json().await?;
        Ok((entries.iter().filter_map(node_of).collect(), new_index))
    }
}

/// The node an instance announces (None for an instance that is not Hangar's).
fn node_of(e: &HealthEntry) -> Option<Node> {
    let meta = e.service.meta.as_ref()?;
    let role = Role::parse(meta.get(META_ROLE)?)?;
    let address = if e.service.address.is_empty() { e.node.address.clone() } else { e.service.address.clone() };
    if address.is_empty() || e.service.port == 0 {
        return None;
    }
    Some(Node {
        id: meta.get(META_ID).cloned().unwrap_or_else(|| e.service.id.clone()),
        hostname: e.node.node.clone(),
        address,
        port: e.service.port,
        role,
        zone: meta.get(META_ZONE).cloned().unwrap_or_default(),
        capacity: meta.get(META_CAPACITY).and_then(|c| c.parse().ok()).unwrap_or(0),
    })
}

#[async_trait::async_trait]
impl Backend for Consul {
    fn name(&self) -> &'static str {
        "consul"
    }

    /// Agent: passes the TTL check, registering first if the agent does not know the
    /// check (first start, or an agent restarted). Catalog: registers again, passing.
    async fn announce(&self, me: &Node) -> Result<()> {
        match self.cfg.api {
            ConsulApi::Agent => {
                let path = format!("/v1/agent/check/pass/{}", Self::check_id(&me.id));
                match self.send(self.request(reqwest::Method::PUT, &path)).await {
                    Ok(_) => Ok(()),
                    Err(_) => self.register_agent(me).await,
                }
            }
            ConsulApi::Catalog => self.register_catalog(me).await,
        }
    }

    fn refresh_every(&self) -> Duration {
        TTL / 3
    }

    async fn withdraw(&self, me: &Node) -> Result<()> {
        match self.cfg.api {
            ConsulApi::Agent => {
                let path = format!("/v1/agent/service/deregister/{}", me.id);
                self.send(self.request(reqwest::Method::PUT, &path)).await?;
            }
            ConsulApi::Catalog => {
                // The whole external node: its service and check go with it.
                let body = json!({ "Node": self.catalog_node(&me.id) });
                self.send(self.request(reqwest::Method::PUT, "/v1/catalog/deregister").json(&body)).await?;
            }
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<Node>> {
        Ok(self.health(0).await?.0)
    }

    /// Blocking queries on the service's passing instances.
    async fn follow(&self, tx: &watch::Sender<Option<Arc<BTreeMap<String, Node>>>>) -> Result<()> {
        let mut index = 0;
        loop {
            let (nodes, new_index) = self.health(index).await?;
            // An index that goes backwards (a Consul server restored) restarts from zero.
            index = if new_index < index { 0 } else { new_index.max(1) };
            let listing: BTreeMap<String, Node> = nodes.into_iter().map(|n| (n.id.clone(), n)).collect();
            tx.send_if_modified(|cur| {
                let changed = cur.as_deref() != Some(&listing);
                if changed {
                    *cur = Some(Arc::new(listing));
                }
                changed
            });
            // Never a tight loop, even against a server that answers at once.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Catalog entries are never expired by Consul: the control plane removes those of
    /// nodes that heartbeated and then fell silent for STALE_AFTER (a node never heard from
    /// may be one that reaches another control plane, and is left alone).
    async fn report(&self, node: &Node, healthy: bool, last_seen_ms: u64) -> Result<()> {
        let silent_ms = hangar_common::ids::now_ms().saturating_sub(last_seen_ms);
        if self.cfg.api != ConsulApi::Catalog
            || healthy
            || last_seen_ms == 0
            || silent_ms < STALE_AFTER.as_millis() as u64
        {
            return Ok(());
        }
        tracing::warn!(node = %node.id, silent_s = silent_ms / 1000, "removing the catalog entry of a silent node");
        self.withdraw(node).await
    }
}
