//! Turning one record into one line: Traefik's `common` and `genericCLF` layouts and its
//! `json` field names, with `filters` (which records are kept) and `fields` (which fields are
//! kept, dropped or redacted). TCP connections and UDP sessions, which Traefik does not log,
//! get lines in the same formats (see docs/access-log.md).
//!
//! Lines are written straight from the records into one byte buffer: the JSON keys' order and
//! modes are worked out once, when the formatter is built, and dates are formatted once a
//! second. This runs on the task that served the request, so it is kept free of
//! intermediate copies.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use l4::observe::{ConnRecord, Transport};
use l7::forwarded::ipv4_text;
use l7::observe::{RequestRecord, WantedHeaders};

use crate::config::static_cfg::AccessLog as AccessLogConfig;

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

/// A field of a line, named as Traefik names it (`fields.names` uses these names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    ClientAddr,
    ClientHost,
    ClientPort,
    ClientUsername,
    DownstreamContentSize,
    DownstreamStatus,
    Duration,
    RequestAddr,
    RequestContentSize,
    RequestCount,
    RequestHost,
    RequestMethod,
    RequestPath,
    RequestPort,
    RequestProtocol,
    RequestScheme,
    RetryAttempts,
    RouterName,
    ServiceName,
    ServiceUrl,
    ServiceAddr,
    StartUtc,
    EntryPointName,
    // TCP and UDP only.
    Protocol,
    Sni,
    Alpn,
    BytesIn,
    BytesOut,
    CloseReason,
    // CLF only: the two headers CLF shows, under the names `fields.names` gives them.
    Referer,
    UserAgent,
}

impl Key {
    const ALL: [Key; 31] = [
        Key::ClientAddr,
        Key::ClientHost,
        Key::ClientPort,
        Key::ClientUsername,
        Key::DownstreamContentSize,
        Key::DownstreamStatus,
        Key::Duration,
        Key::RequestAddr,
        Key::RequestContentSize,
        Key::RequestCount,
        Key::RequestHost,
        Key::RequestMethod,
        Key::RequestPath,
        Key::RequestPort,
        Key::RequestProtocol,
        Key::RequestScheme,
        Key::RetryAttempts,
        Key::RouterName,
        Key::ServiceName,
        Key::ServiceUrl,
        Key::ServiceAddr,
        Key::StartUtc,
        Key::EntryPointName,
        Key::Protocol,
        Key::Sni,
        Key::Alpn,
        Key::BytesIn,
        Key::BytesOut,
        Key::CloseReason,
        Key::Referer,
        Key::UserAgent,
    ];

    /// Whether JSON lines show the field as a number (the others are strings).
    fn is_number(self) -> bool {
        matches!(
            self,
            Key::DownstreamContentSize
                | Key::DownstreamStatus
                | Key::Duration
                | Key::RequestContentSize
                | Key::RequestCount
                | Key::RetryAttempts
                | Key::BytesIn
                | Key::BytesOut
        )
    }

    /// Whether an HTTP request's JSON lines have the field.
    fn is_http(self) -> bool {
        !matches!(
            self,
            Key::Protocol
                | Key::Sni
                | Key::Alpn
                | Key::BytesIn
                | Key::BytesOut
                | Key::CloseReason
                | Key::Referer
                | Key::UserAgent
        )
    }

    /// Whether a request's field shows a name from the configuration: its router's, its
    /// service's, or its server's, which are the same for every request the router takes.
    fn is_name(self) -> bool {
        matches!(
            self,
            Key::RouterName | Key::ServiceName | Key::ServiceUrl | Key::ServiceAddr
        )
    }

    /// Whether a TCP connection's or UDP session's JSON lines have the field.
    fn is_conn(self) -> bool {
        matches!(
            self,
            Key::Protocol
                | Key::ClientAddr
                | Key::ClientHost
                | Key::ClientPort
                | Key::Sni
                | Key::Alpn
                | Key::RouterName
                | Key::ServiceName
                | Key::ServiceAddr
                | Key::BytesIn
                | Key::BytesOut
                | Key::Duration
                | Key::CloseReason
                | Key::StartUtc
                | Key::EntryPointName
        )
    }

    fn name(self) -> &'static str {
        match self {
            Key::ClientAddr => "ClientAddr",
            Key::ClientHost => "ClientHost",
            Key::ClientPort => "ClientPort",
            Key::ClientUsername => "ClientUsername",
            Key::DownstreamContentSize => "DownstreamContentSize",
            Key::DownstreamStatus => "DownstreamStatus",
            Key::Duration => "Duration",
            Key::RequestAddr => "RequestAddr",
            Key::RequestContentSize => "RequestContentSize",
            Key::RequestCount => "RequestCount",
            Key::RequestHost => "RequestHost",
            Key::RequestMethod => "RequestMethod",
            Key::RequestPath => "RequestPath",
            Key::RequestPort => "RequestPort",
            Key::RequestProtocol => "RequestProtocol",
            Key::RequestScheme => "RequestScheme",
            Key::RetryAttempts => "RetryAttempts",
            Key::RouterName => "RouterName",
            Key::ServiceName => "ServiceName",
            Key::ServiceUrl => "ServiceURL",
            Key::ServiceAddr => "ServiceAddr",
            Key::StartUtc => "StartUTC",
            Key::EntryPointName => "entryPointName",
            Key::Protocol => "Protocol",
            Key::Sni => "SNI",
            Key::Alpn => "ALPN",
            Key::BytesIn => "BytesIn",
            Key::BytesOut => "BytesOut",
            Key::CloseReason => "CloseReason",
            Key::Referer => "request_Referer",
            Key::UserAgent => "request_User-Agent",
        }
    }
}

