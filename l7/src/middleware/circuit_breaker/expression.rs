//! The `circuitBreaker` expression: Traefik's syntax
//! (`NetworkErrorRatio() > 0.5 || LatencyAtQuantileMS(50.0) > 100`) parsed once into a tree
//! of comparisons, evaluated against metric values the breaker supplies.

/// A parsed breaker expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expression {
    Compare(Metric, Comparison, f64),
    And(Box<Expression>, Box<Expression>),
    Or(Box<Expression>, Box<Expression>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Metric {
    NetworkErrorRatio,
    /// Statuses in `[.0, .1)` over statuses in `[.2, .3)`.
    ResponseCodeRatio(u16, u16, u16, u16),
    LatencyAtQuantileMs(f64),
}

pub use crate::middleware::expression_text::Comparison;
use crate::middleware::expression_text::Cursor;

/// Why an expression does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid expression at byte {at}: {what}")]
pub struct InvalidExpression {
    pub at: usize,
    pub what: String,
}

impl Expression {
    /// Parses Traefik's syntax, e.g. `NetworkErrorRatio() > 0.5 || LatencyAtQuantileMS(50.0) > 100`.
    pub fn parse(text: &str) -> Result<Expression, InvalidExpression> {
        let mut parser = Parser {
            c: Cursor::new(text),
        };
        let expression = parser.or()?;
        if !parser.c.at_end() {
            return Err(parser.error("unexpected text after the expression"));
        }
        Ok(expression)
    }

    /// Whether the expression holds, `value` giving each metric's current value.
    pub(super) fn eval(&self, value: &impl Fn(Metric) -> f64) -> bool {
        match self {
            Expression::Compare(metric, comparison, threshold) => {
                comparison.holds(value(*metric), *threshold)
            }
            Expression::And(a, b) => a.eval(value) && b.eval(value),
            Expression::Or(a, b) => a.eval(value) || b.eval(value),
        }
    }
}

struct Parser<'a> {
    c: Cursor<'a>,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> InvalidExpression {
        InvalidExpression {
            at: self.c.at,
            what: what.to_owned(),
        }
    }

    fn or(&mut self) -> Result<Expression, InvalidExpression> {
        let mut left = self.and()?;
        while self.c.eat("||") {
            left = Expression::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expression, InvalidExpression> {
        let mut left = self.primary()?;
        while self.c.eat("&&") {
            left = Expression::And(Box::new(left), Box::new(self.primary()?));
        }
        Ok(left)
    }

    fn primary(&mut self) -> Result<Expression, InvalidExpression> {
        if self.c.eat("(") {
            let inner = self.or()?;
            if !self.c.eat(")") {
                return Err(self.error("expected )"));
            }
            return Ok(inner);
        }
        let metric = self.metric()?;
        let comparison = self.comparison()?;
        let value = self.number()?;
        Ok(Expression::Compare(metric, comparison, value))
    }

    fn metric(&mut self) -> Result<Metric, InvalidExpression> {
        let name = self.c.take_while(|c| c.is_ascii_alphanumeric());
        if !self.c.eat("(") {
            return Err(self.error("expected a function call such as NetworkErrorRatio()"));
        }
        let mut args = Vec::new();
        if !self.c.eat(")") {
            loop {
                args.push(self.number()?);
                if self.c.eat(")") {
                    break;
                }
                if !self.c.eat(",") {
                    return Err(self.error("expected , or )"));
                }
            }
        }
        let code = |value: f64| {
            (value.fract() == 0.0 && (0.0..=999.0).contains(&value)).then_some(value as u16)
        };
        match (name, args.as_slice()) {
            ("NetworkErrorRatio", []) => Ok(Metric::NetworkErrorRatio),
            ("ResponseCodeRatio", &[a, b, c, d]) => match (code(a), code(b), code(c), code(d)) {
                (Some(a), Some(b), Some(c), Some(d)) => Ok(Metric::ResponseCodeRatio(a, b, c, d)),
                _ => Err(self.error("ResponseCodeRatio takes four status codes")),
            },
            ("LatencyAtQuantileMS", &[q]) if (0.0..=100.0).contains(&q) => {
                Ok(Metric::LatencyAtQuantileMs(q))
            }
            _ => Err(self.error(&format!(
                "unknown function {name} with {} arguments; expected NetworkErrorRatio(), ResponseCodeRatio(a, b, c, d) or LatencyAtQuantileMS(0-100)",
                args.len()
            ))),
        }
    }

    fn comparison(&mut self) -> Result<Comparison, InvalidExpression> {
        self.c
            .comparison()
            .ok_or_else(|| self.error("expected a comparison (>, <, >=, <=, ==, !=)"))
    }

    fn number(&mut self) -> Result<f64, InvalidExpression> {
        let at = self.c.at;
        self.c
            .take_while(|c| c.is_ascii_digit() || c == '.')
            .parse::<f64>()
            .map_err(|_| InvalidExpression {
                at,
                what: "expected a number".to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_parse_with_precedence_and_parentheses() {
        let parsed =
            Expression::parse("NetworkErrorRatio() > 0.5 || ResponseCodeRatio(500, 600, 0, 600) > 0.25 && LatencyAtQuantileMS(50.0) >= 100")
                .unwrap();
        let Expression::Or(_, right) = parsed else {
            panic!("|| binds loosest: {parsed:?}");
        };
        assert!(matches!(*right, Expression::And(..)));
        assert!(Expression::parse("(NetworkErrorRatio() > 0.5)").is_ok());
        for bad in [
            "",
            "NetworkErrorRatio()",
            "Foo() > 1",
            "ResponseCodeRatio(500) > 0",
            "NetworkErrorRatio() > 0.5 &&",
            "NetworkErrorRatio() > 0.5 junk",
        ] {
            assert!(Expression::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn evaluation_compares_the_supplied_values() {
        let expression =
            Expression::parse("NetworkErrorRatio() > 0.5 && LatencyAtQuantileMS(50) <= 100")
                .unwrap();
        let values = |network: f64, latency: f64| {
            move |metric: Metric| match metric {
                Metric::NetworkErrorRatio => network,
                _ => latency,
            }
        };
        assert!(expression.eval(&values(0.6, 100.0)));
        assert!(!expression.eval(&values(0.5, 100.0)));
        assert!(!expression.eval(&values(0.6, 101.0)));
    }
}
