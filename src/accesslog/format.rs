//! Turning one entry into one line: Traefik's `common` and `genericCLF` layouts and its
//! `json` field names, with `filters` (which entries are kept) and `fields` (which fields are
//! kept, dropped or redacted). TCP connections and UDP sessions, which Traefik does not log,
//! get lines in the same formats (see docs/access-log.md).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use l4::observe::{ConnRecord, Transport};
use l7::observe::WantedHeaders;

use crate::config::static_cfg::AccessLog as AccessLogConfig;

/// One HTTP request, as the access log needs it.
#[derive(Debug, Clone)]
pub struct HttpEntry {
    pub entrypoint: String,
    pub client: SocketAddr,
    /// The user a basic or digest auth middleware authenticated, if any.
    pub username: Option<String>,
    pub started: SystemTime,
    pub duration: Duration,
    pub method: String,
    /// Path and query, as received.
    pub path: String,
    /// `HTTP/1.1`, `HTTP/2.0`, `HTTP/3.0`.
    pub protocol: String,
    pub host: String,
    pub tls: bool,
    pub status: u16,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub router: Option<String>,
    pub service: Option<String>,
    /// The server the request went to (`http://10.0.0.1:80`).
    pub service_url: Option<String>,
    pub retry_attempts: u32,
    /// Request headers (lower-case names), for `fields.headers` and CLF's referer and agent.
    pub request_headers: Vec<(String, String)>,
    /// Requests served by this process so far, this one included (CLF's `RequestCount`).
    pub request_count: u64,
}

/// What the access log writes a line for.
#[derive(Debug, Clone)]
pub enum Entry {
    Http(HttpEntry),
    Conn(ConnRecord),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Common,
    GenericClf,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Keep,
    Drop,
    Redact,
}

impl Mode {
    fn parse(value: &str, default: Mode) -> Result<Mode, String> {
        match value {
            "" => Ok(default),
            "keep" => Ok(Mode::Keep),
            "drop" => Ok(Mode::Drop),
            "redact" => Ok(Mode::Redact),
            other => Err(format!("unknown field mode {other:?} (keep, drop, redact)")),
        }
    }
}

/// The formatting part of an `accessLog` section.
#[derive(Debug, Clone)]
pub struct Formatter {
    format: Format,
    /// The request headers the lines show.
    wanted_headers: Option<WantedHeaders>,
    status_ranges: Vec<(u16, u16)>,
    retry_attempts: bool,
    min_duration: Duration,
    field_default: Mode,
    fields: BTreeMap<String, Mode>,
    header_default: Mode,
    headers: BTreeMap<String, Mode>,
}

impl Formatter {
    pub fn new(cfg: &AccessLogConfig) -> Result<Formatter, String> {
        let format = match cfg.format.as_str() {
            "" | "common" => Format::Common,
            "genericCLF" => Format::GenericClf,
            "json" => Format::Json,
            other => {
                return Err(format!(
                    "accessLog.format {other:?}: common, genericCLF or json"
                ));
            }
        };
        let filters = cfg.filters.clone().unwrap_or_default();
        let mut status_ranges = Vec::new();
        for code in &filters.status_codes {
            let range = match code.split_once('-') {
                Some((a, b)) => (a.trim().parse(), b.trim().parse()),
                None => (code.trim().parse(), code.trim().parse()),
            };
            match range {
                (Ok(a), Ok(b)) if a <= b => status_ranges.push((a, b)),
                _ => {
                    return Err(format!(
                        "accessLog.filters.statusCodes: {code:?} is not a code or a range like 500-599"
                    ));
                }
            }
        }
        let fields = cfg.fields.clone().unwrap_or_default();
        let field_default = Mode::parse(&fields.default_mode, Mode::Keep)?;
        let mut named = BTreeMap::new();
        for (name, mode) in &fields.names {
            named.insert(name.clone(), Mode::parse(mode, field_default)?);
        }
        let headers = fields.headers.unwrap_or_default();
        let header_default = Mode::parse(&headers.default_mode, Mode::Drop)?;
        let mut header_modes = BTreeMap::new();
        for (name, mode) in &headers.names {
            header_modes.insert(
                name.to_ascii_lowercase(),
                Mode::parse(mode, header_default)?,
            );
        }
        let wanted_headers = match format {
            // CLF lines show these two only.
            Format::Common | Format::GenericClf => Some(WantedHeaders::Only(vec![
                http::header::REFERER,
                http::header::USER_AGENT,
            ])),
            Format::Json if header_default != Mode::Drop => Some(WantedHeaders::All),
            Format::Json => {
                let kept: Vec<http::HeaderName> = header_modes
                    .iter()
                    .filter(|(_, mode)| **mode != Mode::Drop)
                    .filter_map(|(name, _)| http::HeaderName::from_bytes(name.as_bytes()).ok())
                    .collect();
                (!kept.is_empty()).then_some(WantedHeaders::Only(kept))
            }
        };
        Ok(Formatter {
            wanted_headers,
            format,
            status_ranges,
            retry_attempts: filters.retry_attempts,
            min_duration: filters.min_duration.to_std().unwrap_or_default(),
            field_default,
            fields: named,
            header_default,
            headers: header_modes,
        })
    }

