//! # audithawk
//!
//! A Kubernetes audit-log streaming analyzer. Audit events flow through four stages:
//!
//! ```text
//!  ingest ──────────────▶ model ───────────▶ engine ─────────▶ sinks
//!  webhook (POST /audit)   decode: EventList,  dedup (auditID,   stdout, file
//!  tail (rotating files)   JSON lines, arrays, stage), stage     (Splunk, Elastic,
//!  scan (files, stdin)     GKE/AKS envelopes   filter, Sigma     webhook... later)
//!                          → AuditEvent        rules → Alert     via the driver
//! ```
//!
//! # Layout
//! - [`ingest`]: where events come from: [`ingest::webhook`] (the API server's webhook
//!   backend), [`ingest::tail`] (following the log backend's files through rotation, with a
//!   durable checkpoint) and [`ingest::scan`] (offline forensics over files and stdin).
//! - [`model`]: the typed audit Event (parsed once, borrowed from the input), field access by
//!   Sigma-style paths, the ECS-shaped alert, and redaction of secret material.
//! - [`rules`]: Sigma rules: YAML schema, compilation into matchers, condition parsing,
//!   value lists (`expand`), field mapping and lint. No async, no I/O beyond reading rules.
//! - [`engine`]: de-duplication, stage filter and rule evaluation; produces alerts. No I/O.
//! - [`sinks`]: the sink trait, the shared driver (batching, retry, routing), and sinks.
//! - [`pipeline`]: bounded queues and worker tasks wiring ingest to engine to sinks, and
//!   graceful shutdown.
//! - [`config`]: the YAML config, validated once into typed structs with every problem listed.
//! - [`telemetry`]: metrics (Prometheus text) and logging.
//! - [`cli`]: the command line (`serve`, `tail`, `scan`, `demo`, `rules`, `config`).

pub mod app;
pub mod cli;
pub mod config;
pub mod engine;
pub mod generate;
pub mod ingest;
pub mod kafka;
pub mod model;
pub mod pipeline;
pub mod policy;
pub mod reload;
pub mod rules;
pub mod sinks;
pub mod telemetry;
