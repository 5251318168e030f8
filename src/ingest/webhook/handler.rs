//! Routing, authentication and responses of the webhook receiver.
//!
//! | route | method | answer |
//! |---|---|---|
//! | `/audit`, `/audit/{cluster}` | POST | 200 `{"accepted","rejected"}`; 400/401/408/413/415/429/503 |
//! | `/healthz` | GET, HEAD | 200 while the process serves |
//! | `/readyz` | GET, HEAD | 200, or 503 when shutting down or the queue is full |
//! | `/metrics` | GET, HEAD | Prometheus text |
//!
//! Every error body is JSON `{"error": "..."}`. The API server retries every status outside
//! 200–206, so a batch with some bad items is answered 200 and only those items are counted
//! as rejected; a 400 is reserved for bodies with nothing usable in them.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ALLOW, AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER,
    WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use tracing::warn;

use super::body::{self, BodyError, Decoded};
use super::{valid_cluster_name, Shared};
use crate::pipeline::{Batch, Source, SubmitError};

/// The response type of every route.
pub type Resp = Response<Full<Bytes>>;

/// Per-item errors echoed in a response (the rest are only counted).
const MAX_REPORTED_ERRORS: usize = 10;

enum Route<'a> {
    Audit(Option<&'a str>),
    Healthz,
    Readyz,
    Metrics,
    NotFound,
}

fn route(path: &str) -> Route<'_> {
    match path {
        "/audit" => Route::Audit(None),
        "/healthz" => Route::Healthz,
        "/readyz" => Route::Readyz,
        "/metrics" => Route::Metrics,
        _ => match path.strip_prefix("/audit/") {
            Some(rest) if !rest.contains('/') => Route::Audit(Some(rest)),
            _ => Route::NotFound,
        },
    }
}

/// Answers one request and counts it in `audithawk_http_requests_total{path,code}`.
pub(super) async fn handle(
    shared: &Shared,
    req: Request<Incoming>,
    ident: Option<&super::PeerIdentity>,
) -> Resp {
    // The query string (client-go adds `?timeout=30s`) is ignored: `path()` excludes it.
    let path = req.uri().path().to_owned();
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    let (label, resp) = match route(&path) {
        Route::Audit(cluster) => (
            "audit",
            if req.method() == Method::POST {
                // One span per POST (exported when OTLP tracing is on; sampled): the batch
                // carries it into the engine worker as the parent of `engine.batch`.
                let span = tracing::info_span!(
                    crate::telemetry::otel::SPAN_WEBHOOK_REQUEST,
                    cluster = cluster.unwrap_or("")
                );
                tracing::Instrument::instrument(audit(shared, req, cluster, ident), span).await
            } else {
                method_not_allowed("POST")
            },
        ),
        Route::Healthz => (
            "healthz",
            if get {
                healthz()
            } else {
                method_not_allowed("GET, HEAD")
            },
        ),
        Route::Readyz => (
            "readyz",
            if get {
                readyz(shared)
            } else {
                method_not_allowed("GET, HEAD")
            },
        ),
        Route::Metrics => (
            "metrics",
            if get {
                metrics(shared)
            } else {
                method_not_allowed("GET, HEAD")
            },
        ),
        Route::NotFound => (
            "other",
            error(
                StatusCode::NOT_FOUND,
                json!({"error": "no such path; audit events go to POST /audit or /audit/{cluster}"}),
            ),
        ),
    };
    shared.metrics.count(
        "audithawk_http_requests_total",
        &[("path", label), ("code", resp.status().as_str())],
        1,
    );
    resp
}

fn json_response(status: StatusCode, body: Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error(status: StatusCode, body: Value) -> Resp {
    json_response(status, body)
}

fn method_not_allowed(allow: &'static str) -> Resp {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        json!({"error": format!("method not allowed; use {allow}")}),
    );
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}

fn retry_later(shared: &Shared, status: StatusCode, reason: &'static str, message: &str) -> Resp {
    shared.metrics.count(
        "audithawk_webhook_backpressure_total",
        &[("reason", reason)],
        1,
    );
    let mut r = error(
        status,
        json!({"error": message, "retry_after_seconds": shared.retry_after_secs}),
    );
    r.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(shared.retry_after_secs));
    r
}

fn healthz() -> Resp {
    json_response(StatusCode::OK, json!({"status": "ok"}))
}

