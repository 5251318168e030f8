//! tracing set-up: human-readable or JSON lines on stderr, plus the OpenTelemetry span
//! exporter when OTLP is configured.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

use super::otel::OtelGuard;

/// Installs the global subscriber. `json` selects JSON lines; the filter comes from
/// `AUDITHAWK_LOG` (e.g. `info`, `audithawk=debug`), defaulting to `default_level`.
pub fn init(json: bool, default_level: &str) {
    init_with_otel(json, default_level, None);
}

/// As [`init`], adding the OTLP span exporter of `otel` when given. Only the first call in a
/// process takes effect (a second one, as in tests, is ignored).
pub fn init_with_otel(json: bool, default_level: &str, otel: Option<&OtelGuard>) {
    let filter =
        EnvFilter::try_from_env("AUDITHAWK_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    let fmt_layer = if json {
        fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        fmt::layer()
            .with_target(false)
            .with_writer(std::io::stderr)
            .boxed()
    };
    let _ = tracing_subscriber::registry()
        .with(fmt_layer.with_filter(filter))
        .with(otel.map(|g| g.tracing_layer()))
        .try_init();
}
