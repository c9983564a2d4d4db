//! Configuration → spec for the `headers` middleware ([`l7::middleware::headers`]).
//!
//! The deprecated `sslRedirect`/`sslTemporaryRedirect` are refused rather than ignored: a
//! router that asked for a redirection to HTTPS must not quietly serve plain HTTP.

use std::sync::Arc;

use l7::middleware::Middleware;
use l7::middleware::headers::HeadersSpec;

use crate::config::dynamic::{Headers, HttpMiddleware};

/// The `headers` middleware of `m`, or `None` when `m` is of another type.
pub(super) fn build(m: &HttpMiddleware) -> Option<Result<Arc<dyn Middleware>, String>> {
    let headers = m.headers.as_ref()?;
    Some(build_headers(headers))
}

fn build_headers(h: &Headers) -> Result<Arc<dyn Middleware>, String> {
    if h.ssl_redirect == Some(true) || h.ssl_temporary_redirect == Some(true) {
        return Err(
            "headers: sslRedirect and sslTemporaryRedirect are deprecated and not served; use a redirectScheme middleware"
                .to_owned(),
        );
    }
    let pairs = |map: &std::collections::BTreeMap<String, String>| {
        map.iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>()
    };
    let spec = HeadersSpec {
        custom_request_headers: pairs(&h.custom_request_headers),
        custom_response_headers: pairs(&h.custom_response_headers),
        access_control_allow_credentials: h.access_control_allow_credentials,
        access_control_allow_headers: h.access_control_allow_headers.clone(),
        access_control_allow_methods: h.access_control_allow_methods.clone(),
        access_control_allow_origin_list: h.access_control_allow_origin_list.clone(),
        access_control_allow_origin_list_regex: h
            .access_control_allow_origin_list_regex
            .iter()
            .map(|re| re.value.clone())
            .collect(),
        access_control_expose_headers: h.access_control_expose_headers.clone(),
        access_control_max_age: h.access_control_max_age.unwrap_or(0),
        add_vary_header: h.add_vary_header,
        allowed_hosts: h.allowed_hosts.clone(),
        hosts_proxy_headers: h.hosts_proxy_headers.clone(),
        ssl_proxy_headers: pairs(&h.ssl_proxy_headers),
        sts_seconds: h.sts_seconds.unwrap_or(0),
        sts_include_subdomains: h.sts_include_subdomains,
        sts_preload: h.sts_preload,
        force_sts_header: h.force_sts_header,
        frame_deny: h.frame_deny,
        custom_frame_options_value: h.custom_frame_options_value.clone(),
        content_type_nosniff: h.content_type_nosniff,
        browser_xss_filter: h.browser_xss_filter,
        custom_browser_xss_value: h.custom_browser_xss_value.clone(),
        content_security_policy: h.content_security_policy.clone(),
        content_security_policy_report_only: h.content_security_policy_report_only.clone(),
        public_key: h.public_key.clone(),
        referrer_policy: h.referrer_policy.clone(),
        permissions_policy: h.permissions_policy.clone(),
        feature_policy: h.feature_policy.clone().unwrap_or_default(),
        is_development: h.is_development,
    };
    let built = spec.build().map_err(|e| format!("headers: {e}"))?;
    Ok(Arc::new(built))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn middleware(headers: Headers) -> HttpMiddleware {
        HttpMiddleware {
            headers: Some(headers),
            ..Default::default()
        }
    }

    #[test]
    fn other_types_are_not_ours() {
        assert!(build(&HttpMiddleware::default()).is_none());
    }

    #[test]
    fn valid_headers_build() {
        let mut h = Headers::default();
        h.custom_request_headers.insert("X-A".into(), "1".into());
        h.sts_seconds = Some(60);
        assert!(matches!(build(&middleware(h)), Some(Ok(_))));
    }

    #[test]
    fn injected_value_is_a_message_naming_the_option() {
        let mut h = Headers::default();
        h.custom_response_headers
            .insert("X-A".into(), "a\r\nSet-Cookie: x".into());
        let Some(Err(message)) = build(&middleware(h)) else {
            panic!("a CR/LF value must be refused");
        };
        assert!(message.contains("customResponseHeaders"), "{message}");
    }

    #[test]
    fn deprecated_ssl_redirect_is_refused() {
        let h = Headers {
            ssl_redirect: Some(true),
            ..Default::default()
        };
        assert!(matches!(build(&middleware(h)), Some(Err(_))));
    }
}