    /// The request headers the lines need.
    pub fn wanted_headers(&self) -> Option<&WantedHeaders> {
        self.wanted_headers.as_ref()
    }

    /// Whether `filters` keep the entry: with none set, all are kept; otherwise an entry is
    /// kept when it matches any of them, as Traefik does.
    fn keeps(&self, status: Option<u16>, retries: u32, duration: Duration) -> bool {
        let any =
            !self.status_ranges.is_empty() || self.retry_attempts || !self.min_duration.is_zero();
        if !any {
            return true;
        }
        let by_status = status.is_some_and(|s| {
            self.status_ranges
                .iter()
                .any(|(a, b)| (*a..=*b).contains(&s))
        });
        let by_retry = self.retry_attempts && retries > 0;
        let by_duration = !self.min_duration.is_zero() && duration > self.min_duration;
        by_status || by_retry || by_duration
    }

    /// The line for `entry`, or `None` when the filters leave it out.
    pub fn line(&self, entry: &Entry) -> Option<String> {
        match entry {
            Entry::Http(h) => {
                if !self.keeps(Some(h.status), h.retry_attempts, h.duration) {
                    return None;
                }
                Some(match self.format {
                    Format::Json => self.json(http_fields(h), Some(&h.request_headers)),
                    Format::Common => self.clf(h, true),
                    Format::GenericClf => self.clf(h, false),
                })
            }
            Entry::Conn(c) => {
                if !self.keeps(None, 0, c.duration) {
                    return None;
                }
                Some(match self.format {
                    Format::Json => self.json(conn_fields(c), None),
                    Format::Common | Format::GenericClf => self.conn_clf(c),
                })
            }
        }
    }

    fn mode(&self, field: &str) -> Mode {
        self.fields
            .get(field)
            .copied()
            .unwrap_or(self.field_default)
    }

    /// A CLF field: `-` when dropped or empty, `REDACTED` when redacted.
    fn clf_field(&self, field: &str, value: &str) -> String {
        match self.mode(field) {
            Mode::Drop => "-".to_owned(),
            Mode::Redact => "REDACTED".to_owned(),
            Mode::Keep if value.is_empty() => "-".to_owned(),
            Mode::Keep => value.to_owned(),
        }
    }

