//! Traces: `tracing` spans exported over OTLP (gRPC) when a sink is configured.
//!
//! One S3 request is one trace: the frontend's request span is its root, and the W3C trace
//! context (`traceparent`) travels in the metadata of every internal call, so the data
//! nodes' spans are its children. Only spans that belong to a traced request are
//! exported — the request roots (`s3.request`, and `rpc.serve` for calls that carry a
//! context or admin calls) and what runs inside them — never the background chatter
//! (heartbeats, probes, workers), which would bury the requests.
//!
//! Without a sink nothing of this is installed: no layer, no context in calls, no cost.

use std::sync::OnceLock;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Level;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::DynFilterFn;
use tracing_subscriber::registry::LookupSpan;

/// Span names that may start an exported trace.
pub const REQUEST_SPAN: &str = "s3.request";
pub const SERVE_SPAN: &str = "rpc.serve";
/// The target of request spans that were not sampled: logged like the others, never
/// exported, and nothing inside them is either (so an unsampled request costs no more than
/// with no export at all).
pub const UNTRACED_TARGET: &str = "hangar_s3_frontend::untraced";

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();
/// The share of S3 requests traced.
static RATIO: OnceLock<f64> = OnceLock::new();

/// Whether spans are exported (a sink was configured at start).
pub fn enabled() -> bool {
    PROVIDER.get().is_some()
}

/// Where and how traces go.
#[derive(Clone, Debug)]
pub struct Export {
    /// The OTLP gRPC endpoint, e.g. `http://localhost:4317`.
    pub endpoint: String,
    /// The `service.name` unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` name one.
    pub service: &'static str,
    /// Share of new traces kept, unless `OTEL_TRACES_SAMPLER` says otherwise.
    pub sample_ratio: f64,
}

/// The export settings: `[admin] trace_sink`, else `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
/// `OTEL_EXPORTER_OTLP_ENDPOINT`; None when none is set (nothing is exported).
pub fn export_from(sink: Option<&str>, service: &'static str, sample_ratio: f64) -> Option<Export> {
    export_with(sink, service, sample_ratio, |k| std::env::var(k).ok())
}

fn export_with(
    sink: Option<&str>,
    service: &'static str,
    sample_ratio: f64,
    env: impl Fn(&str) -> Option<String>,
) -> Option<Export> {
    let env = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let endpoint = sink
        .map(str::to_string)
        .or_else(|| env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"))?;
    Some(Export { endpoint, service, sample_ratio })
}

/// The service name unless the standard variables give one.
fn resource(service: &'static str) -> Resource {
    let named_by_env = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES")
            .is_ok_and(|v| v.split(',').any(|kv| kv.trim().starts_with("service.name=")));
    let mut b =
        Resource::builder().with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if !named_by_env {
        b = b.with_service_name(service);
    }
    b.build()
}

/// Builds the exporter and the provider (which must run inside the tokio runtime: the
/// exporter's channel lives there) and returns the layer that feeds it.
pub(super) fn layer<S>(export: &Export) -> Result<impl tracing_subscriber::Layer<S>, crate::Error>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    use opentelemetry_otlp::WithExportConfig;
    use tracing_subscriber::Layer;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(export.endpoint.clone())
        .with_timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| crate::Error::Config(format!("[admin] trace_sink `{}`: {e}", export.endpoint)))?;
    // The frontend decides per request, before any span is made (`sample`); calls follow
    // their caller, and admin calls are always traced.
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource(export.service))
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .build();
    let ratio = sample_ratio(
        std::env::var("OTEL_TRACES_SAMPLER").ok(),
        std::env::var("OTEL_TRACES_SAMPLER_ARG").ok(),
        export.sample_ratio,
    );
    let _ = RATIO.set(ratio);
    let tracer = provider.tracer("hangar");
    let _ = PROVIDER.set(provider);
    let filter = DynFilterFn::new(|meta, cx| {
        // A sampled request root, or anything inside one.
        let root = meta.name() == REQUEST_SPAN && meta.target() != UNTRACED_TARGET || meta.name() == SERVE_SPAN;
        (meta.is_span() && root) || cx.lookup_current().is_some()
    })
    .with_callsite_filter(|meta| {
        // The steps of a request are DEBUG spans (no cost at all without export); events
        // are kept from INFO up.
        let level = if meta.is_span() { Level::DEBUG } else { Level::INFO };
        if meta.target().starts_with("hangar") && *meta.level() <= level {
            tracing::subscriber::Interest::sometimes()
        } else {
            tracing::subscriber::Interest::never()
        }
    })
    .with_max_level_hint(Level::DEBUG);
    // No per-poll bookkeeping: busy/idle timings and attaching the OpenTelemetry context on
    // every enter cost more than the spans themselves (parents come from tracing's own
    // span tree), and threads and source locations are noise in a request's trace.
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_tracked_inactivity(false)
        .with_context_activation(false)
        .with_threads(false)
        .with_location(false);
    Ok(layer.with_filter(filter))
}

