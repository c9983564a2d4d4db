//! `digestAuth{users, usersFile, realm, removeHeader, headerField}`: HTTP Digest
//! authentication (RFC 2617, MD5, `qop=auth`) as Traefik's: users are `user:realm:HA1` lines
//! (htdigest), challenges carry a fresh nonce, and a response is accepted once per nonce and
//! nonce count, so a captured `Authorization` header cannot be replayed.
//!
//! Nonces are remembered per middleware instance, at most [`MAX_NONCES`] of them (the least
//! recently used are forgotten first; their clients are simply challenged again).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue, WWW_AUTHENTICATE};
use http::{Request, Response, StatusCode};
use md5::{Digest, Md5};
use subtle::ConstantTimeEq;
use tokio::time::Instant;

use super::Middleware;
use super::basic_auth::MAX_AUTHORIZATION_BYTES;
use crate::handler::{Body, BoxFuture, Handler, SharedHandler, full_body};

/// Nonces remembered at once.
pub const MAX_NONCES: usize = 1000;

/// A configured `digestAuth`.
#[derive(Debug, Clone)]
pub struct DigestAuth {
    /// `user:realm` → the hex MD5 of `user:realm:password`.
    pub users: Arc<HashMap<String, String>>,
    /// Checked with [`DigestAuth::valid_realm`].
    pub realm: String,
    pub remove_header: bool,
    /// The request header that receives the authenticated user's name.
    pub header_field: Option<HeaderName>,
}

impl DigestAuth {
    /// Whether `realm` can be quoted in a challenge.
    pub fn valid_realm(realm: &str) -> bool {
        !realm.contains(['"', '\\']) && HeaderValue::from_str(realm).is_ok()
    }
}

impl Middleware for DigestAuth {
    fn wrap(&self, next: SharedHandler) -> SharedHandler {
        Arc::new(Auth {
            config: self.clone(),
            opaque: random_key(),
            nonces: Mutex::new(HashMap::new()),
            next,
        })
    }
}

struct Auth {
    config: DigestAuth,
    /// Sent with every challenge and required back, as Traefik's.
    opaque: String,
    /// Issued nonce → (highest nonce count accepted, last use).
    nonces: Mutex<HashMap<String, (u64, Instant)>>,
    next: SharedHandler,
}

impl Handler for Auth {
    fn call(&self, mut request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
        let Some(user) = self.authenticated(&request) else {
            tracing::debug!("digestAuth: authentication failed");
            let response = self.challenge();
            return Box::pin(async move { response });
        };
        if let Some(notes) = crate::observe::RequestNotes::of(&request) {
            notes.note_user(&user);
        }
        if let Some(field) = &self.config.header_field
            && let Ok(value) = HeaderValue::from_str(&user)
        {
            request.headers_mut().insert(field.clone(), value);
        }
        if self.config.remove_header {
            request.headers_mut().remove(AUTHORIZATION);
        }
        self.next.call(request)
    }
}

impl Auth {
    /// The user whose response in `request` is right for a nonce we issued, if any.
    fn authenticated(&self, request: &Request<Body>) -> Option<String> {
        let header = request.headers().get(AUTHORIZATION)?.as_bytes();
        if header.len() > MAX_AUTHORIZATION_BYTES {
            return None;
        }
        let header = std::str::from_utf8(header).ok()?;
        let (scheme, rest) = header.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("digest") {
            return None;
        }
        let params = parse_params(rest)?;
        let get = |key: &str| params.get(key).map(String::as_str).unwrap_or("");
        // Clients that leave the algorithm out mean MD5.
        let algorithm = params.get("algorithm").map_or("MD5", String::as_str);
        if get("opaque") != self.opaque || algorithm != "MD5" || get("qop") != "auth" {
            return None;
        }
        if !uri_matches(request, get("uri")) {
            return None;
        }
        let user = get("username");
        let ha1 = self
            .config
            .users
            .get(&format!("{user}:{}", self.config.realm))?;
        let ha2 = md5_hex(&format!("{}:{}", request.method(), get("uri")));
        let expected = md5_hex(&format!(
            "{ha1}:{}:{}:{}:auth:{ha2}",
            get("nonce"),
            get("nc"),
            get("cnonce")
        ));
        if !bool::from(expected.as_bytes().ct_eq(get("response").as_bytes())) {
            return None;
        }
        let count = u64::from_str_radix(get("nc"), 16).ok()?;
        let mut nonces = self.nonces.lock().unwrap_or_else(PoisonError::into_inner);
        let (last_count, last_seen) = nonces.get_mut(get("nonce"))?;
        // Each request with a nonce must count up; an equal or lower count is a replay.
        if *last_count >= count {
            return None;
        }
        *last_count = count;
        *last_seen = Instant::now();
        Some(user.to_owned())
    }

