//! The dashboard (`dashboard@internal`): a page that reads the API and the Prometheus endpoint
//! and shows entrypoints, routers, services (with their servers' health) and middlewares,
//! errors highlighted, with live request and connection rates, refreshing itself. The files
//! are embedded in the binary: nothing is built or fetched at run time.

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use l7::handler::{Body, BoxFuture, Handler, empty_body, full_body};

const INDEX: &str = include_str!("assets/index.html");
const APP: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");

/// Serves the dashboard under `<basePath>dashboard/`, and sends `<basePath>` there.
pub struct DashboardHandler {
    /// `api.basePath`, with a trailing `/`.
    base: String,
}

impl DashboardHandler {
    pub fn new(base_path: &str) -> Self {
        let mut base = base_path.to_owned();
        if !base.starts_with('/') {
            base.insert(0, '/');
        }
        if !base.ends_with('/') {
            base.push('/');
        }
        DashboardHandler { base }
    }

    fn answer(&self, method: &Method, path: &str) -> Response<Body> {
        if method != Method::GET && method != Method::HEAD {
            let mut r = status(StatusCode::METHOD_NOT_ALLOWED);
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        let home = format!("{}dashboard/", self.base);
        let Some(file) = path.strip_prefix(&home) else {
            if path == self.base || path == home.trim_end_matches('/') {
                let mut r = status(StatusCode::FOUND);
                if let Ok(location) = HeaderValue::from_str(&home) {
                    r.headers_mut().insert(header::LOCATION, location);
                }
                return r;
            }
            return status(StatusCode::NOT_FOUND);
        };
        let (body, content_type) = match file {
            "" | "index.html" => (INDEX, "text/html; charset=utf-8"),
            "app.js" => (APP, "text/javascript; charset=utf-8"),
            "style.css" => (STYLE, "text/css; charset=utf-8"),
            _ => return status(StatusCode::NOT_FOUND),
        };
        let mut r = Response::new(if method == Method::HEAD {
            empty_body()
        } else {
            full_body(body)
        });
        let headers = r.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        // The page loads its own script and style and talks to its own origin only.
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; frame-ancestors 'none'",
            ),
        );
        r
    }
}

fn status(code: StatusCode) -> Response<Body> {
    let mut r = Response::new(empty_body());
    *r.status_mut() = code;
    r
}

impl Handler for DashboardHandler {
    fn call(&self, request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
        let response = self.answer(request.method(), request.uri().path());
        Box::pin(async move { response })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(h: &DashboardHandler, method: Method, path: &str) -> Response<Body> {
        h.answer(&method, path)
    }

    #[test]
    fn pages_redirects_and_refusals() {
        let h = DashboardHandler::new("/");
        let index = get(&h, Method::GET, "/dashboard/");
        assert_eq!(index.status(), StatusCode::OK);
        assert_eq!(
            index.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert!(
            index
                .headers()
                .contains_key(header::CONTENT_SECURITY_POLICY)
        );
        assert_eq!(
            get(&h, Method::GET, "/dashboard/app.js").status(),
            StatusCode::OK
        );
        assert_eq!(
            get(&h, Method::GET, "/dashboard/style.css").status(),
            StatusCode::OK
        );
        let home = get(&h, Method::GET, "/");
        assert_eq!(home.status(), StatusCode::FOUND);
        assert_eq!(home.headers()[header::LOCATION], "/dashboard/");
        assert_eq!(
            get(&h, Method::GET, "/dashboard").status(),
            StatusCode::FOUND
        );
        assert_eq!(
            get(&h, Method::GET, "/dashboard/../etc/passwd").status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get(&h, Method::GET, "/other").status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get(&h, Method::POST, "/dashboard/").status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[test]
    fn a_base_path_prefixes_everything() {
        let h = DashboardHandler::new("/traefik");
        assert_eq!(
            get(&h, Method::GET, "/traefik/dashboard/").status(),
            StatusCode::OK
        );
        let home = get(&h, Method::GET, "/traefik/");
        assert_eq!(home.headers()[header::LOCATION], "/traefik/dashboard/");
        assert_eq!(
            get(&h, Method::GET, "/dashboard/").status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn the_page_inserts_configuration_values_as_text_only() {
        // Router names, rules and errors come from configuration files: never innerHTML.
        assert!(!APP.contains("innerHTML"));
        assert!(!APP.contains("insertAdjacentHTML"));
        assert!(INDEX.contains("<script src=\"app.js\"></script>"));
    }
}
