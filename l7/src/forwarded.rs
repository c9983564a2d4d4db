//! The header rewriting a reverse proxy does between the client and the upstream: hop-by-hop
//! headers are removed in both directions, and requests gain the `X-Forwarded-*` and
//! `X-Real-Ip` headers of a Traefik entrypoint (`forwardedHeaders`).
//!
//! Pure functions over a `HeaderMap`: no sockets. Which peer is believed is decided by a
//! [`ForwardedPolicy`]; an untrusted peer's forwarded headers are discarded so that a client
//! cannot pose as someone else to the upstream. The Host header itself (`passHostHeader`) and
//! 101 responses are left to the caller.

use std::net::IpAddr;

use http::header::{
    CONNECTION, HeaderMap, HeaderName, HeaderValue, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE,
    TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use ipnet::IpNet;

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
pub const X_FORWARDED_SERVER: HeaderName = HeaderName::from_static("x-forwarded-server");
pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1, plus the
/// non-standard ones Go's reverse proxy also drops).
static HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// Whose `X-Forwarded-*` headers are believed (`entryPoints.<n>.forwardedHeaders`).
#[derive(Debug, Clone, Default)]
pub struct ForwardedPolicy {
    /// `trustedIPs`.
    pub trusted: Vec<IpNet>,
    /// `insecure`: trust every peer.
    pub insecure: bool,
}

impl ForwardedPolicy {
    pub fn trusts(&self, peer: IpAddr) -> bool {
        // A dual-stack listener reports IPv4 clients as `::ffff:a.b.c.d`; lists are written in IPv4.
        let canonical = peer.to_canonical();
        self.insecure
            || self
                .trusted
                .iter()
                .any(|net| net.contains(&canonical) || net.contains(&peer))
    }
}

/// What the proxy knows about the request being forwarded.
#[derive(Debug, Clone, Copy)]
pub struct ForwardContext<'a> {
    /// The connection's peer (after a trusted PROXY header).
    pub peer: IpAddr,
    /// The client connection is TLS (the entrypoint terminated it).
    pub tls: bool,
    /// The Host the client sent (authority, port included if it had one).
    pub host: Option<&'a HeaderValue>,
    /// The request is a protocol upgrade (WebSocket...) that will be proxied as one.
    pub upgrade: bool,
    /// This proxy's name for `X-Forwarded-Server`; `None` leaves the header out.
    pub server_name: Option<&'a HeaderValue>,
    pub policy: &'a ForwardedPolicy,
}

/// Prepares a request's headers for the upstream: hop-by-hop headers removed (keeping
/// `TE: trailers` and, for an upgrade, `Connection: Upgrade` + `Upgrade`), then the forwarded
/// headers set according to the peer's trust.
pub fn rewrite_request_headers(headers: &mut HeaderMap, ctx: &ForwardContext) {
    strip_hop_by_hop_request(headers, ctx.upgrade);
    set_forwarded_headers(headers, ctx);
}

/// Removes hop-by-hop headers from a request before it goes upstream, keeping `TE: trailers`
/// and, when `upgrade` (the request will be proxied as a protocol upgrade),
/// `Connection: Upgrade` + `Upgrade`.
pub fn strip_hop_by_hop_request(headers: &mut HeaderMap, upgrade: bool) {
    if !has_hop_by_hop(headers) {
        return;
    }
    // gRPC servers refuse requests without `TE: trailers`; it is the one TE value that is
    // about the message rather than the connection.
    let keep_te_trailers = headers.get_all(TE).iter().any(|v| has_token(v, "trailers"));
    let upgrade = if upgrade {
        headers.get(UPGRADE).cloned()
    } else {
        None
    };

    strip_hop_by_hop(headers);

    if keep_te_trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
    if let Some(protocol) = upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(UPGRADE, protocol);
    }
}

/// Whether a request asks for a protocol upgrade (WebSocket...): an `Upgrade` header and
/// `upgrade` among the `Connection` tokens.
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE)
        && headers
            .get_all(CONNECTION)
            .iter()
            .any(|v| has_token(v, "upgrade"))
}

