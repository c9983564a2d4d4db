//! The HTTP side of sticky sessions: reading the affinity cookie from a request and adding
//! `Set-Cookie` to a response. The cookie's name, values and attributes are
//! [`crate::balance::sticky`]'s.

use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderValue, Request, Response};

use super::BuildError;
use crate::balance::sticky::{CookieSpec, Found, Sticky};
use crate::handler::Body;

/// A service's sticky cookie over its children, identified by index.
pub(crate) struct StickyCookie {
    name: String,
    table: Sticky<usize>,
    /// The `Set-Cookie` value pinning each child, rendered once.
    set_cookie: Vec<HeaderValue>,
}

impl StickyCookie {
    /// `names` are the children's names (server URLs or child service names), by index.
    pub(crate) fn new<'a>(
        service: &str,
        spec: &CookieSpec,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, BuildError> {
        let names: Vec<&str> = names.into_iter().collect();
        let table = Sticky::new(names.iter().copied().zip(0..));
        let set_cookie = (0..names.len())
            .map(|child| {
                let value = table.value(&child).unwrap_or_default();
                HeaderValue::from_str(&spec.set_cookie(value)).map_err(|_| {
                    BuildError::StickyCookie {
                        service: service.to_owned(),
                        cookie: spec.set_cookie(value),
                    }
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            name: spec.name.clone(),
            table,
            set_cookie,
        })
    }

    /// The child the request's cookie pins, if that child `is_up`.
    pub(crate) fn pinned(
        &self,
        request: &Request<Body>,
        is_up: impl Fn(usize) -> bool,
    ) -> Option<Found<'_, usize>> {
        let value = request_cookie(request, &self.name)?;
        self.table.lookup(value, |&child| is_up(child))
    }

    /// Pins the client to `child` with the response.
    pub(crate) fn pin(&self, response: &mut Response<Body>, child: usize) {
        if let Some(value) = self.set_cookie.get(child) {
            response.headers_mut().append(SET_COOKIE, value.clone());
        }
    }
}

/// The value of the first cookie called `name` in the request's `Cookie` headers, without
/// the double quotes a value may be wrapped in (as Go's `Request.Cookie` reads it).
fn request_cookie<'a>(request: &'a Request<Body>, name: &str) -> Option<&'a str> {
    request
        .headers()
        .get_all(COOKIE)
        .iter()
        .filter_map(|header| header.to_str().ok())
        .flat_map(|header| header.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| {
            value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::empty_body;

    fn request(cookies: &[&str]) -> Request<Body> {
        let mut request = Request::new(empty_body());
        for cookie in cookies {
            request
                .headers_mut()
                .append(COOKIE, HeaderValue::from_str(cookie).unwrap());
        }
        request
    }

    #[test]
    fn the_first_cookie_with_the_name_is_read_across_headers_and_unquoted() {
        let req = request(&["a=1; _05410=\"x\"", "_05410=y"]);
        assert_eq!(request_cookie(&req, "_05410"), Some("x"));
        let req = request(&["other=1", " _05410=y ;z=2"]);
        assert_eq!(request_cookie(&req, "_05410"), Some("y"));
        assert_eq!(request_cookie(&request(&[]), "_05410"), None);
        assert_eq!(request_cookie(&request(&["_054100=v"]), "_05410"), None);
    }

    #[test]
    fn pins_healthy_children_and_renders_set_cookie_once() {
        let spec = CookieSpec::for_service("lb@file");
        let sticky = StickyCookie::new(
            "lb@file",
            &spec,
            ["http://127.0.0.1:18081", "http://127.0.0.1:18082"],
        )
        .unwrap();
        let req = request(&["_05410=238e99ca93e11d58"]);
        assert_eq!(sticky.pinned(&req, |_| true).map(|f| *f.item), Some(1));
        assert!(sticky.pinned(&req, |child| child != 1).is_none());
        let mut response = Response::new(empty_body());
        sticky.pin(&mut response, 0);
        assert_eq!(
            response.headers().get(SET_COOKIE).unwrap(),
            "_05410=b528746506c397e7; Path=/"
        );
    }

    #[test]
    fn a_cookie_that_cannot_be_a_header_is_a_build_error() {
        let mut spec = CookieSpec::for_service("lb@file");
        spec.path = "/\n".to_owned();
        let error = StickyCookie::new("lb@file", &spec, ["http://a"]).err();
        assert!(matches!(error, Some(BuildError::StickyCookie { .. })));
    }
}