/// What a header's JSON field is called and how it is shown.
#[derive(Debug, Clone)]
struct HeaderRule {
    key: String,
    mode: Mode,
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
    /// The mode of every [`Key`], by its position in [`Key::ALL`].
    modes: [Mode; Key::ALL.len()],
    /// The JSON fields written, sorted by name as Traefik's logger sorts them; dropped ones
    /// left out.
    http_plan: Plan,
    conn_plan: Plan,
    header_default: Mode,
    /// By lower-case header name.
    headers: BTreeMap<String, HeaderRule>,
    /// Tells this formatter's parts in [`Rendered`] caches from another's.
    id: u64,
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
            named.insert(name.as_str(), Mode::parse(mode, field_default)?);
        }
        let modes = Key::ALL.map(|key| named.get(key.name()).copied().unwrap_or(field_default));
        let plan = |wanted: fn(Key) -> bool| {
            let mut plan: Vec<(Key, Mode)> = Key::ALL
                .into_iter()
                .filter(|&key| wanted(key))
                .map(|key| (key, modes[key as usize]))
                .filter(|(_, mode)| *mode != Mode::Drop)
                .collect();
            plan.sort_unstable_by_key(|(key, _)| key.name());
            Plan::new(&plan)
        };
        let http_plan = plan(Key::is_http);
        let conn_plan = plan(Key::is_conn);
        let header_config = fields.headers.unwrap_or_default();
        let header_default = Mode::parse(&header_config.default_mode, Mode::Drop)?;
        let mut headers = BTreeMap::new();
        for (name, mode) in &header_config.names {
            headers.insert(
                name.to_ascii_lowercase(),
                HeaderRule {
                    key: header_key(name),
                    mode: Mode::parse(mode, header_default)?,
                },
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
                let kept: Vec<http::HeaderName> = headers
                    .iter()
                    .filter(|(_, rule)| rule.mode != Mode::Drop)
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
            modes,
            http_plan,
            conn_plan,
            header_default,
            headers,
            id: {
                static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            },
        })
    }

    /// The request headers the lines need.
    pub fn wanted_headers(&self) -> Option<&WantedHeaders> {
        self.wanted_headers.as_ref()
    }

    /// Whether lines show the authority the request named: JSON lines do, CLF lines do not.
    pub fn shows_host(&self) -> bool {
        matches!(self.format, Format::Json)
    }

    /// Whether `filters` keep the record: with none set, all are kept; otherwise a record is
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

    fn mode(&self, key: Key) -> Mode {
        self.modes[key as usize]
    }

    /// Appends the line for request `r`, the `count`th this process served, to `out`;
    /// `false` (and nothing appended) when the filters leave it out.
    pub fn http_line(&self, r: &RequestRecord, count: u64, out: &mut Vec<u8>) -> bool {
        if !self.keeps(Some(r.status.as_u16()), r.retries, r.duration) {
            return false;
        }
        let request = Request::of(r, count);
        match self.format {
            Format::Json => self.http_json(&request, out),
            Format::Common => self.clf(&request, true, out),
            Format::GenericClf => self.clf(&request, false, out),
        }
        true
    }

    /// Appends the line for a TCP connection or UDP session to `out`; `false` when the
    /// filters leave it out.
    pub fn conn_line(&self, c: &ConnRecord, out: &mut Vec<u8>) -> bool {
        if !self.keeps(None, 0, c.duration) {
            return false;
        }
        match self.format {
            Format::Json => self.conn_json(c, out),
            Format::Common | Format::GenericClf => self.conn_clf(c, out),
        }
        true
    }

    /// A CLF field: `-` when dropped or empty, `REDACTED` when redacted.
    fn clf_field(&self, key: Key, value: &str, out: &mut Vec<u8>) {
        match self.mode(key) {
            Mode::Drop => out.push(b'-'),
            Mode::Redact => out.push_str("REDACTED"),
            Mode::Keep if value.is_empty() => out.push(b'-'),
            Mode::Keep => out.push_str(value),
        }
    }

    /// A CLF field between quotes, escaped so that one record is one line whatever a client
    /// sends.
    fn clf_quoted(&self, key: Key, value: &str, out: &mut Vec<u8>) {
        out.push(b'"');
        match self.mode(key) {
            Mode::Drop => out.push(b'-'),
            Mode::Redact => out.push_str("REDACTED"),
            Mode::Keep if value.is_empty() => out.push(b'-'),
            Mode::Keep => push_quoted(out, value),
        }
        out.push(b'"');
    }

    /// A CLF field that is a number or an address.
    fn clf_display(&self, key: Key, value: impl DisplayFast, out: &mut Vec<u8>) {
        match self.mode(key) {
            Mode::Drop => out.push(b'-'),
            Mode::Redact => out.push_str("REDACTED"),
            Mode::Keep => value.push_to(out),
        }
    }

    fn clf(&self, r: &Request<'_>, traefik_extras: bool, out: &mut Vec<u8>) {
        self.clf_start(r, out);
        self.clf_field(Key::RequestMethod, r.record.method.as_str(), out);
        out.push(b' ');
        self.clf_field(Key::RequestPath, r.path(), out);
        out.push(b' ');
        self.clf_field(Key::RequestProtocol, r.protocol(), out);
        out.push_str("\" ");
        self.clf_display(Key::DownstreamStatus, r.record.status.as_u16(), out);
        out.push(b' ');
        self.clf_display(Key::DownstreamContentSize, r.record.response_bytes, out);
        out.push(b' ');
        if r.record.headers.is_none()
            && self.mode(Key::Referer) != Mode::Redact
            && self.mode(Key::UserAgent) != Mode::Redact
        {
            // What the two fields show of a request that sent neither header.
            out.push_str("\"-\" \"-\"");
        } else {
            self.clf_quoted(Key::Referer, r.header(&http::header::REFERER), out);
            out.push(b' ');
            self.clf_quoted(Key::UserAgent, r.header(&http::header::USER_AGENT), out);
        }
        if traefik_extras {
            out.push(b' ');
            push_u64(out, r.count);
            out.push(b' ');
            // The same for every request a router takes: written once and copied.
            push_rendered(out, (self.id, usize::MAX), &Names::of(r.record), |bytes| {
                self.clf_quoted(Key::RouterName, r.router(), bytes);
                bytes.push(b' ');
                self.clf_quoted(Key::ServiceUrl, r.service_url(), bytes);
            });
            out.push(b' ');
            push_u64(out, millis(r.record.duration));
            out.push_str("ms");
        }
    }

    /// A request line's start, to the request's opening quote: `client - user [time] "`.
    /// With the client and user shown as they are and no user, it is the same for a client's
    /// requests within a second: copied from the thread's last one then.
    fn clf_start(&self, r: &Request<'_>, out: &mut Vec<u8>) {
        struct Start {
            client: IpAddr,
            secs: u64,
            bytes: Vec<u8>,
        }
        thread_local! {
            static LAST: RefCell<Start> = const {
                RefCell::new(Start {
                    client: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                    secs: u64::MAX,
                    bytes: Vec::new(),
                })
            };
        }
        let write = |out: &mut Vec<u8>| {
            self.clf_display(Key::ClientHost, r.record.client.ip(), out);
            out.push_str(" - ");
            self.clf_field(Key::ClientUsername, r.username(), out);
            out.push_str(" [");
            push_clf_time(out, r.record.started);
            out.push_str("] \"");
        };
        let shared = self.mode(Key::ClientHost) == Mode::Keep
            && self.mode(Key::ClientUsername) == Mode::Keep
            && r.record.username.is_none();
        if !shared {
            return write(out);
        }
        let client = r.record.client.ip();
        let secs = r
            .record
            .started
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let copied = LAST
            .try_with(|last| {
                let mut last = last.borrow_mut();
                if last.client != client || last.secs != secs {
                    last.bytes.clear();
                    write(&mut last.bytes);
                    (last.client, last.secs) = (client, secs);
                }
                out.extend_from_slice(&last.bytes);
            })
            .is_ok();
        if !copied {
            write(out);
        }
    }

    /// A TCP or UDP line in the CLF layout: the request part names the transport, SNI and
    /// ALPN; the status part is the close reason; then bytes out and in.
    fn conn_clf(&self, c: &ConnRecord, out: &mut Vec<u8>) {
        self.clf_display(Key::ClientHost, c.client.ip(), out);
        out.push_str(" - - [");
        push_clf_time(out, c.started);
        out.push_str("] \"");
        out.push_str(transport(c));
        out.push(b' ');
        self.clf_field(Key::Sni, c.sni.as_deref().unwrap_or(""), out);
        out.push(b' ');
        self.clf_field(Key::Alpn, c.alpn.as_deref().unwrap_or(""), out);
        let _ = write!(out, "\" \"{}\" {} {} ", c.reason, c.bytes_out, c.bytes_in);
        self.clf_quoted(Key::RouterName, c.router.as_deref().unwrap_or(""), out);
        out.push(b' ');
        self.clf_quoted(Key::ServiceName, c.service.as_deref().unwrap_or(""), out);
        out.push(b' ');
        self.clf_quoted(Key::ServiceAddr, c.backend.as_deref().unwrap_or(""), out);
        out.push(b' ');
        push_u64(out, millis(c.duration));
        out.push_str("ms");
    }

    fn http_json(&self, r: &Request<'_>, out: &mut Vec<u8>) {
        let record = r.record;
        let fields = &self.http_plan.fields;
        let mut client = None;
        let mut at = 0;
        while let Some(field) = fields.get(at) {
            if field.names_run > 1 {
                // Router, service and server names: the same for every request a router
                // takes, so written once and copied.
                let run = &fields[at..(at + field.names_run).min(fields.len())];
                push_rendered(out, (self.id, at), &Names::of(record), |bytes| {
                    for field in run {
                        self.push_json_field(field, r, &mut client, bytes);
                    }
                });
                at += run.len();
                continue;
            }
            self.push_json_field(field, r, &mut client, out);
            at += 1;
        }
        self.json_tail(
            &self.http_plan,
            record.headers.as_deref(),
            record.started + record.duration,
            out,
        );
    }

    /// One field of a request's JSON line: the glue before it and its value. `client` is the
    /// client's address as text, made by the first field that shows part of it.
    fn push_json_field(
        &self,
        field: &Field,
        r: &Request<'_>,
        client: &mut Option<AddrText>,
        out: &mut Vec<u8>,
    ) {
        let record = r.record;
        out.push_str(&field.glue);
        if field.mode == Mode::Redact {
            out.push_str("REDACTED");
            return;
        }
        match field.key {
            Key::ClientAddr | Key::ClientHost | Key::ClientPort => {
                push_client_part(field.key, client, record.client, out)
            }
            Key::ClientUsername => {
                push_json_escaped(out, record.username.as_deref().unwrap_or("-"))
            }
            Key::DownstreamContentSize => push_u64(out, record.response_bytes),
            Key::DownstreamStatus => push_u64(out, u64::from(record.status.as_u16())),
            Key::Duration => push_u64(out, nanos(record.duration)),
            Key::RequestAddr => push_json_escaped(out, r.host().0),
            Key::RequestContentSize => push_u64(out, record.request_bytes),
            Key::RequestCount => push_u64(out, r.count),
            Key::RequestHost => push_json_escaped(out, r.host().1.0),
            // A token: nothing to escape.
            Key::RequestMethod => out.push_str(record.method.as_str()),
            Key::RequestPath => push_json_escaped(out, r.path()),
            Key::RequestPort => push_json_escaped(out, r.host().1.1),
            Key::RequestProtocol => out.push_str(r.protocol()),
            Key::RequestScheme => out.push_str(if record.tls.is_some() {
                "https"
            } else {
                "http"
            }),
            Key::RetryAttempts => push_u64(out, u64::from(record.retries)),
            Key::RouterName => push_json_escaped(out, r.router()),
            Key::ServiceName => push_json_escaped(out, record.service.as_deref().unwrap_or("")),
            Key::ServiceUrl => push_json_escaped(out, r.service_url()),
            Key::ServiceAddr => push_json_escaped(out, url_authority(r.service_url())),
            Key::StartUtc => push_rfc3339(out, record.started),
            Key::EntryPointName => push_json_escaped(out, &record.entrypoint),
            _ => {}
        }
    }

    fn conn_json(&self, c: &ConnRecord, out: &mut Vec<u8>) {
        fn text(v: Option<&str>) -> &str {
            v.unwrap_or("")
        }
        let mut client = None;
        for field in &self.conn_plan.fields {
            out.push_str(&field.glue);
            if field.mode == Mode::Redact {
                out.push_str("REDACTED");
                continue;
            }
            match field.key {
                Key::Protocol => out.push_str(transport(c)),
                Key::ClientAddr | Key::ClientHost | Key::ClientPort => {
                    push_client_part(field.key, &mut client, c.client, out)
                }
                Key::Sni => push_json_escaped(out, text(c.sni.as_deref())),
                Key::Alpn => push_json_escaped(out, text(c.alpn.as_deref())),
                Key::RouterName => push_json_escaped(out, text(c.router.as_deref())),
                Key::ServiceName => push_json_escaped(out, text(c.service.as_deref())),
                Key::ServiceAddr => push_json_escaped(out, text(c.backend.as_deref())),
                Key::BytesIn => push_u64(out, c.bytes_in),
                Key::BytesOut => push_u64(out, c.bytes_out),
                Key::Duration => push_u64(out, nanos(c.duration)),
                Key::CloseReason => push_json_escaped(out, &c.reason.to_string()),
                Key::StartUtc => push_rfc3339(out, c.started),
                Key::EntryPointName => push_json_escaped(out, &c.entrypoint),
                _ => {}
            }
        }
        self.json_tail(&self.conn_plan, None, c.started + c.duration, out);
    }

    /// The fields that sort after Traefik's own: `level`, `msg`, the `request_<Header>`
    /// fields and `time` (when the record ended), then the closing brace. Every key before
    /// them starts with an upper-case letter or `entryPointName`, so this keeps the order
    /// sorted.
    fn json_tail(
        &self,
        plan: &Plan,
        headers: Option<&http::HeaderMap>,
        ended: SystemTime,
        out: &mut Vec<u8>,
    ) {
        out.push_str(&plan.tail);
        if let Some(headers) = headers {
            let mut shown: Vec<(std::borrow::Cow<'_, str>, &str, Mode)> = Vec::new();
            for name in headers.keys() {
                let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) else {
                    continue;
                };
                let (key, mode) = match self.headers.get(name.as_str()) {
                    Some(rule) => (std::borrow::Cow::Borrowed(rule.key.as_str()), rule.mode),
                    None => (header_key(name.as_str()).into(), self.header_default),
                };
                if mode != Mode::Drop {
                    shown.push((key, value, mode));
                }
            }
            shown.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            for (key, value, mode) in shown {
                push_key(out, &key);
                push_json_string(
                    out,
                    if mode == Mode::Redact {
                        "REDACTED"
                    } else {
                        value
                    },
                );
            }
        }
        out.push_str(",\"time\":\"");
        push_rfc3339(out, ended);
        out.push_str("\"}");
    }
}

