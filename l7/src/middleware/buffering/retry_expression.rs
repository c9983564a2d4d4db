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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Equal,
    NotEqual,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

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
        let mut parser = ExpressionParser { text, at: 0 };
        let expression = parser.or()?;
        parser.skip_spaces();
        if parser.at < text.len() {
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
                match comparison {
                    Comparison::Equal => actual == *operand,
                    Comparison::NotEqual => actual != *operand,
                    Comparison::Less => actual < *operand,
                    Comparison::LessOrEqual => actual <= *operand,
                    Comparison::Greater => actual > *operand,
                    Comparison::GreaterOrEqual => actual >= *operand,
                }
            }
            RetryExpression::Not(inner) => !inner.eval(response, tries),
            RetryExpression::And(a, b) => a.eval(response, tries) && b.eval(response, tries),
            RetryExpression::Or(a, b) => a.eval(response, tries) || b.eval(response, tries),
        }
    }
}

struct ExpressionParser<'a> {
    text: &'a str,
    at: usize,
}

impl ExpressionParser<'_> {
    fn error(&self, what: &'static str) -> InvalidRetryExpression {
        InvalidRetryExpression { at: self.at, what }
    }

    fn skip_spaces(&mut self) {
        let rest = &self.text[self.at..];
        self.at += rest.len() - rest.trim_start().len();
    }

    /// Consumes `token` (after spaces) if it comes next.
    fn eat(&mut self, token: &str) -> bool {
        self.skip_spaces();
        if self.text[self.at..].starts_with(token) {
            self.at += token.len();
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<RetryExpression, InvalidRetryExpression> {
        let mut left = self.and()?;
        while self.eat("||") {
            left = RetryExpression::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<RetryExpression, InvalidRetryExpression> {
        let mut left = self.unary()?;
        while self.eat("&&") {
            left = RetryExpression::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<RetryExpression, InvalidRetryExpression> {
        // `!=` never starts a term, so a leading `!` is a negation.
        if self.eat("!") {
            return Ok(RetryExpression::Not(Box::new(self.unary()?)));
        }
        if self.eat("(") {
            let inner = self.or()?;
            if !self.eat(")") {
                return Err(self.error("expected )"));
            }
            return Ok(inner);
        }
        if self.eat("IsNetworkError()") {
            return Ok(RetryExpression::IsNetworkError);
        }
        let value = if self.eat("Attempts()") {
            Value::Attempts
        } else if self.eat("ResponseCode()") {
            Value::ResponseCode
        } else {
            return Err(self.error("expected IsNetworkError(), Attempts(), ResponseCode(), ! or ("));
        };
        let comparison = [
            ("==", Comparison::Equal),
            ("!=", Comparison::NotEqual),
            ("<=", Comparison::LessOrEqual),
            (">=", Comparison::GreaterOrEqual),
            ("<", Comparison::Less),
            (">", Comparison::Greater),
        ]
        .into_iter()
        .find(|(token, _)| self.eat(token))
        .map(|(_, comparison)| comparison)
        .ok_or_else(|| self.error("expected a comparison (==, !=, <, <=, >, >=)"))?;
        self.skip_spaces();
        let rest = &self.text[self.at..];
        let len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let operand = rest[..len]
            .parse()
            .map_err(|_| self.error("expected a whole number"))?;
        self.at += len;
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