    /// A 401 with a fresh nonce.
    fn challenge(&self) -> Response<Body> {
        let nonce = random_key();
        {
            let mut nonces = self.nonces.lock().unwrap_or_else(PoisonError::into_inner);
            if nonces.len() >= MAX_NONCES {
                forget_oldest(&mut nonces, MAX_NONCES / 10);
            }
            nonces.insert(nonce.clone(), (0, Instant::now()));
        }
        let mut response = Response::new(full_body("401 Unauthorized\n"));
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        let value = format!(
            "Digest realm=\"{}\", nonce=\"{nonce}\", opaque=\"{}\", algorithm=\"MD5\", qop=\"auth\"",
            self.config.realm, self.opaque
        );
        let headers = response.headers_mut();
        // The realm was checked when configured; nonce and opaque are base64.
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(WWW_AUTHENTICATE, value);
        }
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}

/// Drops the `count` least recently used nonces.
fn forget_oldest(nonces: &mut HashMap<String, (u64, Instant)>, count: usize) {
    let mut by_age: Vec<(Instant, String)> = nonces
        .iter()
        .map(|(nonce, (_, seen))| (*seen, nonce.clone()))
        .collect();
    by_age.sort_unstable();
    for (_, nonce) in by_age.into_iter().take(count) {
        nonces.remove(&nonce);
    }
}

/// The request's URI must be the one the response was computed for; as Traefik, a path
/// that the request's path starts with is accepted too.
fn uri_matches(request: &Request<Body>, uri: &str) -> bool {
    let request_uri = request.uri().path_and_query().map_or("/", |p| p.as_str());
    if uri.is_empty() {
        return false;
    }
    if request_uri == uri {
        return true;
    }
    let path = uri.split(['?', '#']).next().unwrap_or("");
    request.uri().path().starts_with(path)
}

/// `key=value, key="quoted, value"` pairs; `None` when malformed.
fn parse_params(text: &str) -> Option<HashMap<String, String>> {
    let mut params = HashMap::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => value.push(chars.next()?.1),
                    (_, c) => value.push(c),
                }
            };
            (value, &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim_end().to_owned(), &after[end..])
        };
        params.insert(key.trim().to_ascii_lowercase(), value);
        let after = after.trim_start();
        rest = match after.strip_prefix(',') {
            Some(next) => next.trim_start(),
            None if after.is_empty() => after,
            None => return None,
        };
    }
    Some(params)
}

