//! Telemetry: logs, traces and metrics.
//!
//! Logs go to stderr through `tracing`; traces leave over OTLP when a sink is configured
//! (`traces`); every component serves its metrics at `/metrics` (`metrics`).

pub mod metrics;
pub mod traces;

use std::sync::OnceLock;

pub use metrics::{Metrics, metrics};

/// The id this process reports as `from` in RPC metrics: a data node's id, else the host name.
static NODE: OnceLock<String> = OnceLock::new();

pub fn set_this_node(id: &str) {
    let _ = NODE.set(id.to_string());
}

pub fn this_node() -> String {
    static HOST: OnceLock<String> = OnceLock::new();
    NODE.get().unwrap_or_else(|| HOST.get_or_init(crate::ids::hostname)).clone()
}

/// The `service.name` a process reports.
#[derive(Clone, Copy, Debug)]
pub enum Service {
    S3Frontend,
    DataNode,
    ControlPlane,
    /// `hangar server`: all of them in one process.
    Server,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::S3Frontend => "hangar-s3-frontend",
            Service::DataNode => "hangar-data-node",
            Service::ControlPlane => "hangar-control-plane",
            Service::Server => "hangar",
        }
    }
}

/// Log settings: the level and the format.
#[derive(Clone, Debug, Default)]
pub struct LogSettings {
    /// A `tracing` filter (`info`, `hangar_data_node=debug,info`); `HANGAR_LOG` and `RUST_LOG` win.
    pub level: Option<String>,
    /// JSON lines instead of text; `HANGAR_LOG_FORMAT` (`json` or `text`) wins.
    pub json: bool,
}

/// Starts logging, and trace export when `export` is given. Call once, inside the tokio
/// runtime, before the service starts; call [`shutdown`] when it has stopped.
pub fn init(logs: &LogSettings, export: Option<traces::Export>) -> Result<(), crate::Error> {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = log_filter(std::env::var("HANGAR_LOG").ok().or(std::env::var("RUST_LOG").ok()).or(logs.level.clone()));
    let colour = use_colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref());
    let json = match std::env::var("HANGAR_LOG_FORMAT").ok().as_deref().map(str::trim) {
        Some("json") => true,
        Some("text") => false,
        Some("") | None => logs.json,
        Some(other) => {
            return Err(crate::Error::Config(format!("HANGAR_LOG_FORMAT=`{other}`: use `text` or `json`")));
        }
    };
    let otel = export.as_ref().map(traces::layer).transpose()?;
    let registry = tracing_subscriber::registry().with(otel).with(log_layer(filter, colour, json, std::io::stderr));
    let _ = registry.try_init();
    if let Some(e) = export {
        tracing::info!(endpoint = %e.endpoint, service = e.service, "exporting traces over OTLP");
    }
    Ok(())
}

/// Logging for short commands and tests: text, `HANGAR_LOG`/`RUST_LOG` or `info`.
pub fn init_tracing() {
    let _ = init(&LogSettings::default(), None);
}

/// Flushes what is buffered for export. Call after the service stopped, before the
/// runtime is dropped.
pub fn shutdown() {
    traces::flush();
}

/// The filter: the one given (`HANGAR_LOG`, else `RUST_LOG`, else the config's), else
/// `info`. s3s stays quiet unless the filter names it: it logs every client error as an
/// error, and some with the whole request body (a malformed XML body of megabytes in one
/// line); the frontend logs each failed request itself, with bounded client data.
fn log_filter(given: Option<String>) -> String {
    let mut filter = given.filter(|f| !f.trim().is_empty()).unwrap_or_else(|| "info".into());
    if !filter.contains("s3s") {
        filter.push_str(",s3s=off");
    }
    filter
}

/// ANSI colours: on a terminal only, and not when `NO_COLOR` is set (to anything but "").
fn use_colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// The log lines: text (colours only on a terminal) or one JSON object per line, with the
/// fields of every span the line is in (a request's `trace_id` among them).
fn log_layer<S, W>(filter: String, colour: bool, json: bool, writer: W) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::Layer;
    let lines: Box<dyn Layer<S> + Send + Sync> = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(false)
            .with_span_list(true)
            .with_writer(writer)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer().with_ansi(colour).with_writer(writer).boxed()
    };
    lines.with_filter(tracing_subscriber::EnvFilter::new(filter))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

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

    fn logged(colour: bool, json: bool) -> String {
        use tracing_subscriber::layer::SubscriberExt;
        let buf = Buffer::default();
        let writer = buf.clone();
        let sub =
            tracing_subscriber::registry().with(log_layer(log_filter(None), colour, json, move || writer.clone()));
        tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!("s3.request", trace_id = %"0af7651916cd43dd8448eb211c80319c");
            span.in_scope(|| tracing::warn!(bucket = "b", "hello"));
            tracing::debug!("not shown at info");
        });
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn no_colour_codes_unless_stderr_is_a_terminal() {
        assert!(!use_colour(false, None));
        assert!(use_colour(true, None));
        assert!(!use_colour(true, Some(std::ffi::OsStr::new("1"))));
        assert!(use_colour(true, Some(std::ffi::OsStr::new(""))));
        let plain = logged(false, false);
        assert!(plain.contains("hello") && !plain.contains('\x1b'), "{plain:?}");
        assert!(plain.contains("trace_id=0af7651916cd43dd8448eb211c80319c"), "{plain:?}");
        assert!(!plain.contains("not shown"), "{plain:?}");
        assert!(logged(true, false).contains('\x1b'));
    }

    #[test]
    fn json_lines_carry_the_request_trace_id() {
        let text = logged(false, true);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let line: serde_json::Value = serde_json::from_str(lines[0]).expect("one JSON object per line");
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["fields"]["message"], "hello");
        assert_eq!(line["fields"]["bucket"], "b");
        assert_eq!(line["spans"][0]["trace_id"], "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(line["spans"][0]["name"], "s3.request");
    }

    #[test]
    fn filter_keeps_s3s_off_unless_named() {
        assert_eq!(log_filter(None), "info,s3s=off");
        assert_eq!(log_filter(Some("debug".into())), "debug,s3s=off");
        assert_eq!(log_filter(Some(" ".into())), "info,s3s=off");
        assert_eq!(log_filter(Some("info,s3s=debug".into())), "info,s3s=debug");
    }
}