/// Removes hop-by-hop headers from an upstream response before it goes to the client. A 101
/// response must not come here: its `Connection`/`Upgrade` are the point of it.
pub fn strip_hop_by_hop_response(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
}

/// Whether `headers` has any of [`HOP_BY_HOP`]. Most messages have none: a look at each name
/// settles it, where removing each of the nine would hash it.
fn has_hop_by_hop(headers: &HeaderMap) -> bool {
    headers.keys().any(|name| {
        matches!(
            name.as_str(),
            "connection"
                | "keep-alive"
                | "proxy-connection"
                | "proxy-authenticate"
                | "proxy-authorization"
                | "te"
                | "trailer"
                | "transfer-encoding"
                | "upgrade"
        )
    })
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Without `Connection`, no other name is listed as hop-by-hop either.
    if !has_hop_by_hop(headers) {
        return;
    }
    // Names listed in `Connection` are hop-by-hop too (RFC 9110 §7.6.1); read them before
    // `Connection` itself goes.
    let listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in listed.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

fn set_forwarded_headers(headers: &mut HeaderMap, ctx: &ForwardContext) {
    let trusted = ctx.policy.trusts(ctx.peer);
    // An untrusted client's are dropped: then none of them is set.
    let present = if trusted {
        Present::of(headers)
    } else {
        drop_client_forwarded_headers(headers);
        Present::default()
    };
    // Grown once for what is added, not at each insertion.
    headers.reserve(6);

    let peer = peer_value(ctx.peer.to_canonical());
    let prior = if present.r#for {
        joined_values(headers, &X_FORWARDED_FOR)
    } else {
        None
    };
    let forwarded_for = match prior {
        // Valid header values joined with ASCII stay valid, so this always is one.
        Some(mut chain) => {
            chain.extend_from_slice(b", ");
            chain.extend_from_slice(peer.as_bytes());
            HeaderValue::from_bytes(&chain).ok()
        }
        None => Some(peer.clone()),
    };
    if let Some(value) = forwarded_for {
        headers.insert(X_FORWARDED_FOR, value);
    }

    if !present.real_ip {
        headers.insert(X_REAL_IP, peer);
    }

    if !present.proto {
        let proto = match (ctx.upgrade, ctx.tls) {
            (false, false) => "http",
            (false, true) => "https",
            (true, false) => "ws",
            (true, true) => "wss",
        };
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }

    // Only a Host in visible ASCII is repeated.
    let host = ctx.host.filter(|h| !h.is_empty() && h.to_str().is_ok());
    if !present.host
        && let Some(value) = host
    {
        headers.insert(X_FORWARDED_HOST, value.clone());
    }

    if !present.port {
        let port = match host.and_then(|h| h.to_str().ok()).and_then(host_port) {
            Some(port) => port_value(port),
            None => {
                // As Traefik: the default port of the scheme the upstream is told about.
                let secure = headers.get(X_FORWARDED_PROTO).is_some_and(|p| {
                    p.as_bytes().eq_ignore_ascii_case(b"https")
                        || p.as_bytes().eq_ignore_ascii_case(b"wss")
                });
                Some(HeaderValue::from_static(if secure { "443" } else { "80" }))
            }
        };
        if let Some(port) = port {
            headers.insert(X_FORWARDED_PORT, port);
        }
    }

    // Names this proxy, so it replaces whatever a previous hop wrote.
    if let Some(server) = ctx.server_name {
        headers.insert(X_FORWARDED_SERVER, server.clone());
    }
}

/// Which forwarded headers a trusted peer's request already has: one look at each name,
/// rather than a hashed lookup for each of five.
#[derive(Default)]
struct Present {
    r#for: bool,
    real_ip: bool,
    proto: bool,
    host: bool,
    port: bool,
}

impl Present {
    fn of(headers: &HeaderMap) -> Self {
        let mut present = Present::default();
        for name in headers.keys() {
            match name.as_str() {
                "x-forwarded-for" => present.r#for = true,
                "x-real-ip" => present.real_ip = true,
                "x-forwarded-proto" => present.proto = true,
                "x-forwarded-host" => present.host = true,
                "x-forwarded-port" => present.port = true,
                _ => {}
            }
        }
        present
    }
}