fn md5_hex(text: &str) -> String {
    Md5::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// 12 random bytes in base64, as Traefik's nonces and opaque values. Should the system's
/// random source fail, the time stands in: a weaker nonce, still checked for replay.
fn random_key() -> String {
    let mut bytes = [0u8; 12];
    if getrandom::fill(&mut bytes).is_err() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes.copy_from_slice(&now.to_le_bytes()[..12]);
    }
    STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::{Noop, empty_body};
    use http::Method;

    const REALM: &str = "traefik";

    fn auth() -> SharedHandler {
        // HA1 of test:traefik:test, as `htdigest` writes it.
        let ha1 = md5_hex("test:traefik:test");
        DigestAuth {
            users: Arc::new(HashMap::from([(format!("test:{REALM}"), ha1)])),
            realm: REALM.into(),
            remove_header: false,
            header_field: None,
        }
        .wrap(Arc::new(Noop))
    }

    /// The challenge's parameters.
    async fn challenge(handler: &SharedHandler) -> HashMap<String, String> {
        let response = handler.call(Request::new(empty_body())).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let value = response.headers()[WWW_AUTHENTICATE].to_str().unwrap();
        parse_params(value.strip_prefix("Digest ").unwrap()).unwrap()
    }

    /// A client's answer to `challenge` for `uri`.
    fn answer(
        challenge: &HashMap<String, String>,
        password: &str,
        uri: &str,
        nc: &str,
    ) -> Request<Body> {
        let ha1 = md5_hex(&format!("test:{REALM}:{password}"));
        let ha2 = md5_hex(&format!("GET:{uri}"));
        let nonce = &challenge["nonce"];
        let response = md5_hex(&format!("{ha1}:{nonce}:{nc}:abc:auth:{ha2}"));
        let header = format!(
            "Digest username=\"test\", realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"{uri}\", qop=auth, nc={nc}, cnonce=\"abc\", response=\"{response}\", opaque=\"{}\"",
            challenge["opaque"]
        );
        Request::builder()
            .method(Method::GET)
            .uri(uri)
            .header(AUTHORIZATION, header)
            .body(empty_body())
            .unwrap()
    }

    #[tokio::test]
    async fn right_response_passes_once_per_nonce_count() {
        let handler = auth();
        let params = challenge(&handler).await;
        assert_eq!(params["realm"], REALM);
        assert_eq!(params["qop"], "auth");
        let ok = handler
            .call(answer(&params, "test", "/a?b", "00000001"))
            .await;
        assert_eq!(ok.status(), StatusCode::OK);
        let replay = handler
            .call(answer(&params, "test", "/a?b", "00000001"))
            .await;
        assert_eq!(replay.status(), StatusCode::UNAUTHORIZED);
        let next = handler
            .call(answer(&params, "test", "/a?b", "00000002"))
            .await;
        assert_eq!(next.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn wrong_password_unknown_nonce_or_other_uri_is_refused() {
        let handler = auth();
        let params = challenge(&handler).await;
        let wrong = handler.call(answer(&params, "nope", "/", "00000001")).await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
        let mut forged = params.clone();
        forged.insert("nonce".into(), "not-issued".into());
        let unknown = handler.call(answer(&forged, "test", "/", "00000001")).await;
        assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
        let mut moved = answer(&params, "test", "/a", "00000001");
        *moved.uri_mut() = "/b".parse().unwrap();
        assert_eq!(handler.call(moved).await.status(), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn params_parse_quoted_and_bare_values() {
        let params = parse_params(r#"a="x, y", b=tok , c="q\"q""#).unwrap();
        assert_eq!(params["a"], "x, y");
        assert_eq!(params["b"], "tok");
        assert_eq!(params["c"], "q\"q");
        assert!(parse_params(r#"a="unterminated"#).is_none());
        assert!(parse_params("novalue").is_none());
        assert!(parse_params(r#"a="x"junk"#).is_none());
    }

    #[test]
    fn the_nonce_table_is_bounded() {
        let mut nonces = HashMap::new();
        let start = Instant::now();
        for i in 0..10u64 {
            nonces.insert(
                format!("n{i}"),
                (0, start + std::time::Duration::from_secs(i)),
            );
        }
        forget_oldest(&mut nonces, 3);
        assert_eq!(nonces.len(), 7);
        assert!(!nonces.contains_key("n0") && nonces.contains_key("n3"));
    }
}
