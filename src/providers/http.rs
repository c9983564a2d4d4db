//! `providers.http`: polls a URL that answers with a dynamic configuration, in JSON
//! (Traefik's format), or YAML or TOML when the content type says so.
//!
//! Each poll is bounded by `pollTimeout` (connection to the last body byte) and the body
//! by [`MAX_BODY_BYTES`]. The server's `ETag` is sent back in `If-None-Match`, so a server
//! that supports it answers `304 Not Modified` and nothing is read; a body equal to the
//! last one is skipped too. A failed poll, an error status or a body that does not read is
//! logged and the last good configuration stays.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, Uri};
use http_body_util::BodyExt;
use l7::transport::{Transport, TransportError, TransportSettings};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::{Published, Publisher};
use crate::config::ConfigError;
use crate::config::dynamic::DynamicConfig;
use crate::config::file_provider::{parse_dynamic_as, read_tree};
use crate::config::source::{Format, Key, Location, MAX_DEPTH, Node, NodeKind, ScalarKind};
use crate::config::static_cfg::{ClientTls, HttpProvider};

/// The provider's name in `name@http`.
pub const PROVIDER: &str = "http";

/// The largest configuration body read; a bigger one is an error (and the last good
/// configuration stays). 16 MiB holds tens of thousands of routers.
pub const MAX_BODY_BYTES: usize = 16 << 20;

/// The provider's settings that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HttpProviderError {
    #[error("providers.http.endpoint {0:?}: an absolute http:// or https:// URL is required")]
    Endpoint(String),
    #[error("providers.http.pollInterval must be more than 0")]
    Interval,
    #[error("providers.http.headers: {0:?} is not a valid header")]
    Header(String),
    #[error("providers.http.tls.{option}: {reason}")]
    Tls {
        option: &'static str,
        reason: String,
    },
    #[error("providers.http: {0}")]
    Transport(#[from] TransportError),
}

/// Why one poll brought nothing.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("polling {endpoint}: {reason}")]
    Request { endpoint: String, reason: String },
    #[error("polling {endpoint}: no complete answer within {after:?}")]
    Timeout { endpoint: String, after: Duration },
    #[error("polling {endpoint}: the server answered {status}")]
    Status {
        endpoint: String,
        status: StatusCode,
    },
    #[error("polling {endpoint}: the body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge { endpoint: String },
}

/// How a body is written, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Yaml,
    Toml,
}

impl BodyFormat {
    /// YAML and TOML media types (`application/yaml`, `text/x-toml`…) by their subtype;
    /// anything else, and no content type, is JSON, Traefik's format.
    pub fn from_content_type(value: Option<&str>) -> BodyFormat {
        let subtype = value
            .and_then(|v| v.split(';').next())
            .and_then(|v| v.trim().rsplit('/').next())
            .map(|s| s.trim().to_ascii_lowercase())
            .unwrap_or_default();
        match subtype.trim_start_matches("x-") {
            "yaml" | "yml" => BodyFormat::Yaml,
            "toml" => BodyFormat::Toml,
            _ => BodyFormat::Json,
        }
    }
}

/// What one poll brought.
#[derive(Debug, PartialEq, Eq)]
pub enum Fetched {
    /// `304`: the configuration has not changed since the last `ETag`.
    NotModified,
    Body {
        bytes: Bytes,
        format: BodyFormat,
    },
}

/// The poller of one endpoint.
pub struct Poller {
    endpoint: Uri,
    interval: Duration,
    timeout: Duration,
    headers: HeaderMap,
    transport: Arc<Transport>,
    /// The `ETag` of the last body read.
    etag: Option<HeaderValue>,
}

