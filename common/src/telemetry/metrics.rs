//! The Prometheus metrics every component exposes at `/metrics`.
//!
//! Names and labels are Garage's wherever the meaning is the same (its users' dashboards and
//! alerts carry over): counters keep Garage's names without a `_total` suffix, which the
//! Prometheus text format 0.0.4 we serve allows. What Garage has no name for is under the
//! `hangar_` prefix. One registry per process, shared by the services it runs; every family
//! is declared in every process (its `# HELP` and `# TYPE` lines are there before its first
//! sample), and a process fills those of its roles.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// A counter exposed under its exact name: `block_bytes_read 42`, not `block_bytes_read_total`.
#[derive(Clone, Debug, Default)]
pub struct Count(Counter);

impl Count {
    pub fn inc(&self) {
        self.0.inc();
    }
    pub fn inc_by(&self, v: u64) {
        self.0.inc_by(v);
    }
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

impl TypedMetric for Count {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for Count {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&self.0.get())
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// Registers a metric so that its `# HELP` and `# TYPE` lines are written even while a
/// family has no series yet: a scrape (and a dashboard check) sees every family a process
/// has, errors that never happened included.
#[derive(Debug)]
struct Declared<M>(M);

impl<M: EncodeMetric> EncodeMetric for Declared<M> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }
    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
}

/// A gauge with no sample until it is first set: a process that does not watch the
/// cluster (a data node) shows no `cluster_*` value rather than a misleading 0.
#[derive(Clone, Debug, Default)]
pub struct Reported {
    gauge: Gauge,
    reported: Arc<std::sync::atomic::AtomicBool>,
}

impl Reported {
    pub fn set(&self, v: i64) {
        self.gauge.set(v);
        self.reported.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.gauge.get()
    }
}

impl EncodeMetric for Reported {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        if self.reported.load(std::sync::atomic::Ordering::Relaxed) {
            EncodeMetric::encode(&self.gauge, encoder)
        } else {
            Ok(())
        }
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    pub api_endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub api_endpoint: String,
    pub status_code: String,
}

/// Which of a frontend's caches (`key`, `bucket`, `rights`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabel {
    pub cache: &'static str,
}

