//! The text side shared by the middlewares' two small expression languages
//! (`buffering.retryExpression` and `circuitBreaker.expression`): a cursor over the
//! expression that skips spaces and consumes tokens, and the six comparisons both write
//! the same way. Each language keeps its own grammar and values.

/// A comparison between a value the expression reads and a number written in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Equal,
    NotEqual,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

impl Comparison {
    /// Whether `actual <comparison> operand`.
    pub fn holds<T: PartialOrd>(self, actual: T, operand: T) -> bool {
        match self {
            Comparison::Equal => actual == operand,
            Comparison::NotEqual => actual != operand,
            Comparison::Less => actual < operand,
            Comparison::LessOrEqual => actual <= operand,
            Comparison::Greater => actual > operand,
            Comparison::GreaterOrEqual => actual >= operand,
        }
    }
}

/// Where a parser stands in the expression text; `at` is a byte offset, for errors.
pub(crate) struct Cursor<'a> {
    pub text: &'a str,
    pub at: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(text: &'a str) -> Self {
        Cursor { text, at: 0 }
    }

    pub fn skip_spaces(&mut self) {
        let rest = &self.text[self.at..];
        self.at += rest.len() - rest.trim_start().len();
    }

    /// Whether only spaces are left.
    pub fn at_end(&mut self) -> bool {
        self.skip_spaces();
        self.at >= self.text.len()
    }

    /// Consumes `token` (after spaces) if it comes next.
    pub fn eat(&mut self, token: &str) -> bool {
        self.skip_spaces();
        if self.text[self.at..].starts_with(token) {
            self.at += token.len();
            true
        } else {
            false
        }
    }

    /// Consumes a comparison operator if one comes next (two-character operators first,
    /// so that `>=` is not read as `>`).
    pub fn comparison(&mut self) -> Option<Comparison> {
        [
            (">=", Comparison::GreaterOrEqual),
            ("<=", Comparison::LessOrEqual),
            ("==", Comparison::Equal),
            ("!=", Comparison::NotEqual),
            (">", Comparison::Greater),
            ("<", Comparison::Less),
        ]
        .into_iter()
        .find(|(token, _)| self.eat(token))
        .map(|(_, comparison)| comparison)
    }

    /// Consumes (after spaces) the longest run of characters `part` accepts.
    pub fn take_while(&mut self, part: impl Fn(char) -> bool) -> &'a str {
        self.skip_spaces();
        let rest = &self.text[self.at..];
        let len = rest.find(|c: char| !part(c)).unwrap_or(rest.len());
        self.at += len;
        &rest[..len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_operator_wins_and_spaces_are_skipped() {
        let mut cursor = Cursor::new("  >= 12.5 x");
        assert_eq!(cursor.comparison(), Some(Comparison::GreaterOrEqual));
        assert_eq!(
            cursor.take_while(|c| c.is_ascii_digit() || c == '.'),
            "12.5"
        );
        assert_eq!(cursor.comparison(), None);
        assert!(!cursor.at_end());
        assert!(cursor.eat("x"));
        assert!(cursor.at_end());
        assert!(Comparison::Less.holds(1, 2) && !Comparison::Equal.holds(1.0, 2.0));
    }
}
