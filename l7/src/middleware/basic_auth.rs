//! `basicAuth{users, usersFile, realm, removeHeader, headerField}`: requests must carry
//! `Authorization: Basic` credentials of a listed user ([`super::htpasswd`]); others get 401
//! with `WWW-Authenticate: Basic realm="..."`, as Traefik.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue, WWW_AUTHENTICATE};
use http::{Request, Response, StatusCode};

use super::Middleware;
use super::htpasswd::PasswordHash;
use crate::handler::{Body, BoxFuture, Handler, SharedHandler, full_body};

/// Authorization headers longer than this are refused without being decoded: real
/// credentials are far shorter, and bcrypt only reads 72 bytes of a password anyway.
pub const MAX_AUTHORIZATION_BYTES: usize = 8 * 1024;

/// A configured `basicAuth`.
#[derive(Debug, Clone)]
pub struct BasicAuth {
    /// User name → password hash (the configuration's `users` over the file's).
    pub users: Arc<HashMap<String, PasswordHash>>,
    /// Quoted in `WWW-Authenticate`; checked to hold no `"` and to be a header value.
    pub challenge: HeaderValue,
    pub remove_header: bool,
    /// The request header that receives the authenticated user's name.
    pub header_field: Option<HeaderName>,
}

impl BasicAuth {
    /// The `WWW-Authenticate` value for `realm`, or `None` if the realm cannot be quoted.
    pub fn challenge_for(realm: &str) -> Option<HeaderValue> {
        if realm.contains(['"', '\\']) {
            return None;
        }
        HeaderValue::from_str(&format!("Basic realm=\"{realm}\"")).ok()
    }
}

impl Middleware for BasicAuth {
    fn wrap(&self, next: SharedHandler) -> SharedHandler {
        Arc::new(Auth {
            config: self.clone(),
            next,
        })
    }
}

struct Auth {
    config: BasicAuth,
    next: SharedHandler,
}

impl Handler for Auth {
    fn call(&self, mut request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
        let Some(user) = self.authenticated(&request) else {
            tracing::debug!("basicAuth: authentication failed");
            let challenge = self.config.challenge.clone();
            return Box::pin(async move { unauthorized(challenge) });
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
    /// The user whose credentials `request` carries, if they are right.
    fn authenticated(&self, request: &Request<Body>) -> Option<String> {
        let header = request.headers().get(AUTHORIZATION)?.as_bytes();
        if header.len() > MAX_AUTHORIZATION_BYTES {
            return None;
        }
        let (scheme, encoded) = header.split_at(header.iter().position(|b| *b == b' ')?);
        if !scheme.eq_ignore_ascii_case(b"basic") {
            return None;
        }
        let decoded = STANDARD.decode(encoded.trim_ascii()).ok()?;
        let colon = decoded.iter().position(|b| *b == b':')?;
        let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
        let user = std::str::from_utf8(user).ok()?;
        let hash = self.config.users.get(user)?;
        hash.verify(password).then(|| user.to_owned())
    }
}

fn unauthorized(challenge: HeaderValue) -> Response<Body> {
    let mut response = Response::new(full_body("401 Unauthorized\n"));
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    let headers = response.headers_mut();
    headers.insert(WWW_AUTHENTICATE, challenge);
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::empty_body;
    use crate::middleware::htpasswd::parse_line;
    use http_body_util::BodyExt;

    /// Echoes the request headers it got as `name=value` lines.
    struct SeenHeaders;
    impl Handler for SeenHeaders {
        fn call(&self, request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
            let mut seen: Vec<String> = request
                .headers()
                .iter()
                .map(|(n, v)| format!("{n}={}", v.to_str().unwrap_or("?")))
                .collect();
            seen.sort();
            Box::pin(async move { Response::new(full_body(seen.join("\n"))) })
        }
    }

    fn auth(remove_header: bool, header_field: Option<&'static str>) -> SharedHandler {
        let users = [
            "test:$apr1$H6uskkkW$IgXLP6ewTrSuBkTrqE8wj/",
            "sha:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=",
        ]
        .iter()
        .map(|line| parse_line(line).unwrap())
        .collect();
        BasicAuth {
            users: Arc::new(users),
            challenge: BasicAuth::challenge_for("traefik").unwrap(),
            remove_header,
            header_field: header_field.map(HeaderName::from_static),
        }
        .wrap(Arc::new(SeenHeaders))
    }

    fn with_credentials(credentials: &str) -> Request<Body> {
        let value = format!("Basic {}", STANDARD.encode(credentials));
        Request::builder()
            .header(AUTHORIZATION, value)
            .body(empty_body())
            .unwrap()
    }

    async fn body(response: Response<Body>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn right_credentials_pass_and_wrong_ones_get_a_challenge() {
        let handler = auth(false, None);
        let ok = handler.call(with_credentials("test:test")).await;
        assert_eq!(ok.status(), StatusCode::OK);
        assert!(body(ok).await.contains("authorization=Basic "));
        for bad in ["test:nope", "nobody:test", "test", "sha:test"] {
            let denied = handler.call(with_credentials(bad)).await;
            assert_eq!(denied.status(), StatusCode::UNAUTHORIZED, "{bad}");
            assert_eq!(
                denied.headers()[WWW_AUTHENTICATE],
                "Basic realm=\"traefik\""
            );
            assert_eq!(body(denied).await, "401 Unauthorized\n");
        }
        let none = handler.call(Request::new(empty_body())).await;
        assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn user_goes_into_the_header_field_and_authorization_can_be_removed() {
        let handler = auth(true, Some("x-user"));
        let ok = handler.call(with_credentials("sha:secret")).await;
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(body(ok).await, "x-user=sha");
    }

    #[tokio::test]
    async fn oversized_or_foreign_authorization_is_refused() {
        let handler = auth(false, None);
        // Right credentials, padded past the limit with spaces that decoding would trim.
        let padded = format!(
            "Basic {}{}",
            STANDARD.encode("test:test"),
            " ".repeat(MAX_AUTHORIZATION_BYTES)
        );
        let request = Request::builder()
            .header(AUTHORIZATION, padded)
            .body(empty_body())
            .unwrap();
        assert_eq!(
            handler.call(request).await.status(),
            StatusCode::UNAUTHORIZED
        );
        let bearer = Request::builder()
            .header(AUTHORIZATION, "Bearer dGVzdDp0ZXN0")
            .body(empty_body())
            .unwrap();
        assert_eq!(
            handler.call(bearer).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn realms_that_cannot_be_quoted_are_refused() {
        assert!(BasicAuth::challenge_for("my \"realm\"").is_none());
        assert!(BasicAuth::challenge_for("a\r\nb").is_none());
        assert!(BasicAuth::challenge_for("ok realm").is_some());
    }
}
