//! The Elasticsearch / OpenSearch `_bulk` sink.
//!
//! Every record is a `create` action with a stable `_id` (the alert's `event.id`), so a
//! re-send after a timeout or a crash cannot duplicate: Elasticsearch answers 409 for it,
//! which counts as delivered. Per-item results decide the rest: 429 and 5xx items are sent
//! again alone, other failures (mapping errors) go to the dead-letter file with the reason.

pub mod encoder;

use std::time::Duration;

use serde::Deserialize;

use super::config::{DeliveryConfig, RouteConfig};
use super::http::{self, Secret, TlsOptions};
use super::{BoxFuture, HealthError, Record, SendOutcome, Sink};
use encoder::Target;

fn default_index() -> String {
    "logs-audithawk.alert-default".into()
}
fn default_timeout() -> u64 {
    30
}
fn yes() -> bool {
    true
}

/// How the sink authenticates.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum EsAuth {
    /// `Authorization: ApiKey <key>`; `key` is the base64 `id:api_key` Elasticsearch shows
    /// as `encoded`.
    ApiKey {
        /// The encoded key.
        key: Secret,
    },
    /// HTTP basic (OpenSearch's usual choice).
    Basic {
        /// User.
        username: String,
        /// Password.
        password: Secret,
    },
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token.
        token: Secret,
    },
}

/// Where documents go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexMode {
    /// `index` names a data stream (default, `logs-audithawk.alert-default`).
    #[default]
    DataStream,
    /// `index` is a strftime pattern dated by event time, e.g. `audithawk-%Y.%m.%d`.
    Dated,
}

/// `type: elasticsearch` (also OpenSearch).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchConfig {
    /// Sink name (default `elasticsearch`).
    #[serde(default)]
    pub name: Option<String>,
    /// Base URL, e.g. `https://es.example.com:9200`.
    pub endpoint: String,
    /// Authentication (none by default).
    #[serde(default)]
    pub auth: Option<EsAuth>,
    /// Data stream name or dated index pattern (see `mode`).
    #[serde(default = "default_index")]
    pub index: String,
    /// `data_stream` (default) or `dated`.
    #[serde(default)]
    pub mode: IndexMode,
    /// At start, install an index template for `index` (data stream, ECS basics).
    #[serde(default)]
    pub setup_template: bool,
    /// Gzip request bodies (default true).
    #[serde(default = "yes")]
    pub compression: bool,
    /// Check the cluster at start (`GET /`, default true).
    #[serde(default = "yes")]
    pub healthcheck: bool,
    /// Request timeout in seconds (default 30).
    #[serde(default = "default_timeout")]
    pub request_timeout_secs: u64,
    /// TLS options.
    #[serde(default)]
    pub tls: TlsOptions,
    /// Which alerts go here.
    #[serde(default)]
    pub route: RouteConfig,
    /// Batching, buffering and retries.
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

impl ElasticsearchConfig {
    /// The sink name.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("elasticsearch")
    }

    /// Problems, naming the key under `prefix`.
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let mut p: Vec<String> = crate::sinks::http::check_url(prefix, "endpoint", &self.endpoint)
            .into_iter()
            .collect();
        // A dated pattern is checked on what it produces for a sample date.
        let name = match self.mode {
            IndexMode::DataStream => Some(self.index.clone()),
            IndexMode::Dated => {
                let mut items = chrono::format::StrftimeItems::new(&self.index);
                if items.any(|i| matches!(i, chrono::format::Item::Error)) {
                    p.push(format!(
                        "`{prefix}.index`: {:?} is not a valid strftime pattern",
                        self.index
                    ));
                    None
                } else {
                    Some(Target::Dated(self.index.clone()).index_for(None))
                }
            }
        };
        if let Some(name) = name {
            if name.is_empty()
                || name
                    .chars()
                    .any(|c| c.is_ascii_uppercase() || " ,\"*\\<|>/?#:".contains(c))
            {
                p.push(format!(
                    "`{prefix}.index` must give a lowercase index name without spaces or any of ,\"*\\<|>/?#:, got {name:?}"
                ));
            }
        }
        if self.mode == IndexMode::DataStream && self.index.contains('%') {
            p.push(format!(
                "`{prefix}.index` contains a date pattern; set `mode: dated` to use it"
            ));
        }
        if let Some(EsAuth::Basic { username, .. }) = &self.auth {
            if username.is_empty() {
                p.push(format!("`{prefix}.auth.username` must not be empty"));
            }
        }
        p.extend(self.tls.validate(prefix));
        p
    }
}

/// The Elasticsearch / OpenSearch sink.
#[derive(Debug)]
pub struct ElasticsearchSink {
    name: String,
    client: reqwest::Client,
    base: String,
    auth: Option<EsAuth>,
    target: Target,
    index: String,
    setup_template: bool,
    compression: bool,
    healthcheck: bool,
}

impl ElasticsearchSink {
    /// Builds the sink (no network yet).
    pub fn new(cfg: &ElasticsearchConfig) -> Result<ElasticsearchSink, http::ClientError> {
        let client = http::client(
            cfg.name(),
            &cfg.tls,
            Duration::from_secs(cfg.request_timeout_secs.max(1)),
        )?;
        let auth = cfg.auth.clone();
        Ok(ElasticsearchSink {
            name: cfg.name().to_string(),
            client,
            base: cfg.endpoint.trim_end_matches('/').to_string(),
            auth,
            target: match cfg.mode {
                IndexMode::DataStream => Target::DataStream(cfg.index.clone()),
                IndexMode::Dated => Target::Dated(cfg.index.clone()),
            },
            index: cfg.index.clone(),
            setup_template: cfg.setup_template,
            compression: cfg.compression,
            healthcheck: cfg.healthcheck,
        })
    }

