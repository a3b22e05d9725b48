//! Logs of every command: `--log-format text|json` and `--log-level` (global flags), else
//! `RUST_LOG`, else the command's default filter. Logs go to stderr; stdout keeps what a
//! command prints for people and scripts (the banner, received messages, JSON results).
//!
//! A json line is one object:
//!
//! ```text
//! {"ts":"2026-12-07T23:40:01.123456Z","level":"INFO","plane":"sidechannel",
//!  "target":"intercom_peer::runtime","peer":"5a3c0e1f9b2d4c6e","msg":"sidechannel joined",
//!  "fields":{"channel":"0000intercom"}}
//! ```
//!
//! `plane` is the crate the event comes from, by concern (`sidechannel`, `subnet`, `log`,
//! `bridge`, `dht`, `swarm`, `wire`, `stores`, `metrics`, `cli`); `peer` is the first 16 hex
//! digits of the peer's key once the command knows it (absent before). Events are formatted
//! here rather than by tracing-subscriber's own json layer so that every line carries the
//! plane and the peer, not only lines inside a span.

use std::sync::OnceLock;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// How log lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (tracing's default format).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The global logging flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LogArgs {
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, help_heading = "Logging")]
    pub log_format: LogFormat,

    /// Log filter: a level (error, warn, info, debug, trace) or directives such as
    /// `warn,intercom_subnet=debug` [default: RUST_LOG, else the command's default]
    #[arg(long, global = true, value_name = "FILTER", help_heading = "Logging")]
    pub log_level: Option<String>,
}

static ARGS: OnceLock<LogArgs> = OnceLock::new();
static PEER: OnceLock<String> = OnceLock::new();

/// Remembers the global flags (called once, before the command runs).
pub fn configure(args: LogArgs) {
    let _ = ARGS.set(args);
}

/// Whether json lines were asked for.
pub fn is_json() -> bool {
    ARGS.get().is_some_and(|a| a.log_format == LogFormat::Json)
}

/// Installs the subscriber: `--log-level`, else `RUST_LOG`, else `default_filter`. Later
/// calls do nothing.
pub fn init(default_filter: &str) {
    let args = ARGS.get().cloned().unwrap_or_default();
    let filter = args
        .log_level
        .filter(|s| !s.trim().is_empty())
        .or_else(|| {
            std::env::var("RUST_LOG")
                .ok()
                .filter(|s| !s.trim().is_empty())
        })
        .unwrap_or_else(|| default_filter.to_owned());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|e| {
        warning(&format!(
            "log filter {filter:?} is not valid ({e}); using {default_filter:?}"
        ));
        tracing_subscriber::EnvFilter::new(default_filter)
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.event_format(JsonLines).try_init(),
    };
}

/// Adds the peer's key prefix to every later json line.
pub fn set_peer(public_key: &[u8; 32]) {
    let _ = PEER.set(hex::encode(&public_key[..8]));
}

/// A notice for the operator: `note: ...` on stderr, or a json `WARN` line from the `cli`
/// plane when json logs are on (so stderr stays one object per line). Shown whatever the
/// log filter, as the plain line always was, and also before the subscriber is installed.
pub fn note(message: &str) {
    operator_line("note", message);
}

/// A warning for the operator: `warning: ...` on stderr, or a json `WARN` line.
pub fn warning(message: &str) {
    operator_line("warning", message);
}

fn operator_line(kind: &str, message: &str) {
    if !is_json() {
        eprintln!("{kind}: {message}");
        return;
    }
    let mut ts = String::new();
    let _ = tracing_subscriber::fmt::time::SystemTime.format_time(&mut Writer::new(&mut ts));
    let mut line = Map::new();
    line.insert("ts".into(), Value::String(ts));
    line.insert("level".into(), "WARN".into());
    line.insert("plane".into(), "cli".into());
    line.insert("target".into(), format!("intercom::{kind}").into());
    if let Some(peer) = PEER.get() {
        line.insert("peer".into(), peer.as_str().into());
    }
    line.insert("msg".into(), message.into());
    eprintln!("{}", Value::Object(line));
}

/// The plane an event's target belongs to.
pub fn plane_of(target: &str) -> &str {
    let krate = target.split("::").next().unwrap_or(target);
    match krate {
        "intercom_sidechannel" | "intercom_peer" => "sidechannel",
        "intercom_subnet" | "intercom_contracts" => "subnet",
        "intercom_log" => "log",
        "intercom_sc_bridge" => "bridge",
        "intercom_dht_rpc" | "intercom_hyperdht" => "dht",
        "intercom_swarm" | "intercom_udx" => "swarm",
        "intercom_protomux"
        | "intercom_secret_stream"
        | "intercom_encoding"
        | "intercom_crypto" => "wire",
        "intercom_stores" => "stores",
        "intercom_metrics" => "metrics",
        "intercom" => "cli",
        other => other,
    }
}

/// Collects an event's fields into a JSON object (`message` becomes `msg`).
#[derive(Default)]
struct Fields {
    msg: Option<String>,
    rest: Map<String, Value>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_owned()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.msg = Some(match value {
                Value::String(s) => s,
                other => other.to_string(),
            });
        } else {
            self.rest.insert(field.name().to_owned(), value);
        }
    }
}

/// The json event format (see the module docs).
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let mut ts = String::new();
        tracing_subscriber::fmt::time::SystemTime.format_time(&mut Writer::new(&mut ts))?;
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut line = Map::new();
        line.insert("ts".into(), Value::String(ts));
        line.insert("level".into(), Value::String(meta.level().to_string()));
        line.insert("plane".into(), plane_of(meta.target()).into());
        line.insert("target".into(), meta.target().into());
        if let Some(peer) = PEER.get() {
            line.insert("peer".into(), peer.as_str().into());
        }
        line.insert("msg".into(), fields.msg.unwrap_or_default().into());
        if !fields.rest.is_empty() {
            line.insert("fields".into(), Value::Object(fields.rest));
        }
        if let Some(scope) = ctx.event_scope() {
            let spans: Vec<Value> = scope.from_root().map(|s| s.name().into()).collect();
            if !spans.is_empty() {
                line.insert("spans".into(), Value::Array(spans));
            }
        }
        let text = serde_json::to_string(&Value::Object(line)).map_err(|_| std::fmt::Error)?;
        writer.write_str(&text)?;
        writer.write_char('\n')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planes() {
        assert_eq!(plane_of("intercom_peer::runtime"), "sidechannel");
        assert_eq!(plane_of("intercom_subnet::service"), "subnet");
        assert_eq!(plane_of("intercom_hyperdht"), "dht");
        assert_eq!(plane_of("intercom::run_cli"), "cli");
        assert_eq!(plane_of("tokio::task"), "tokio");
    }
}
