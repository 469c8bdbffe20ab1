//! Tracing setup and the Prometheus metrics every component exposes at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::{Arc, OnceLock};

/// Logs go to stderr; `HANGAR_LOG` (or `RUST_LOG`) picks the levels. By default `info`.
/// s3s stays quiet unless the filter names it: it logs every client error as an error,
/// and some with the whole request body (a malformed XML body of megabytes in one line);
/// the frontend logs each failed request itself, with bounded client data.
/// Colours only when stderr is a terminal (and `NO_COLOR` is unset): never in files or journals.
pub fn init_tracing() {
    use std::io::IsTerminal;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = log_filter(std::env::var("HANGAR_LOG").ok(), std::env::var("RUST_LOG").ok());
    let colour = use_colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref());
    let _ = subscriber(filter, colour, std::io::stderr).try_init();
}

/// The filter: `HANGAR_LOG`, else `RUST_LOG`, else `info`; s3s off unless named.
fn log_filter(hangar_log: Option<String>, rust_log: Option<String>) -> String {
    let mut filter = hangar_log.or(rust_log).unwrap_or_else(|| "info".into());
    if !filter.contains("s3s") {
        filter.push_str(",s3s=off");
    }
    filter
}

/// ANSI colours: on a terminal only, and not when `NO_COLOR` is set (to anything but "").
fn use_colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

fn subscriber<W>(filter: String, colour: bool, writer: W) -> impl tracing::Subscriber + Send + Sync + 'static
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::EnvFilter;
    tracing_subscriber::fmt().with_env_filter(EnvFilter::new(filter)).with_ansi(colour).with_writer(writer).finish()
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub rpc_endpoint: &'static str,
    /// ok, unavailable, stale_layout, insufficient_storage or error: a fixed set.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabel {
    pub worker: String,
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
    /// Internal calls made, by method and outcome, and their durations.
    pub rpc_client_counter: Family<RpcLabels, Counter>,
    pub rpc_client_duration: Family<NameLabel, Histogram>,
    /// Background workers: queue length, errors, and state (0 idle, 1 busy, 2 paused, 3 failed).
    pub worker_queue_length: Family<WorkerLabel, Gauge>,
    pub worker_errors: Family<WorkerLabel, Counter>,
    pub worker_state: Family<WorkerLabel, Gauge>,
    /// Connections refused because a listener was at its limit.
    pub connections_refused: Counter,
    /// Connections closed for idling or for a peer that stopped reading.
    pub connections_timed_out: Counter,
    /// 1 while the data disk is below its free-space reserve.
    pub disk_full: Gauge,
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
        let rpc_client_counter = Family::<RpcLabels, Counter>::default();
        let rpc_client_duration =
            Family::<NameLabel, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        let worker_queue_length = Family::<WorkerLabel, Gauge>::default();
        let worker_errors = Family::<WorkerLabel, Counter>::default();
        let worker_state = Family::<WorkerLabel, Gauge>::default();
        let connections_refused = Counter::default();
        let connections_timed_out = Counter::default();
        let disk_full = Gauge::default();
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
        registry.register(
            "rpc_client_request",
            "Internal gRPC calls made, by method and result",
            rpc_client_counter.clone(),
        );
        registry.register(
            "rpc_client_duration_seconds",
            "Internal gRPC call duration, by method",
            rpc_client_duration.clone(),
        );
        registry.register("worker_queue_length", "Items waiting for a background worker", worker_queue_length.clone());
        registry.register("worker_errors", "Errors of a background worker", worker_errors.clone());
        registry.register(
            "worker_state",
            "Background worker state: 0 idle, 1 busy, 2 paused, 3 failed",
            worker_state.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections refused because a listener had reached its connection limit",
            connections_refused.clone(),
        );
        registry.register(
            "connections_timed_out",
            "Connections closed because the peer stayed silent or stopped reading",
            connections_timed_out.clone(),
        );
        registry.register("disk_full", "1 while the data disk is below its free-space reserve", disk_full.clone());
        Self {
            registry,
            api_s3_request_counter,
            api_s3_request_duration,
            block_bytes_written,
            block_bytes_read,
            block_corruptions,
            block_deleted,
            rpc_request_counter,
            rpc_client_counter,
            rpc_client_duration,
            worker_queue_length,
            worker_errors,
            worker_state,
            connections_refused,
            connections_timed_out,
            disk_full,
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

    /// Counts one internal call made.
    pub fn rpc_client(&self, method: &'static str, error: Option<&crate::Error>, took: std::time::Duration) {
        let result = match error {
            None => "ok",
            Some(crate::Error::Unavailable(_)) => "unavailable",
            Some(crate::Error::StaleLayout(_)) => "stale_layout",
            Some(crate::Error::InsufficientStorage(_)) => "insufficient_storage",
            Some(_) => "error",
        };
        self.rpc_client_counter.get_or_create(&RpcLabels { rpc_endpoint: method, result }).inc();
        self.rpc_client_duration.get_or_create(&NameLabel { name: method.to_string() }).observe(took.as_secs_f64());
    }
}

/// The process's metrics (one registry per process, shared by the services it runs).
pub fn metrics() -> Arc<Metrics> {
    static M: OnceLock<Arc<Metrics>> = OnceLock::new();
    M.get_or_init(|| Arc::new(Metrics::new())).clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(colour: bool) -> String {
        let buf = Buffer::default();
        let writer = buf.clone();
        let sub = subscriber(log_filter(None, None), colour, move || writer.clone());
        tracing::subscriber::with_default(sub, || tracing::warn!(bucket = "b", "hello"));
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn no_colour_codes_unless_stderr_is_a_terminal() {
        assert!(!use_colour(false, None));
        assert!(use_colour(true, None));
        assert!(!use_colour(true, Some(std::ffi::OsStr::new("1"))));
        assert!(use_colour(true, Some(std::ffi::OsStr::new(""))));
        let plain = logged(false);
        assert!(plain.contains("hello") && !plain.contains('\x1b'), "{plain:?}");
        assert!(logged(true).contains('\x1b'));
    }

    #[test]
    fn filter_keeps_s3s_off_unless_named() {
        assert_eq!(log_filter(None, None), "info,s3s=off");
        assert_eq!(log_filter(Some("debug".into()), Some("trace".into())), "debug,s3s=off");
        assert_eq!(log_filter(None, Some("warn".into())), "warn,s3s=off");
        assert_eq!(log_filter(Some("info,s3s=debug".into()), None), "info,s3s=debug");
    }
}