/// The fields of a JSON line in order, each with the text between its value and the previous
/// one, so that a line is one copy of that glue and one of the value a field: `{"` + key +
/// `":"` for the first, `","Key2":` between a string and a number...
#[derive(Debug, Clone)]
struct Plan {
    fields: Vec<Field>,
    /// What follows the last value: its closing quote, a comma, and the `level` and `msg`
    /// fields every line has.
    tail: Box<str>,
}

#[derive(Debug, Clone)]
struct Field {
    key: Key,
    mode: Mode,
    /// The previous value's closing quote, the comma, the key, and this value's opening quote
    /// (when it is a string).
    glue: Box<str>,
    /// On the first of two or more fields in a row that show names from the configuration
    /// ([`Key::is_name`]): how many there are. They are written together, from a cache.
    names_run: usize,
}

impl Plan {
    fn new(fields: &[(Key, Mode)]) -> Plan {
        let mut closing = "{";
        let mut planned = Vec::with_capacity(fields.len());
        for &(key, mode) in fields {
            let quoted = mode == Mode::Redact || !key.is_number();
            let comma = if closing == "{" { "" } else { "," };
            planned.push(Field {
                key,
                mode,
                names_run: 0,
                glue: format!(
                    "{closing}{comma}\"{}\":{}",
                    key.name(),
                    if quoted { "\"" } else { "" }
                )
                .into(),
            });
            closing = if quoted { "\"" } else { "" };
        }
        let mut at = 0;
        while at < planned.len() {
            let run = planned[at..]
                .iter()
                .take_while(|field| field.key.is_name())
                .count();
            if run > 1 {
                planned[at].names_run = run;
            }
            at += run.max(1);
        }
        let comma = if fields.is_empty() { "" } else { "," };
        let closing = if fields.is_empty() { "{" } else { closing };
        Plan {
            fields: planned,
            tail: format!("{closing}{comma}\"level\":\"info\",\"msg\":\"\"").into(),
        }
    }
}

