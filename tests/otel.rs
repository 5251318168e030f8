//! OTLP export against a mock collector on 127.0.0.1:0 that speaks OTLP/HTTP strictly:
//! POST only, `/v1/metrics` and `/v1/traces` only, `Content-Type: application/x-protobuf`,
//! bodies decoded as the real protobuf messages (opentelemetry-proto); anything else is
//! answered with an error status, which makes the exporter's flush fail.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point::Value};
use prost::Message;
use tokio::sync::mpsc;

use audithawk::model::Level;
use audithawk::telemetry::otel::{self, OtelConfig, OtelGuard};
use audithawk::telemetry::Metrics;

enum Got {
    Metrics(ExportMetricsServiceRequest),
    Traces(ExportTraceServiceRequest),
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    tx: mpsc::UnboundedSender<Got>,
) -> Response<Full<Bytes>> {
    let reply = |code: StatusCode, body: Vec<u8>| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = code;
        r.headers_mut().insert(
            "content-type",
            "application/x-protobuf".parse().expect("header"),
        );
        r
    };
    if req.method() != hyper::Method::POST {
        return reply(StatusCode::METHOD_NOT_ALLOWED, Vec::new());
    }
    if req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        != Some("application/x-protobuf")
    {
        return reply(StatusCode::UNSUPPORTED_MEDIA_TYPE, Vec::new());
    }
    let path = req.uri().path().to_string();
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return reply(StatusCode::BAD_REQUEST, Vec::new());
    };
    match path.as_str() {
        "/v1/metrics" => match ExportMetricsServiceRequest::decode(body) {
            Ok(m) => {
                let _ = tx.send(Got::Metrics(m));
                reply(
                    StatusCode::OK,
                    ExportMetricsServiceResponse::default().encode_to_vec(),
                )
            }
            Err(_) => reply(StatusCode::BAD_REQUEST, Vec::new()),
        },
        "/v1/traces" => match ExportTraceServiceRequest::decode(body) {
            Ok(t) => {
                let _ = tx.send(Got::Traces(t));
                reply(
                    StatusCode::OK,
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
            Err(_) => reply(StatusCode::BAD_REQUEST, Vec::new()),
        },
        _ => reply(StatusCode::NOT_FOUND, Vec::new()),
    }
}

/// Starts the mock collector; returns its base URL and the channel of decoded requests.
async fn collector() -> (String, mpsc::UnboundedReceiver<Got>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let tx = tx.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(req, tx).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), rx)
}

fn config(endpoint: &str, ratio: f64) -> OtelConfig {
    let mut c = OtelConfig::new(endpoint);
    // Exports happen only on flush in these tests: the periodic tick never comes.
    c.interval = Duration::from_secs(3600);
    c.service_name = "audithawk-test".into();
    c.trace_sample_ratio = ratio;
    c
}

/// Flushes on a blocking thread (the SDK blocks until the export, which runs on this
/// runtime, has been answered).
async fn flush(g: &Arc<OtelGuard>) -> Result<(), String> {
    let g = g.clone();
    tokio::task::spawn_blocking(move || g.force_flush())
        .await
        .expect("join")
}

fn drain(rx: &mut mpsc::UnboundedReceiver<Got>) -> Vec<Got> {
    let mut v = Vec::new();
    while let Ok(g) = rx.try_recv() {
        v.push(g);
    }
    v
}

/// (value, attributes) of every data point of `name` in `reqs`, and whether it is a
/// monotonic sum.
type Point = (i64, Vec<(String, String)>, bool);