impl Poller {
    pub fn new(cfg: &HttpProvider) -> Result<Poller, HttpProviderError> {
        let endpoint: Uri = cfg
            .endpoint
            .parse()
            .ok()
            .filter(|u: &Uri| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some()
            })
            .ok_or_else(|| HttpProviderError::Endpoint(cfg.endpoint.clone()))?;
        let interval = cfg
            .poll_interval
            .to_std()
            .filter(|d| !d.is_zero())
            .ok_or(HttpProviderError::Interval)?;
        let timeout = cfg
            .poll_timeout
            .to_std()
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(5));
        let mut headers = HeaderMap::new();
        for (name, value) in &cfg.headers {
            let invalid = || HttpProviderError::Header(name.clone());
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?,
                HeaderValue::from_str(value).map_err(|_| invalid())?,
            );
        }
        // `pollTimeout` bounds each poll as a whole ([`Poller::fetch`]); the transport's own
        // response timeout stays off so that one bound, with one message, applies.
        let mut settings = TransportSettings {
            dial_timeout: timeout,
            response_header_timeout: None,
            ..TransportSettings::default()
        };
        if let Some(tls) = &cfg.tls {
            client_tls(tls, &mut settings)?;
        }
        Ok(Poller {
            endpoint,
            interval,
            timeout,
            headers,
            transport: Transport::new(settings)?,
            etag: None,
        })
    }

    /// One poll, bounded by `pollTimeout` as a whole.
    pub async fn fetch(&mut self) -> Result<Fetched, FetchError> {
        let endpoint = self.endpoint.to_string();
        match tokio::time::timeout(self.timeout, self.fetch_unbounded()).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout {
                endpoint,
                after: self.timeout,
            }),
        }
    }

    async fn fetch_unbounded(&mut self) -> Result<Fetched, FetchError> {
        let endpoint = self.endpoint.to_string();
        let mut request = Request::new(l7::handler::empty_body());
        *request.uri_mut() = self.endpoint.clone();
        *request.headers_mut() = self.headers.clone();
        if let Some(etag) = &self.etag {
            request.headers_mut().insert(IF_NONE_MATCH, etag.clone());
        }
        let response = self
            .transport
            .send(request)
            .await
            .map_err(|e| FetchError::Request {
                endpoint: endpoint.clone(),
                reason: e.to_string(),
            })?;
        let (parts, body) = response.into_parts();
        if parts.status == StatusCode::NOT_MODIFIED {
            return Ok(Fetched::NotModified);
        }
        if !parts.status.is_success() {
            return Err(FetchError::Status {
                endpoint,
                status: parts.status,
            });
        }
        // Read frame by frame to stop at the limit without holding more than it.
        let mut body = body;
        let mut read = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| FetchError::Request {
                endpoint: endpoint.clone(),
                reason: format!("reading the body: {e}"),
            })?;
            if let Ok(data) = frame.into_data() {
                if read.len() + data.len() > MAX_BODY_BYTES {
                    return Err(FetchError::TooLarge { endpoint });
                }
                read.extend_from_slice(&data);
            }
        }
        let bytes = Bytes::from(read);
        self.etag = parts.headers.get(ETAG).cloned();
        let format = BodyFormat::from_content_type(
            parts
                .headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
        );
        Ok(Fetched::Body { bytes, format })
    }

    /// Polls now and then every `pollInterval` until `stop`, publishing what changed.
    pub async fn run(
        mut self,
        mut publisher: Publisher<(Bytes, BodyFormat)>,
        mut stop: watch::Receiver<bool>,
    ) {
        let endpoint = self.endpoint.to_string();
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = super::stopped(&mut stop) => return,
                _ = ticks.tick() => {}
            }
            match self.fetch().await {
                Ok(Fetched::NotModified) => debug!(%endpoint, "HTTP provider: not modified"),
                Ok(Fetched::Body { bytes, format }) => {
                    let published = publisher.publish((bytes, format), |(bytes, format)| {
                        parse(bytes, *format, &endpoint)
                    });
                    if published == Published::Unchanged {
                        debug!(%endpoint, "HTTP provider: same configuration");
                    }
                }
                // The last good configuration stays; the next poll tries again.
                Err(e) => warn!(error = %e, "HTTP provider"),
            }
        }
    }
}