/// A request record with what its lines derive from it.
struct Request<'a> {
    record: &'a RequestRecord,
    count: u64,
    /// The authority, whole and split ([`Request::host`]): only JSON lines show it, so it is
    /// worked out when first asked for.
    host: std::cell::OnceCell<(&'a str, (&'a str, &'a str))>,
}

impl<'a> Request<'a> {
    fn of(record: &'a RequestRecord, count: u64) -> Self {
        Request {
            record,
            count,
            host: std::cell::OnceCell::new(),
        }
    }

    /// The authority the client named, as received (empty when it named none, or not in
    /// visible ASCII), and its host and port ([`split_host`]).
    fn host(&self) -> (&'a str, (&'a str, &'a str)) {
        *self.host.get_or_init(|| {
            let host = self
                .record
                .host
                .as_ref()
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            (host, split_host(host))
        })
    }

    /// Path and query, as received.
    fn path(&self) -> &'a str {
        match self.record.target.as_str() {
            "" => "/",
            target => target,
        }
    }

    fn protocol(&self) -> &'static str {
        match self.record.version {
            http::Version::HTTP_09 => "HTTP/0.9",
            http::Version::HTTP_10 => "HTTP/1.0",
            http::Version::HTTP_2 => "HTTP/2.0",
            http::Version::HTTP_3 => "HTTP/3.0",
            _ => "HTTP/1.1",
        }
    }

    fn username(&self) -> &'a str {
        self.record.username.as_deref().unwrap_or("")
    }

    fn router(&self) -> &'a str {
        self.record.router.as_deref().unwrap_or("")
    }

    /// The server the request went to (`http://10.0.0.1:80`).
    fn service_url(&self) -> &'a str {
        self.record.server.as_deref().unwrap_or("")
    }

    fn header(&self, name: &http::HeaderName) -> &'a str {
        self.record
            .headers
            .as_ref()
            .and_then(|h| h.get(name))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// The names a request's line takes from the configuration, by identity: the router's, its
/// service's and the server's, as the route table and the load balancer share them.
struct Names<'a> {
    router: Option<&'a Arc<str>>,
    service: Option<&'a Arc<str>>,
    server: Option<&'a Arc<str>>,
}

impl<'a> Names<'a> {
    fn of(record: &'a RequestRecord) -> Self {
        Names {
            router: record.router.as_ref(),
            service: record.service.as_ref(),
            server: record.server.as_ref(),
        }
    }

    fn are(&self, rendered: &Rendered) -> bool {
        fn same(a: Option<&Arc<str>>, b: &Option<Arc<str>>) -> bool {
            match (a, b) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
        }
        same(self.router, &rendered.router)
            && same(self.service, &rendered.service)
            && same(self.server, &rendered.server)
    }
}

/// A part of a line written from [`Names`], kept to be copied into the next lines with the same
/// names. It holds the names themselves: while it lives, no other name can have their
/// addresses, so comparing addresses is comparing names.
struct Rendered {
    /// The formatter and the part of its lines.
    part: (u64, usize),
    router: Option<Arc<str>>,
    service: Option<Arc<str>>,
    server: Option<Arc<str>>,
    bytes: Vec<u8>,
}

/// Parts a thread keeps: a few routers' worth.
const RENDERED_PARTS: usize = 8;

thread_local! {
    static RENDERED: RefCell<Vec<Rendered>> = const { RefCell::new(Vec::new()) };
}

/// Appends a line's `part` as `render` writes it for `names`: copied from this thread's cache
/// when it has that part for those names, else written and kept (the oldest part goes).
fn push_rendered(
    out: &mut Vec<u8>,
    part: (u64, usize),
    names: &Names<'_>,
    render: impl FnOnce(&mut Vec<u8>),
) {
    let copied = RENDERED
        .try_with(|cache| {
            let cache = cache.borrow();
            let hit = cache
                .iter()
                .find(|rendered| rendered.part == part && names.are(rendered));
            if let Some(rendered) = hit {
                out.extend_from_slice(&rendered.bytes);
            }
            hit.is_some()
        })
        .unwrap_or(false);
    if copied {
        return;
    }
    let start = out.len();
    render(out);
    let _ = RENDERED.try_with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.len() >= RENDERED_PARTS {
            cache.remove(0);
        }
        cache.push(Rendered {
            part,
            router: names.router.cloned(),
            service: names.service.cloned(),
            server: names.server.cloned(),
            bytes: out[start..].to_vec(),
        });
    });
}

/// `ClientAddr`, `ClientHost` or `ClientPort` (`key`) of `addr`, from `text`, which the first
/// of them a line shows writes.
fn push_client_part(key: Key, text: &mut Option<AddrText>, addr: SocketAddr, out: &mut Vec<u8>) {
    let text = text.get_or_insert_with(|| AddrText::of(addr));
    out.extend_from_slice(match key {
        Key::ClientAddr => text.addr(),
        Key::ClientHost => text.host(),
        _ => text.port(),
    });
}

/// A client's address as text, written once for the fields that show it whole or in part.
struct AddrText {
    /// `host:port`, with brackets around an IPv6 host.
    text: [u8; 56],
    len: usize,
    /// Where the host starts and ends (inside the brackets).
    host: (usize, usize),
}