    fn clf(&self, h: &HttpEntry, traefik_extras: bool) -> String {
        let header = |name: &str| {
            h.request_headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        let mut line = format!(
            "{} - {} [{}] \"{} {} {}\" {} {} \"{}\" \"{}\"",
            self.clf_field("ClientHost", &h.client.ip().to_string()),
            self.clf_field("ClientUsername", h.username.as_deref().unwrap_or("")),
            clf_time(h.started),
            self.clf_field("RequestMethod", &h.method),
            self.clf_field("RequestPath", &h.path),
            self.clf_field("RequestProtocol", &h.protocol),
            self.clf_field("DownstreamStatus", &h.status.to_string()),
            self.clf_field("DownstreamContentSize", &h.response_bytes.to_string()),
            quoted(&self.clf_field("request_Referer", header("referer"))),
            quoted(&self.clf_field("request_User-Agent", header("user-agent"))),
        );
        if traefik_extras {
            line.push_str(&format!(
                " {} \"{}\" \"{}\" {}ms",
                h.request_count,
                quoted(&self.clf_field("RouterName", h.router.as_deref().unwrap_or(""))),
                quoted(&self.clf_field("ServiceURL", h.service_url.as_deref().unwrap_or(""))),
                h.duration.as_millis()
            ));
        }
        line
    }

    /// A TCP or UDP line in the CLF layout: the request part names the transport, SNI and
    /// ALPN; the status part is the close reason; then bytes out and in.
    fn conn_clf(&self, c: &ConnRecord) -> String {
        format!(
            "{} - - [{}] \"{} {} {}\" \"{}\" {} {} \"{}\" \"{}\" \"{}\" {}ms",
            self.clf_field("ClientHost", &c.client.ip().to_string()),
            clf_time(c.started),
            transport(c),
            self.clf_field("SNI", c.sni.as_deref().unwrap_or("")),
            self.clf_field("ALPN", c.alpn.as_deref().unwrap_or("")),
            c.reason,
            c.bytes_out,
            c.bytes_in,
            quoted(&self.clf_field("RouterName", c.router.as_deref().unwrap_or(""))),
            quoted(&self.clf_field("ServiceName", c.service.as_deref().unwrap_or(""))),
            quoted(&self.clf_field("ServiceAddr", c.backend.as_deref().unwrap_or(""))),
            c.duration.as_millis()
        )
    }

    fn json(
        &self,
        fields: Vec<(&'static str, Field<'_>)>,
        headers: Option<&[(String, String)]>,
    ) -> String {
        // Keys in sorted order, as Traefik's logger writes them; values written straight
        // into the line.
        let redacted = Field::from("REDACTED");
        let mut kept: Vec<(std::borrow::Cow<'_, str>, &Field<'_>)> =
            Vec::with_capacity(fields.len() + 4);
        for (name, value) in &fields {
            match self.mode(name) {
                Mode::Keep => kept.push(((*name).into(), value)),
                Mode::Redact => kept.push(((*name).into(), &redacted)),
                Mode::Drop => {}
            }
        }
        let header_values: Vec<(String, Field<'_>)> = headers
            .unwrap_or(&[])
            .iter()
            .filter_map(|(name, value)| {
                let mode = self
                    .headers
                    .get(name)
                    .copied()
                    .unwrap_or(self.header_default);
                let key = format!("request_{}", canonical_header(name));
                match mode {
                    Mode::Keep => Some((key, Field::from(value.as_str()))),
                    Mode::Redact => Some((key, redacted.clone())),
                    Mode::Drop => None,
                }
            })
            .collect();
        for (key, value) in &header_values {
            kept.push((key.clone().into(), value));
        }
        let level = Field::from("info");
        let msg = Field::from("");
        let time = Field::from(rfc3339(SystemTime::now()));
        kept.push(("level".into(), &level));
        kept.push(("msg".into(), &msg));
        kept.push(("time".into(), &time));
        kept.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut out = String::with_capacity(640);
        out.push('{');
        for (i, (key, value)) in kept.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json_string(&mut out, key);
            out.push(':');
            match value {
                Field::Text(text) => push_json_string(&mut out, text),
                Field::Number(n) => out.push_str(&n.to_string()),
            }
        }
        out.push('}');
        out
    }
}

/// A JSON field's value, borrowed from the entry where it can be.
#[derive(Clone)]
enum Field<'a> {
    Text(std::borrow::Cow<'a, str>),
    Number(u64),
}

impl<'a> From<&'a str> for Field<'a> {
    fn from(text: &'a str) -> Self {
        Field::Text(std::borrow::Cow::Borrowed(text))
    }
}

