//! `audithawk serve`: the Kubernetes API server's audit webhook backend.
//!
//! The API server (`--audit-webhook-mode=batch`) POSTs an `audit.k8s.io/v1` `EventList` to
//! the URL in its webhook kubeconfig, authenticating with a client certificate or a bearer
//! token, and retries every answer outside 200–206 (5 attempts with backoff, then the batch
//! is dropped). Within one attempt client-go also honours `Retry-After` on 429 and 5xx,
//! which is how this receiver pushes back when the pipeline queue is full.
//!
//! # Layout
//! - this file: configuration, binding, the accept loop, per-connection timeouts and
//!   graceful shutdown;
//! - [`handler`]: routing, authentication and the HTTP responses;
//! - [`body`]: body to events (gzip, UTF-8, decoding), pure and unit-tested.
//!
//! # Connections and shutdown
//! A [`Semaphore`] caps open connections (the accept loop waits for a permit, so excess
//! clients queue in the kernel backlog instead of costing memory). Every connection is
//! bounded in time: the TLS handshake (`tls_handshake_timeout`), the request head
//! (`header_read_timeout`, HTTP/1.1), the body (`body_read_timeout`) and idleness
//! (`idle_timeout`: no request in flight). Shutdown is two-phase: [`Readiness::mark_unready`]
//! turns `/readyz` to 503 while requests are still served (so a load balancer can stop
//! routing first); then the `shutdown` future given to [`WebhookServer::run`] stops the
//! accept loop, asks every connection to finish its in-flight requests, and waits for them
//! (at most `shutdown_timeout`).

pub mod body;
pub mod handler;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

pub use crate::ingest::tls::TlsFiles;
use crate::ingest::tls::{self, TlsError};
use crate::model::DecodeLimits;
use crate::pipeline::PipelineHandle;
use crate::telemetry::Metrics;

/// Settings of the webhook receiver.
#[derive(Clone)]
pub struct WebhookConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Certificate, key and optional client CA; plain HTTP when `None` (a warning is logged).
    pub tls: Option<TlsFiles>,
    /// When set, `POST /audit` requires `Authorization: Bearer <token>` (compared in
    /// constant time). Printed as `***` by `Debug`.
    pub bearer_token: Option<String>,
    /// Largest request body, compressed and after gzip decompression (413 above it).
    pub max_body_bytes: usize,
    /// Largest single event in a batch; larger items are rejected one by one.
    pub max_event_bytes: usize,
    /// Cluster attached to events POSTed to `/audit` (without a `/{cluster}` suffix).
    pub default_cluster: Option<String>,
    /// Client-certificate identities mapped to clusters (multi-cluster, mutual TLS).
    pub clusters: Vec<ClusterIdentity>,
    /// Seconds sent in `Retry-After` with 429 (queue full) and 503 (shutting down).
    pub retry_after_secs: u64,
    /// Time allowed for a complete HTTP/1.1 request head; hyper also applies it while a
    /// keep-alive connection waits for the next request.
    pub header_read_timeout: Duration,
    /// Time allowed to receive a whole request body (408 after it).
    pub body_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Time allowed for the TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Open connections at most; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// HTTP/2 streams per connection at most (bounds memory per connection).
    pub max_concurrent_streams: u32,
    /// How long [`WebhookServer::run`] waits for in-flight requests after shutdown begins
    /// before it closes the remaining connections.
    pub shutdown_timeout: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            tls: None,
            bearer_token: None,
            // The API server's buffered backend sends up to 400 events per POST and does not
            // bound the request size (see PROTOCOL.md A); 400 × 100 KiB truncated events is
            // 40 MiB, so 64 MiB leaves headroom.
            max_body_bytes: 64 * 1024 * 1024,
            max_event_bytes: DecodeLimits::default().max_event_bytes,
            default_cluster: None,
            clusters: Vec::new(),
            retry_after_secs: 5,
            header_read_timeout: Duration::from_secs(10),
            // client-go gives up on an attempt after 30 s anyway.
            body_read_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(90),
            tls_handshake_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_concurrent_streams: 16,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("listen", &self.listen)
            .field("tls", &self.tls)
            .field("bearer_token", &self.bearer_token.as_ref().map(|_| "***"))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_event_bytes", &self.max_event_bytes)
            .field("default_cluster", &self.default_cluster)
            .field("retry_after_secs", &self.retry_after_secs)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("body_read_timeout", &self.body_read_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("tls_handshake_timeout", &self.tls_handshake_timeout)
            .field("max_connections", &self.max_connections)
            .field("max_concurrent_streams", &self.max_concurrent_streams)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .finish()
    }
}