impl AddrText {
    fn of(addr: SocketAddr) -> AddrText {
        let mut text = [0u8; 56];
        let mut cursor = std::io::Cursor::new(&mut text[..]);
        let host = match addr {
            SocketAddr::V4(v4) => {
                let (ip, len) = ipv4_cached(*v4.ip());
                let _ = cursor.write_all(&ip[..len]);
                (0, len)
            }
            SocketAddr::V6(v6) => {
                let _ = write!(cursor, "[{}", v6.ip());
                let end = cursor.position() as usize;
                let _ = cursor.write_all(b"]");
                (1, end)
            }
        };
        let _ = cursor.write_all(b":");
        let _ = cursor.write_all(itoa::Buffer::new().format(addr.port()).as_bytes());
        let len = cursor.position() as usize;
        AddrText { text, len, host }
    }

    fn addr(&self) -> &[u8] {
        &self.text[..self.len]
    }

    fn host(&self) -> &[u8] {
        &self.text[self.host.0..self.host.1]
    }

    fn port(&self) -> &[u8] {
        // After the colon, and after the bracket before it.
        let start = self.host.1 + 1 + self.host.0;
        &self.text[start.min(self.len)..self.len]
    }
}

/// A key, after a comma unless it is the first: Traefik's field names and header names
/// (tokens), which never need escaping.
fn push_key(out: &mut Vec<u8>, key: &str) {
    if !out.ends_with(b"{") {
        out.push(b',');
    }
    out.push(b'"');
    out.push_str(key);
    out.push_str("\":");
}

/// The index of the first byte of `bytes` that JSON escapes (`"`, `\`, control characters),
/// looked for eight bytes at a time.
fn first_escape(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // Whether a byte of `x` is below `n` (n <= 128): exact as a yes or no.
    let has_below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGHS != 0;
    let mut clean = 0;
    for chunk in bytes.chunks_exact(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        if has_below(w, 0x20)
            || has_below(w ^ (ONES * u64::from(b'"')), 1)
            || has_below(w ^ (ONES * u64::from(b'\\')), 1)
        {
            break;
        }
        clean += 8;
    }
    bytes[clean..]
        .iter()
        .position(|&b| ESCAPED[usize::from(b)])
        .map(|at| clean + at)
}

/// The bytes a JSON string escapes: `"`, `\\` and the controls.
const ESCAPED: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// `text` as a JSON string: runs that need no escape are copied whole.
fn push_json_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    push_json_escaped(out, text);
    out.push(b'"');
}

/// `text` escaped for a JSON string, without the quotes.
fn push_json_escaped(out: &mut Vec<u8>, text: &str) {
    let mut rest = text;
    while let Some(at) = first_escape(rest.as_bytes()) {
        out.push_str(&rest[..at]);
        match rest.as_bytes()[at] {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            control => {
                let _ = write!(out, "\\u{control:04x}");
            }
        }
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
}

/// Appending text to a line. Lines are bytes: every value is text already, so nothing is
/// checked or encoded on the way.
trait PushStr {
    fn push_str(&mut self, text: &str);
}

impl PushStr for Vec<u8> {
    fn push_str(&mut self, text: &str) {
        self.extend_from_slice(text.as_bytes());
    }
}

/// Writing the values access logs show most, without the formatting machinery.
trait DisplayFast {
    fn push_to(self, out: &mut Vec<u8>);
}

impl DisplayFast for u64 {
    fn push_to(self, out: &mut Vec<u8>) {
        push_u64(out, self);
    }
}

impl DisplayFast for u16 {
    fn push_to(self, out: &mut Vec<u8>) {
        push_u64(out, u64::from(self));
    }
}

impl DisplayFast for IpAddr {
    fn push_to(self, out: &mut Vec<u8>) {
        match self {
            IpAddr::V4(v4) => push_ipv4(out, v4),
            IpAddr::V6(v6) => {
                let _ = write!(out, "{v6}");
            }
        }
    }
}

impl DisplayFast for SocketAddr {
    fn push_to(self, out: &mut Vec<u8>) {
        out.extend_from_slice(AddrText::of(self).addr());
    }
}

/// A dotted quad, written digit by digit into a small array and appended at once (cheaper
/// than the formatting machinery, or than a push per character).
fn push_ipv4(out: &mut Vec<u8>, ip: std::net::Ipv4Addr) {
    let (text, len) = ipv4_cached(ip);
    out.extend_from_slice(&text[..len]);
}

/// `ip` as a dotted quad and its length, from this thread's copy of the last one written when
/// it is the same address (a connection's requests, and most of a client's, are one after
/// another on one thread).
fn ipv4_cached(ip: std::net::Ipv4Addr) -> ([u8; 15], usize) {
    let write = |ip| {
        let mut text = [0u8; 15];
        let len = ipv4_text(ip, &mut text);
        (text, len)
    };
    thread_local! {
        /// The address as a number, its text and its length (0: none yet).
        static LAST: std::cell::Cell<(u32, [u8; 15], u8)> =
            const { std::cell::Cell::new((0, [0; 15], 0)) };
    }
    let key = u32::from(ip);
    LAST.try_with(|last| {
        let (seen, text, len) = last.get();
        if seen == key && len > 0 {
            return (text, usize::from(len));
        }
        let (text, len) = write(ip);
        // A dotted quad is at most 15 bytes.
        last.set((key, text, len as u8));
        (text, len)
    })
    .unwrap_or_else(|_| write(ip))
}

fn push_u64(out: &mut Vec<u8>, n: u64) {
    out.push_str(itoa::Buffer::new().format(n));
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn transport(c: &ConnRecord) -> &'static str {
    match c.transport {
        Transport::Tcp => "TCP",
        Transport::Udp => "UDP",
    }
}

/// `host:port` → (`host`, `port`); brackets of an IPv6 literal removed; the port empty when
/// the authority has none.
fn split_host(authority: &str) -> (&str, &str) {
    // A byte loop: authorities are short, and `rsplit_once` costs more to set up.
    let colon = authority.bytes().rposition(|b| b == b':');
    match colon.map(|at| (&authority[..at], &authority[at + 1..])) {
        Some((host, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && !host.ends_with(':') =>
        {
            (host.trim_start_matches('[').trim_end_matches(']'), port)
        }
        _ => (authority, ""),
    }
}

/// The authority of a server URL (`http://10.0.0.1:80/x` → `10.0.0.1:80`), as Go's
/// `URL.Host`. Byte loops: server URLs are short, and string searches cost more to set up.
fn url_authority(url: &str) -> &str {
    let bytes = url.as_bytes();
    let start = match bytes.iter().position(|&b| b == b':') {
        Some(at) if bytes[at..].starts_with(b"://") => at + 3,
        _ => 0,
    };
    let end = bytes[start..]
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .map_or(bytes.len(), |at| start + at);
    let authority = &url[start..end];
    match authority.bytes().rposition(|b| b == b'@') {
        Some(at) => &authority[at + 1..],
        None => authority,
    }
}

/// `request_` and the header's name as Go prints it: `user-agent` → `request_User-Agent`.
fn header_key(name: &str) -> String {
    let mut key = String::with_capacity(8 + name.len());
    key.push_str("request_");
    let mut upper = true;
    for ch in name.chars() {
        key.push(if upper {
            ch.to_ascii_uppercase()
        } else {
            ch.to_ascii_lowercase()
        });
        upper = ch == '-';
    }
    key
}

/// The bytes a quoted CLF field shows as they are: printable ASCII but `"` and `\\`.
const CLF_PLAIN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = b' ';
    while b <= b'~' {
        table[b as usize] = b != b'"' && b != b'\\';
        b += 1;
    }
    table
};

/// `value` with quotes, backslashes and control characters escaped.
fn push_quoted(out: &mut Vec<u8>, value: &str) {
    // Nearly every value is printable ASCII without quotes or backslashes: copied whole.
    if value.bytes().all(|b| CLF_PLAIN[usize::from(b)]) {
        out.push_str(value);
        return;
    }
    for ch in value.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push_str(c.encode_utf8(&mut [0; 4])),
        }
    }
}