impl From<String> for Field<'_> {
    fn from(text: String) -> Self {
        Field::Text(std::borrow::Cow::Owned(text))
    }
}

impl From<u64> for Field<'_> {
    fn from(n: u64) -> Self {
        Field::Number(n)
    }
}

impl From<u32> for Field<'_> {
    fn from(n: u32) -> Self {
        Field::Number(u64::from(n))
    }
}

impl From<u16> for Field<'_> {
    fn from(n: u16) -> Self {
        Field::Number(u64::from(n))
    }
}

/// `text` as a JSON string.
fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn transport(c: &ConnRecord) -> &'static str {
    match c.transport {
        Transport::Tcp => "TCP",
        Transport::Udp => "UDP",
    }
}

/// Traefik's JSON fields of an HTTP request.
fn http_fields(h: &HttpEntry) -> Vec<(&'static str, Field<'_>)> {
    let nanos = |d: Duration| Field::from(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let (host, port) = split_host(&h.host);
    vec![
        ("ClientAddr", Field::from(h.client.to_string())),
        ("ClientHost", Field::from(h.client.ip().to_string())),
        ("ClientPort", Field::from(h.client.port().to_string())),
        (
            "ClientUsername",
            Field::from(h.username.as_deref().unwrap_or("-")),
        ),
        ("DownstreamContentSize", Field::from(h.response_bytes)),
        ("DownstreamStatus", Field::from(h.status)),
        ("Duration", nanos(h.duration)),
        ("RequestAddr", Field::from(h.host.as_str())),
        ("RequestContentSize", Field::from(h.request_bytes)),
        ("RequestCount", Field::from(h.request_count)),
        ("RequestHost", Field::from(host)),
        ("RequestMethod", Field::from(h.method.as_str())),
        ("RequestPath", Field::from(h.path.as_str())),
        ("RequestPort", Field::from(port)),
        ("RequestProtocol", Field::from(h.protocol.as_str())),
        (
            "RequestScheme",
            Field::from(if h.tls { "https" } else { "http" }),
        ),
        ("RetryAttempts", Field::from(h.retry_attempts)),
        ("RouterName", Field::from(h.router.as_deref().unwrap_or(""))),
        (
            "ServiceName",
            Field::from(h.service.as_deref().unwrap_or("")),
        ),
        (
            "ServiceURL",
            Field::from(h.service_url.as_deref().unwrap_or("")),
        ),
        (
            "ServiceAddr",
            Field::from(
                h.service_url
                    .as_deref()
                    .and_then(|u| u.parse::<http::Uri>().ok())
                    .and_then(|u| u.authority().map(|a| a.to_string()))
                    .unwrap_or_default(),
            ),
        ),
        ("StartUTC", Field::from(rfc3339(h.started))),
        ("entryPointName", Field::from(h.entrypoint.as_str())),
    ]
}

/// The JSON fields of a TCP connection or UDP session.
fn conn_fields(c: &ConnRecord) -> Vec<(&'static str, Field<'_>)> {
    fn text(v: Option<&str>) -> Field<'_> {
        Field::from(v.unwrap_or(""))
    }
    vec![
        ("Protocol", Field::from(transport(c))),
        ("ClientAddr", Field::from(c.client.to_string())),
        ("ClientHost", Field::from(c.client.ip().to_string())),
        ("ClientPort", Field::from(c.client.port().to_string())),
        ("SNI", text(c.sni.as_deref())),
        ("ALPN", text(c.alpn.as_deref())),
        ("RouterName", text(c.router.as_deref())),
        ("ServiceName", text(c.service.as_deref())),
        ("ServiceAddr", text(c.backend.as_deref())),
        ("BytesIn", Field::from(c.bytes_in)),
        ("BytesOut", Field::from(c.bytes_out)),
        (
            "Duration",
            Field::from(u64::try_from(c.duration.as_nanos()).unwrap_or(u64::MAX)),
        ),
        ("CloseReason", Field::from(c.reason.to_string())),
        ("StartUTC", Field::from(rfc3339(c.started))),
        ("entryPointName", Field::from(&*c.entrypoint)),
    ]
}

