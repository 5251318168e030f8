//! Alert delivery: the [`Sink`] trait, the shared [`driver`], and the sinks.
//!
//! A sink encodes and sends one batch and classifies the outcome ([`SendOutcome`]); it
//! never sleeps or retries itself. The driver owns everything the sinks share: the bounded
//! queue (back-pressure reaches the webhook as 429), batching by events/bytes/time, retries
//! with capped exponential backoff and full jitter, routing by level and rule, and
//! shutdown with a deadline. The disk buffer and dead-letter file slot in at the driver,
//! so every sink gains them at once.

pub mod driver;
pub mod file;
pub mod stdout;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::model::SharedAlert;

pub use driver::{BatchPolicy, RetryPolicy, Route, Router, SinkDriver};

/// A boxed future, so that sinks are object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The result of one attempt to deliver one batch.
#[derive(Debug, Clone, PartialEq)]
pub enum SendOutcome {
    /// Everything was delivered.
    Done,
    /// Some items failed: `retry` may succeed later (indices into the batch); `rejected`
    /// never will (index, reason) and go to the dead-letter path.
    Partial {
        /// Indices to send again.
        retry: Vec<usize>,
        /// Indices rejected for good, with the reason.
        rejected: Vec<(usize, String)>,
    },
    /// Nothing was delivered; try the whole batch again (network error, 429, 5xx).
    Retry {
        /// Why.
        reason: String,
        /// Server-requested delay (Retry-After), if any.
        after: Option<Duration>,
    },
    /// Nothing was delivered and retrying cannot help (bad token, bad index).
    Fatal {
        /// Why.
        reason: String,
    },
}

/// Something that delivers alerts.
pub trait Sink: Send + Sync + 'static {
    /// A short name for logs and metrics (`stdout`, `file`, `splunk`...).
    fn name(&self) -> &str;

    /// One attempt to deliver `batch`.
    fn send<'a>(&'a self, batch: &'a [SharedAlert]) -> BoxFuture<'a, SendOutcome>;

    /// Flushes buffered output (called at shutdown).
    fn flush(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}