/// Civil date and time (UTC) of a second since the epoch: (year, month, day, hour, minute,
/// second).
fn civil(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let secs = i64::try_from(secs).unwrap_or(i64::MAX);
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
    )
}

/// A second, formatted: `2026-11-28T10:50:00` and `28/Nov/2026:10:50:00 +0000`.
struct Second {
    secs: u64,
    rfc3339: String,
    clf: String,
}

impl Second {
    fn new(secs: u64) -> Second {
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let (y, mo, d, h, mi, s) = civil(secs);
        let month = MONTHS[(mo as usize).saturating_sub(1).min(11)];
        // Years past 9999 do not fit either layout; they are shown as 9999.
        let y = y.clamp(0, 9999);
        Second {
            secs,
            rfc3339: format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}"),
            clf: format!("{d:02}/{month}/{y:04}:{h:02}:{mi:02}:{s:02} +0000"),
        }
    }

    /// Calls `f` with the formatted second of `t` and its nanoseconds, from this thread's
    /// cache of the last second asked for (lines come in time order, so it is nearly always
    /// the one).
    fn with<R>(t: SystemTime, f: impl FnOnce(&Second, u32) -> R) -> R {
        thread_local! {
            static LAST: RefCell<Second> = RefCell::new(Second::new(0));
        }
        let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        LAST.with(|last| {
            let mut last = last.borrow_mut();
            if last.secs != secs {
                *last = Second::new(secs);
            }
            f(&last, since.subsec_nanos())
        })
    }
}

fn push_rfc3339(out: &mut Vec<u8>, t: SystemTime) {
    Second::with(t, |second, nanos| {
        out.push_str(&second.rfc3339);
        // `.` and nine digits: the digits of 1_000_000_000 + nanos after its leading 1.
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(1_000_000_000 + nanos.min(999_999_999));
        out.push(b'.');
        out.push_str(&digits[1..]);
        out.push(b'Z');
    });
}