thread_local! {
    /// The last peer this thread wrote and its text: the requests of a connection, and most
    /// connections of a client, share it.
    static PEER_TEXT: std::cell::RefCell<Option<(IpAddr, HeaderValue)>> =
        const { std::cell::RefCell::new(None) };
}

/// `peer` as a header value; a clone of the last one when it is the same peer (no
/// formatting, no allocation).
fn peer_value(peer: IpAddr) -> HeaderValue {
    let format = |peer: IpAddr| {
        match peer {
            IpAddr::V4(v4) => {
                let mut text = [0u8; 15];
                let len = ipv4_text(v4, &mut text);
                HeaderValue::from_bytes(&text[..len])
            }
            IpAddr::V6(v6) => HeaderValue::from_str(&v6.to_string()),
        }
        // An address's text is visible ASCII.
        .unwrap_or_else(|_| HeaderValue::from_static(""))
    };
    PEER_TEXT
        .try_with(|last| {
            let mut last = last.borrow_mut();
            match &*last {
                Some((ip, text)) if *ip == peer => text.clone(),
                _ => {
                    let text = format(peer);
                    *last = Some((peer, text.clone()));
                    text
                }
            }
        })
        .unwrap_or_else(|_| format(peer))
}

/// A port's header value: the usual ports without an allocation.
fn port_value(port: &str) -> Option<HeaderValue> {
    match port {
        "80" => Some(HeaderValue::from_static("80")),
        "443" => Some(HeaderValue::from_static("443")),
        "8080" => Some(HeaderValue::from_static("8080")),
        "8443" => Some(HeaderValue::from_static("8443")),
        other => HeaderValue::from_str(other).ok(),
    }
}

/// Writes a dotted quad at the start of `text`; returns its length. Cheaper than the
/// formatting machinery, which costs a request about a thousand instructions here.
pub fn ipv4_text(ip: std::net::Ipv4Addr, text: &mut [u8; 15]) -> usize {
    let mut len = 0;
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            text[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            text[len] = b'0' + octet / 10 % 10;
            len += 1;
        }
        text[len] = b'0' + octet % 10;
        len += 1;
    }
    len
}

/// Removes every `X-Forwarded-*` and `X-Real-Ip` header an untrusted client sent.
fn drop_client_forwarded_headers(headers: &mut HeaderMap) {
    let forged: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-forwarded-") || *name == X_REAL_IP)
        .cloned()
        .collect();
    for name in forged {
        headers.remove(name);
    }
}

/// All values of `name` joined with ", " (several header lines form one list), or `None` when
/// the header is absent.
fn joined_values(headers: &HeaderMap, name: &HeaderName) -> Option<Vec<u8>> {
    let mut values = headers.get_all(name).iter();
    let mut joined = values.next()?.as_bytes().to_vec();
    for value in values {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(value.as_bytes());
    }
    Some(joined)
}

/// The port of a Host value, read like Go's `net.SplitHostPort`: `name:port` or
/// `[v6]:port`; a bare IPv6 address or a name without port has none.
fn host_port(host: &str) -> Option<&str> {
    let port = if host.starts_with('[') {
        host.split_once("]:")?.1
    } else {
        let (name, port) = host.rsplit_once(':')?;
        if name.contains(':') {
            return None;
        }
        port
    };
    (!port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())).then_some(port)
}

