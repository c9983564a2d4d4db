//! `buffering.retryExpression`: when to send a buffered request again, parsed once from
//! Traefik's syntax (`IsNetworkError() && Attempts() < 2`) and evaluated against each
//! response.

use http::Response;

use crate::error::Source;
use crate::handler::{Body, response_error};

/// A parsed `retryExpression`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryExpression {
    IsNetworkError,
    Compare(Value, Comparison, u32),
    Not(Box<RetryExpression>),
    And(Box<RetryExpression>, Box<RetryExpression>),
    Or(Box<RetryExpression>, Box<RetryExpression>),
}

/// What a comparison in a `retryExpression` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    /// `Attempts()`: tries so far.
    Attempts,
    /// `ResponseCode()`: the response status.
    ResponseCode,
}

pub use crate::middleware::expression_text::Comparison;
use crate::middleware::expression_text::Cursor;

/// Why a `retryExpression` does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid retryExpression at byte {at}: {what}")]
pub struct InvalidRetryExpression {
    pub at: usize,
    pub what: &'static str,
}

impl RetryExpression {
    /// Parses e.g. `IsNetworkError() && Attempts() < 2 || ResponseCode() == 503`.
    pub fn parse(text: &str) -> Result<RetryExpression, InvalidRetryExpression> {
        let mut parser = ExpressionParser {
            c: Cursor::new(text),
        };
        let expression = parser.or()?;
        if !parser.c.at_end() {
            return Err(parser.error("unexpected text after the expression"));
        }
        Ok(expression)
    }

    pub(super) fn eval(&self, response: &Response<Body>, tries: u32) -> bool {
        match self {
            RetryExpression::IsNetworkError => {
                response_error(response).is_some_and(|kind| kind.origin() == Source::Upstream)
            }
            RetryExpression::Compare(value, comparison, operand) => {
                let actual = match value {
                    Value::Attempts => tries,
                    Value::ResponseCode => u32::from(response.status().as_u16()),
                };
                comparison.holds(actual, *operand)
            }
            RetryExpression::Not(inner) => !inner.eval(response, tries),
            RetryExpression::And(a, b) => a.eval(response, tries) && b.eval(response, tries),
            RetryExpression::Or(a, b) => a.eval(response, tries) || b.eval(response, tries),
        }
    }
}

struct ExpressionParser<'a> {
    c: Cursor<'a>,
}

impl ExpressionParser<'_> {
    fn error(&self, what: &'static str) -> InvalidRetryExpression {
        InvalidRetryExpression {
            at: self.c.at,
            what,
        }
    }

    fn or(&mut self) -> Result<RetryExpression, InvalidRetryExpression> {
        let mut left = self.and()?;
        while self.c.eat("||") {
            left = RetryExpression::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<RetryExpression, InvalidRetryExpression> {
        let mut left = self.unary()?;
        while self.c.eat("&&") {
            left = RetryExpression::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<RetryExpression, InvalidRetryExpression> {
        // `!=` never starts a term, so a leading `!` is a negation.
        if self.c.eat("!") {
            return Ok(RetryExpression::Not(Box::new(self.unary()?)));
        }
        if self.c.eat("(") {
            let inner = self.or()?;
            if !self.c.eat(")") {
                return Err(self.error("expected )"));
            }
            return Ok(inner);
        }
        if self.c.eat("IsNetworkError()") {
            return Ok(RetryExpression::IsNetworkError);
        }
        let value = if self.c.eat("Attempts()") {
            Value::Attempts
        } else if self.c.eat("ResponseCode()") {
            Value::ResponseCode
        } else {
            return Err(self.error("expected IsNetworkError(), Attempts(), ResponseCode(), ! or ("));
        };
        let comparison = self
            .c
            .comparison()
            .ok_or_else(|| self.error("expected a comparison (==, !=, <, <=, >, >=)"))?;
        let at = self.c.at;
        let operand = self
            .c
            .take_while(|c| c.is_ascii_digit())
            .parse()
            .map_err(|_| InvalidRetryExpression {
                at,
                what: "expected a whole number",
            })?;
        Ok(RetryExpression::Compare(value, comparison, operand))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ProxyErrorKind;
    use crate::handler::{empty_body, error_response};

    #[test]
    fn retry_expressions_parse_and_bad_ones_are_refused() {
        assert!(
            RetryExpression::parse(
                "(IsNetworkError() || ResponseCode() == 503) && Attempts() <= 2"
            )
            .is_ok()
        );
        for bad in [
            "",
            "Attempts()",
            "Foo() > 1",
            "IsNetworkError() &&",
            "Attempts() < x",
            "IsNetworkError() junk",
        ] {
            assert!(RetryExpression::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn expressions_read_the_response_and_the_tries() {
        let expression =
            RetryExpression::parse("IsNetworkError() && Attempts() < 2 || ResponseCode() == 503")
                .unwrap();
        let failed = error_response(ProxyErrorKind::UpstreamConnect);
        assert!(expression.eval(&failed, 1));
        assert!(!expression.eval(&failed, 2));
        let mut unavailable = Response::new(empty_body());
        *unavailable.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        assert!(expression.eval(&unavailable, 5));
        assert!(!expression.eval(&Response::new(empty_body()), 1));
    }
}
