//! Strict mock servers for the SIEM protocols, shared by the sink tests and benchmarks.
//!
//! Each mock is real HTTP/1.1 on 127.0.0.1:0 (hyper). It checks what the real server
//! checks (auth, content type, gzip, envelope or NDJSON shape) and answers like the real
//! thing; every protocol violation is also recorded in `violations` so that a test can
//! assert there were none. A [`Script`] makes the next requests fail in chosen ways
//! (status codes, Retry-After, dropped connections, slow answers) and `set_down` makes the
//! server drop every connection, as an outage does.
#![allow(dead_code)]

pub mod bulk;
pub mod hec;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;

/// What the next request gets instead of the normal answer.
#[derive(Debug, Clone)]
pub enum Action {
    /// Answer this status, body and headers without processing.
    Reply(u16, String, Vec<(&'static str, String)>),
    /// Close the connection without an answer (before processing).
    Drop,
    /// Process normally, then close the connection without an answer: the client cannot
    /// know that the data arrived (the duplicate case).
    ProcessThenDrop,
    /// Wait, then answer normally.
    Delay(Duration),
    /// Protocol-specific failure (HEC: invalid-event-number; bulk: item failures).
    Special(Special),
}

/// Protocol-specific scripted failures.
#[derive(Debug, Clone)]
pub enum Special {
    /// HEC: events from this index on are not indexed; this one fails with code 6.
    HecInvalidEvent(usize),
    /// Bulk: these items (index in the request, status, error type) fail.
    BulkItems(Vec<(usize, u16, &'static str)>),
}

/// Scripted answers, consumed one per request.
#[derive(Debug, Default)]
pub struct Script(Mutex<VecDeque<Action>>);

impl Script {
    /// Queues `a`.
    pub fn push(&self, a: Action) {
        self.0.lock().push_back(a);
    }
    fn next(&self) -> Option<Action> {
        self.0.lock().pop_front()
    }
}

/// What every mock shares: the script, the outage switch, counters.
#[derive(Debug, Default)]
pub struct Common {
    /// Scripted failures.
    pub script: Script,
    /// Drop every connection while true.
    pub down: AtomicBool,
    /// Requests seen (including failed ones).
    pub requests: AtomicU64,
    /// Protocol violations by the client.
    pub violations: Mutex<Vec<String>>,
}

impl Common {
    /// Records a violation.
    pub fn violation(&self, v: String) {
        self.violations.lock().push(v);
    }
    /// Starts or ends an outage.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

/// The request as a handler sees it.
pub struct Req {
    /// Method.
    pub method: hyper::Method,
    /// Path.
    pub path: String,
    /// Query string.
    pub query: String,
    /// Headers.
    pub headers: hyper::HeaderMap,
    /// Body, gunzipped when Content-Encoding is gzip.
    pub body: Vec<u8>,
}

impl Req {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A reply.
pub struct Reply {
    /// Status.
    pub status: u16,
    /// JSON body.
    pub body: String,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    /// A JSON reply.
    pub fn json(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            body: body.into(),
            headers: vec![],
        }
    }
}

/// A protocol handler: the request and the scripted special failure, if any.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request.
    fn handle(&self, req: Req, special: Option<Special>) -> Reply;
    /// The shared part.
    fn common(&self) -> &Common;
}

/// A running mock server.
pub struct Server<H: Handler> {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The handler (and its recorded state).
    pub h: Arc<H>,
    task: tokio::task::JoinHandle<()>,
}

impl<H: Handler> Drop for Server<H> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<H: Handler> Server<H> {
    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `https://localhost:port`.
    pub fn https_url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// Starts serving `h` on 127.0.0.1:0.
    pub async fn start(h: H) -> Server<H> {
        Self::start_with(h, None).await
    }

    /// Starts serving `h` over TLS with `tls`.
    pub async fn start_tls(h: H, tls: Arc<rustls::ServerConfig>) -> Server<H> {
        Self::start_with(h, Some(tls)).await
    }

    async fn start_with(h: H, tls: Option<Arc<rustls::ServerConfig>>) -> Server<H> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let h = Arc::new(h);
        let h2 = h.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                if h2.common().down.load(Ordering::SeqCst) {
                    drop(stream); // an outage: connection reset
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let h3 = h2.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| serve(h3.clone(), req));
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                        }
                        Some(cfg) => {
                            let Ok(s) = tokio_rustls::TlsAcceptor::from(cfg).accept(stream).await
                            else {
                                return;
                            };
                            let _ = http.serve_connection(TokioIo::new(s), svc).await;
                        }
                    }
                });
            }
        });
        Server { addr, h, task }
    }
}