fn has_token(value: &HeaderValue, token: &str) -> bool {
    value
        .to_str()
        .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn policy(trusted: &[&str], insecure: bool) -> ForwardedPolicy {
        ForwardedPolicy {
            trusted: trusted.iter().map(|n| n.parse().unwrap()).collect(),
            insecure,
        }
    }

    static APP_HOST: HeaderValue = HeaderValue::from_static("app.example.com");
    static EDGE: HeaderValue = HeaderValue::from_static("edge-1");

    fn ctx<'a>(peer: &str, policy: &'a ForwardedPolicy) -> ForwardContext<'a> {
        ForwardContext {
            peer: peer.parse().unwrap(),
            tls: false,
            host: Some(&APP_HOST),
            upgrade: false,
            server_name: Some(&EDGE),
            policy,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn get<'h>(map: &'h HeaderMap, name: &str) -> Option<&'h str> {
        map.get(name).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn untrusted_peer_starts_a_fresh_chain() {
        let policy = policy(&["10.0.0.0/8"], false);
        let mut h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "forged.example"),
            ("x-forwarded-port", "443"),
            ("x-forwarded-prefix", "/admin"),
        ]);
        rewrite_request_headers(&mut h, &ctx("203.0.113.7", &policy));
        assert_eq!(get(&h, "x-forwarded-for"), Some("203.0.113.7"));
        assert_eq!(get(&h, "x-real-ip"), Some("203.0.113.7"));
        assert_eq!(get(&h, "x-forwarded-proto"), Some("http"));
        assert_eq!(get(&h, "x-forwarded-host"), Some("app.example.com"));
        assert_eq!(get(&h, "x-forwarded-port"), Some("80"));
        assert_eq!(get(&h, "x-forwarded-prefix"), None);
        assert_eq!(get(&h, "x-forwarded-server"), Some("edge-1"));
    }

    #[test]
    fn trusted_peer_appends_to_the_chain_and_keeps_its_headers() {
        let policy = policy(&["10.0.0.0/8"], false);
        let mut h = headers(&[
            ("x-forwarded-for", "198.51.100.1, 192.0.2.9"),
            ("x-real-ip", "198.51.100.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "public.example"),
            ("x-forwarded-server", "lb-0"),
        ]);
        rewrite_request_headers(&mut h, &ctx("10.1.2.3", &policy));
        assert_eq!(
            get(&h, "x-forwarded-for"),
            Some("198.51.100.1, 192.0.2.9, 10.1.2.3")
        );
        assert_eq!(get(&h, "x-real-ip"), Some("198.51.100.1"));
        assert_eq!(get(&h, "x-forwarded-proto"), Some("https"));
        assert_eq!(get(&h, "x-forwarded-host"), Some("public.example"));
        // The trusted proto decides the default port.
        assert_eq!(get(&h, "x-forwarded-port"), Some("443"));
        assert_eq!(get(&h, "x-forwarded-server"), Some("edge-1"));
    }

    #[test]
    fn trusted_peer_with_several_xff_lines_joins_them_in_order() {
        let policy = policy(&[], true);
        let mut h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
        ]);
        rewrite_request_headers(&mut h, &ctx("3.3.3.3", &policy));
        let all: Vec<_> = h.get_all("x-forwarded-for").iter().collect();
        assert_eq!(all, ["1.1.1.1, 2.2.2.2, 3.3.3.3"]);
    }

    #[test]
    fn trusted_peer_without_prior_headers_gets_them_generated() {
        let policy = policy(&["10.0.0.0/8"], false);
        let mut h = HeaderMap::new();
        rewrite_request_headers(&mut h, &ctx("10.0.0.5", &policy));
        assert_eq!(get(&h, "x-forwarded-for"), Some("10.0.0.5"));
        assert_eq!(get(&h, "x-real-ip"), Some("10.0.0.5"));
    }

    #[test]
    fn insecure_trusts_every_peer() {
        let policy = policy(&[], true);
        let mut h = headers(&[("x-forwarded-for", "1.1.1.1")]);
        rewrite_request_headers(&mut h, &ctx("203.0.113.7", &policy));
        assert_eq!(get(&h, "x-forwarded-for"), Some("1.1.1.1, 203.0.113.7"));
    }

    #[test]
    fn ipv4_mapped_peer_is_written_and_trusted_as_ipv4() {
        let policy = policy(&["10.0.0.0/8"], false);
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 9, 8, 7).to_ipv6_mapped());
        let mut h = headers(&[("x-forwarded-for", "1.1.1.1")]);
        let c = ForwardContext {
            peer: mapped,
            ..ctx("127.0.0.1", &policy)
        };
        rewrite_request_headers(&mut h, &c);
        assert_eq!(get(&h, "x-forwarded-for"), Some("1.1.1.1, 10.9.8.7"));
        assert_eq!(get(&h, "x-real-ip"), Some("10.9.8.7"));

        let untrusted = IpAddr::V6(Ipv4Addr::new(203, 0, 113, 7).to_ipv6_mapped());
        let mut h = HeaderMap::new();
        rewrite_request_headers(
            &mut h,
            &ForwardContext {
                peer: untrusted,
                ..c
            },
        );
        assert_eq!(get(&h, "x-forwarded-for"), Some("203.0.113.7"));
        assert_eq!(get(&h, "x-real-ip"), Some("203.0.113.7"));
    }

    #[test]
    fn ipv6_peer_is_written_without_brackets() {
        let policy = policy(&[], false);
        let mut h = HeaderMap::new();
        let c = ForwardContext {
            peer: IpAddr::V6(Ipv6Addr::LOCALHOST),
            ..ctx("127.0.0.1", &policy)
        };
        rewrite_request_headers(&mut h, &c);
        assert_eq!(get(&h, "x-forwarded-for"), Some("::1"));
    }

    #[test]
    fn proto_reflects_tls_and_upgrade() {
        let policy = policy(&[], false);
        for (tls, upgrade, proto, port) in [
            (false, false, "http", "80"),
            (true, false, "https", "443"),
            (false, true, "ws", "80"),
            (true, true, "wss", "443"),
        ] {
            let mut h = HeaderMap::new();
            let c = ForwardContext {
                tls,
                upgrade,
                ..ctx("192.0.2.1", &policy)
            };
            rewrite_request_headers(&mut h, &c);
            assert_eq!(
                get(&h, "x-forwarded-proto"),
                Some(proto),
                "tls={tls} upgrade={upgrade}"
            );
            assert_eq!(
                get(&h, "x-forwarded-port"),
                Some(port),
                "tls={tls} upgrade={upgrade}"
            );
        }
    }

    #[test]
    fn upgrade_requests_need_both_connection_upgrade_and_upgrade() {
        assert!(is_upgrade_request(&headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ])));
        assert!(!is_upgrade_request(&headers(&[("upgrade", "websocket")])));
        assert!(!is_upgrade_request(&headers(&[("connection", "upgrade")])));
    }

    #[test]
    fn port_comes_from_the_host_when_it_has_one() {
        let policy = policy(&[], false);
        for (host, port) in [
            ("app.example.com:8443", "8443"),
            ("[2001:db8::1]:9000", "9000"),
            ("[2001:db8::1]", "80"),
            ("2001:db8::1", "80"),
            ("app.example.com:", "80"),
        ] {
            let mut h = HeaderMap::new();
            let value = HeaderValue::from_static(host);
            let c = ForwardContext {
                host: Some(&value),
                ..ctx("192.0.2.1", &policy)
            };
            rewrite_request_headers(&mut h, &c);
            assert_eq!(get(&h, "x-forwarded-port"), Some(port), "host {host}");
            assert_eq!(get(&h, "x-forwarded-host"), Some(host));
        }
    }

    /// The peer's text is kept from one request to the next on a thread: it must follow the
    /// peer.
    #[test]
    fn each_request_names_its_own_peer() {
        let policy = policy(&[], false);
        for peer in [
            "192.0.2.1",
            "192.0.2.1",
            "198.51.100.250",
            "10.0.0.9",
            "2001:db8::7",
            "::ffff:203.0.113.4",
            "192.0.2.1",
        ] {
            let mut h = HeaderMap::new();
            rewrite_request_headers(&mut h, &ctx(peer, &policy));
            let expected = peer.trim_start_matches("::ffff:");
            assert_eq!(get(&h, "x-forwarded-for"), Some(expected), "peer {peer}");
            assert_eq!(get(&h, "x-real-ip"), Some(expected), "peer {peer}");
        }
    }

    /// The quick look names the same headers as the list that is removed.
    #[test]
    fn every_hop_by_hop_header_is_seen() {
        for name in &HOP_BY_HOP {
            let mut h = headers(&[("x-app", "1")]);
            h.insert(name.clone(), HeaderValue::from_static("x"));
            assert!(has_hop_by_hop(&h), "{name}");
        }
        assert!(!has_hop_by_hop(&headers(&[
            ("host", "a.test"),
            ("x-forwarded-for", "192.0.2.1"),
            ("te-extra", "1"),
        ])));
    }

    #[test]
    fn dotted_quads_are_written_like_the_standard_library_does() {
        for ip in [
            [0, 0, 0, 0],
            [255, 255, 255, 255],
            [10, 0, 100, 9],
            [1, 20, 199, 250],
        ] {
            let ip = std::net::Ipv4Addr::from(ip);
            let mut text = [0u8; 15];
            let len = ipv4_text(ip, &mut text);
            assert_eq!(std::str::from_utf8(&text[..len]).unwrap(), ip.to_string());
        }
    }

    #[test]
    fn a_host_outside_visible_ascii_is_not_repeated() {
        let policy = policy(&[], false);
        let mut h = HeaderMap::new();
        let host = HeaderValue::from_bytes(b"caf\xc3\xa9.example").unwrap();
        let c = ForwardContext {
            host: Some(&host),
            ..ctx("192.0.2.1", &policy)
        };
        rewrite_request_headers(&mut h, &c);
        assert_eq!(get(&h, "x-forwarded-host"), None);
        assert_eq!(get(&h, "x-forwarded-port"), Some("80"));
    }

    #[test]
    fn empty_server_name_leaves_x_forwarded_server_out() {
        let policy = policy(&[], false);
        let mut h = HeaderMap::new();
        let c = ForwardContext {
            server_name: None,
            ..ctx("192.0.2.1", &policy)
        };
        rewrite_request_headers(&mut h, &c);
        assert_eq!(get(&h, "x-forwarded-server"), None);
    }

    #[test]
    fn hop_by_hop_headers_and_connection_listed_ones_are_removed() {
        let policy = policy(&[], false);
        let mut h = headers(&[
            ("connection", "keep-alive, X-Secret"),
            ("connection", "x-other"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authenticate", "Basic"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("te", "gzip"),
            ("trailer", "Expires"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-secret", "1"),
            ("x-other", "2"),
            ("accept", "*/*"),
        ]);
        rewrite_request_headers(&mut h, &ctx("192.0.2.1", &policy));
        for gone in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "proxy-authenticate",
            "proxy-authorization",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "x-secret",
            "x-other",
        ] {
            assert!(!h.contains_key(gone), "{gone} should be removed");
        }
        assert_eq!(get(&h, "accept"), Some("*/*"));
    }

    #[test]
    fn te_trailers_is_kept_for_grpc() {
        let policy = policy(&[], false);
        let mut h = headers(&[("te", "gzip, Trailers")]);
        rewrite_request_headers(&mut h, &ctx("192.0.2.1", &policy));
        assert_eq!(get(&h, "te"), Some("trailers"));
    }

    #[test]
    fn upgrade_request_keeps_connection_upgrade() {
        let policy = policy(&[], false);
        let mut h = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]);
        let c = ForwardContext {
            upgrade: true,
            ..ctx("192.0.2.1", &policy)
        };
        rewrite_request_headers(&mut h, &c);
        assert_eq!(get(&h, "connection"), Some("Upgrade"));
        assert_eq!(get(&h, "upgrade"), Some("websocket"));
        assert_eq!(
            get(&h, "sec-websocket-key"),
            Some("dGhlIHNhbXBsZSBub25jZQ==")
        );
    }

    #[test]
    fn connection_listing_an_untrusted_xff_cannot_erase_the_peer() {
        let policy = policy(&[], false);
        let mut h = headers(&[
            ("connection", "x-forwarded-for, x-real-ip"),
            ("x-forwarded-for", "6.6.6.6"),
        ]);
        rewrite_request_headers(&mut h, &ctx("192.0.2.1", &policy));
        assert_eq!(get(&h, "x-forwarded-for"), Some("192.0.2.1"));
        assert_eq!(get(&h, "x-real-ip"), Some("192.0.2.1"));
    }

    #[test]
    fn response_loses_hop_by_hop_headers_only() {
        let mut h = headers(&[
            ("connection", "close, x-internal"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("x-internal", "1"),
            ("content-type", "text/plain"),
            ("x-forwarded-for", "10.0.0.1"),
        ]);
        strip_hop_by_hop_response(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["content-type", "x-forwarded-for"]);
    }
}
