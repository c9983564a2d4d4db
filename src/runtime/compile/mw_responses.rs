//! Configuration → spec for the middlewares that rework responses: `compress`
//! ([`l7::middleware::compress`]) and `errors` ([`l7::middleware::errors`], whose error
//! service the compiler builds first).

use std::sync::Arc;

use ::http::StatusCode;
use ::http::header::HeaderName;
use l7::handler::SharedHandler;
use l7::middleware::Middleware;
use l7::middleware::compress::{
    Compress as CompressSpec, ContentTypes, DEFAULT_MIN_RESPONSE_BODY_BYTES, Encoding, MediaType,
};
use l7::middleware::errors::ErrorPages;
use l7::middleware::retry::parse_status_ranges;

use crate::config::dynamic::{Compress, ErrorPage, HttpMiddleware};

/// The `compress` middleware `m` defines, or `None` when `m` is of another type.
pub(super) fn build(m: &HttpMiddleware) -> Option<Result<Arc<dyn Middleware>, String>> {
    m.compress.as_ref().map(build_compress)
}

fn build_compress(c: &Compress) -> Result<Arc<dyn Middleware>, String> {
    if c.encodings.is_empty() {
        return Err("compress.encodings must list at least one encoding".into());
    }
    let encodings = c
        .encodings
        .iter()
        .map(|name| {
            Encoding::from_name(name).ok_or_else(|| {
                format!("compress.encodings: unsupported encoding {name:?} (gzip, br or zstd)")
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let default_encoding = match c.default_encoding.as_str() {
        "" => None,
        name => Some(
            Encoding::from_name(name)
                .filter(|e| encodings.contains(e))
                .ok_or_else(|| {
                    format!("compress.defaultEncoding {name:?} is not one of compress.encodings")
                })?,
        ),
    };
    let media_types = |option: &str, list: &[String]| {
        list.iter()
            .map(|t| {
                MediaType::parse(t).ok_or_else(|| format!("{option}: {t:?} is not a media type"))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let content_types = match (
        c.excluded_content_types.is_empty(),
        c.included_content_types.is_empty(),
    ) {
        (false, false) => {
            return Err(
                "compress: excludedContentTypes and includedContentTypes are mutually exclusive"
                    .into(),
            );
        }
        (true, false) => ContentTypes::Included(media_types(
            "compress.includedContentTypes",
            &c.included_content_types,
        )?),
        _ => ContentTypes::Excluded(media_types(
            "compress.excludedContentTypes",
            &c.excluded_content_types,
        )?),
    };
    Ok(Arc::new(CompressSpec {
        encodings,
        default_encoding,
        // As Traefik's: 0 or less keeps the default.
        min_response_body_bytes: usize::try_from(c.min_response_body_bytes)
            .ok()
            .filter(|&n| n > 0)
            .unwrap_or(DEFAULT_MIN_RESPONSE_BODY_BYTES),
        content_types,
    }))
}

/// `errors`, its error service already built.
pub(super) fn build_errors(
    e: &ErrorPage,
    service: SharedHandler,
) -> Result<Arc<dyn Middleware>, String> {
    let status = parse_status_ranges(&e.status).map_err(|err| format!("errors.status: {err}"))?;
    let status_rewrites = e
        .status_rewrites
        .iter()
        .map(|(from, &to)| {
            let range = parse_status_ranges(std::slice::from_ref(from))
                .map_err(|err| format!("errors.statusRewrites: {err}"))?;
            let to = u16::try_from(to)
                .ok()
                .and_then(|to| StatusCode::from_u16(to).ok())
                .filter(|to| (100..=599).contains(&to.as_u16()))
                .ok_or_else(|| format!("errors.statusRewrites: {to} is not an HTTP status"))?;
            Ok(range.into_iter().map(move |r| (r, to)))
        })
        .collect::<Result<Vec<_>, String>>()?
        .into_iter()
        .flatten()
        .collect();
    let forwarded_headers = if e.error_request_headers.is_empty() {
        None
    } else {
        Some(
            e.error_request_headers
                .iter()
                .map(|h| {
                    HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                        format!("errors.errorRequestHeaders: {h:?} is not a header name")
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        )
    };
    let spec = ErrorPages {
        status,
        status_rewrites,
        service,
        query: e.query.clone(),
        forwarded_headers,
    };
    // Every status and URL keep a template that parses as a path, so check one.
    let sample = spec.page_path(StatusCode::NOT_FOUND, StatusCode::NOT_FOUND, "/");
    if sample.parse::<::http::uri::PathAndQuery>().is_err() {
        return Err(format!("errors.query {:?} is not a valid path", e.query));
    }
    Ok(Arc::new(spec))
}

#[cfg(test)]
mod tests {
    use l7::handler::Noop;

    use super::*;

    fn compress_error(edit: impl FnOnce(&mut Compress)) -> String {
        let mut c = Compress::default();
        edit(&mut c);
        build_compress(&c).err().unwrap_or_default()
    }

    #[test]
    fn compress_options_are_checked() {
        assert!(build_compress(&Compress::default()).is_ok());
        assert!(compress_error(|c| c.encodings.clear()).contains("at least one"));
        assert!(compress_error(|c| c.encodings = vec!["deflate".into()]).contains("\"deflate\""));
        assert!(
            compress_error(|c| {
                c.encodings = vec!["gzip".into()];
                c.default_encoding = "br".into();
            })
            .contains("defaultEncoding")
        );
        assert!(
            compress_error(|c| {
                c.excluded_content_types = vec!["text/html".into()];
                c.included_content_types = vec!["text/css".into()];
            })
            .contains("mutually exclusive")
        );
        assert!(
            compress_error(|c| c.included_content_types = vec!["html".into()])
                .contains("not a media type")
        );
    }

    fn errors_error(edit: impl FnOnce(&mut ErrorPage)) -> String {
        let mut e = ErrorPage {
            status: vec!["500-599".into()],
            query: "/{status}.html".into(),
            ..ErrorPage::default()
        };
        edit(&mut e);
        build_errors(&e, Arc::new(Noop)).err().unwrap_or_default()
    }

    #[test]
    fn errors_options_are_checked() {
        assert_eq!(errors_error(|_| {}), "");
        assert!(errors_error(|e| e.status = vec!["5xx".into()]).starts_with("errors.status"));
        assert!(
            errors_error(|e| {
                e.status_rewrites.insert("502-504".into(), 1000);
            })
            .contains("1000 is not an HTTP status")
        );
        assert!(
            errors_error(|e| {
                e.status_rewrites.insert("50x".into(), 500);
            })
            .starts_with("errors.statusRewrites")
        );
        assert!(
            errors_error(|e| e.error_request_headers = vec!["bad header".into()])
                .contains("not a header name")
        );
        assert!(errors_error(|e| e.query = "/a b".into()).contains("not a valid path"));
    }
}