type Resp = Response<Full<Bytes>>;

fn serve<H: Handler>(
    h: Arc<H>,
    req: Request<Incoming>,
) -> Pin<Box<dyn Future<Output = Result<Resp, std::io::Error>> + Send>> {
    Box::pin(async move {
        let c = h.common();
        c.requests.fetch_add(1, Ordering::SeqCst);
        if c.down.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("down"));
        }
        let (parts, body) = req.into_parts();
        let raw = match body.collect().await {
            Ok(b) => b.to_bytes().to_vec(),
            Err(e) => return Err(std::io::Error::other(e)),
        };
        let gz = parts
            .headers
            .get("content-encoding")
            .and_then(|v| v.to_str().ok())
            == Some("gzip");
        let body = if gz {
            let mut out = Vec::new();
            use std::io::Read;
            if flate2::read::GzDecoder::new(raw.as_slice())
                .read_to_end(&mut out)
                .is_err()
            {
                c.violation("Content-Encoding: gzip but the body is not gzip".into());
                return Ok(resp(Reply::json(
                    400,
                    r#"{"text":"Invalid data format","code":6}"#,
                )));
            }
            out
        } else {
            raw
        };
        let r = Req {
            method: parts.method,
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or("").to_string(),
            headers: parts.headers,
            body,
        };
        let mut special = None;
        let mut drop_after = false;
        match c.script.next() {
            Some(Action::Reply(s, b, hs)) => {
                return Ok(resp(Reply {
                    status: s,
                    body: b,
                    headers: hs,
                }))
            }
            Some(Action::Drop) => return Err(std::io::Error::other("scripted drop")),
            Some(Action::ProcessThenDrop) => drop_after = true,
            Some(Action::Delay(d)) => tokio::time::sleep(d).await,
            Some(Action::Special(s)) => special = Some(s),
            None => {}
        }
        let reply = h.handle(r, special);
        if drop_after {
            return Err(std::io::Error::other("scripted drop after processing"));
        }
        Ok(resp(reply))
    })
}

fn resp(r: Reply) -> Resp {
    let mut b = Response::builder()
        .status(r.status)
        .header("content-type", "application/json");
    for (k, v) in r.headers {
        b = b.header(k, v);
    }
    b.body(Full::new(Bytes::from(r.body))).unwrap()
}

/// Waits (real time, polling every 10 ms) until `f` holds or `limit` passes.
pub async fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

#[allow(unused)]
fn _assert_infallible(_: Infallible) {}

/// A test PKI: a CA and a server certificate for `localhost` and 127.0.0.1.
pub struct Pki {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// The server's rustls config.
    pub server: Arc<rustls::ServerConfig>,
    /// The same server, requiring a client certificate signed by the CA.
    pub server_mtls: Arc<rustls::ServerConfig>,
    /// A client certificate signed by the CA, PEM.
    pub client_cert_pem: String,
    /// Its private key, PEM (PKCS#8).
    pub client_key_pem: String,
}

impl Pki {
    /// Generates a fresh CA and server certificate.
    pub fn new() -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "audithawk test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = || {
            rustls::ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .unwrap()
        };
        let chain = vec![cert.der().clone()];
        let skey = || rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let server = builder()
            .with_no_client_auth()
            .with_single_cert(chain.clone(), skey())
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let server_mtls = builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, skey())
            .unwrap();
        let ckey = rcgen::KeyPair::generate().unwrap();
        let mut cparams = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        cparams
            .distinguished_name
            .push(rcgen::DnType::CommonName, "audithawk");
        cparams.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let ccert = cparams.signed_by(&ckey, &ca, &ca_key).unwrap();
        Pki {
            ca_pem: ca.pem(),
            server: Arc::new(server),
            server_mtls: Arc::new(server_mtls),
            client_cert_pem: ccert.pem(),
            client_key_pem: ckey.serialize_pem(),
        }
    }
}
