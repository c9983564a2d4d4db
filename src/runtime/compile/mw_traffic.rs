//! Configuration → spec for the traffic-shaping middlewares: `buffering`
//! ([`l7::middleware::buffering`]).
//!
//! `buffering.retryExpression` is accepted but not applied (a warning says so): a router
//! asking for retries on some responses is still served, without them.

use std::sync::Arc;

use l7::middleware::Middleware;
use l7::middleware::buffering::Buffering as BufferingSpec;

use crate::config::dynamic::{Buffering, HttpMiddleware};

/// The traffic middleware `m` defines, or `None` when `m` is of another type.
pub(super) fn build(name: &str, m: &HttpMiddleware) -> Option<Result<Arc<dyn Middleware>, String>> {
    if let Some(b) = &m.buffering {
        return Some(build_buffering(name, b));
    }
    None
}

/// A byte count option: negative values are refused, 0 keeps its "no limit" meaning.
fn byte_count(option: &str, value: i64) -> Result<u64, String> {
    u64::try_from(value).map_err(|_| format!("{option} must not be negative (got {value})"))
}

fn build_buffering(name: &str, b: &Buffering) -> Result<Arc<dyn Middleware>, String> {
    let spec = BufferingSpec {
        max_request_body_bytes: byte_count(
            "buffering.maxRequestBodyBytes",
            b.max_request_body_bytes,
        )?,
        max_response_body_bytes: byte_count(
            "buffering.maxResponseBodyBytes",
            b.max_response_body_bytes,
        )?,
        disable_request_buffer: b.disable_request_buffer,
        disable_response_buffer: b.disable_response_buffer,
    };
    byte_count("buffering.memRequestBodyBytes", b.mem_request_body_bytes)?;
    byte_count("buffering.memResponseBodyBytes", b.mem_response_body_bytes)?;
    if !b.retry_expression.is_empty() {
        tracing::warn!(
            "middleware {name}: buffering.retryExpression is not applied; requests are not retried"
        );
    }
    Ok(Arc::new(spec))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffering(b: Buffering) -> HttpMiddleware {
        HttpMiddleware {
            buffering: Some(b),
            ..Default::default()
        }
    }

    #[test]
    fn other_types_are_not_ours() {
        assert!(build("x", &HttpMiddleware::default()).is_none());
    }

    #[test]
    fn buffering_with_defaults_builds() {
        assert!(matches!(
            build("x", &buffering(Buffering::default())),
            Some(Ok(_))
        ));
    }

    #[test]
    fn a_negative_limit_is_a_message_naming_the_option() {
        let b = Buffering {
            max_response_body_bytes: -1,
            ..Default::default()
        };
        let Some(Err(message)) = build("x", &buffering(b)) else {
            panic!("a negative limit must be refused");
        };
        assert!(message.contains("maxResponseBodyBytes"), "{message}");
    }
}