/// `28/Nov/2026:10:50:00 +0000`.
fn push_clf_time(out: &mut Vec<u8>, t: SystemTime) {
    Second::with(t, |second, _| out.push_str(&second.clf));
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

    /// 2026-11-28T10:50:00Z
    const START: u64 = 1_795_863_000;

    fn record(status: u16, millis: u64) -> RequestRecord {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::USER_AGENT,
            http::HeaderValue::from_static("curl/8 \"x\""),
        );
        headers.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("Basic c2VjcmV0"),
        );
        RequestRecord {
            entrypoint: Arc::from("web"),
            router: Some(Arc::from("site@file")),
            service: Some(Arc::from("app@file")),
            method: http::Method::GET,
            protocol: l7::observe::Protocol::Http,
            version: http::Version::HTTP_11,
            host: Some(http::HeaderValue::from_static("site.test:8080")),
            target: "/a?b=1".to_owned(),
            client: "192.0.2.7:5123".parse().unwrap(),
            tls: None,
            status: http::StatusCode::from_u16(status).unwrap(),
            error: None,
            request_bytes: 0,
            response_bytes: 42,
            completed: true,
            duration: Duration::from_millis(millis),
            started: UNIX_EPOCH + Duration::from_secs(START),
            headers: Some(Box::new(headers)),
            response_headers: None,
            server: Some("http://127.0.0.1:9000".into()),
            username: None,
            retries: 0,
            trace: None,
        }
    }

    /// What `write` appends to an empty line, which must be UTF-8.
    fn text(write: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        write(&mut out);
        String::from_utf8(out).expect("lines are UTF-8")
    }

    fn http_line(f: &Formatter, r: &RequestRecord) -> Option<String> {
        let mut kept = false;
        let line = text(|out| kept = f.http_line(r, 3, out));
        kept.then_some(line)
    }

    fn conn_line(f: &Formatter, c: &ConnRecord) -> Option<String> {
        let mut kept = false;
        let line = text(|out| kept = f.conn_line(c, out));
        kept.then_some(line)
    }

    fn rfc3339(t: SystemTime) -> String {
        text(|out| push_rfc3339(out, t))
    }

    fn clf_time(t: SystemTime) -> String {
        text(|out| push_clf_time(out, t))
    }

    #[test]
    fn json_strings_escape_quotes_backslashes_and_controls_wherever_they_are() {
        for text in [
            "",
            "plain",
            "exactly8",
            "a longer plain string of some length",
            "\"",
            "ab\\cdefghijk",
            "abcdefgh\"",
            "abcdefghijklmno\u{1}",
            "tab\there, newline\n and é ünïcode \u{7f}",
            "\u{1f}x\u{0}",
        ] {
            let ours = super::tests::text(|out| push_json_string(out, text));
            assert_eq!(
                serde_json::from_str::<String>(&ours).unwrap(),
                text,
                "{ours}"
            );
        }
        let out = text(|out| push_json_string(out, "0123456789\u{7}"));
        assert_eq!(out, "\"0123456789\\u0007\"");
    }

    #[test]
    fn server_authorities_are_go_s_url_host() {
        assert_eq!(url_authority("http://10.0.0.1:80"), "10.0.0.1:80");
        assert_eq!(
            url_authority("https://u:p@b.test:8443/x?y#z"),
            "b.test:8443"
        );
        assert_eq!(url_authority("h2c://[::1]:9000/"), "[::1]:9000");
        assert_eq!(url_authority("b.test:81"), "b.test:81");
        assert_eq!(url_authority(""), "");
    }

    #[test]
    fn addresses_and_fractions_are_written_whole() {
        for ip in ["0.0.0.0", "9.10.99.100", "255.255.255.255", "127.0.0.1"] {
            let parsed: IpAddr = ip.parse().unwrap();
            assert_eq!(text(|o| parsed.push_to(o)), ip);
        }
        let v6: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        assert_eq!(text(|o| v6.push_to(o)), "[2001:db8::1]:443");
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 7);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.000000007Z");
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 999_999_999);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.999999999Z");
    }

    #[test]
    fn client_addresses_are_written_whole_and_in_parts() {
        for (addr, host, port) in [
            ("192.0.2.7:5123", "192.0.2.7", "5123"),
            ("0.0.0.0:0", "0.0.0.0", "0"),
            ("[2001:db8::1]:443", "2001:db8::1", "443"),
            (
                "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                "65535",
            ),
        ] {
            let text = AddrText::of(addr.parse().unwrap());
            assert_eq!(text.addr(), addr.as_bytes());
            assert_eq!(text.host(), host.as_bytes());
            assert_eq!(text.port(), port.as_bytes());
        }
    }

    /// Router, service and server names are copied from the thread's cache when they are the
    /// very ones of a line before: lines in a row with other names, names equal but not the
    /// same, and two formatters with other modes each get their own.
    #[test]
    fn names_copied_from_the_cache_are_the_records_own() {
        let json = Formatter::new(&config("json")).unwrap();
        let mut redacting = config("json");
        redacting.fields = Some(crate::config::static_cfg::AccessLogFields {
            names: [("RouterName".to_owned(), "redact".to_owned())].into(),
            ..Default::default()
        });
        let redacting = Formatter::new(&redacting).unwrap();
        let clf = Formatter::new(&config("common")).unwrap();
        let names = |line: &str| {
            let line: serde_json::Value = serde_json::from_str(line).unwrap();
            ["RouterName", "ServiceName", "ServiceURL", "ServiceAddr"]
                .map(|key| line[key].as_str().unwrap_or_default().to_owned())
        };
        let first = record(200, 1);
        let mut second = record(200, 1);
        second.router = Some(Arc::from("other\\"));
        second.service = None;
        second.server = Some("http://10.0.0.2:81".into());
        // Equal to the first's names, in other allocations.
        let equal = record(200, 1);
        for _ in 0..2 {
            for r in [&first, &second, &first, &equal, &second] {
                let want = [
                    r.router.as_deref().unwrap_or_default().to_owned(),
                    r.service.as_deref().unwrap_or_default().to_owned(),
                    r.server.as_deref().unwrap_or_default().to_owned(),
                    url_authority(r.server.as_deref().unwrap_or_default()).to_owned(),
                ];
                assert_eq!(names(&http_line(&json, r).unwrap()), want);
                let mut redacted = want.clone();
                redacted[0] = "REDACTED".to_owned();
                assert_eq!(names(&http_line(&redacting, r).unwrap()), redacted);
                let line = http_line(&clf, r).unwrap();
                let tail = format!(
                    "3 \"{}\" \"{}\" 1ms",
                    want[0].replace('\\', "\\\\"),
                    want[2]
                );
                assert!(line.ends_with(&tail), "{line} does not end with {tail}");
            }
        }
    }

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(
            clf_time(UNIX_EPOCH + Duration::from_secs(START)),
            "28/Nov/2026:10:50:00 +0000"
        );
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::new(START, 7_000_123)),
            "2026-11-28T10:50:00.007000123Z"
        );
        // The cache of the last second must not leak into the next one.
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::new(START + 61, 0)),
            "2026-11-28T10:51:01.000000000Z"
        );
        assert_eq!(
            clf_time(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "29/Feb/2000:00:00:00 +0000"
        );
    }

    #[test]
    fn common_and_generic_clf_lines() {
        let common = Formatter::new(&config("common")).unwrap();
        assert_eq!(
            http_line(&common, &record(200, 12)).unwrap(),
            r#"192.0.2.7 - - [28/Nov/2026:10:50:00 +0000] "GET /a?b=1 HTTP/1.1" 200 42 "-" "curl/8 \"x\"" 3 "site@file" "http://127.0.0.1:9000" 12ms"#
        );
        let generic = Formatter::new(&config("genericCLF")).unwrap();
        assert_eq!(
            http_line(&generic, &record(200, 12)).unwrap(),
            r#"192.0.2.7 - - [28/Nov/2026:10:50:00 +0000] "GET /a?b=1 HTTP/1.1" 200 42 "-" "curl/8 \"x\"""#
        );
    }

    #[test]
    fn clf_lines_follow_their_own_client_second_and_user_one_after_another() {
        // A line's start is copied from the thread's last one when client and second are the
        // same: each line must still show its own.
        let common = Formatter::new(&config("common")).unwrap();
        let start = |r: &RequestRecord| {
            let line = http_line(&common, r).unwrap();
            line[..line.find('"').unwrap()].to_owned()
        };
        let first = record(200, 1);
        let mut other_client = record(200, 1);
        other_client.client = "198.51.100.9:1000".parse().unwrap();
        let mut next_second = record(200, 1);
        next_second.started += Duration::from_millis(1500);
        let mut with_user = record(200, 1);
        with_user.username = Some("ann".into());
        let mut v6 = record(200, 1);
        v6.client = "[2001:db8::7]:443".parse().unwrap();
        for _ in 0..2 {
            assert_eq!(start(&first), "192.0.2.7 - - [28/Nov/2026:10:50:00 +0000] ");
            assert_eq!(
                start(&other_client),
                "198.51.100.9 - - [28/Nov/2026:10:50:00 +0000] "
            );
            assert_eq!(
                start(&next_second),
                "192.0.2.7 - - [28/Nov/2026:10:50:01 +0000] "
            );
            assert_eq!(
                start(&with_user),
                "192.0.2.7 - ann [28/Nov/2026:10:50:00 +0000] "
            );
            assert_eq!(start(&first), "192.0.2.7 - - [28/Nov/2026:10:50:00 +0000] ");
            assert_eq!(start(&v6), "2001:db8::7 - - [28/Nov/2026:10:50:00 +0000] ");
        }
        // No headers recorded: both quoted header fields show `-`.
        let mut bare = record(200, 1);
        bare.headers = None;
        let line = http_line(&common, &bare).unwrap();
        assert!(line.contains(r#" 200 42 "-" "-" 3 "#), "{line}");
        // Unless they are redacted.
        let mut cfg = config("common");
        cfg.fields = Some(crate::config::static_cfg::AccessLogFields {
            default_mode: "keep".into(),
            names: [("request_Referer".to_owned(), "redact".to_owned())].into(),
            headers: None,
        });
        let redacting = Formatter::new(&cfg).unwrap();
        let line = http_line(&redacting, &bare).unwrap();
        assert!(line.contains(r#" 200 42 "REDACTED" "-" 3 "#), "{line}");
    }

    #[test]
    fn clf_fields_can_be_dropped_or_redacted_and_ipv6_clients_are_plain() {
        let mut cfg = config("common");
        cfg.fields = Some(crate::config::static_cfg::AccessLogFields {
            default_mode: "keep".into(),
            names: [
                ("ClientHost".to_owned(), "redact".to_owned()),
                ("request_User-Agent".to_owned(), "drop".to_owned()),
            ]
            .into(),
            headers: None,
        });
        let f = Formatter::new(&cfg).unwrap();
        let line = http_line(&f, &record(200, 1)).unwrap();
        assert!(line.starts_with("REDACTED - - ["), "{line}");
        assert!(line.contains(r#"42 "-" "-" 3"#), "{line}");
        let plain = Formatter::new(&config("genericCLF")).unwrap();
        let mut v6 = record(200, 1);
        v6.client = "[2001:db8::7]:443".parse().unwrap();
        let line = http_line(&plain, &v6).unwrap();
        assert!(line.starts_with("2001:db8::7 - - ["), "{line}");
    }

    #[test]
    fn json_lines_have_every_field_sorted_as_traefik_writes_them() {
        let f = Formatter::new(&config("json")).unwrap();
        let mut r = record(200, 3);
        r.client = "[2001:db8::7]:443".parse().unwrap();
        r.username = Some("ann\"\n".into());
        r.tls = Some(l7::observe::TlsParams::QUIC);
        r.version = http::Version::HTTP_3;
        r.server = Some("https://user@10.0.0.9:8443/base".into());
        let text = http_line(&f, &r).unwrap();
        let keys: Vec<String> = text
            .trim_matches(['{', '}'])
            .split(",\"")
            .map(|kv| {
                kv.trim_start_matches('"')
                    .split('"')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "{text}");
        let line: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(line.as_object().unwrap().len(), 26, "{text}");
        assert_eq!(line["ClientAddr"], "[2001:db8::7]:443");
        assert_eq!(line["ClientHost"], "2001:db8::7");
        assert_eq!(line["ClientPort"], "443");
        assert_eq!(line["ClientUsername"], "ann\"\n");
        assert_eq!(line["DownstreamContentSize"], 42);
        assert_eq!(line["RequestAddr"], "site.test:8080");
        assert_eq!(line["RequestCount"], 3);
        assert_eq!(line["RequestMethod"], "GET");
        assert_eq!(line["RequestPath"], "/a?b=1");
        assert_eq!(line["RequestProtocol"], "HTTP/3.0");
        assert_eq!(line["RequestScheme"], "https");
        assert_eq!(line["ServiceName"], "app@file");
        assert_eq!(line["ServiceURL"], "https://user@10.0.0.9:8443/base");
        assert_eq!(line["ServiceAddr"], "10.0.0.9:8443");
        assert_eq!(line["entryPointName"], "web");
        assert_eq!(line["level"], "info");
        assert_eq!(line["msg"], "");
        assert_eq!(line["time"], "2026-11-28T10:50:00.003000000Z");
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
            serde_json::from_str(&http_line(&f, &record(404, 3)).unwrap()).unwrap();
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

    /// Every mix of string and number fields, first and last, kept, redacted or dropped,
    /// makes a line that parses, with the values where they belong.
    #[test]
    fn json_lines_parse_whatever_fields_are_kept_or_redacted() {
        let fields = |default: &str, names: &[(&str, &str)]| {
            let mut cfg = config("json");
            cfg.fields = Some(crate::config::static_cfg::AccessLogFields {
                default_mode: default.into(),
                names: names
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                headers: None,
            });
            let f = Formatter::new(&cfg).unwrap();
            let line = http_line(&f, &record(502, 7)).unwrap();
            serde_json::from_str::<serde_json::Value>(&line)
                .unwrap_or_else(|e| panic!("{e}: {line}"))
        };
        let none = fields("drop", &[]);
        assert_eq!(none.as_object().unwrap().len(), 3, "{none}");
        assert_eq!(none["level"], "info");
        // A number alone, first; a string alone; a number then a string.
        assert_eq!(
            fields("drop", &[("ClientAddr", "drop"), ("Duration", "keep")])["Duration"],
            7_000_000
        );
        assert_eq!(
            fields("drop", &[("RouterName", "keep")])["RouterName"],
            "site@file"
        );
        let mixed = fields(
            "drop",
            &[
                ("DownstreamStatus", "keep"),
                ("RouterName", "keep"),
                ("RetryAttempts", "keep"),
            ],
        );
        assert_eq!(
            (
                mixed["DownstreamStatus"].clone(),
                mixed["RetryAttempts"].clone()
            ),
            (502.into(), 0.into())
        );
        // A redacted number is the string REDACTED, as in Traefik.
        let redacted = fields(
            "keep",
            &[("DownstreamStatus", "redact"), ("Duration", "redact")],
        );
        assert_eq!(redacted["DownstreamStatus"], "REDACTED");
        assert_eq!(redacted["Duration"], "REDACTED");
        assert!(redacted["DownstreamContentSize"].is_u64(), "{redacted}");
    }

    #[test]
    fn json_headers_kept_by_default_mode_are_named_as_go_prints_them() {
        let mut cfg = config("json");
        cfg.fields = Some(crate::config::static_cfg::AccessLogFields {
            default_mode: "drop".into(),
            names: Default::default(),
            headers: Some(crate::config::static_cfg::AccessLogHeaders {
                default_mode: "keep".into(),
                names: [("authorization".to_owned(), "redact".to_owned())].into(),
            }),
        });
        let f = Formatter::new(&cfg).unwrap();
        let mut r = record(200, 1);
        let headers = r.headers.as_mut().unwrap();
        headers.insert("x-request-id", http::HeaderValue::from_static("abc"));
        let text = http_line(&f, &r).unwrap();
        let line: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(line["request_X-Request-Id"], "abc", "{text}");
        assert_eq!(line["request_Authorization"], "REDACTED", "{text}");
        assert_eq!(line["request_User-Agent"], "curl/8 \"x\"", "{text}");
        // Every Traefik field dropped: the logger's own three and the headers remain.
        assert_eq!(line.as_object().unwrap().len(), 6, "{text}");
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
        assert!(http_line(&f, &record(200, 5)).is_none());
        assert!(http_line(&f, &record(404, 5)).is_some());
        assert!(http_line(&f, &record(503, 5)).is_some());
        assert!(http_line(&f, &record(200, 150)).is_some());
        let mut retried = record(200, 5);
        retried.retries = 1;
        assert!(http_line(&f, &retried).is_some());
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
            started: UNIX_EPOCH + Duration::from_secs(START),
            duration: Duration::from_millis(1500),
            reason: l4::observe::CloseReason::Closed,
        };
        let common = Formatter::new(&config("common")).unwrap();
        assert_eq!(
            conn_line(&common, &record).unwrap(),
            r#"192.0.2.9 - - [28/Nov/2026:10:50:00 +0000] "TCP db.test postgresql" "closed" 2000 100 "pg@file" "pg@file" "10.0.0.5:5432" 1500ms"#
        );
        let json = Formatter::new(&config("json")).unwrap();
        let mut udp = record;
        udp.transport = Transport::Udp;
        udp.sni = None;
        udp.alpn = None;
        let text = conn_line(&json, &udp).unwrap();
        let line: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(line["Protocol"], "UDP");
        assert_eq!(line["BytesOut"], 2000);
        assert_eq!(line["CloseReason"], "closed");
        assert_eq!(line["ServiceAddr"], "10.0.0.5:5432");
        assert_eq!(line["ClientAddr"], "192.0.2.9:40000");
        assert_eq!(line["SNI"], "");
        assert_eq!(line["time"], "2026-11-28T10:50:01.500000000Z");
        assert_eq!(line.as_object().unwrap().len(), 18, "{text}");
    }
}
