//! Configuration → spec for `forwardAuth` ([`l7::middleware::forward_auth`]): the address
//! checked as an `http`/`https` URL, header names and the regex compiled, the `tls` option's
//! files read into the client settings of the auth server.

use std::sync::Arc;

use ::http::Uri;
use ::http::header::{HeaderName, HeaderValue};
use l7::middleware::Middleware;
use l7::middleware::forward_auth::{AUTH_TIMEOUT, ForwardAuth, ForwardAuthSpec, ForwardHeaders};
use l7::transport::TransportSettings;
use regex::Regex;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use super::{load_roots, read_pem_or_path};
use crate::config::dynamic::{self, ClientTls, HttpMiddleware};

/// The auth middleware `m` defines, or `None` when `m` is of another type.
pub(super) fn build(m: &HttpMiddleware) -> Option<Result<Arc<dyn Middleware>, String>> {
    m.forward_auth.as_ref().map(forward_auth)
}

fn forward_auth(auth: &dynamic::ForwardAuth) -> Result<Arc<dyn Middleware>, String> {
    let spec = ForwardAuthSpec {
        address: address(&auth.address.value)?,
        forward_headers: ForwardHeaders::from_option(auth.trust_forward_header),
        auth_response_headers: header_names("authResponseHeaders", &auth.auth_response_headers)?,
        auth_response_headers_regex: match auth.auth_response_headers_regex.value.as_str() {
            "" => None,
            pattern => {
                Some(Regex::new(pattern).map_err(|e| {
                    format!("forwardAuth.authResponseHeadersRegex {pattern:?}: {e}")
                })?)
            }
        },
        auth_request_headers: header_names("authRequestHeaders", &auth.auth_request_headers)?,
        add_auth_cookies_to_response: auth.add_auth_cookies_to_response.iter().cloned().collect(),
        header_field: match auth.header_field.as_str() {
            "" => None,
            name => Some(header_name("headerField", name)?),
        },
        forward_body: auth.forward_body,
        // Negative is Traefik's "unlimited"; the middleware bounds it anyway.
        max_body_size: auth.max_body_size.and_then(|n| u64::try_from(n).ok()),
        max_response_body_size: auth
            .max_response_body_size
            .and_then(|n| u64::try_from(n).ok()),
        preserve_location_header: auth.preserve_location_header,
        preserve_request_method: auth.preserve_request_method,
        auth_signin_url: match auth.auth_signin_url.as_str() {
            "" => None,
            url => Some(HeaderValue::from_str(url).map_err(|_| {
                format!("forwardAuth.authSigninURL {url:?} cannot be a Location header")
            })?),
        },
        timeout: AUTH_TIMEOUT,
    };
    let settings = match &auth.tls {
        Some(tls) => client_settings(tls)?,
        None => TransportSettings::default(),
    };
    let middleware =
        ForwardAuth::new(spec, settings).map_err(|e| format!("forwardAuth.tls: {e}"))?;
    Ok(Arc::new(middleware))
}

fn address(value: &str) -> Result<Uri, String> {
    if value.is_empty() {
        return Err("forwardAuth.address is required".into());
    }
    let uri: Uri = value
        .parse()
        .map_err(|e| format!("forwardAuth.address {value:?} is not a URL: {e}"))?;
    let scheme_ok = uri
        .scheme_str()
        .is_some_and(|s| s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https"));
    if !scheme_ok || uri.authority().is_none() {
        return Err(format!(
            "forwardAuth.address {value:?} must be an http:// or https:// URL with a host"
        ));
    }
    Ok(uri)
}

fn header_name(option: &str, name: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("forwardAuth.{option}: {name:?} is not a header name"))
}

fn header_names(option: &str, names: &[String]) -> Result<Vec<HeaderName>, String> {
    names.iter().map(|name| header_name(option, name)).collect()
}

/// `tls{ca, cert, key, insecureSkipVerify}`: each of `ca`, `cert` and `key` a path or the
/// PEM itself, as Traefik reads them; `cert` and `key` go together.
fn client_settings(tls: &ClientTls) -> Result<TransportSettings, String> {
    if tls.ca_optional.is_some() {
        tracing::warn!("forwardAuth.tls.caOptional is deprecated and has no effect");
    }
    let mut settings = TransportSettings {
        insecure_skip_verify: tls.insecure_skip_verify,
        ..TransportSettings::default()
    };
    if !tls.ca.is_empty() {
        settings.root_cas = load_roots(std::slice::from_ref(&tls.ca))
            .map_err(|e| format!("forwardAuth.tls.ca: {e}"))?;
    }
    match (tls.cert.is_empty(), tls.key.is_empty()) {
        (true, true) => {}
        (false, false) => {
            let cert_pem =
                read_pem_or_path(&tls.cert).map_err(|e| format!("forwardAuth.tls.cert: {e}"))?;
            let key_pem =
                read_pem_or_path(&tls.key).map_err(|e| format!("forwardAuth.tls.key: {e}"))?;
            let chain = CertificateDer::pem_slice_iter(&cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("forwardAuth.tls.cert: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(&key_pem)
                .map_err(|e| format!("forwardAuth.tls.key: {e}"))?;
            settings.client_certificates.push((chain, key));
        }
        _ => return Err("forwardAuth.tls: both cert and key must be set".into()),
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_must_be_an_http_url_with_a_host() {
        assert!(address("https://auth.example/verify?x=1").is_ok());
        for bad in ["", "/verify", "ftp://auth/x", "auth:9000"] {
            assert!(address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cert_without_key_is_refused() {
        let tls = ClientTls {
            cert: "client.crt".into(),
            ..ClientTls::default()
        };
        let error = client_settings(&tls).unwrap_err();
        assert!(error.contains("both cert and key"), "{error}");
    }

    #[test]
    fn a_missing_ca_file_names_the_option() {
        let tls = ClientTls {
            ca: "/nonexistent/ca.pem".into(),
            ..ClientTls::default()
        };
        let error = client_settings(&tls).unwrap_err();
        assert!(error.starts_with("forwardAuth.tls.ca: "), "{error}");
    }
}
