//! Alerts to standard output: a readable line per alert, or JSON lines.

use std::io::Write;

use super::{BoxFuture, SendOutcome, Sink};
use crate::model::SharedAlert;

/// How alerts are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One readable line per alert.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Renders one alert in `format` (no trailing newline).
pub fn render(alert: &crate::model::Alert, format: Format) -> String {
    match format {
        Format::Text => alert.to_line(),
        Format::Json => alert.to_json(),
    }
}

/// The stdout sink.
#[derive(Debug)]
pub struct StdoutSink {
    format: Format,
}

impl StdoutSink {
    /// A sink printing in `format`.
    pub fn new(format: Format) -> StdoutSink {
        StdoutSink { format }
    }
}

impl Sink for StdoutSink {
    fn name(&self) -> &str {
        "stdout"
    }

    fn send<'a>(&'a self, batch: &'a [SharedAlert]) -> BoxFuture<'a, SendOutcome> {
        Box::pin(async move {
            let mut buf = String::new();
            for a in batch {
                buf.push_str(&render(a, self.format));
                buf.push('\n');
            }
            let mut out = std::io::stdout().lock();
            match out.write_all(buf.as_bytes()).and_then(|_| out.flush()) {
                Ok(()) => SendOutcome::Done,
                // A closed pipe (`| head`) will not come back.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => SendOutcome::Fatal {
                    reason: e.to_string(),
                },
                Err(e) => SendOutcome::Retry {
                    reason: e.to_string(),
                    after: None,
                },
            }
        })
    }
}