fn split_host(authority: &str) -> (String, String) {
    match authority.rsplit_once(':') {
        Some((host, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && !host.ends_with(':') =>
        {
            (
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
                port.to_owned(),
            )
        }
        _ => (authority.to_owned(), String::new()),
    }
}

/// `user-agent` → `User-Agent`, as Go prints header names.
fn canonical_header(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => {
                    first.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase()
                }
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// A value inside CLF quotes: quotes and control characters escaped, so one entry is one
/// line whatever a client sends.
fn quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for ch in value.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Civil date and time (UTC) of `t`: (year, month, day, hour, minute, second, nanos).
fn civil(t: SystemTime) -> (i64, u32, u32, u32, u32, u32, u32) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Days to civil date (proleptic Gregorian), from the well-known era algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        (rem / 3600) as u32,
        ((rem % 3600) / 60) as u32,
        (rem % 60) as u32,
        since.subsec_nanos(),
    )
}

/// `28/Nov/2026:10:50:00 +0000`.
fn clf_time(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, s, _) = civil(t);
    let month = MONTHS[(mo as usize).saturating_sub(1).min(11)];
    format!("{d:02}/{month}/{y}:{h:02}:{mi:02}:{s:02} +0000")
}

/// `2026-11-28T10:50:00.123456789Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s, ns) = civil(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ns:09}Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn config(format: &str) -> AccessLogConfig {
        AccessLogConfig {
            format: format.to_owned(),
            ..AccessLogConfig::default()
        }
    }

    fn entry(status: u16, millis: u64) -> HttpEntry {
        HttpEntry {
            entrypoint: "web".into(),
            client: "192.0.2.7:5123".parse().unwrap(),
            username: None,
            // 2026-11-28T10:50:00Z
            started: UNIX_EPOCH + Duration::from_secs(1_795_863_000),
            duration: Duration::from_millis(millis),
            method: "GET".into(),
            path: "/a?b=1".into(),
            protocol: "HTTP/1.1".into(),
            host: "site.test:8080".into(),
            tls: false,
            status,
            request_bytes: 0,
            response_bytes: 42,
            router: Some("site@file".into()),
            service: Some("app@file".into()),
            service_url: Some("http://127.0.0.1:9000".into()),
            retry_attempts: 0,
            request_headers: vec![
                ("user-agent".into(), "curl/8 \"x\"".into()),
                ("authorization".into(), "Basic c2VjcmV0".into()),
            ],
            request_count: 3,
        }
    }

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(
            clf_time(UNIX_EPOCH + Duration::from_secs(1_795_863_000)),
            "28/Nov/2026:10:50:00 +0000"
        );
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            clf_time(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "29/Feb/2000:00:00:00 +0000"
        );
    }

    #[test]
    fn common_and_generic_clf_lines() {
        let common = Formatter::new(&config("common")).unwrap();
        assert_eq!(
            common.line(&Entry::Http(entry(200, 12))).unwrap(),
            r#"192.0.2.7 - - [28/Nov/2026:10:50:00 +0000] "GET /a?b=1 HTTP/1.1" 200 42 "-" "curl/8 \"x\"" 3 "site@file" "http://127.0.0.1:9000" 12ms"#
        );
        let generic = Formatter::new(&config("genericCLF")).unwrap();
        assert_eq!(
            generic.line(&Entry::Http(entry(200, 12))).unwrap(),
            r#"192.0.2.7 - - [28/Nov/2026:10:50:00 +0000] "GET /a?b=1 HTTP/1.1" 200 42 "-" "curl/8 \"x\"""#
        );
    }

    #[test]
    fn json_fields_and_header_modes() {
        let mut cfg = config("json");
        cfg.fields = Some(crate::config::static_cfg::AccessLogFields {
            default_mode: "keep".into(),
            names: [
                ("ClientUsername".to_owned(), "drop".to_owned()),
                ("ClientHost".to_owned(), "redact".to_owned()),
            ]
            .into(),
            headers: Some(crate::config::static_cfg::AccessLogHeaders {
                default_mode: "drop".into(),
                names: [
                    ("User-Agent".to_owned(), "keep".to_owned()),
                    ("Authorization".to_owned(), "redact".to_owned()),
                ]
                .into(),
            }),
        });
        let f = Formatter::new(&cfg).unwrap();
        let line: serde_json::Value =
            serde_json::from_str(&f.line(&Entry::Http(entry(404, 3))).unwrap()).unwrap();
        assert_eq!(line["DownstreamStatus"], 404);
        assert_eq!(line["RouterName"], "site@file");
        assert_eq!(line["RequestHost"], "site.test");
        assert_eq!(line["RequestPort"], "8080");
        assert_eq!(line["Duration"], 3_000_000);
        assert_eq!(line["ClientHost"], "REDACTED");
        assert!(line.get("ClientUsername").is_none());
        assert_eq!(line["request_User-Agent"], "curl/8 \"x\"");
        assert_eq!(line["request_Authorization"], "REDACTED");
        assert_eq!(line["StartUTC"], "2026-11-28T10:50:00.000000000Z");
    }

    #[test]
    fn filters_keep_an_entry_matching_any_of_them() {
        let mut cfg = config("common");
        cfg.filters = Some(crate::config::static_cfg::AccessLogFilters {
            status_codes: vec!["500-599".into(), "404".into()],
            retry_attempts: true,
            min_duration: crate::config::Duration::from_millis(100),
        });
        let f = Formatter::new(&cfg).unwrap();
        assert!(f.line(&Entry::Http(entry(200, 5))).is_none());
        assert!(f.line(&Entry::Http(entry(404, 5))).is_some());
        assert!(f.line(&Entry::Http(entry(503, 5))).is_some());
        assert!(f.line(&Entry::Http(entry(200, 150))).is_some());
        let mut retried = entry(200, 5);
        retried.retry_attempts = 1;
        assert!(f.line(&Entry::Http(retried)).is_some());
        cfg.filters.as_mut().unwrap().status_codes = vec!["5xx".into()];
        assert!(Formatter::new(&cfg).is_err());
    }

    #[test]
    fn tcp_and_udp_lines() {
        let record = ConnRecord {
            transport: Transport::Tcp,
            entrypoint: Arc::from("websecure"),
            client: "192.0.2.9:40000".parse().unwrap(),
            sni: Some(Arc::from("db.test")),
            alpn: Some("postgresql".into()),
            router: Some(Arc::from("pg@file")),
            service: Some(Arc::from("pg@file")),
            backend: Some("10.0.0.5:5432".into()),
            bytes_in: 100,
            bytes_out: 2000,
            datagrams_in: 0,
            datagrams_out: 0,
            started: UNIX_EPOCH + Duration::from_secs(1_795_863_000),
            duration: Duration::from_millis(1500),
            reason: l4::observe::CloseReason::Closed,
        };
        let common = Formatter::new(&config("common")).unwrap();
        assert_eq!(
            common.line(&Entry::Conn(record.clone())).unwrap(),
            r#"192.0.2.9 - - [28/Nov/2026:10:50:00 +0000] "TCP db.test postgresql" "closed" 2000 100 "pg@file" "pg@file" "10.0.0.5:5432" 1500ms"#
        );
        let json = Formatter::new(&config("json")).unwrap();
        let mut udp = record;
        udp.transport = Transport::Udp;
        udp.sni = None;
        udp.alpn = None;
        let line: serde_json::Value =
            serde_json::from_str(&json.line(&Entry::Conn(udp)).unwrap()).unwrap();
        assert_eq!(line["Protocol"], "UDP");
        assert_eq!(line["BytesOut"], 2000);
        assert_eq!(line["CloseReason"], "closed");
        assert_eq!(line["ServiceAddr"], "10.0.0.5:5432");
    }
}