    /// The same sink writing to another index or data stream (raw forwarding).
    pub fn with_index(mut self, index: &str, mode: IndexMode) -> ElasticsearchSink {
        self.index = index.to_string();
        self.target = match mode {
            IndexMode::DataStream => Target::DataStream(index.to_string()),
            IndexMode::Dated => Target::Dated(index.to_string()),
        };
        self
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self.client.request(method, format!("{}{path}", self.base));
        match &self.auth {
            Some(EsAuth::ApiKey { key }) => rb.header(
                reqwest::header::AUTHORIZATION,
                format!("ApiKey {}", key.expose()),
            ),
            Some(EsAuth::Basic { username, password }) => {
                rb.basic_auth(username, Some(password.expose()))
            }
            Some(EsAuth::Bearer { token }) => rb.bearer_auth(token.expose()),
            None => rb,
        }
    }

    async fn send_batch<T: Record>(&self, batch: &[T]) -> SendOutcome {
        let body = encoder::encode(batch, &self.target);
        let mut rb = self
            .req(reqwest::Method::POST, "/_bulk")
            .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson");
        let body = if self.compression {
            rb = rb.header(reqwest::header::CONTENT_ENCODING, "gzip");
            http::gzip(&body)
        } else {
            body
        };
        let resp = match rb.body(body).send().await {
            Ok(r) => r,
            Err(e) => return http::network_error(&e),
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return http::network_error(&e),
        };
        if status == reqwest::StatusCode::OK {
            return encoder::classify_items(&bytes, batch.len());
        }
        match http::classify(status, &headers, &bytes) {
            SendOutcome::Fatal { reason } => SendOutcome::Fatal {
                reason: match status.as_u16() {
                    401 | 403 => format!(
                        "{reason}; check `auth` and the user's privileges on `{}`",
                        self.index
                    ),
                    413 => format!("{reason}; lower `delivery.batch_max_bytes`"),
                    _ => reason,
                },
            },
            o => o,
        }
    }

    async fn check(&self) -> Result<(), HealthError> {
        let r = self
            .req(reqwest::Method::GET, "/")
            .send()
            .await
            .map_err(|e| HealthError::Unreachable(http::error_chain(&e)))?;
        let status = r.status();
        if status == 401 || status == 403 {
            return Err(HealthError::Rejected(format!(
                "Elasticsearch refused the credentials (HTTP {status}); check `auth`"
            )));
        }
        if !status.is_success() {
            return Err(HealthError::Unreachable(format!("HTTP {status}")));
        }
        if self.setup_template {
            self.install_template().await?;
        }
        Ok(())
    }

    /// Installs `audithawk-<index>` as a composable index template (data stream, ECS
    /// basics). Existing templates are replaced: the operator asked for it with
    /// `setup_template`.
    async fn install_template(&self) -> Result<(), HealthError> {
        let pattern = match &self.target {
            Target::DataStream(n) => n.clone(),
            Target::Dated(p) => format!("{}*", p.split('%').next().unwrap_or(p)),
        };
        let mut tpl = serde_json::json!({
            "index_patterns": [pattern],
            "priority": 200,
            "template": {
                "mappings": {
                    "dynamic_templates": [{"strings_as_keyword": {"match_mapping_type": "string", "mapping": {"type": "keyword", "ignore_above": 1024}}}],
                    "properties": {
                        "@timestamp": {"type": "date"},
                        "message": {"type": "match_only_text"},
                        "event": {"properties": {"created": {"type": "date"}, "severity": {"type": "long"}, "risk_score": {"type": "float"}}},
                        "source": {"properties": {"ip": {"type": "ip"}}},
                        "kubernetes": {"properties": {"audit": {"type": "flattened"}}}
                    }
                }
            },
            "_meta": {"managed_by": "audithawk"}
        });
        if matches!(self.target, Target::DataStream(_)) {
            tpl["data_stream"] = serde_json::json!({});
        }
        let name = format!(
            "audithawk-{}",
            self.index
                .replace(['%', '*'], "")
                .trim_end_matches(['-', '.'])
        );
        let r = self
            .req(reqwest::Method::PUT, &format!("/_index_template/{name}"))
            .json(&tpl)
            .send()
            .await
            .map_err(|e| HealthError::Unreachable(http::error_chain(&e)))?;
        let status = r.status();
        if status.is_success() {
            return Ok(());
        }
        let body = r.text().await.unwrap_or_default();
        let msg = format!(
            "installing index template {name}: HTTP {status}: {}",
            &body[..body.len().min(300)]
        );
        if status.is_client_error() {
            Err(HealthError::Rejected(msg))
        } else {
            Err(HealthError::Unreachable(msg))
        }
    }
}

impl<T: Record> Sink<T> for ElasticsearchSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn send<'a>(&'a self, batch: &'a [T]) -> BoxFuture<'a, SendOutcome> {
        Box::pin(self.send_batch(batch))
    }

    fn healthcheck(&self) -> BoxFuture<'_, Result<(), HealthError>> {
        Box::pin(async move {
            if !self.healthcheck && !self.setup_template {
                return Ok(());
            }
            self.check().await
        })
    }
}