/// The share of requests to trace: the standard `OTEL_TRACES_SAMPLER` (and its argument)
/// when set, else the configured ratio. Every sampler of the specification that needs no
/// remote service is understood; the parent-based ones mean the same here, since an S3
/// request has no parent.
fn sample_ratio(sampler: Option<String>, arg: Option<String>, configured: f64) -> f64 {
    let arg = || arg.as_deref().and_then(|a| a.trim().parse::<f64>().ok()).filter(|r| (0.0..=1.0).contains(r));
    match sampler.as_deref().map(str::trim) {
        None | Some("") => configured,
        Some("always_on" | "parentbased_always_on") => 1.0,
        Some("always_off" | "parentbased_always_off") => 0.0,
        Some("traceidratio" | "parentbased_traceidratio") => arg().unwrap_or(1.0),
        Some(other) => {
            tracing::warn!(sampler = other, "OTEL_TRACES_SAMPLER not understood; using [admin] trace_sample_ratio");
            configured
        }
    }
}

/// Whether to trace the S3 request about to start (false when nothing is exported).
pub fn sample() -> bool {
    match RATIO.get() {
        Some(&r) if r >= 1.0 => true,
        Some(&r) if r > 0.0 => rand::random::<f64>() < r,
        _ => false,
    }
}

/// Exports the spans still buffered; at shutdown.
pub fn flush() {
    if let Some(p) = PROVIDER.get()
        && let Err(e) = p.shutdown_with_timeout(std::time::Duration::from_secs(5))
    {
        tracing::warn!(error = %e, "could not flush the last traces");
    }
}

/// The trace id of `span` as 32 lowercase hex digits, when traces are exported.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    if !enabled() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// Ends the exported span of a request when its response is ready: calls still running
/// for it (the replicas beyond the quorum) go on as its children, but the request's own
/// duration is what its client waited.
pub fn end(span: &tracing::Span) {
    if enabled() {
        span.context().span().end();
    }
}

/// Renames an exported span once its operation is known (an S3 request's span is started
/// before s3s has recognised the operation).
pub fn rename(span: &tracing::Span, name: String) {
    if enabled() {
        span.context().span().update_name(name);
    }
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(k, v);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Puts the trace context of `span` into an outgoing call's metadata.
pub fn inject(span: &tracing::Span, metadata: &mut tonic::metadata::MetadataMap) {
    if enabled() {
        TraceContextPropagator::new().inject_context(&span.context(), &mut MetadataInjector(metadata));
    }
}

/// The span of one incoming internal call (tonic's `trace_fn`): a child of the caller's
/// span when the call carries a trace context; admin calls start a trace of their own;
/// other calls (heartbeats, probes, syncs) are not traced.
pub fn serve_span(req: &http::Request<()>) -> tracing::Span {
    if !enabled() {
        return tracing::Span::none();
    }
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(req.headers()));
    let path = req.uri().path();
    let remote = parent.span().span_context().is_valid();
    if !remote && !path.starts_with("/hangar.control.AdminService/") {
        return tracing::Span::none();
    }
    // `/hangar.metadata.MetadataService/Get` is shown as `MetadataService/Get`.
    let name = path.trim_start_matches('/').rsplit_once('.').map(|(_, m)| m).unwrap_or(path).to_string();
    let span = tracing::info_span!(
        SERVE_SPAN,
        otel.name = name,
        otel.kind = "server",
        rpc.system = "grpc",
        trace_id = tracing::field::Empty
    );
    let _ = span.set_parent(parent);
    if let Some(id) = trace_id(&span) {
        span.record("trace_id", tracing::field::display(&id));
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sink_comes_first_then_the_standard_variables() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        let endpoint = |e: Option<Export>| e.map(|e| e.endpoint);
        let both: &[(&str, &str)] = &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://all:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317"),
        ];
        assert_eq!(
            endpoint(export_with(Some("http://sink:4317"), "s", 1.0, vars(both))).as_deref(),
            Some("http://sink:4317")
        );
        assert_eq!(endpoint(export_with(None, "s", 1.0, vars(both))).as_deref(), Some("http://traces:4317"));
        let general: &[(&str, &str)] = &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://all:4317")];
        assert_eq!(endpoint(export_with(None, "s", 1.0, vars(general))).as_deref(), Some("http://all:4317"));
        let blank: &[(&str, &str)] = &[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")];
        assert!(export_with(None, "s", 1.0, vars(blank)).is_none());
        assert!(export_with(None, "s", 1.0, vars(&[])).is_none());
    }

    #[test]
    fn the_standard_sampler_variables_replace_the_ratio() {
        let r = |s: Option<&str>, a: Option<&str>| sample_ratio(s.map(Into::into), a.map(Into::into), 0.5);
        assert_eq!(r(None, None), 0.5);
        assert_eq!(r(Some("always_on"), None), 1.0);
        assert_eq!(r(Some("parentbased_always_off"), None), 0.0);
        assert_eq!(r(Some("traceidratio"), Some("0.25")), 0.25);
        assert_eq!(r(Some("parentbased_traceidratio"), Some("2")), 1.0);
        assert_eq!(r(Some("traceidratio"), None), 1.0);
        assert_eq!(r(Some("jaeger_remote"), None), 0.5);
    }

    #[test]
    fn without_export_nothing_is_added_to_calls_and_no_call_is_traced() {
        // This test process installs no exporter.
        assert!(!enabled());
        let span = tracing::info_span!("anything");
        let mut md = tonic::metadata::MetadataMap::new();
        inject(&span, &mut md);
        assert!(md.is_empty());
        assert!(trace_id(&span).is_none());
        let mut req = http::Request::new(());
        req.headers_mut()
            .insert("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".parse().unwrap());
        assert!(serve_span(&req).is_none());
        assert!(!sample());
    }
}
