//! The data that flows through audithawk: audit events in, alerts out.
//!
//! - [`event`]: the typed `audit.k8s.io/v1` Event, borrowed from the input buffer.
//! - [`decode`]: EventList / JSON lines / arrays / envelopes to events, errors per record.
//! - [`wrappers`]: GKE and AKS cloud-logging envelopes normalised to Events.
//! - [`fields`]: Sigma-style dotted field paths and the [`fields::Document`] trait.
//! - [`alert`]: the ECS-shaped alert.
//! - [`redact`]: secret material removed before anything leaves the process.

pub mod alert;
pub mod decode;
pub mod event;
pub mod fields;
pub mod redact;
pub mod wrappers;

pub use alert::{Alert, Level, RuleMeta, SharedAlert};
pub use decode::{decode_value, DecodeError, DecodeLimits, Location};
pub use event::{AuditEvent, EventError, Stage};
pub use fields::{Document, FieldPath, Val};