/// Applies `ca`, `cert`/`key` and `insecureSkipVerify` to the transport settings.
fn client_tls(tls: &ClientTls, settings: &mut TransportSettings) -> Result<(), HttpProviderError> {
    let error = |option: &'static str, reason: String| HttpProviderError::Tls { option, reason };
    settings.insecure_skip_verify = tls.insecure_skip_verify;
    if !tls.ca.is_empty() {
        settings.root_cas =
            l4::tls::load_ca_certificates(&tls.ca).map_err(|e| error("ca", e.to_string()))?;
    }
    match (tls.cert.is_empty(), tls.key.is_empty()) {
        (true, true) => Ok(()),
        (false, false) => {
            let cert = crate::runtime::compile::read_pem_or_path(&tls.cert)
                .map_err(|e| error("cert", e))?;
            let key =
                crate::runtime::compile::read_pem_or_path(&tls.key).map_err(|e| error("key", e))?;
            let chain = CertificateDer::pem_slice_iter(&cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| error("cert", e.to_string()))?;
            let key =
                PrivateKeyDer::from_pem_slice(&key).map_err(|e| error("key", e.to_string()))?;
            settings.client_certificates.push((chain, key));
            Ok(())
        }
        _ => Err(error("cert", "cert and key go together".to_owned())),
    }
}

/// Reads a body into a configuration whose names are qualified `@http`. `endpoint` names
/// the body in error locations.
pub fn parse(
    bytes: &[u8],
    format: BodyFormat,
    endpoint: &str,
) -> Result<DynamicConfig, Vec<ConfigError>> {
    let file: Arc<str> = Arc::from(endpoint);
    let text = std::str::from_utf8(bytes).map_err(|e| {
        vec![ConfigError::at(
            Location::whole(file.clone()),
            format!("the body is not UTF-8 text (byte {})", e.valid_up_to()),
        )]
    })?;
    match format {
        BodyFormat::Yaml => parse_dynamic_as(text, Format::Yaml, endpoint, PROVIDER),
        BodyFormat::Toml => parse_dynamic_as(text, Format::Toml, endpoint, PROVIDER),
        BodyFormat::Json => {
            let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
                vec![ConfigError::at(
                    Location {
                        file: file.clone(),
                        line: u32::try_from(e.line()).unwrap_or(u32::MAX),
                        column: u32::try_from(e.column()).unwrap_or(u32::MAX),
                    },
                    format!("JSON syntax error: {e}"),
                )]
            })?;
            let node = json_node(value, &file, 0).map_err(|e| vec![e])?;
            read_tree(&node, PROVIDER)
        }
    }
}

