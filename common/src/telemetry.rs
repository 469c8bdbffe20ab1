//! Tracing setup and the Prometheus metrics every component exposes at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::{Arc, OnceLock};

/// Logs go to stderr; `HANGAR_LOG` (or `RUST_LOG`) picks the levels. By default `info`, with
/// s3s quiet: it logs every client error (NoSuchKey...) as an error, and the frontend logs
/// each failed request itself.
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter =
        std::env::var("HANGAR_LOG").ok().or_else(|| std::env::var("RUST_LOG").ok()).unwrap_or_else(|| "info".into());
    let _ = tracing_subscriber::fmt().with_env_filter(EnvFilter::new(filter)).with_writer(std::io::stderr).try_init();
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NameLabel {
    pub name: String,
}

/// Metrics of one process. Names follow Garage's where it has the same metric.
pub struct Metrics {
    pub registry: Registry,
    /// S3 requests by operation and HTTP status.
    pub api_s3_request_counter: Family<OpLabels, Counter>,
    pub api_s3_request_duration: Family<NameLabel, Histogram>,
    pub block_bytes_written: Counter,
    pub block_bytes_read: Counter,
    pub block_corruptions: Counter,
    pub block_deleted: Counter,
    pub rpc_request_counter: Family<NameLabel, Counter>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("hangar");
        let api_s3_request_counter = Family::<OpLabels, Counter>::default();
        let api_s3_request_duration =
            Family::<NameLabel, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        let block_bytes_written = Counter::default();
        let block_bytes_read = Counter::default();
        let block_corruptions = Counter::default();
        let block_deleted = Counter::default();
        let rpc_request_counter = Family::<NameLabel, Counter>::default();
        registry.register("api_s3_request", "S3 requests by operation and status", api_s3_request_counter.clone());
        registry.register(
            "api_s3_request_duration_seconds",
            "S3 request duration by operation",
            api_s3_request_duration.clone(),
        );
        registry.register("block_bytes_written", "Bytes of blocks written to disk", block_bytes_written.clone());
        registry.register("block_bytes_read", "Bytes of blocks read from disk", block_bytes_read.clone());
        registry.register(
            "block_corruptions",
            "Blocks whose content did not match their hash",
            block_corruptions.clone(),
        );
        registry.register(
            "block_deleted",
            "Block files deleted after losing their last reference",
            block_deleted.clone(),
        );
        registry.register("rpc_request", "Internal gRPC requests served, by method", rpc_request_counter.clone());
        Self {
            registry,
            api_s3_request_counter,
            api_s3_request_duration,
            block_bytes_written,
            block_bytes_read,
            block_corruptions,
            block_deleted,
            rpc_request_counter,
        }
    }

    pub fn encode(&self) -> String {
        let mut s = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }

    pub fn rpc(&self, name: &str) {
        self.rpc_request_counter.get_or_create(&NameLabel { name: name.to_string() }).inc();
    }
}

/// The process's metrics (one registry per process, shared by the services it runs).
pub fn metrics() -> Arc<Metrics> {
    static M: OnceLock<Arc<Metrics>> = OnceLock::new();
    M.get_or_init(|| Arc::new(Metrics::new())).clone()
}