/// Why the receiver could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TLS files are unusable.
    #[error("webhook TLS: {0}")]
    Tls(#[from] TlsError),
    /// A setting is invalid.
    #[error("webhook config: {0}")]
    Config(String),
}

/// A cluster identified by its API server's client certificate. A certificate that
/// matches wins over the URL path: a request whose path names another cluster is refused
/// with 403, so one cluster cannot send events in another's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterIdentity {
    /// The cluster name attached to events.
    pub name: String,
    /// Matches a certificate whose subject common name equals this.
    pub client_cn: Option<String>,
    /// Matches a certificate with this DNS subject alternative name.
    pub client_san_dns: Option<String>,
}

/// The subject CNs and DNS SANs of a client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// Subject common names.
    pub cns: Vec<String>,
    /// DNS subject alternative names.
    pub dns: Vec<String>,
}

impl PeerIdentity {
    /// Parses a DER certificate; `None` when it cannot be parsed.
    pub fn from_der(der: &[u8]) -> Option<PeerIdentity> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let cns = cert
            .subject()
            .iter_common_name()
            .filter_map(|a| a.as_str().ok().map(str::to_string))
            .collect();
        let mut dns = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                    dns.push(d.to_string());
                }
            }
        }
        Some(PeerIdentity { cns, dns })
    }

    /// The first mapping this identity matches.
    pub fn cluster<'a>(&self, map: &'a [ClusterIdentity]) -> Option<&'a str> {
        map.iter()
            .find(|c| {
                c.client_cn.as_ref().is_some_and(|cn| self.cns.contains(cn))
                    || c.client_san_dns
                        .as_ref()
                        .is_some_and(|d| self.dns.contains(d))
            })
            .map(|c| c.name.as_str())
    }
}

/// Whether a cluster name is acceptable in `/audit/{cluster}` and as `default_cluster`:
/// `[A-Za-z0-9._-]{1,63}`.
pub fn valid_cluster_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    Draining,
    Closed,
}

/// The receiver's readiness, shared with whoever drives shutdown; cheap to clone.
///
/// `Serving` → `Draining` ([`Readiness::mark_unready`], or automatically when the
/// shutdown future of [`WebhookServer::run`] completes) → `Closed` (the listener is gone).
#[derive(Debug, Clone)]
pub struct Readiness(Arc<watch::Sender<Phase>>);

impl Readiness {
    fn new() -> Readiness {
        Readiness(Arc::new(watch::channel(Phase::Serving).0))
    }

    /// True until shutdown begins.
    pub fn is_ready(&self) -> bool {
        *self.0.borrow() == Phase::Serving
    }

    /// Makes `/readyz` answer 503 from now on; requests are still served. Call it on SIGTERM,
    /// wait for the load balancer to notice, then complete the `shutdown` future.
    pub fn mark_unready(&self) {
        self.0.send_if_modified(|p| {
            let changed = *p == Phase::Serving;
            if changed {
                *p = Phase::Draining;
            }
            changed
        });
    }

    /// Resolves once the server has stopped accepting connections (new connections are
    /// refused from then on).
    pub async fn closed(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|p| *p == Phase::Closed).await;
    }

    fn mark_closed(&self) {
        self.0.send_replace(Phase::Closed);
    }
}

/// Settings a reload may replace while serving (each request and each new connection
/// reads the current ones).
struct Live {
    token: Option<Vec<u8>>,
    default_cluster: Option<Arc<str>>,
    clusters: Vec<ClusterIdentity>,
    tls: Option<TlsAcceptor>,
}

/// State shared by every connection and request.
struct Shared {
    handle: PipelineHandle,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    live: parking_lot::RwLock<Arc<Live>>,
    max_body_bytes: usize,
    limits: DecodeLimits,
    retry_after_secs: u64,
    body_read_timeout: Duration,
}

