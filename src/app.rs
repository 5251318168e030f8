//! Long-running commands: `serve`, `tail` and `demo` wiring ingest, pipeline and sinks.
//!
//! Shutdown order matters and is the same everywhere:
//! 1. the source stops taking new input (the webhook stops accepting and finishes in-flight
//!    requests; the tailer finishes its batch and commits its checkpoint);
//! 2. the last pipeline handle is dropped, so the workers drain the queue and exit;
//! 3. the sinks flush what they hold, within `shutdown_timeout`.
//!
//! Nothing that was answered with 200 (or read and checkpointed) is dropped on the way.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::engine::Engine;
use crate::ingest::webhook::{WebhookConfig, WebhookServer};
use crate::pipeline::{Pipeline, PipelineHandle};

use crate::telemetry::Metrics;

/// Errors that stop a long-running command.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A sink could not be built.
    #[error("sink {index} ({kind}): {message}")]
    Sink {
        /// Position in `sinks`.
        index: usize,
        /// Sink type.
        kind: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The webhook server failed.
    #[error(transparent)]
    Webhook(#[from] crate::ingest::webhook::WebhookError),
    /// The tailer failed.
    #[error(transparent)]
    Tail(#[from] crate::ingest::tail::TailError),
    /// Something else (I/O while reading the token file, the demo's HTTP client).
    #[error("{0}")]
    Other(String),
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("Shutdown signal received; draining.");
}

/// One router per configured sink, so that a reload can keep the sinks whose settings did
/// not change (crate::reload).
async fn build_routers(
    cfg: &Config,
    metrics: &Arc<Metrics>,
) -> Result<Vec<crate::sinks::Router>, AppError> {
    let mut routers = Vec::with_capacity(cfg.sinks.len());
    for (i, s) in cfg.sinks.iter().enumerate() {
        let r = crate::sinks::config::build_router(
            std::slice::from_ref(s),
            metrics.clone(),
            &cfg.data_dir,
        )
        .await
        .map_err(|e| AppError::Other(format!("sinks[{i}]: {e}")))?;
        routers.push(r);
    }
    Ok(routers)
}

/// Starts the pipeline with the configured sinks.
pub async fn start_pipeline(
    cfg: &Config,
    engine: Arc<Engine>,
    metrics: &Arc<Metrics>,
) -> Result<(Pipeline, PipelineHandle), AppError> {
    let routers = build_routers(cfg, metrics).await?;
    let forwarder =
        crate::sinks::raw::RawForwarder::start(&cfg.raw_forwarding, metrics.clone(), &cfg.data_dir)
            .await
            .map_err(|e| AppError::Other(format!("raw_forwarding: {e}")))?;
    let workers = match cfg.engine.workers {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    Ok(Pipeline::start_with(
        engine,
        routers,
        forwarder,
        workers,
        cfg.engine.queue_capacity,
        metrics.clone(),
    ))
}

/// The webhook settings from the config.
pub fn webhook_config(cfg: &Config) -> Result<WebhookConfig, AppError> {
    let listen = cfg.serve.listen.parse().map_err(|_| {
        AppError::Other(format!(
            "serve.listen {:?} is not an address",
            cfg.serve.listen
        ))
    })?;
    let tls = match (&cfg.serve.tls.cert, &cfg.serve.tls.key) {
        (Some(cert), Some(key)) => Some(crate::ingest::tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: cfg.serve.tls.client_ca.clone(),
        }),
        _ => None,
    };
    let bearer_token = cfg
        .bearer_token()
        .map_err(|e| AppError::Other(format!("serve.bearer_token_file: {e}")))?;
    Ok(WebhookConfig {
        listen,
        tls,
        bearer_token,
        max_body_bytes: cfg.serve.max_body_bytes,
        max_event_bytes: cfg.serve.max_event_bytes,
        default_cluster: cfg.cluster.clone(),
        clusters: cfg
            .serve
            .clusters
            .iter()
            .map(|c| crate::ingest::webhook::ClusterIdentity {
                name: c.name.clone(),
                client_cn: c.client_cn.clone(),
                client_san_dns: c.client_san_dns.clone(),
            })
            .collect(),
        retry_after_secs: cfg.serve.retry_after_secs,
        header_read_timeout: cfg.serve.header_read_timeout.0,
        idle_timeout: cfg.serve.idle_timeout.0,
        max_connections: cfg.serve.max_connections,
        shutdown_timeout: cfg.shutdown_timeout.0,
        ..WebhookConfig::default()
    })
}

/// `audithawk serve`: runs until `shutdown` resolves, then drains and flushes.
pub async fn serve(
    cfg: &Config,
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AppError> {
    serve_with(cfg, engine, metrics, shutdown, RunOptions::default()).await
}

/// Extras of the long-running commands: hot reload and, for tests and embedding, the bound
/// address.
#[derive(Debug, Default)]
pub struct RunOptions {
    /// Enables hot reload (SIGHUP, watched files every 2 s, `reload_trigger`).
    pub reload: Option<crate::reload::ReloadSource>,
    /// Each message reloads at once (as SIGHUP does).
    pub reload_trigger: Option<tokio::sync::mpsc::Receiver<()>>,
    /// Receives the outcome of every reload.
    pub reload_outcomes: Option<tokio::sync::mpsc::UnboundedSender<crate::reload::ReloadOutcome>>,
    /// How often watched files are checked (default [`crate::reload::POLL_INTERVAL`]).
    pub reload_poll: Option<Duration>,
    /// Receives the webhook's bound address once listening (useful with port 0).
    pub bound: Option<tokio::sync::oneshot::Sender<std::net::SocketAddr>>,
    /// Publish accepted events to Kafka (`--forward-to kafka`) instead of evaluating them
    /// here: the stateless ingest tier of docs/scale-out.md.
    pub forward_to_kafka: bool,
}

/// Starts the reload task when configured; returns its stop signal and task.
fn start_reloader(
    cfg: &Config,
    engine: &Arc<crate::pipeline::EngineSlot>,
    router: &Arc<crate::pipeline::RouterSlot>,
    webhook: Option<crate::ingest::webhook::WebhookControl>,
    metrics: &Arc<Metrics>,
    opts: &mut RunOptions,
) -> Option<(
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
)> {
    let source = opts.reload.take()?;
    let reloader = Arc::new(crate::reload::Reloader::new(
        source,
        cfg.clone(),
        engine.clone(),
        router.clone(),
        webhook,
        metrics.clone(),
    ));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(crate::reload::run(
        reloader,
        opts.reload_trigger.take(),
        opts.reload_outcomes.take(),
        opts.reload_poll.unwrap_or(crate::reload::POLL_INTERVAL),
        async move {
            let _ = stop_rx.await;
        },
    ));
    Some((stop_tx, task))
}

/// Stops the reload task (a reload in progress completes first).
async fn stop_reloader(
    r: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
) {
    if let Some((stop, task)) = r {
        let _ = stop.send(());
        let _ = task.await;
    }
}

/// [`serve`] with hot reload and the other [`RunOptions`].
pub async fn serve_with(
    cfg: &Config,
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
    mut opts: RunOptions,
) -> Result<(), AppError> {
    if opts.forward_to_kafka {
        let publisher = start_publisher(cfg, &metrics).await?;
        let handle = PipelineHandle::publishing(publisher.clone(), metrics.clone());
        let server = WebhookServer::bind(webhook_config(cfg)?, handle, metrics.clone()).await?;
        tracing::info!(addr = %server.local_addr(), topic = %cfg.kafka.events_topic, "Listening for audit events; forwarding to Kafka.");
        if let Some(tx) = opts.bound.take() {
            let _ = tx.send(server.local_addr());
        }
        // Hot reload still rotates the webhook's certificates, token and cluster mapping;
        // the engine and sink slots are placeholders (nothing is evaluated here).
        let engine_slot = Arc::new(crate::pipeline::EngineSlot::new(engine));
        let router_slot = Arc::new(crate::pipeline::RouterSlot::new(Vec::new()));
        let reloader = start_reloader(
            cfg,
            &engine_slot,
            &router_slot,
            Some(server.control()),
            &metrics,
            &mut opts,
        );
        let res = server.run(shutdown).await;
        stop_reloader(reloader).await;
        stop_publisher(publisher, cfg).await;
        return res.map_err(AppError::from);
    }
    let (pipeline, handle) = start_pipeline(cfg, engine, &metrics).await?;
    let server = WebhookServer::bind(webhook_config(cfg)?, handle, metrics.clone()).await?;
    tracing::info!(addr = %server.local_addr(), "Listening for audit events.");
    if let Some(tx) = opts.bound.take() {
        let _ = tx.send(server.local_addr());
    }
    let reloader = start_reloader(
        cfg,
        pipeline.engine_slot(),
        pipeline.router_slot(),
        Some(server.control()),
        &metrics,
        &mut opts,
    );
    let res = server.run(shutdown).await;
    stop_reloader(reloader).await;
    res?;
    finish(pipeline, cfg).await;
    Ok(())
}

/// Drains the pipeline and flushes sinks within the configured deadline.
pub async fn finish(pipeline: Pipeline, cfg: &Config) {
    if !pipeline.shutdown(cfg.shutdown_timeout.0).await {
        tracing::error!(
            timeout = ?cfg.shutdown_timeout.0,
            "Sinks did not flush within the shutdown timeout; some alerts may not have been delivered."
        );
    }
}

/// The tailer settings from the config.
pub fn tail_config(cfg: &Config) -> crate::ingest::tail::TailConfig {
    let mut t =
        crate::ingest::tail::TailConfig::new(cfg.tail.paths.clone(), cfg.tail.checkpoint.clone());
    t.from = match cfg.tail.from {
        crate::config::StartAt::Beginning => crate::ingest::tail::StartAt::Beginning,
        crate::config::StartAt::End => crate::ingest::tail::StartAt::End,
    };
    t.poll_interval = cfg.tail.poll_interval.0;
    t.max_line_bytes = cfg.serve.max_event_bytes.max(1024);
    t.cluster = cfg.cluster.clone();
    t
}

/// `audithawk tail`: follows the configured files until `shutdown` resolves, then commits
/// its checkpoint, drains and flushes.
pub async fn tail(
    cfg: &Config,
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AppError> {
    tail_with(cfg, engine, metrics, shutdown, RunOptions::default()).await
}

/// [`tail`] with hot reload (`bound` is unused).
pub async fn tail_with(
    cfg: &Config,
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
    mut opts: RunOptions,
) -> Result<(), AppError> {
    if opts.forward_to_kafka {
        let publisher = start_publisher(cfg, &metrics).await?;
        let handle = PipelineHandle::publishing(publisher.clone(), metrics.clone());
        let res =
            crate::ingest::tail::run(tail_config(cfg), handle, metrics.clone(), shutdown).await;
        stop_publisher(publisher, cfg).await;
        return res.map_err(AppError::from);
    }
    let (pipeline, handle) = start_pipeline(cfg, engine, &metrics).await?;
    let reloader = start_reloader(
        cfg,
        pipeline.engine_slot(),
        pipeline.router_slot(),
        None,
        &metrics,
        &mut opts,
    );
    let res = crate::ingest::tail::run(tail_config(cfg), handle, metrics.clone(), shutdown).await;
    stop_reloader(reloader).await;
    // Drain even when the tailer failed: what it handed over is still delivered.
    finish(pipeline, cfg).await;
    res.map_err(AppError::from)
}

/// The Kafka producer of the ingest tier (topics created first when configured).
async fn start_publisher(
    cfg: &Config,
    metrics: &Arc<Metrics>,
) -> Result<Arc<crate::kafka::publish::EventPublisher>, AppError> {
    kafka_checks(cfg)?;
    crate::kafka::ensure_topics(&cfg.kafka)
        .await
        .map_err(|e| AppError::Other(e.to_string()))?;
    let p = crate::kafka::publish::EventPublisher::new(&cfg.kafka, metrics.clone())
        .map_err(|e| AppError::Other(e.to_string()))?;
    Ok(Arc::new(p))
}

/// Waits for what was enqueued to reach the brokers (every handle is gone by now).
async fn stop_publisher(p: Arc<crate::kafka::publish::EventPublisher>, cfg: &Config) {
    match Arc::try_unwrap(p) {
        Ok(p) => {
            if !p.shutdown(cfg.shutdown_timeout.0).await {
                tracing::error!("Kafka producer did not flush within the shutdown timeout.");
            }
        }
        Err(_) => tracing::error!("Kafka producer still in use at shutdown."),
    }
}

fn kafka_checks(cfg: &Config) -> Result<(), AppError> {
    let problems = cfg.kafka.validate(true);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(AppError::Other(format!(
            "invalid Kafka settings:{}",
            crate::config::problem_list(&problems)
        )))
    }
}

/// `audithawk detect --from kafka`: joins the detector group and evaluates the partitions
/// it is given until `shutdown` resolves; then commits, snapshots, leaves the group and
/// flushes the sinks. `engine` must have no `state_dir` (state lives in the state topic).
pub async fn detect_kafka(
    cfg: &Config,
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
    started: Option<tokio::sync::oneshot::Sender<crate::kafka::detect::DetectorControl>>,
) -> Result<(), AppError> {
    kafka_checks(cfg)?;
    crate::kafka::ensure_topics(&cfg.kafka)
        .await
        .map_err(|e| AppError::Other(e.to_string()))?;
    for s in &cfg.sinks {
        if matches!(
            s.delivery().buffer,
            crate::sinks::config::BufferConfig::Memory { .. }
        ) {
            // stdout has no `delivery` settings: name the remedy that exists for it.
            let remedy = if matches!(s, crate::config::SinkConfig::Stdout(_)) {
                "stdout cannot buffer on disk; where that matters, deliver through a sink with `delivery.buffer.type: disk`"
            } else {
                "set `delivery.buffer.type: disk`"
            };
            tracing::warn!(sink = %s.name(), remedy, "Offsets are committed once alerts are in a sink's queue; this sink's queue is in memory, so a detector crash can lose the alerts it holds.");
        }
    }
    let router = Arc::new(crate::pipeline::RouterSlot::new(
        build_routers(cfg, &metrics).await?,
    ));
    let metrics_for_probe = metrics.clone();
    let detector =
        crate::kafka::detect::Detector::start(&cfg.kafka, engine, router.clone(), metrics)
            .map_err(|e| AppError::Other(e.to_string()))?;
    tracing::info!(group = %cfg.kafka.group_id, topic = %cfg.kafka.events_topic, "Detector joined the group.");
    let control = detector.control();
    // Probes and scrapes: the detector has no webhook server to carry them.
    let probes = match cfg.kafka.detect_listen.as_str() {
        "" => None,
        addr => {
            let addr: std::net::SocketAddr = addr.parse().map_err(|_| {
                AppError::Other(format!("kafka.detect_listen {addr:?} is not an address"))
            })?;
            let c = control.clone();
            let server = crate::telemetry::http::ProbeServer::bind(
                addr,
                metrics_for_probe.clone(),
                Arc::new(move || c.joined()),
            )
            .await
            .map_err(|e| AppError::Other(format!("kafka.detect_listen {addr}: {e}")))?;
            let bound = server.local_addr().ok();
            tracing::info!(addr = ?bound, "Serving /metrics, /healthz and /readyz.");
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(server.run(async move {
                let _ = stopped.await;
            }));
            Some((stop, task, bound))
        }
    };
    if let Some(tx) = started {
        let _ = tx.send(control.with_probe_addr(probes.as_ref().and_then(|p| p.2)));
    }
    detector.run(shutdown).await;
    if let Some((stop, task, _)) = probes {
        let _ = stop.send(());
        let _ = task.await;
    }
    if !router.shutdown(cfg.shutdown_timeout.0).await {
        tracing::error!("Sinks did not flush within the shutdown timeout.");
    }
    Ok(())
}

/// The bundled demo: a short day of cluster traffic with an attack story inside.
pub const DEMO_STORY: &str = include_str!("demo/story.jsonl");

/// What `demo` did.
#[derive(Debug, Clone, Default)]
pub struct DemoReport {
    /// Where the webhook listened.
    pub url: String,
    /// EventList requests POSTed.
    pub requests: usize,
    /// Events sent.
    pub events: usize,
    /// Events the server accepted.
    pub accepted: u64,
}

/// `audithawk demo`: starts the webhook server on a loopback port, POSTs the bundled story
/// to it exactly as the API server's batch backend does (EventList, items without
/// kind/apiVersion, `?timeout=30s`), then shuts down gracefully so every alert is printed.
pub async fn demo(
    cfg: &Config,
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    batch: usize,
) -> Result<DemoReport, AppError> {
    let (pipeline, handle) = start_pipeline(cfg, engine, &metrics).await?;
    let wcfg = WebhookConfig {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        default_cluster: Some("demo".into()),
        shutdown_timeout: cfg.shutdown_timeout.0,
        ..WebhookConfig::default()
    };
    let server = WebhookServer::bind(wcfg, handle, metrics.clone()).await?;
    let url = format!("http://{}/audit/demo?timeout=30s", server.local_addr());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async move {
        let _ = stop_rx.await;
    }));
    let mut report = DemoReport {
        url: url.clone(),
        ..DemoReport::default()
    };
    let result = post_story(&url, batch.max(1), &mut report).await;
    let _ = stop_tx.send(());
    match running.await {
        Ok(r) => r?,
        Err(e) => return Err(AppError::Other(format!("webhook task failed: {e}"))),
    }
    finish(pipeline, cfg).await;
    result.map(|()| report)
}

async fn post_story(url: &str, batch: usize, report: &mut DemoReport) -> Result<(), AppError> {
    let client = reqwest::Client::new();
    let events: Vec<serde_json::Value> = DEMO_STORY
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| serde_json::from_str(l).ok())
        .map(|mut v: serde_json::Value| {
            // The webhook backend sends internal events: no kind/apiVersion on items.
            if let Some(o) = v.as_object_mut() {
                o.remove("kind");
                o.remove("apiVersion");
            }
            v
        })
        .collect();
    for chunk in events.chunks(batch) {
        let body = serde_json::json!({
            "kind": "EventList",
            "apiVersion": "audit.k8s.io/v1",
            "metadata": {},
            "items": chunk,
        });
        let resp = client
            .post(url)
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| AppError::Other(format!("POST {url}: {e}")))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(AppError::Other(format!("POST {url}: {status}: {text}")));
        }
        let accepted = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["accepted"].as_u64())
            .unwrap_or(0);
        report.requests += 1;
        report.events += chunk.len();
        report.accepted += accepted;
    }
    Ok(())
}