/// The HTTP method of a website request (Garage's label).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodErrorLabels {
    pub method: String,
    pub status_code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub rpc_endpoint: &'static str,
    pub from: String,
    pub to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabel {
    pub table_name: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SentLabels {
    pub table_name: &'static str,
    pub to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReceivedLabels {
    pub table_name: &'static str,
    pub from: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    pub id: String,
    pub role_zone: String,
    pub role_capacity: String,
    pub role_gateway: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabel {
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VolumeLabel {
    pub volume: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabel {
    pub worker: String,
}

/// A metadata table's name in metrics and spans: `access_key`, `bucket_alias`, `object`, ...
pub fn table_label(t: hangar_proto::metadata::Table) -> &'static str {
    use hangar_proto::metadata::Table;
    match t {
        Table::Unspecified => "unspecified",
        Table::Bucket => "bucket",
        Table::BucketAlias => "bucket_alias",
        Table::AccessKey => "access_key",
        Table::Object => "object",
        Table::VersionBlock => "version_block",
        Table::MultipartUpload => "multipart_upload",
        Table::UploadPart => "upload_part",
        Table::BlockRef => "block_ref",
        Table::BucketGrant => "bucket_grant",
        Table::PendingVersion => "pending_version",
        Table::Register => "register",
    }
}

type Durations<L> = Family<L, Histogram, fn() -> Histogram>;

fn seconds() -> Histogram {
    // 0.5 ms to 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

fn durations<L: Clone + std::hash::Hash + Eq>() -> Durations<L> {
    Family::new_with_constructor(seconds as fn() -> Histogram)
}

/// Metrics of one process.
pub struct Metrics {
    registry: Registry,
    // S3 API (frontends).
    pub api_s3_request_counter: Family<EndpointLabel, Count>,
    pub api_s3_error_counter: Family<ErrorLabels, Count>,
    pub api_s3_request_duration: Durations<EndpointLabel>,
    pub api_s3_request_bytes_received: Family<EndpointLabel, Count>,
    pub api_s3_response_bytes_sent: Family<EndpointLabel, Count>,
    // Catalog cache (frontends).
    pub frontend_cache_hit_counter: Family<CacheLabel, Count>,
    pub frontend_cache_miss_counter: Family<CacheLabel, Count>,
    // Website endpoint (frontends).
    pub web_request_counter: Family<MethodLabel, Count>,
    pub web_error_counter: Family<MethodErrorLabels, Count>,
    pub web_request_duration: Durations<MethodLabel>,
    // Block store (data nodes).
    pub block_bytes_read: Count,
    pub block_bytes_written: Count,
    pub block_read_duration: Histogram,
    pub block_write_duration: Histogram,
    pub block_delete_counter: Count,
    pub block_resync_counter: Count,
    pub block_resync_queue_length: Gauge,
    pub block_resync_errored_blocks: Gauge,
    pub block_corruptions: Count,
    // Internal calls (callers).
    pub rpc_request_counter: Family<RpcLabels, Count>,
    pub rpc_error_counter: Family<RpcLabels, Count>,
    pub rpc_timeout_counter: Family<RpcLabels, Count>,
    pub rpc_duration: Durations<RpcLabels>,
    // Metadata tables: requests made (callers) and changes applied (data nodes).
    pub table_get_request_counter: Family<TableLabel, Count>,
    pub table_get_request_duration: Durations<TableLabel>,
    pub table_put_request_counter: Family<TableLabel, Count>,
    pub table_put_request_duration: Durations<TableLabel>,
    pub table_internal_update_counter: Family<TableLabel, Count>,
    pub table_merkle_updater_todo_queue_length: Family<TableLabel, Gauge>,
    pub table_sync_items_sent: Family<SentLabels, Count>,
    pub table_sync_items_received: Family<ReceivedLabels, Count>,
    // Cluster health as this process sees it (frontends and the control plane).
    pub cluster_healthy: Reported,
    pub cluster_available: Reported,
    pub cluster_connected_nodes: Reported,
    pub cluster_known_nodes: Reported,
    pub cluster_layout_node_connected: Family<NodeLabels, Gauge>,
    pub cluster_storage_nodes: Reported,
    pub cluster_storage_nodes_ok: Reported,
    pub cluster_partitions: Reported,
    pub cluster_partitions_quorum: Reported,
    pub cluster_partitions_all_ok: Reported,
    // This process.
    pub build_info: Family<VersionLabel, Gauge>,
    pub replication_factor: Gauge,
    pub local_disk_avail: Family<VolumeLabel, Gauge>,
    pub local_disk_total: Family<VolumeLabel, Gauge>,
    pub disk_full: Gauge,
    pub layout_version: Gauge,
    pub layout_versions_live: Gauge,
    pub layout_sync_progress: Family<VersionLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub worker_state: Family<WorkerLabel, Gauge>,
    pub worker_queue_length: Family<WorkerLabel, Gauge>,
    pub worker_errors: Family<WorkerLabel, Count>,
    pub connections_refused: Count,
    pub connections_timed_out: Count,
}

macro_rules! registered {
    ($registry:ident, $( $field:ident : $name:literal = $value:expr, $help:literal; )*) => {{
        $( let $field = $value; $registry.register($name, $help, Declared($field.clone())); )*
        Metrics { registry: $registry, $( $field, )* }
    }};
}

impl Metrics {
    fn new() -> Self {
        let mut r = Registry::default();
        registered!(r,
            api_s3_request_counter: "api_s3_request_counter" = Family::default(), "S3 requests, by operation";
            api_s3_error_counter: "api_s3_error_counter" = Family::default(), "S3 requests answered with an error, by operation and HTTP status";
            api_s3_request_duration: "api_s3_request_duration" = durations(), "S3 request duration in seconds until the response head, by operation";
            api_s3_request_bytes_received: "api_s3_request_bytes_received" = Family::default(), "Bytes of S3 request bodies, by operation (as declared by the client)";
            api_s3_response_bytes_sent: "api_s3_response_bytes_sent" = Family::default(), "Bytes of S3 response bodies, by operation (as declared in the response)";
            frontend_cache_hit_counter: "frontend_cache_hit_counter" = Family::default(), "Lookups of access keys, buckets and rights a frontend answered from its cache, by cache";
            frontend_cache_miss_counter: "frontend_cache_miss_counter" = Family::default(), "Lookups of access keys, buckets and rights a frontend had to read from the data nodes, by cache";
            web_request_counter: "web_request_counter" = Family::default(), "Website endpoint requests, by HTTP method";
            web_error_counter: "web_error_counter" = Family::default(), "Website endpoint requests answered with an error status, by HTTP method and status";
            web_request_duration: "web_request_duration" = durations(), "Website endpoint request duration in seconds until the response head, by HTTP method";
            block_bytes_read: "block_bytes_read" = Count::default(), "Bytes of blocks read from the data directory";
            block_bytes_written: "block_bytes_written" = Count::default(), "Bytes of blocks written to the data directory";
            block_read_duration: "block_read_duration" = seconds(), "Duration of reading one block from disk, in seconds";
            block_write_duration: "block_write_duration" = seconds(), "Duration of writing and syncing one block to disk, in seconds";
            block_delete_counter: "block_delete_counter" = Count::default(), "Block files deleted after losing their last reference";
            block_resync_counter: "block_resync_counter" = Count::default(), "Blocks the resync worker has handled";
            block_resync_queue_length: "block_resync_queue_length" = Gauge::default(), "Blocks waiting to be resynced";
            block_resync_errored_blocks: "block_resync_errored_blocks" = Gauge::default(), "Blocks whose last resync failed (should fall back to zero)";
            block_corruptions: "hangar_block_corruptions" = Count::default(), "Blocks whose content did not match their hash";
            rpc_request_counter: "rpc_request_counter" = Family::default(), "Internal calls made, by method and peer";
            rpc_error_counter: "rpc_error_counter" = Family::default(), "Internal calls that failed (timeouts included), by method and peer";
            rpc_timeout_counter: "rpc_timeout_counter" = Family::default(), "Internal calls that timed out, by method and peer";
            rpc_duration: "rpc_duration" = durations(), "Duration of internal calls in seconds, by method and peer";
            table_get_request_counter: "table_get_request_counter" = Family::default(), "Quorum reads of a metadata table";
            table_get_request_duration: "table_get_request_duration" = durations(), "Duration of quorum reads of a metadata table, in seconds";
            table_put_request_counter: "table_put_request_counter" = Family::default(), "Quorum writes to a metadata table";
            table_put_request_duration: "table_put_request_duration" = durations(), "Duration of quorum writes to a metadata table, in seconds";
            table_internal_update_counter: "table_internal_update_counter" = Family::default(), "Entries of a table stored with a changed value on this node";
            table_merkle_updater_todo_queue_length: "table_merkle_updater_todo_queue_length" = Family::default(), "Table changes waiting to enter this node's Merkle trees";
            table_sync_items_sent: "table_sync_items_sent" = Family::default(), "Entries sent to another node by anti-entropy and layout syncs";
            table_sync_items_received: "table_sync_items_received" = Family::default(), "Entries received from another node by anti-entropy and layout syncs";
            cluster_healthy: "cluster_healthy" = Reported::default(), "1 when every storage node of the layout answers";
            cluster_available: "cluster_available" = Reported::default(), "1 when every partition has a quorum of answering replicas";
            cluster_connected_nodes: "cluster_connected_nodes" = Reported::default(), "Nodes that answer";
            cluster_known_nodes: "cluster_known_nodes" = Reported::default(), "Nodes known (answering or not)";
            cluster_layout_node_connected: "cluster_layout_node_connected" = Family::default(), "1 when a storage node of the layout answers";
            cluster_storage_nodes: "cluster_storage_nodes" = Reported::default(), "Storage nodes in the current layout";
            cluster_storage_nodes_ok: "cluster_storage_nodes_ok" = Reported::default(), "Storage nodes of the current layout that answer";
            cluster_partitions: "cluster_partitions" = Reported::default(), "Partitions of the layout";
            cluster_partitions_quorum: "cluster_partitions_quorum" = Reported::default(), "Partitions with a read and write quorum of answering replicas";
            cluster_partitions_all_ok: "cluster_partitions_all_ok" = Reported::default(), "Partitions whose replicas all answer";
            build_info: "hangar_build_info" = Family::default(), "The Hangar version this process runs";
            replication_factor: "hangar_replication_factor" = Gauge::default(), "Copies kept of every block and entry";
            local_disk_avail: "hangar_local_disk_avail" = Family::default(), "Bytes available on the disk of the data or metadata directory";
            local_disk_total: "hangar_local_disk_total" = Family::default(), "Size in bytes of the disk of the data or metadata directory";
            disk_full: "hangar_disk_full" = Gauge::default(), "1 while the data disk is below its free-space reserve";
            layout_version: "hangar_layout_version" = Gauge::default(), "Newest layout version this process knows";
            layout_versions_live: "hangar_layout_versions_live" = Gauge::default(), "Layout versions still in use (more than one while data moves after a change)";
            layout_sync_progress: "hangar_layout_sync_progress" = Family::default(), "Share of storage nodes that finished syncing to a live layout version (0 to 1)";
            worker_state: "hangar_worker_state" = Family::default(), "Background worker state: 0 idle, 1 busy, 2 paused, 3 failed";
            worker_queue_length: "hangar_worker_queue_length" = Family::default(), "Items waiting for a background worker";
            worker_errors: "hangar_worker_errors" = Family::default(), "Errors of a background worker";
            connections_refused: "hangar_connections_refused" = Count::default(), "Connections refused because a listener had reached its connection limit";
            connections_timed_out: "hangar_connections_timed_out" = Count::default(), "Connections closed because the peer stayed silent or stopped reading";
        )
    }

    /// The Prometheus text exposition of every family.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }

    /// Counts one internal call made by this process to node `to`.
    pub fn rpc_call(
        &self,
        method: &'static str,
        to: &str,
        error: Option<&crate::Error>,
        timed_out: bool,
        took: Duration,
    ) {
        let labels = RpcLabels { rpc_endpoint: method, from: super::this_node(), to: to.to_string() };
        self.rpc_request_counter.get_or_create(&labels).inc();
        self.rpc_duration.get_or_create(&labels).observe(took.as_secs_f64());
        if error.is_some() {
            self.rpc_error_counter.get_or_create(&labels).inc();
        }
        if timed_out {
            self.rpc_timeout_counter.get_or_create(&labels).inc();
        }
    }

    /// Counts one quorum read (`put` false) or write of `table`.
    pub fn table_request(&self, table: hangar_proto::metadata::Table, put: bool, took: Duration) {
        let label = TableLabel { table_name: table_label(table) };
        let (count, duration) = if put {
            (&self.table_put_request_counter, &self.table_put_request_duration)
        } else {
            (&self.table_get_request_counter, &self.table_get_request_duration)
        };
        count.get_or_create(&label).inc();
        duration.get_or_create(&label).observe(took.as_secs_f64());
    }

    /// Counts entries of `table` pulled from node `from` by anti-entropy or a layout sync.
    pub fn sync_received(&self, table: hangar_proto::metadata::Table, from: &str, n: usize) {
        let labels = ReceivedLabels { table_name: table_label(table), from: from.to_string() };
        self.table_sync_items_received.get_or_create(&labels).inc_by(n as u64);
    }

    /// Counts entries of `table` served to a syncing node (`to`: its address, as the call
    /// carries no node id).
    pub fn sync_sent(&self, table: hangar_proto::metadata::Table, to: &str, n: usize) {
        let labels = SentLabels { table_name: table_label(table), to: to.to_string() };
        self.table_sync_items_sent.get_or_create(&labels).inc_by(n as u64);
    }

    /// Publishes the cluster's health as seen from here: `up` holds the nodes that answer.
    /// Also the layout gauges: the current version, the live versions and how many of
    /// each live version's storage nodes have synced it.
    pub fn cluster_health(&self, view: &crate::cluster::View, up: &std::collections::BTreeSet<Arc<str>>) {
        use crate::cluster::{PARTITIONS, quorum};
        let answers = |n: &crate::cluster::NodeRef| up.contains(&n.id);
        let known = view.all_nodes();
        self.cluster_known_nodes.set(known.len() as i64);
        self.cluster_connected_nodes.set(known.iter().filter(|n| answers(n)).count() as i64);
        let storage: Vec<_> =
            view.current().map(|l| l.nodes.iter().filter(|n| n.capacity > 0).collect()).unwrap_or_default();
        let storage_ok = storage.iter().filter(|n| up.contains(n.node_id.as_str())).count();
        self.cluster_storage_nodes.set(storage.len() as i64);
        self.cluster_storage_nodes_ok.set(storage_ok as i64);
        self.cluster_layout_node_connected.clear();
        if let Some(l) = view.current() {
            for n in &l.nodes {
                let labels = NodeLabels {
                    id: n.node_id.clone(),
                    role_zone: n.zone.clone(),
                    role_capacity: n.capacity.to_string(),
                    role_gateway: u8::from(n.capacity == 0).to_string(),
                };
                self.cluster_layout_node_connected
                    .get_or_create(&labels)
                    .set(i64::from(up.contains(n.node_id.as_str())));
            }
        }
        let (mut with_quorum, mut all_ok) = (0, 0);
        if view.version() > 0 {
            for p in 0..PARTITIONS {
                let mut sets = view.write_sets(p).unwrap_or_default();
                sets.push(view.read_set(p).unwrap_or_default());
                if sets.iter().all(|s| !s.is_empty() && s.iter().filter(|n| answers(n)).count() >= quorum(s.len())) {
                    with_quorum += 1;
                }
                if view.holders(p).iter().all(answers) {
                    all_ok += 1;
                }
            }
        }
        self.cluster_partitions.set(PARTITIONS as i64);
        self.cluster_partitions_quorum.set(with_quorum);
        self.cluster_partitions_all_ok.set(all_ok);
        self.cluster_healthy.set(i64::from(view.version() > 0 && storage_ok == storage.len()));
        self.cluster_available.set(i64::from(view.version() > 0 && with_quorum == PARTITIONS as i64));
        self.layout(&view.history);
    }

    /// The layout gauges from a layout history.
    pub fn layout(&self, history: &hangar_proto::control::LayoutHistory) {
        self.layout_version.set(history.versions.last().map(|l| l.version as i64).unwrap_or(0));
        self.layout_versions_live.set(history.versions.len() as i64);
        self.layout_sync_progress.clear();
        for l in &history.versions {
            let storage: Vec<_> = l.nodes.iter().filter(|n| n.capacity > 0).collect();
            let synced =
                storage.iter().filter(|n| history.synced.get(&n.node_id).is_some_and(|&v| v >= l.version)).count();
            let share = if storage.is_empty() { 1.0 } else { synced as f64 / storage.len() as f64 };
            self.layout_sync_progress.get_or_create(&VersionLabel { version: l.version.to_string() }).set(share);
        }
    }

    /// Records the version this process runs and its replication factor.
    pub fn set_build(&self, replication_factor: u32) {
        self.build_info.get_or_create(&VersionLabel { version: env!("CARGO_PKG_VERSION").into() }).set(1);
        self.replication_factor.set(replication_factor as i64);
    }

    /// Records the size and free space of the disk holding `dir` (`volume` is `data` or
    /// `metadata`); a directory that cannot be measured leaves the gauges as they were.
    pub fn measure_disk(&self, volume: &'static str, dir: &std::path::Path) {
        if let Ok((total, avail)) = crate::disk::space(dir) {
            let label = VolumeLabel { volume };
            self.local_disk_avail.get_or_create(&label).set(avail as i64);
            self.local_disk_total.get_or_create(&label).set(total as i64);
        }
    }
}

/// The process's metrics.
pub fn metrics() -> Arc<Metrics> {
    static M: OnceLock<Arc<Metrics>> = OnceLock::new();
    M.get_or_init(|| Arc::new(Metrics::new())).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_keep_garage_names_without_total() {
        let m = Metrics::new();
        m.block_bytes_read.inc_by(42);
        m.api_s3_request_counter.get_or_create(&EndpointLabel { api_endpoint: "PutObject".into() }).inc();
        m.api_s3_request_duration.get_or_create(&EndpointLabel { api_endpoint: "PutObject".into() }).observe(0.01);
        let text = m.encode();
        assert!(text.contains("# TYPE block_bytes_read counter\nblock_bytes_read 42\n"), "{text}");
        assert!(text.contains("api_s3_request_counter{api_endpoint=\"PutObject\"} 1\n"), "{text}");
        assert!(
            text.contains("api_s3_request_duration_bucket{le=\"0.0005\",api_endpoint=\"PutObject\"} 0\n")
                || text.contains("api_s3_request_duration_bucket{api_endpoint=\"PutObject\",le=\"0.0005\"} 0\n"),
            "{text}"
        );
        // (`hangar_local_disk_total` is a gauge named by Garage.)
        let names = text.lines().filter(|l| !l.starts_with('#')).map(|l| l.split(['{', ' ']).next().unwrap_or(""));
        assert!(names.clone().all(|n| !n.ends_with("_total") || n == "hangar_local_disk_total"), "{text}");
        assert!(text.contains("# TYPE api_s3_error_counter counter\n"), "declared before its first sample: {text}");
    }
}