/// A bound, not yet running, webhook receiver.
pub struct WebhookServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    http: auto::Builder<TokioExecutor>,
    shared: Arc<Shared>,
    /// Caps open connections; a permit lives as long as its connection task.
    connections: Arc<Semaphore>,
    idle_timeout: Duration,
    tls_handshake_timeout: Duration,
    shutdown_timeout: Duration,
}

impl fmt::Debug for WebhookServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookServer")
            .field("local_addr", &self.local_addr)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl WebhookServer {
    /// Validates `cfg`, loads the TLS files and binds the listen address.
    pub async fn bind(
        cfg: WebhookConfig,
        handle: PipelineHandle,
        metrics: Arc<Metrics>,
    ) -> Result<WebhookServer, WebhookError> {
        let live = live_settings(&cfg)?;
        if cfg.max_body_bytes == 0 || cfg.max_event_bytes == 0 {
            return Err(WebhookError::Config(
                "`max_body_bytes` and `max_event_bytes` must be greater than zero".into(),
            ));
        }
        if cfg.max_connections == 0 {
            return Err(WebhookError::Config(
                "`max_connections` must be greater than zero".into(),
            ));
        }
        let tls = live.tls.clone();
        let listener =
            TcpListener::bind(cfg.listen)
                .await
                .map_err(|source| WebhookError::Bind {
                    addr: cfg.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| WebhookError::Bind {
            addr: cfg.listen,
            source,
        })?;

        let mut http = auto::Builder::new(TokioExecutor::new());
        http.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(cfg.header_read_timeout);
        http.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(cfg.max_concurrent_streams);

        describe_metrics(&metrics);
        let shared = Arc::new(Shared {
            handle,
            metrics,
            readiness: Readiness::new(),
            live: parking_lot::RwLock::new(Arc::new(live)),
            max_body_bytes: cfg.max_body_bytes,
            limits: DecodeLimits {
                max_event_bytes: cfg.max_event_bytes,
            },
            retry_after_secs: cfg.retry_after_secs,
            body_read_timeout: cfg.body_read_timeout,
        });
        Ok(WebhookServer {
            listener,
            local_addr,
            tls,
            http,
            shared,
            connections: Arc::new(Semaphore::new(cfg.max_connections)),
            idle_timeout: cfg.idle_timeout,
            tls_handshake_timeout: cfg.tls_handshake_timeout,
            shutdown_timeout: cfg.shutdown_timeout,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that applies new settings while serving (hot reload).
    pub fn control(&self) -> WebhookControl {
        WebhookControl(self.shared.clone())
    }

    /// The readiness handle (see [`Readiness`]).
    pub fn readiness(&self) -> Readiness {
        self.shared.readiness.clone()
    }

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight requests
    /// finish (at most `shutdown_timeout`) and returns. Every [`PipelineHandle`] clone held
    /// by the server is dropped by then, so the pipeline can drain.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), WebhookError> {
        let WebhookServer {
            listener,
            local_addr,
            tls,
            http,
            shared,
            connections,
            idle_timeout,
            tls_handshake_timeout,
            shutdown_timeout,
        } = self;
        if tls.is_none() {
            warn!(
                addr = %local_addr,
                "Webhook receiver is serving plain HTTP: audit events and tokens cross the network unencrypted. Configure a certificate."
            );
        } else {
            info!(addr = %local_addr, "Webhook receiver listening (TLS).");
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            // Reap finished connection tasks so the set does not grow without bound.
            while tasks.try_join_next().is_some() {}
            let permit = tokio::select! {
                _ = &mut shutdown => break,
                p = connections.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break, // never closed; keeps the loop total
                },
            };
            let (stream, peer) = tokio::select! {
                _ = &mut shutdown => break,
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // Per-connection errors (reset before accept) and resource exhaustion
                        // (EMFILE) are not fatal; pause briefly so EMFILE does not spin.
                        warn!(error = %e, "Accepting a webhook connection failed.");
                        shared.metrics.count("audithawk_webhook_accept_errors_total", &[], 1);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let conn = Conn {
                shared: shared.clone(),
                http: http.clone(),
                idle_timeout,
                stop: stop_rx.clone(),
                _permit: permit,
            };
            // The current certificate (a reload may have replaced it); TLS itself cannot be
            // switched on or off while serving.
            let tls = if tls.is_some() {
                shared.live.read().tls.clone()
            } else {
                None
            };
            tasks.spawn(async move {
                let _ = stream.set_nodelay(true);
                match tls {
                    Some(acceptor) => {
                        conn.serve_tls(acceptor, stream, peer, tls_handshake_timeout)
                            .await
                    }
                    None => conn.serve(stream, peer, None).await,
                }
            });
        }
        // Shutdown: readiness first (so /readyz is 503 on connections still open), then the
        // listener (new connections are refused), then ask every connection to finish.
        shared.readiness.mark_unready();
        drop(listener);
        shared.readiness.mark_closed();
        let _ = stop_tx.send(true);
        info!(
            connections = tasks.len(),
            "Webhook receiver stopped accepting; finishing in-flight requests."
        );
        let drained = tokio::time::timeout(shutdown_timeout, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(
                connections = tasks.len(),
                "Webhook connections still open after the shutdown timeout; closing them."
            );
            tasks.shutdown().await;
        }
        Ok(())
    }
}

/// Validates the reloadable settings and loads the TLS files.
fn live_settings(cfg: &WebhookConfig) -> Result<Live, WebhookError> {
    if let Some(c) = &cfg.default_cluster {
        if !valid_cluster_name(c) {
            return Err(WebhookError::Config(format!(
                "`default_cluster` {c:?} must match [A-Za-z0-9._-]{{1,63}}"
            )));
        }
    }
    if cfg
        .bearer_token
        .as_deref()
        .is_some_and(|t| t.trim().is_empty())
    {
        return Err(WebhookError::Config("`bearer_token` is empty".into()));
    }
    for c in &cfg.clusters {
        if !valid_cluster_name(&c.name) {
            return Err(WebhookError::Config(format!(
                "cluster {:?} must match [A-Za-z0-9._-]{{1,63}}",
                c.name
            )));
        }
        if c.client_cn.is_none() && c.client_san_dns.is_none() {
            return Err(WebhookError::Config(format!(
                "cluster {:?}: set `client_cn` or `client_san_dns`",
                c.name
            )));
        }
    }
    let tls = match &cfg.tls {
        Some(files) => Some(TlsAcceptor::from(tls::server_config(
            files,
            &[b"h2", b"http/1.1"],
        )?)),
        None => None,
    };
    Ok(Live {
        clusters: cfg.clusters.clone(),
        token: cfg
            .bearer_token
            .as_ref()
            .map(|t| t.trim().as_bytes().to_vec()),
        default_cluster: cfg.default_cluster.as_deref().map(Arc::from),
        tls,
    })
}

/// Applies new settings to a running receiver (hot reload); cheap to clone.
#[derive(Clone)]
pub struct WebhookControl(Arc<Shared>);

impl fmt::Debug for WebhookControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookControl")
    }
}

impl WebhookControl {
    /// Checks `cfg` without applying it (TLS files are loaded and verified).
    pub fn check(&self, cfg: &WebhookConfig) -> Result<(), WebhookError> {
        self.prepare(cfg).map(|_| ())
    }

    fn prepare(&self, cfg: &WebhookConfig) -> Result<Live, WebhookError> {
        let live = live_settings(cfg)?;
        let was_tls = self.0.live.read().tls.is_some();
        if live.tls.is_some() != was_tls {
            return Err(WebhookError::Config(
                "TLS cannot be switched on or off while serving; restart to apply".into(),
            ));
        }
        Ok(live)
    }

    /// Replaces the bearer token, the default cluster and the TLS certificate, key and
    /// client CA. New connections use the new certificate; open ones keep theirs.
    pub fn apply(&self, cfg: &WebhookConfig) -> Result<(), WebhookError> {
        let live = self.prepare(cfg)?;
        *self.0.live.write() = Arc::new(live);
        Ok(())
    }
}

fn describe_metrics(m: &Metrics) {
    m.describe(
        "audithawk_webhook_backpressure_total",
        "Webhook requests answered 429/503 with Retry-After, by reason (queue_full, shutting_down).",
    );
    m.describe(
        "audithawk_webhook_tls_handshake_failures_total",
        "Webhook TLS handshakes that failed or timed out, by reason.",
    );
    m.describe(
        "audithawk_webhook_accept_errors_total",
        "Errors accepting webhook TCP connections.",
    );
}

/// Requests in flight and the last moment a connection was busy, for the idle timeout.
struct Activity {
    in_flight: AtomicUsize,
    last_busy: Mutex<Instant>,
}

/// Marks one request in flight until dropped.
struct Busy(Arc<Activity>);

impl Activity {
    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Busy(self.clone())
    }
    /// When the connection becomes idle-expired, given no further activity.
    fn idle_deadline(&self, idle: Duration) -> Instant {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            Instant::now() + idle
        } else {
            *self.last_busy.lock() + idle
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.last_busy.lock() = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One accepted connection.
struct Conn {
    shared: Arc<Shared>,
    http: auto::Builder<TokioExecutor>,
    idle_timeout: Duration,
    stop: watch::Receiver<bool>,
    /// Returned to the connection semaphore when the connection ends.
    _permit: OwnedSemaphorePermit,
}

impl Conn {
    async fn serve_tls(
        mut self,
        acceptor: TlsAcceptor,
        stream: TcpStream,
        peer: SocketAddr,
        handshake_timeout: Duration,
    ) {
        // Pinned outside the select so that on failure the socket stays open until the
        // failure is counted: a client that sees the connection close can rely on the metric.
        let accept = tokio::time::timeout(handshake_timeout, acceptor.accept(stream));
        tokio::pin!(accept);
        let handshake = tokio::select! {
            r = &mut accept => r,
            _ = self.stop.wait_for(|s| *s) => return,
        };
        let reason = match handshake {
            Ok(Ok(tls)) => {
                // Parsed once per connection; mapped to a cluster per request, so a reload
                // of the mapping applies to open connections too.
                let ident = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| PeerIdentity::from_der(c.as_ref()))
                    .map(Arc::new);
                return self.serve(tls, peer, ident).await;
            }
            Ok(Err(e)) => {
                // Usually a client without a valid certificate, or a port scanner.
                warn!(%peer, error = %e, "Webhook TLS handshake failed.");
                "error"
            }
            Err(_) => {
                warn!(%peer, "Webhook TLS handshake timed out.");
                "timeout"
            }
        };
        self.shared.metrics.count(
            "audithawk_webhook_tls_handshake_failures_total",
            &[("reason", reason)],
            1,
        );
    }

    async fn serve<IO>(mut self, io: IO, peer: SocketAddr, ident: Option<Arc<PeerIdentity>>)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            last_busy: Mutex::new(Instant::now()),
        });
        let shared = self.shared.clone();
        let act = activity.clone();
        let svc = service_fn(move |req| {
            let shared = shared.clone();
            let ident = ident.clone();
            let busy = act.begin();
            async move {
                let resp = handler::handle(&shared, req, ident.as_deref()).await;
                drop(busy);
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        let conn = self.http.serve_connection(TokioIo::new(io), svc);
        tokio::pin!(conn);
        let mut closing = false;
        loop {
            let idle_at = activity.idle_deadline(self.idle_timeout);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        debug!(%peer, error = %e, "Webhook connection ended with an error.");
                    }
                    break;
                }
                _ = self.stop.wait_for(|s| *s), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = tokio::time::sleep_until(idle_at), if !closing => {
                    if activity.idle_deadline(self.idle_timeout) <= Instant::now() {
                        debug!(%peer, "Closing idle webhook connection.");
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names() {
        for ok in ["prod", "eu-west-1.prod_a", "A", &"x".repeat(63)] {
            assert!(valid_cluster_name(ok), "{ok}");
        }
        for bad in ["", "a/b", "a b", "é", "a%2Fb", &"x".repeat(64)] {
            assert!(!valid_cluster_name(bad), "{bad}");
        }
    }

    #[test]
    fn debug_hides_the_token() {
        let cfg = WebhookConfig {
            bearer_token: Some("s3cret".into()),
            ..WebhookConfig::default()
        };
        let s = format!("{cfg:?}");
        assert!(!s.contains("s3cret"), "{s}");
        assert!(s.contains("***"));
    }

    #[test]
    fn readiness_phases() {
        let r = Readiness::new();
        assert!(r.is_ready());
        r.mark_unready();
        assert!(!r.is_ready());
        r.mark_closed();
        r.mark_unready(); // does not go back from Closed
        assert_eq!(*r.0.borrow(), Phase::Closed);
    }
}
