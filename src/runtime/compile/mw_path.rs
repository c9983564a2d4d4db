//! Builds the path and redirect middlewares (`stripPrefix`, `addPrefix`, `replacePath`,
//! `stripPrefixRegex`, `replacePathRegex`, `redirectRegex`, `encodedCharacters`,
//! `contentType`) from their validated configuration.

use std::sync::Arc;

use l7::middleware::Middleware;
use l7::middleware::add_prefix::AddPrefix;
use l7::middleware::content_type::ContentType;
use l7::middleware::encoded_characters::EncodedCharacters;
use l7::middleware::redirect_regex::RedirectRegex;
use l7::middleware::replace_path::ReplacePath;
use l7::middleware::replace_path_regex::ReplacePathRegex;
use l7::middleware::strip_prefix::StripPrefix;
use l7::middleware::strip_prefix_regex::StripPrefixRegex;

use crate::config::dynamic::HttpMiddleware;

/// The middleware `m` defines if it is one of this module's types (`None` otherwise), or
/// what is wrong with its options.
pub(super) fn build(
    _name: &str,
    m: &HttpMiddleware,
) -> Option<Result<Arc<dyn Middleware>, String>> {
    if let Some(s) = &m.strip_prefix {
        return Some(Ok(Arc::new(StripPrefix {
            prefixes: s.prefixes.clone(),
        })));
    }
    if let Some(a) = &m.add_prefix {
        return Some(boxed(AddPrefix::new(&a.prefix)));
    }
    if let Some(r) = &m.replace_path {
        return Some(boxed(ReplacePath::new(&r.path)));
    }
    if let Some(s) = &m.strip_prefix_regex {
        let patterns: Vec<&str> = s.regex.iter().map(|r| r.value.as_str()).collect();
        return Some(boxed(StripPrefixRegex::new(&patterns)));
    }
    if let Some(r) = &m.replace_path_regex {
        return Some(boxed(ReplacePathRegex::new(&r.regex.value, &r.replacement)));
    }
    if let Some(r) = &m.redirect_regex {
        return Some(boxed(RedirectRegex::new(
            &r.regex.value,
            &r.replacement,
            r.permanent,
        )));
    }
    if let Some(e) = &m.encoded_characters {
        return Some(Ok(Arc::new(EncodedCharacters {
            allow_encoded_slash: e.allow_encoded_slash,
            allow_encoded_back_slash: e.allow_encoded_back_slash,
            allow_encoded_null_character: e.allow_encoded_null_character,
            allow_encoded_semicolon: e.allow_encoded_semicolon,
            allow_encoded_percent: e.allow_encoded_percent,
            allow_encoded_question_mark: e.allow_encoded_question_mark,
            allow_encoded_hash: e.allow_encoded_hash,
        })));
    }
    if let Some(c) = &m.content_type {
        // Traefik v3: the middleware's presence enables detection; only an explicit
        // (deprecated) `autoDetect: false` turns it off.
        return Some(Ok(Arc::new(ContentType {
            auto_detect: c.auto_detect.unwrap_or(true),
        })));
    }
    None
}

fn boxed<M: Middleware, E: std::fmt::Display>(
    built: Result<M, E>,
) -> Result<Arc<dyn Middleware>, String> {
    built
        .map(|mw| Arc::new(mw) as Arc<dyn Middleware>)
        .map_err(|e| e.to_string())
}