/// A JSON value as a configuration tree. JSON carries no positions past parsing, so every
/// node is located at the endpoint; nesting is bounded like a file's.
fn json_node(value: serde_json::Value, file: &Arc<str>, depth: usize) -> Result<Node, ConfigError> {
    let location = Location::whole(file.clone());
    if depth > MAX_DEPTH {
        return Err(ConfigError::at(
            location,
            format!("maps and lists nest more than {MAX_DEPTH} levels deep"),
        ));
    }
    let kind = match value {
        serde_json::Value::Null => NodeKind::Null,
        serde_json::Value::Bool(b) => NodeKind::Scalar(b.to_string(), ScalarKind::Bool),
        serde_json::Value::Number(n) => {
            let kind = if n.is_f64() {
                ScalarKind::Float
            } else {
                ScalarKind::Int
            };
            NodeKind::Scalar(n.to_string(), kind)
        }
        serde_json::Value::String(s) => NodeKind::Scalar(s, ScalarKind::Str),
        serde_json::Value::Array(items) => NodeKind::Seq(
            items
                .into_iter()
                .map(|item| json_node(item, file, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        serde_json::Value::Object(entries) => NodeKind::Map(
            entries
                .into_iter()
                .map(|(name, item)| {
                    Ok((
                        Key {
                            name,
                            location: location.clone(),
                        },
                        json_node(item, file, depth + 1)?,
                    ))
                })
                .collect::<Result<_, ConfigError>>()?,
        ),
    };
    Ok(Node::new(kind, location))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENDPOINT: &str = "http://config.test/traefik";

    #[test]
    fn json_bodies_read_in_traefik_format_with_names_qualified_at_http() {
        let body = br#"{"http": {"routers": {"r": {"rule": "Host(`a`)", "service": "s@file", "priority": 10}},
            "services": {"s": {"loadBalancer": {"servers": [{"url": "http://127.0.0.1:1"}], "passHostHeader": false}}}}}"#;
        let config = parse(body, BodyFormat::Json, ENDPOINT).expect("reads");
        let router = &config.http.routers["r@http"];
        assert_eq!(router.service.value, "s@file");
        assert_eq!(router.priority, 10);
        assert!(config.http.services.contains_key("s@http"));
    }

    #[test]
    fn yaml_and_toml_bodies_are_read_by_content_type() {
        assert_eq!(
            BodyFormat::from_content_type(Some("application/x-yaml; charset=utf-8")),
            BodyFormat::Yaml
        );
        assert_eq!(
            BodyFormat::from_content_type(Some("application/toml")),
            BodyFormat::Toml
        );
        assert_eq!(
            BodyFormat::from_content_type(Some("application/json")),
            BodyFormat::Json
        );
        assert_eq!(BodyFormat::from_content_type(None), BodyFormat::Json);
        let yaml = parse(
            b"tcp:\n  routers:\n    t: {rule: 'HostSNI(`*`)', service: s}\n",
            BodyFormat::Yaml,
            ENDPOINT,
        )
        .expect("yaml");
        assert!(yaml.tcp.routers.contains_key("t@http"));
        let toml = parse(
            b"[http.routers.r]\nrule = \"Host(`a`)\"\nservice = \"s\"\n",
            BodyFormat::Toml,
            ENDPOINT,
        )
        .expect("toml");
        assert_eq!(toml.http.routers["r@http"].service.value, "s@http");
    }

    #[test]
    fn garbage_is_an_error_located_in_the_body() {
        let errors = parse(
            b"{\"http\": {\n  \"routers\": [}",
            BodyFormat::Json,
            ENDPOINT,
        )
        .expect_err("garbage");
        let location = errors[0].location.as_ref().expect("located");
        assert_eq!((&*location.file, location.line), (ENDPOINT, 2));
        let errors = parse(&[0xff, 0xfe], BodyFormat::Json, ENDPOINT).expect_err("binary");
        assert!(errors[0].message.contains("UTF-8"));
        let errors = parse(
            br#"{"http": {"routers": {"r": {"rule": "Host(`a`)", "bogus": 1}}}}"#,
            BodyFormat::Json,
            ENDPOINT,
        )
        .expect_err("unknown field");
        assert!(errors[0].message.contains("bogus"), "{errors:?}");
        assert!(errors[0].to_string().starts_with(ENDPOINT));
    }

    #[test]
    fn json_nested_past_the_depth_limit_is_refused() {
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 2), "]".repeat(MAX_DEPTH + 2));
        let errors = parse(deep.as_bytes(), BodyFormat::Json, ENDPOINT).expect_err("too deep");
        assert!(errors[0].message.contains("levels deep"));
    }

    #[test]
    fn bad_settings_are_refused_before_polling() {
        let cfg = |endpoint: &str| HttpProvider {
            endpoint: endpoint.to_owned(),
            ..HttpProvider::default()
        };
        assert!(matches!(
            Poller::new(&cfg("config.test/x")),
            Err(HttpProviderError::Endpoint(_))
        ));
        assert!(matches!(
            Poller::new(&cfg("ftp://config.test/x")),
            Err(HttpProviderError::Endpoint(_))
        ));
        let mut with_header = cfg(ENDPOINT);
        with_header
            .headers
            .insert("bad header".to_owned(), "x".to_owned());
        assert!(matches!(
            Poller::new(&with_header),
            Err(HttpProviderError::Header(_))
        ));
        assert!(Poller::new(&cfg(ENDPOINT)).is_ok());
    }
}
