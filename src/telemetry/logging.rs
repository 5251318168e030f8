//! tracing set-up: human-readable or JSON lines on stderr.

use tracing_subscriber::{fmt, EnvFilter};

/// Installs the global subscriber. `json` selects JSON lines; the filter comes from
/// `AUDITHAWK_LOG` (e.g. `info`, `audithawk=debug`), defaulting to `default_level`.
pub fn init(json: bool, default_level: &str) {
    let filter =
        EnvFilter::try_from_env("AUDITHAWK_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // A second init (tests) is harmless: try_init returns an error we ignore.
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.with_target(false).try_init()
    };
}