fn readyz(shared: &Shared) -> Resp {
    if !shared.readiness.is_ready() {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "shutting down"}),
        )
    } else if !shared.handle.has_room() {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "pipeline queue is full"}),
        )
    } else {
        json_response(StatusCode::OK, json!({"status": "ready"}))
    }
}

fn metrics(shared: &Shared) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(shared.metrics.render_prometheus())));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// `None` when no token is configured or the request carries the right one, else the
/// 401 to send.
fn unauthorized(shared: &Shared, req: &Request<Incoming>) -> Option<Resp> {
    let live = shared.live.read().clone();
    let expected = live.token.as_ref()?;
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .map(|v| v.as_bytes())
        .and_then(|v| {
            // RFC 7235: the scheme is case-insensitive.
            (v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ")).then(|| v[7..].trim_ascii())
        });
    let (message, challenge) = match presented {
        None => ("missing bearer token", "Bearer realm=\"audithawk\""),
        // Constant time over the contents; only the length can leak, and the API server
        // is the only expected caller.
        Some(t) if bool::from(t.ct_eq(expected)) => return None,
        Some(_) => (
            "invalid bearer token",
            "Bearer realm=\"audithawk\", error=\"invalid_token\"",
        ),
    };
    let mut r = error(StatusCode::UNAUTHORIZED, json!({"error": message}));
    r.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    Some(r)
}

fn header_str(req: &Request<Incoming>, name: hyper::header::HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn audit(
    shared: &Shared,
    req: Request<Incoming>,
    cluster: Option<&str>,
    ident: Option<&super::PeerIdentity>,
) -> Resp {
    if let Some(r) = unauthorized(shared, &req) {
        return r;
    }
    let live = shared.live.read().clone();
    // A mapped client certificate wins over the path; a contradicting path is refused.
    let mapped = ident.and_then(|i| i.cluster(&live.clusters));
    if let (Some(m), Some(p)) = (mapped, cluster) {
        if m != p {
            shared.metrics.rejected("webhook", "cluster_mismatch", 1);
            warn!(
                certificate_cluster = m,
                path_cluster = p,
                "Webhook request names another cluster than its client certificate."
            );
            return error(
                StatusCode::FORBIDDEN,
                json!({"error": format!("the client certificate belongs to cluster {m:?}; the path names {p:?}")}),
            );
        }
    }
    let cluster: Option<Arc<str>> = match mapped.or(cluster) {
        None => live.default_cluster.clone(),
        Some(c) if valid_cluster_name(c) => Some(Arc::from(c)),
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid cluster name in the path: it must match [A-Za-z0-9._-]{1,63}"}),
            )
        }
    };
    let json_type = header_str(&req, CONTENT_TYPE)
        .is_some_and(|ct| ct.to_ascii_lowercase().contains("application/json"));
    if !json_type {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            json!({"error": "Content-Type must be application/json"}),
        );
    }
    let gzip = match header_str(&req, CONTENT_ENCODING).map(str::trim) {
        None | Some("") => false,
        Some(e) if e.eq_ignore_ascii_case("identity") => false,
        Some(e) if e.eq_ignore_ascii_case("gzip") => true,
        Some(_) => {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                json!({"error": "unsupported Content-Encoding; use gzip or none"}),
            )
        }
    };
    let max = shared.max_body_bytes;
    let declared = header_str(&req, CONTENT_LENGTH).and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return too_large(shared, max);
    }

    let read = tokio::time::timeout(
        shared.body_read_timeout,
        Limited::new(req.into_body(), max).collect(),
    )
    .await;
    let bytes = match read {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return too_large(shared, max)
        }
        Ok(Err(e)) => {
            return error(
                StatusCode::BAD_REQUEST,
                json!({"error": format!("error reading the request body: {e}")}),
            )
        }
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                json!({"error": "the request body was not received in time"}),
            )
        }
    };

    let limits = shared.limits;
    let cluster_label = cluster.clone();
    let decoded =
        tokio::task::spawn_blocking(move || body::decode_body(&bytes, gzip, max, limits, cluster))
            .await;
    let Decoded { events, errors } = match decoded {
        Ok(Ok(d)) => d,
        Ok(Err(BodyError::TooLarge { .. })) => return too_large(shared, max),
        Ok(Err(e)) => {
            shared.metrics.rejected("webhook", e.reason(), 1);
            warn!(reason = e.reason(), error = %e, "Webhook body rejected.");
            return error(
                StatusCode::BAD_REQUEST,
                json!({"error": format!("unusable request body: {e}")}),
            );
        }
        Err(e) => {
            warn!(error = %e, "Decoding a webhook body failed unexpectedly.");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": "internal error while decoding the body"}),
            );
        }
    };

    let mut accepted = events.len();
    let mut rejected = errors.len();
    let mut kafka_refused: Vec<Value> = Vec::new();
    if accepted > 0 {
        let batch = Batch {
            source: Source::Webhook,
            events,
            done: None,
        };
        // Checked before counting rejections: a 429/503 makes the API server re-send the
        // whole batch, and its bad items would otherwise be counted twice.
        match shared.handle.accept(batch).await {
            Ok(refused) => {
                // Events Kafka refused for good (too large for the topic) are reported like
                // undecodable items; their index is among the accepted events.
                for (i, reason) in &refused {
                    shared.metrics.rejected("webhook", "kafka_refused", 1);
                    warn!(event = i, reason = %reason, "Kafka refused an event for good.");
                    kafka_refused
                        .push(json!({"event": i, "error": format!("kafka refused it: {reason}")}));
                }
                accepted -= refused.len();
                rejected += refused.len();
                shared.metrics.received("webhook", accepted as u64);
                // Bounded label: configured clusters and the default one by name, any
                // other path-named cluster as "other".
                let c = cluster_label.as_deref();
                let known = c.filter(|c| {
                    live.clusters.iter().any(|m| m.name == *c)
                        || live.default_cluster.as_deref() == Some(*c)
                });
                shared.metrics.count(
                    "audithawk_cluster_events_received_total",
                    &[(
                        "cluster",
                        known.unwrap_or(if c.is_some() { "other" } else { "none" }),
                    )],
                    accepted as u64,
                );
            }
            Err(SubmitError::Full(_)) => {
                return retry_later(
                    shared,
                    StatusCode::TOO_MANY_REQUESTS,
                    "queue_full",
                    "the event queue is full; retry later",
                )
            }
            Err(SubmitError::Unavailable(_, why)) => {
                warn!(error = %why, "Kafka unavailable; asking the sender to retry.");
                return retry_later(
                    shared,
                    StatusCode::TOO_MANY_REQUESTS,
                    "broker_unavailable",
                    "the Kafka brokers are unavailable; retry later",
                );
            }
            Err(SubmitError::Closed(_)) => {
                return retry_later(
                    shared,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "shutting_down",
                    "shutting down; retry later",
                )
            }
        }
    }
    let mut reported = report_errors(shared, &errors);
    reported.extend(kafka_refused);
    if accepted == 0 && rejected > 0 {
        return error(
            StatusCode::BAD_REQUEST,
            json!({
                "error": format!("no usable audit event in the body ({rejected} bad items)"),
                "accepted": 0,
                "rejected": rejected,
                "errors": reported,
            }),
        );
    }
    let mut body = json!({"accepted": accepted, "rejected": rejected});
    if !reported.is_empty() {
        body["errors"] = Value::Array(reported);
    }
    json_response(StatusCode::OK, body)
}

/// Counts and logs bad items; returns the first few for the response.
fn report_errors(shared: &Shared, errors: &[crate::model::DecodeError]) -> Vec<Value> {
    let mut reported = Vec::new();
    for (n, e) in errors.iter().enumerate() {
        let reason = body::error_reason(&e.error);
        shared.metrics.rejected("webhook", reason, 1);
        let message = body::scrub(&e.error.to_string());
        if n < MAX_REPORTED_ERRORS {
            // Never the event itself: the index and a scrubbed message are enough to find it.
            warn!(item = e.location.item, reason, error = %message, "Webhook item rejected.");
            reported.push(json!({"item": e.location.item, "error": message}));
        }
    }
    if errors.len() > MAX_REPORTED_ERRORS {
        warn!(
            more = errors.len() - MAX_REPORTED_ERRORS,
            "More webhook items rejected in the same batch (counted, not logged)."
        );
    }
    reported
}

fn too_large(shared: &Shared, max: usize) -> Resp {
    shared.metrics.rejected("webhook", "body_too_large", 1);
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        json!({"error": format!("request body exceeds the limit of {max} bytes"), "limit_bytes": max}),
    )
}
