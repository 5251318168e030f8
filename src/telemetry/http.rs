//! `/metrics`, `/healthz` and `/readyz` for processes without the webhook server (the Kafka
//! detectors): the same Prometheus text and probe semantics as the webhook's endpoints.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use super::Metrics;

/// Answers probes and scrapes on a bound listener.
pub struct ProbeServer {
    listener: TcpListener,
    metrics: Arc<Metrics>,
    ready: Arc<dyn Fn() -> bool + Send + Sync>,
}

impl std::fmt::Debug for ProbeServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbeServer")
            .field("addr", &self.listener.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl ProbeServer {
    /// Binds `addr`; `/readyz` answers 200 while `ready()` holds, else 503.
    pub async fn bind(
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        ready: Arc<dyn Fn() -> bool + Send + Sync>,
    ) -> std::io::Result<ProbeServer> {
        Ok(ProbeServer {
            listener: TcpListener::bind(addr).await?,
            metrics,
            ready,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let mut http = auto::Builder::new(TokioExecutor::new());
        http.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10));
        tokio::pin!(shutdown);
        loop {
            let (io, _) = tokio::select! {
                _ = &mut shutdown => return,
                a = self.listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "Accepting a probe connection failed.");
                        continue;
                    }
                },
            };
            let metrics = self.metrics.clone();
            let ready = self.ready.clone();
            let http = http.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let metrics = metrics.clone();
                    let ready = ready.clone();
                    async move { Ok::<_, Infallible>(answer(&req, &metrics, &*ready)) }
                });
                let _ = http.serve_connection(TokioIo::new(io), svc).await;
            });
        }
    }
}

fn answer(
    req: &Request<Incoming>,
    metrics: &Metrics,
    ready: &dyn Fn() -> bool,
) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match (req.method().as_str(), req.uri().path()) {
        ("GET" | "HEAD", "/metrics") => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics.render_prometheus(),
        ),
        ("GET" | "HEAD", "/healthz") => (
            StatusCode::OK,
            "application/json",
            r#"{"status":"ok"}"#.to_string(),
        ),
        ("GET" | "HEAD", "/readyz") if ready() => (
            StatusCode::OK,
            "application/json",
            r#"{"status":"ready"}"#.to_string(),
        ),
        ("GET" | "HEAD", "/readyz") => (
            StatusCode::SERVICE_UNAVAILABLE,
            "application/json",
            r#"{"status":"not ready"}"#.to_string(),
        ),
        (_, "/metrics" | "/healthz" | "/readyz") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "application/json",
            r#"{"error":"use GET"}"#.to_string(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "application/json",
            r#"{"error":"not found; try /metrics, /healthz or /readyz"}"#.to_string(),
        ),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(ctype),
    );
    r
}