fn points(reqs: &[Got], name: &str) -> Vec<Point> {
    let mut out = Vec::new();
    for g in reqs {
        let Got::Metrics(m) = g else { continue };
        for rm in &m.resource_metrics {
            for sm in &rm.scope_metrics {
                for metric in sm.metrics.iter().filter(|x| x.name == name) {
                    let (dps, mono) = match &metric.data {
                        Some(Data::Sum(s)) => (&s.data_points, s.is_monotonic),
                        Some(Data::Gauge(g)) => (&g.data_points, false),
                        _ => continue,
                    };
                    for dp in dps {
                        let v = match dp.value {
                            Some(Value::AsInt(i)) => i,
                            Some(Value::AsDouble(d)) => d as i64,
                            None => continue,
                        };
                        // The SDK orders attributes by key.
                        let mut attrs: Vec<(String, String)> = dp
                            .attributes
                            .iter()
                            .map(|kv| {
                                let val = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                                    Some(AnyValue::StringValue(s)) => s.clone(),
                                    other => format!("{other:?}"),
                                };
                                (kv.key.clone(), val)
                            })
                            .collect();
                        attrs.sort();
                        out.push((v, attrs, mono));
                    }
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_arrive_over_otlp_with_the_values_of_the_registry() {
    let (url, mut rx) = collector().await;
    let metrics = Arc::new(Metrics::new());
    metrics.received("webhook", 3);
    metrics.alert("r1", Level::High);
    metrics.queue_depth.set(2);
    let guard = Arc::new(otel::init(config(&url, 0.0), metrics.clone()).expect("init"));

    flush(&guard).await.expect("flush");
    let got = drain(&mut rx);
    assert!(
        got.iter().any(|g| matches!(g, Got::Metrics(_))),
        "no metrics request arrived"
    );
    let recv = points(&got, "audithawk_events_received_total");
    assert_eq!(
        recv,
        vec![(3, vec![("source".into(), "webhook".into())], true)]
    );
    let alerts = points(&got, "audithawk_alerts_total");
    assert_eq!(
        alerts,
        vec![(
            1,
            vec![
                ("level".into(), "high".into()),
                ("rule".into(), "r1".into())
            ],
            true
        )]
    );
    assert_eq!(
        points(&got, "audithawk_queue_depth"),
        vec![(2, vec![], false)]
    );
    // The resource names the service.
    let Some(Got::Metrics(m)) = got.iter().find(|g| matches!(g, Got::Metrics(_))) else {
        unreachable!()
    };
    let res = m.resource_metrics[0].resource.as_ref().expect("resource");
    assert!(res.attributes.iter().any(|kv| kv.key == "service.name"
        && matches!(kv.value.as_ref().and_then(|v| v.value.as_ref()),
                    Some(AnyValue::StringValue(s)) if s == "audithawk-test")));

    // The instruments read the live registry: the next export carries the new total.
    metrics.received("webhook", 2);
    metrics.received("tail", 7);
    flush(&guard).await.expect("flush");
    let got = drain(&mut rx);
    let mut recv = points(&got, "audithawk_events_received_total");
    recv.sort();
    assert_eq!(
        recv,
        vec![
            (5, vec![("source".into(), "webhook".into())], true),
            (7, vec![("source".into(), "tail".into())], true),
        ]
    );
    let g = Arc::try_unwrap(guard).expect("sole owner");
    tokio::task::spawn_blocking(move || g.shutdown())
        .await
        .expect("join")
        .expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampled_spans_arrive_with_their_parent_and_unsampled_do_not() {
    use tracing_subscriber::layer::SubscriberExt;
    for (ratio, expect_spans) in [(1.0, true), (0.0, false)] {
        let (url, mut rx) = collector().await;
        let guard =
            Arc::new(otel::init(config(&url, ratio), Arc::new(Metrics::new())).expect("init"));
        let subscriber = tracing_subscriber::registry().with(guard.tracing_layer());
        tracing::subscriber::with_default(subscriber, || {
            let req = tracing::info_span!(otel::SPAN_WEBHOOK_REQUEST, events = 3);
            let _e = req.enter();
            tracing::info_span!(otel::SPAN_ENGINE_BATCH).in_scope(|| {});
            tracing::info_span!(otel::SPAN_SINK_SEND, sink = "stdout").in_scope(|| {});
        });
        flush(&guard).await.expect("flush");
        let spans: Vec<_> = drain(&mut rx)
            .into_iter()
            .filter_map(|g| match g {
                Got::Traces(t) => Some(t),
                Got::Metrics(_) => None,
            })
            .flat_map(|t| t.resource_spans)
            .flat_map(|rs| rs.scope_spans)
            .flat_map(|ss| ss.spans)
            .collect();
        if !expect_spans {
            assert!(spans.is_empty(), "ratio 0 exported {} spans", spans.len());
            continue;
        }
        let find = |n: &str| {
            spans
                .iter()
                .find(|s| s.name == n)
                .unwrap_or_else(|| panic!("no span {n}"))
        };
        let root = find("webhook.request");
        for child in ["engine.batch", "sink.send"] {
            let c = find(child);
            assert_eq!(c.trace_id, root.trace_id, "{child} in another trace");
            assert_eq!(c.parent_span_id, root.span_id, "{child} parent");
        }
        assert!(root.parent_span_id.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_error_makes_the_flush_fail() {
    let (url, _rx) = collector().await;
    // Wrong base path: the exporter posts to /nope/v1/metrics, which the collector refuses.
    let guard = Arc::new(
        otel::init(
            config(&format!("{url}/nope"), 0.0),
            Arc::new(Metrics::new()),
        )
        .expect("init"),
    );
    assert!(
        flush(&guard).await.is_err(),
        "a 404 from the collector must surface"
    );
}
