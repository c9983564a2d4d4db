//! Configuration → spec for the traffic-shaping middlewares: `buffering`
//! ([`l7::middleware::buffering`]), `retry` ([`l7::middleware::retry`]) and
//! `circuitBreaker` ([`l7::middleware::circuit_breaker`]).

use std::sync::Arc;

use l7::middleware::Middleware;
use l7::middleware::buffering::{Buffering as BufferingSpec, RetryExpression};
use l7::middleware::circuit_breaker::{
    BreakerStates, CircuitBreaker as BreakerSpec, Expression, KeptCircuitBreaker,
};
use l7::middleware::retry::{self, Retry as RetrySpec};

use crate::config::Duration;
use crate::config::dynamic::{Buffering, CircuitBreaker, HttpMiddleware, Retry};

/// The traffic middleware `m` defines, or `None` when `m` is of another type. (`circuitBreaker`
/// keeps state across reloads: the compiler builds it with [`kept_circuit_breaker`].)
pub(super) fn build(m: &HttpMiddleware) -> Option<Result<Arc<dyn Middleware>, String>> {
    if let Some(b) = &m.buffering {
        return Some(build_buffering(b));
    }
    if let Some(r) = &m.retry {
        return Some(build_retry(r));
    }
    None
}

/// A byte count option: negative values are refused, 0 keeps its "no limit" meaning.
fn byte_count(option: &str, value: i64) -> Result<u64, String> {
    u64::try_from(value).map_err(|_| format!("{option} must not be negative (got {value})"))
}

fn build_buffering(b: &Buffering) -> Result<Arc<dyn Middleware>, String> {
    byte_count("buffering.memRequestBodyBytes", b.mem_request_body_bytes)?;
    byte_count("buffering.memResponseBodyBytes", b.mem_response_body_bytes)?;
    let retry_expression = if b.retry_expression.is_empty() {
        None
    } else {
        Some(
            RetryExpression::parse(&b.retry_expression)
                .map_err(|e| format!("buffering: {e} in {:?}", b.retry_expression))?,
        )
    };
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
        retry_expression,
    };
    Ok(Arc::new(spec))
}

fn build_retry(r: &Retry) -> Result<Arc<dyn Middleware>, String> {
    let attempts = u32::try_from(r.attempts)
        .ok()
        .filter(|&a| a >= 1)
        .ok_or_else(|| format!("retry.attempts must be at least 1 (got {})", r.attempts))?;
    let initial_interval = non_negative("retry.initialInterval", r.initial_interval)?;
    let timeout = non_negative("retry.timeout", r.timeout)?;
    let spec = RetrySpec {
        attempts,
        initial_interval,
        timeout: (!timeout.is_zero()).then_some(timeout),
        // Negative: no limit, every body is held for replay.
        max_request_body_bytes: match r.max_request_body_bytes {
            None => Some(retry::DEFAULT_MAX_REQUEST_BODY_BYTES),
            Some(max) => u64::try_from(max).ok(),
        },
        status: retry::parse_status_ranges(&r.status).map_err(|e| format!("retry.status: {e}"))?,
        disable_retry_on_network_error: r.disable_retry_on_network_error,
        retry_non_idempotent_method: r.retry_non_idempotent_method,
    };
    Ok(Arc::new(spec))
}

fn non_negative(option: &str, value: Duration) -> Result<std::time::Duration, String> {
    value
        .to_std()
        .ok_or_else(|| format!("{option} must not be negative (got {value})"))
}

/// A `circuitBreaker` named `name`, whose state `states` keeps across reloads.
pub(super) fn kept_circuit_breaker(
    name: &str,
    c: &CircuitBreaker,
    states: &Arc<BreakerStates>,
) -> Result<Arc<dyn Middleware>, String> {
    let expression = Expression::parse(&c.expression.value)
        .map_err(|e| format!("circuitBreaker.expression {:?}: {e}", c.expression.value))?;
    let response_code = u16::try_from(c.response_code)
        .ok()
        .filter(|code| (100..=599).contains(code))
        .and_then(|code| http::StatusCode::from_u16(code).ok())
        .ok_or_else(|| {
            format!(
                "circuitBreaker.responseCode must be a status 100-599 (got {})",
                c.response_code
            )
        })?;
    let spec = BreakerSpec {
        expression,
        check_period: non_negative("circuitBreaker.checkPeriod", c.check_period)?,
        fallback_duration: non_negative("circuitBreaker.fallbackDuration", c.fallback_duration)?,
        recovery_duration: non_negative("circuitBreaker.recoveryDuration", c.recovery_duration)?,
        response_code,
    };
    Ok(Arc::new(KeptCircuitBreaker {
        name: name.to_owned(),
        spec,
        states: states.clone(),
    }))
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
        assert!(build(&HttpMiddleware::default()).is_none());
    }

    #[test]
    fn buffering_with_defaults_builds() {
        assert!(matches!(
            build(&buffering(Buffering::default())),
            Some(Ok(_))
        ));
    }

    fn retry(r: Retry) -> HttpMiddleware {
        HttpMiddleware {
            retry: Some(r),
            ..Default::default()
        }
    }

    #[test]
    fn retry_builds_with_attempts_and_statuses() {
        let r = Retry {
            attempts: 3,
            status: vec!["500-599".into()],
            ..Default::default()
        };
        assert!(matches!(build(&retry(r)), Some(Ok(_))));
    }

    #[test]
    fn retry_without_attempts_is_refused() {
        let Some(Err(message)) = build(&retry(Retry::default())) else {
            panic!("attempts 0 must be refused");
        };
        assert!(message.contains("retry.attempts"), "{message}");
    }

    #[test]
    fn a_bad_retry_status_is_a_message_naming_it() {
        let r = Retry {
            attempts: 2,
            status: vec!["5xx".into()],
            ..Default::default()
        };
        let Some(Err(message)) = build(&retry(r)) else {
            panic!("5xx must be refused");
        };
        assert!(
            message.contains("retry.status") && message.contains("5xx"),
            "{message}"
        );
    }

    fn breaker(expression: &str) -> Result<Arc<dyn Middleware>, String> {
        let mut c = CircuitBreaker::default();
        c.expression.value = expression.to_owned();
        kept_circuit_breaker("breaker@file", &c, &Default::default())
    }

    #[test]
    fn circuit_breaker_builds_from_traefiks_expressions() {
        let built = breaker("NetworkErrorRatio() > 0.5 || LatencyAtQuantileMS(50.0) > 100");
        assert!(built.is_ok());
    }

    #[test]
    fn a_bad_breaker_expression_is_a_message_quoting_it() {
        let Err(message) = breaker("Latency() > 1") else {
            panic!("an unknown function must be refused");
        };
        assert!(
            message.contains("circuitBreaker.expression \"Latency() > 1\""),
            "{message}"
        );
    }

    #[test]
    fn a_bad_retry_expression_is_a_message_quoting_it() {
        let b = Buffering {
            retry_expression: "Attempts() <".into(),
            ..Default::default()
        };
        let Some(Err(message)) = build(&buffering(b)) else {
            panic!("an incomplete expression must be refused");
        };
        assert!(message.contains("\"Attempts() <\""), "{message}");
    }

    #[test]
    fn a_negative_limit_is_a_message_naming_the_option() {
        let b = Buffering {
            max_response_body_bytes: -1,
            ..Default::default()
        };
        let Some(Err(message)) = build(&buffering(b)) else {
            panic!("a negative limit must be refused");
        };
        assert!(message.contains("maxResponseBodyBytes"), "{message}");
    }
}
