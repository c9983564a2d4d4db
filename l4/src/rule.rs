//! The rule language of Traefik v3 routers, shared by TCP (`l4::tcp::rule`) and HTTP
//! (`l7::rule`): matcher calls such as ``Host(`a.com`)`` combined with `&&`, `||`, `!` and
//! parentheses. This module owns the syntax: it turns rule text into an [`Expr`] of
//! [`Call`]s with the column of every mistake, and reads the argument forms both layers
//! share (Go regexps, client IP networks). Which matcher names exist, how many arguments
//! each takes and what they mean belong to the TCP and HTTP matcher modules, which map the
//! calls with [`Expr::try_map`].

use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;
use regex::Regex;
use thiserror::Error;

/// Deepest nesting of parentheses and `!` accepted; a hostile `((((…` rule gets an error
/// instead of exhausting the stack.
pub const MAX_DEPTH: usize = 64;

/// A rule that does not parse or does not compile, located in the rule text.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("column {column}: {message}")]
pub struct RuleError {
    pub message: String,
    /// 1-based, counted in characters of the rule text.
    pub column: usize,
}

impl RuleError {
    pub fn new(column: usize, message: impl Into<String>) -> Self {
        RuleError {
            message: message.into(),
            column,
        }
    }
}

/// One matcher call as written, arguments already unquoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub name: String,
    pub args: Vec<String>,
    /// Column of the first character of the name.
    pub column: usize,
}

impl Call {
    /// The error for a matcher name nobody defines, worded like Traefik's.
    pub fn not_defined(&self) -> RuleError {
        RuleError::new(self.column, format!("{} is not defined", self.name))
    }

    /// Checks the argument count against the accepted ones, with Traefik's wording.
    pub fn expect_args(&self, accepted: &[usize]) -> Result<(), RuleError> {
        if accepted.contains(&self.args.len()) {
            return Ok(());
        }
        // Go prints slices as `[1 2]`; users compare our message with Traefik's.
        let mut list = String::new();
        for (i, n) in accepted.iter().enumerate() {
            if i > 0 {
                list.push(' ');
            }
            let _ = write!(list, "{n}");
        }
        Err(self.error(format!(
            "unexpected number of parameters; got {}, expected one of [{list}]",
            self.args.len()
        )))
    }

    /// An error about this call, prefixed with the matcher name and placed at its column.
    pub fn error(&self, message: impl std::fmt::Display) -> RuleError {
        RuleError::new(self.column, format!("{}: {message}", self.name))
    }
}

/// A boolean expression over matchers `M`.
///
/// Chains of one operator (`a || b || c`) are stored as balanced trees so that a rule with
/// thousands of alternatives stays shallow; evaluation order is still left to right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr<M> {
    Leaf(M),
    Not(Box<Expr<M>>),
    And(Box<Expr<M>>, Box<Expr<M>>),
    Or(Box<Expr<M>>, Box<Expr<M>>),
}

impl<M> Expr<M> {
    /// Replaces every leaf, keeping the shape; the first error wins.
    pub fn try_map<N, E>(self, f: &mut impl FnMut(M) -> Result<N, E>) -> Result<Expr<N>, E> {
        Ok(match self {
            Expr::Leaf(m) => Expr::Leaf(f(m)?),
            Expr::Not(e) => Expr::Not(Box::new(e.try_map(f)?)),
            Expr::And(a, b) => Expr::And(Box::new(a.try_map(f)?), Box::new(b.try_map(f)?)),
            Expr::Or(a, b) => Expr::Or(Box::new(a.try_map(f)?), Box::new(b.try_map(f)?)),
        })
    }

    /// Evaluates left to right, skipping the right side of `&&`/`||` when the left decides.
    pub fn eval(&self, f: &mut impl FnMut(&M) -> bool) -> bool {
        match self {
            Expr::Leaf(m) => f(m),
            Expr::Not(e) => !e.eval(f),
            Expr::And(a, b) => a.eval(f) && b.eval(f),
            Expr::Or(a, b) => a.eval(f) || b.eval(f),
        }
    }

    /// The leaves in rule-text order.
    pub fn leaves(&self) -> Vec<&M> {
        let mut out = Vec::new();
        self.collect_leaves(&mut out);
        out
    }

    fn collect_leaves<'a>(&'a self, out: &mut Vec<&'a M>) {
        match self {
            Expr::Leaf(m) => out.push(m),
            Expr::Not(e) => e.collect_leaves(out),
            Expr::And(a, b) | Expr::Or(a, b) => {
                a.collect_leaves(out);
                b.collect_leaves(out);
            }
        }
    }
}

/// Whether a matcher name as written names `canonical`, the way Traefik registers names:
/// exactly, all lower case, all upper case, or capitalised then lower (`Pathprefix`).
pub fn matcher_name_is(written: &str, canonical: &str) -> bool {
    if written == canonical {
        return true;
    }
    let lower = canonical.to_ascii_lowercase();
    if written == lower || written == canonical.to_ascii_uppercase() {
        return true;
    }
    let mut chars = lower.chars();
    match chars.next() {
        Some(first) => {
            written.len() == lower.len()
                && written.starts_with(first.to_ascii_uppercase())
                && written[1..] == *chars.as_str()
        }
        None => false,
    }
}

/// Parses rule text into an expression of matcher calls.
pub fn parse(src: &str) -> Result<Expr<Call>, RuleError> {
    let mut p = Parser {
        chars: src.chars().collect(),
        pos: 0,
        depth: 0,
    };
    p.skip_ws();
    if p.peek().is_none() {
        return Err(RuleError::new(1, "empty rule"));
    }
    let expr = p.or_expr()?;
    p.skip_ws();
    match p.peek() {
        None => Ok(expr),
        Some(')') => Err(p.error("unexpected ')' without matching '('")),
        Some(_) => Err(p.after_operand("expected '&&' or '||'")),
    }
}

#[derive(Clone, Copy)]
enum Op {
    And,
    Or,
}

impl Op {
    fn token(self) -> &'static str {
        match self {
            Op::And => "&&",
            Op::Or => "||",
        }
    }
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn column(&self) -> usize {
        self.pos + 1
    }

    fn error(&self, message: impl Into<String>) -> RuleError {
        RuleError::new(self.column(), message)
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, token: &str) -> bool {
        let len = token.chars().count();
        let matches = self
            .chars
            .get(self.pos..self.pos + len)
            .is_some_and(|s| s.iter().copied().eq(token.chars()));
        if matches {
            self.pos += len;
        }
        matches
    }

    /// Where an operand ended and something other than an operator follows.
    fn after_operand(&self, expected: &str) -> RuleError {
        match self.peek() {
            Some('&') => self.error("unexpected '&': did you mean '&&'?"),
            Some('|') => self.error("unexpected '|': did you mean '||'?"),
            Some(c) => self.error(format!("unexpected '{c}': {expected}")),
            None => self.error(format!("unexpected end of rule: {expected}")),
        }
    }

    fn or_expr(&mut self) -> Result<Expr<Call>, RuleError> {
        self.chain(Op::Or)
    }

    /// One operand or more joined by `op`; `&&` operands are unary expressions and `||`
    /// operands are `&&` chains, which makes `&&` bind tighter.
    fn chain(&mut self, op: Op) -> Result<Expr<Call>, RuleError> {
        let first = self.operand(op)?;
        let mut rest = Vec::new();
        loop {
            self.skip_ws();
            if !self.eat(op.token()) {
                break;
            }
            self.skip_ws();
            if self.peek().is_none() {
                return Err(self.error(format!(
                    "unexpected end of rule: expected a matcher after '{}'",
                    op.token()
                )));
            }
            rest.push(self.operand(op)?);
        }
        Ok(balanced(op, first, rest))
    }

    fn operand(&mut self, op: Op) -> Result<Expr<Call>, RuleError> {
        match op {
            Op::Or => self.chain(Op::And),
            Op::And => self.unary(),
        }
    }

    fn enter(&mut self) -> Result<(), RuleError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(format!(
                "rule nests parentheses and '!' more than {MAX_DEPTH} levels deep"
            )));
        }
        Ok(())
    }

    fn unary(&mut self) -> Result<Expr<Call>, RuleError> {
        self.skip_ws();
        if self.peek() == Some('!') {
            self.enter()?;
            self.pos += 1;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr<Call>, RuleError> {
        match self.peek() {
            Some('(') => {
                self.enter()?;
                let open = self.column();
                self.pos += 1;
                self.skip_ws();
                if self.peek() == Some(')') {
                    return Err(self.error("expected a matcher inside '()'"));
                }
                let inner = self.or_expr()?;
                self.skip_ws();
                if !self.eat(")") {
                    let base = self.after_operand("expected ')'");
                    return Err(RuleError::new(
                        base.column,
                        format!("{} to close '(' at column {open}", base.message),
                    ));
                }
                self.depth -= 1;
                Ok(inner)
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => self.call(),
            Some(c) => Err(self.error(format!("unexpected '{c}': expected a matcher"))),
            None => Err(self.error("unexpected end of rule: expected a matcher")),
        }
    }

    fn call(&mut self) -> Result<Expr<Call>, RuleError> {
        let column = self.column();
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            self.pos += 1;
        }
        let name: String = self.chars[start..self.pos].iter().collect();
        self.skip_ws();
        match self.peek() {
            Some('(') => self.pos += 1,
            // A bare word is an undefined identifier to Traefik's Go-expression parser.
            None | Some('&' | '|' | ')') => {
                return Err(RuleError::new(column, format!("{name} is not defined")));
            }
            Some(c) => {
                return Err(self.error(format!("unexpected '{c}': expected '(' after {name}")));
            }
        }
        let mut args = Vec::new();
        loop {
            self.skip_ws();
            if self.peek() == Some(')') {
                self.pos += 1;
                break;
            }
            let arg_column = self.column();
            let arg = self.string()?;
            if arg.is_empty() {
                return Err(RuleError::new(
                    arg_column,
                    format!("empty args for matcher {name}"),
                ));
            }
            args.push(arg);
            self.skip_ws();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some(')') => {
                    self.pos += 1;
                    break;
                }
                Some(c) => return Err(self.error(format!("unexpected '{c}': expected ',' or ')'"))),
                None => return Err(self.error("unexpected end of rule: expected ')'")),
            }
        }
        if args.is_empty() {
            return Err(RuleError::new(
                column,
                format!("no args for matcher {name}"),
            ));
        }
        Ok(Expr::Leaf(Call { name, args, column }))
    }

    fn string(&mut self) -> Result<String, RuleError> {
        match self.peek() {
            Some('`') => self.raw_string(),
            Some('"') => self.quoted_string(),
            Some('\'') => {
                Err(self.error("single-quoted arguments are not allowed: use `…` or \"…\""))
            }
            Some(c) => Err(self.error(format!(
                "unexpected '{c}': expected an argument in backticks or double quotes"
            ))),
            None => Err(self.error("unexpected end of rule: expected an argument")),
        }
    }

    /// A Go raw string: no escapes; carriage returns are dropped as Go does.
    fn raw_string(&mut self) -> Result<String, RuleError> {
        let open = self.column();
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                Some('`') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some('\r') => self.pos += 1,
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
                None => return Err(RuleError::new(open, "unterminated string")),
            }
        }
    }

    /// A Go interpreted string. Octal and `\x` escapes are bytes, so the text is assembled
    /// as bytes and must be UTF-8 in the end.
    fn quoted_string(&mut self) -> Result<String, RuleError> {
        let open = self.column();
        self.pos += 1;
        let mut bytes = Vec::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(RuleError::new(open, "unterminated string"));
            };
            self.pos += 1;
            match c {
                '"' => break,
                '\n' => return Err(RuleError::new(open, "unterminated string")),
                '\\' => self.escape(&mut bytes, open)?,
                c => {
                    let mut buf = [0; 4];
                    bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        String::from_utf8(bytes)
            .map_err(|_| RuleError::new(open, "string escapes do not form valid UTF-8"))
    }

    fn escape(&mut self, bytes: &mut Vec<u8>, open: usize) -> Result<(), RuleError> {
        // The backslash was consumed, so `pos` is its 1-based column.
        let at = self.pos;
        let Some(e) = self.peek() else {
            return Err(RuleError::new(open, "unterminated string"));
        };
        self.pos += 1;
        let simple = match e {
            'a' => Some(0x07),
            'b' => Some(0x08),
            'f' => Some(0x0c),
            'n' => Some(b'\n'),
            'r' => Some(b'\r'),
            't' => Some(b'\t'),
            'v' => Some(0x0b),
            '\\' => Some(b'\\'),
            '"' => Some(b'"'),
            _ => None,
        };
        if let Some(b) = simple {
            bytes.push(b);
            return Ok(());
        }
        let bad = |message: String| RuleError::new(at, message);
        match e {
            '0'..='7' => {
                self.pos -= 1;
                let v = self
                    .digits(3, 8)
                    .ok_or_else(|| bad("invalid octal escape: expected 3 octal digits".into()))?;
                let b =
                    u8::try_from(v).map_err(|_| bad(format!("octal escape value {v} > 255")))?;
                bytes.push(b);
            }
            'x' => {
                let v = self
                    .digits(2, 16)
                    .ok_or_else(|| bad("invalid \\x escape: expected 2 hex digits".into()))?;
                // Two hex digits always fit a byte.
                bytes.push(v as u8);
            }
            'u' | 'U' => {
                let n = if e == 'u' { 4 } else { 8 };
                let v = self
                    .digits(n, 16)
                    .ok_or_else(|| bad(format!("invalid \\{e} escape: expected {n} hex digits")))?;
                let c = char::from_u32(v)
                    .ok_or_else(|| bad(format!("escape \\{e} is an invalid Unicode code point")))?;
                let mut buf = [0; 4];
                bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
            other => return Err(bad(format!("unknown escape sequence \\{other}"))),
        }
        Ok(())
    }

    fn digits(&mut self, n: usize, radix: u32) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            let d = self.peek()?.to_digit(radix)?;
            v = v * radix + d;
            self.pos += 1;
        }
        Some(v)
    }
}

/// The order routers are tried in, for TCP and HTTP alike: priority descending, then
/// precedence ascending (the binary ranks routers by their provider's place in
/// `providers.precedence`), then name ascending. Traefik leaves equal priorities of one
/// provider in an undefined order (map iteration and an unstable sort); ordering them by
/// name makes routing repeatable across reloads.
pub fn match_order(a: (i64, u32, &str), b: (i64, u32, &str)) -> std::cmp::Ordering {
    b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then_with(|| a.2.cmp(b.2))
}

/// Whether `ip` is in `net`, seeing `::ffff:a.b.c.d` and `a.b.c.d` as the same client.
pub fn ip_in(net: &IpNet, ip: IpAddr) -> bool {
    let mapped = match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
        v6 => v6,
    };
    net.contains(&ip) || net.contains(&ip.to_canonical()) || net.contains(&mapped)
}

/// Parses a `ClientIP` argument: an address or a CIDR network, v4 or v6.
pub fn parse_client_ip(arg: &str) -> Result<IpNet, String> {
    if let Ok(ip) = arg.parse::<IpAddr>() {
        return Ok(IpNet::from(ip.to_canonical()));
    }
    arg.parse::<IpNet>()
        .map_err(|_| format!("{arg:?} is neither an IP address nor a CIDR network"))
}

/// Compiles a matcher regexp written for Go's RE2, which Traefik uses.
///
/// Rust's `regex` reads almost the same syntax. The differences users hit are handled here:
/// Go takes a `{` that does not start a repetition (`{host:.+}`, left over from Traefik v2
/// templates) as a literal, and inside a bracket class Go takes `[`, `&&` and `~~` literally
/// where Rust nests or combines classes. Matching stays unanchored, as in Go.
pub fn go_regex(pattern: &str) -> Result<Regex, String> {
    Regex::new(&go_to_rust_syntax(pattern)).map_err(|e| {
        let text = e.to_string();
        // The crate's message spans several lines with a caret diagram; keep the reason.
        let reason = text
            .lines()
            .find_map(|l| l.strip_prefix("error: "))
            .unwrap_or(&text);
        format!("error parsing regexp {pattern:?}: {reason}")
    })
}

fn go_to_rust_syntax(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut in_class = false;
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        i += 1;
        match c {
            '\\' => {
                out.push(c);
                let Some(&n) = chars.get(i) else { break };
                out.push(n);
                i += 1;
                // `\p{Greek}` and `\x{41}`: those braces belong to the escape.
                if matches!(n, 'p' | 'P' | 'x') && chars.get(i) == Some(&'{') {
                    i = copy_through(&chars, i, "}", &mut out);
                }
            }
            '[' if !in_class => {
                in_class = true;
                out.push(c);
                // A `]` right after `[` or `[^` is a literal member, not the end.
                if chars.get(i) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
                if chars.get(i) == Some(&']') {
                    out.push_str("\\]");
                    i += 1;
                }
            }
            '[' if chars.get(i) == Some(&':') => {
                out.push(c);
                i = copy_through(&chars, i, ":]", &mut out);
            }
            '[' | '&' | '~' if in_class => {
                out.push('\\');
                out.push(c);
            }
            ']' if in_class => {
                in_class = false;
                out.push(c);
            }
            '{' if !in_class => match repetition_len(&chars[i - 1..]) {
                Some(len) => {
                    out.extend(&chars[i - 1..i - 1 + len]);
                    i += len - 1;
                }
                None => out.push_str("\\{"),
            },
            '}' if !in_class => out.push_str("\\}"),
            c => out.push(c),
        }
    }
    out
}

/// Copies `chars[from..]` up to and including `end` (or to the end of the pattern) and
/// returns the index after it.
fn copy_through(chars: &[char], from: usize, end: &str, out: &mut String) -> usize {
    let end: Vec<char> = end.chars().collect();
    let mut i = from;
    while let Some(&c) = chars.get(i) {
        out.push(c);
        i += 1;
        if chars[from..i].ends_with(&end) {
            break;
        }
    }
    i
}

/// Length of a Go repetition `{n}`, `{n,}` or `{n,m}` at the start of `s`, if it is one.
fn repetition_len(s: &[char]) -> Option<usize> {
    let mut i = 1;
    let digits = |i: &mut usize| {
        let start = *i;
        while s.get(*i).is_some_and(char::is_ascii_digit) {
            *i += 1;
        }
        *i > start
    };
    if !digits(&mut i) {
        return None;
    }
    if s.get(i) == Some(&',') {
        i += 1;
        digits(&mut i);
    }
    (s.get(i) == Some(&'}')).then_some(i + 1)
}

/// Joins `first` and `rest` into a tree of depth log2(n), keeping their order.
fn balanced(op: Op, first: Expr<Call>, mut rest: Vec<Expr<Call>>) -> Expr<Call> {
    if rest.is_empty() {
        return first;
    }
    // The right half of [first, rest..] starts at rest[mid - 1]; it is never empty.
    let mid = rest.len().div_ceil(2);
    let mut right = rest.split_off(mid - 1);
    let right_first = right.remove(0);
    let a = Box::new(balanced(op, first, rest));
    let b = Box::new(balanced(op, right_first, right));
    match op {
        Op::And => Expr::And(a, b),
        Op::Or => Expr::Or(a, b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, args: &[&str], column: usize) -> Expr<Call> {
        Expr::Leaf(Call {
            name: name.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            column,
        })
    }

    fn and(a: Expr<Call>, b: Expr<Call>) -> Expr<Call> {
        Expr::And(Box::new(a), Box::new(b))
    }

    fn or(a: Expr<Call>, b: Expr<Call>) -> Expr<Call> {
        Expr::Or(Box::new(a), Box::new(b))
    }

    fn not(a: Expr<Call>) -> Expr<Call> {
        Expr::Not(Box::new(a))
    }

    fn err(src: &str) -> RuleError {
        match parse(src) {
            Ok(e) => panic!("{src:?} parsed as {e:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn parses_a_single_call() {
        assert_eq!(parse("Host(`a.com`)"), Ok(call("Host", &["a.com"], 1)));
    }

    #[test]
    fn parses_several_arguments_and_whitespace_anywhere() {
        assert_eq!(
            parse("  Header ( `X-A` ,\t\"b\" )  "),
            Ok(call("Header", &["X-A", "b"], 3))
        );
    }

    #[test]
    fn and_binds_tighter_than_or() {
        let e = parse("A(`1`) || B(`2`) && C(`3`)").unwrap();
        assert_eq!(
            e,
            or(
                call("A", &["1"], 1),
                and(call("B", &["2"], 11), call("C", &["3"], 21))
            )
        );
        let e = parse("A(`1`) && B(`2`) || C(`3`)").unwrap();
        assert_eq!(
            e,
            or(
                and(call("A", &["1"], 1), call("B", &["2"], 11)),
                call("C", &["3"], 21)
            )
        );
    }

    #[test]
    fn parentheses_group() {
        let e = parse("A(`1`) && (B(`2`) || C(`3`))").unwrap();
        assert_eq!(
            e,
            and(
                call("A", &["1"], 1),
                or(call("B", &["2"], 12), call("C", &["3"], 22))
            )
        );
    }

    #[test]
    fn not_applies_to_the_next_operand() {
        let e = parse("!A(`1`) && !(B(`2`) || C(`3`))").unwrap();
        assert_eq!(
            e,
            and(
                not(call("A", &["1"], 2)),
                not(or(call("B", &["2"], 14), call("C", &["3"], 24)))
            )
        );
        assert_eq!(parse("!!A(`1`)"), Ok(not(not(call("A", &["1"], 3)))));
    }

    #[test]
    fn long_chains_are_balanced_and_keep_order() {
        let src = vec!["A(`x`)"; 1000].join(" || ");
        let e = parse(&src).unwrap();
        fn depth(e: &Expr<Call>) -> usize {
            match e {
                Expr::Leaf(_) => 1,
                Expr::Not(a) => 1 + depth(a),
                Expr::And(a, b) | Expr::Or(a, b) => 1 + depth(a).max(depth(b)),
            }
        }
        assert!(depth(&e) <= 11, "depth {}", depth(&e));
        let columns: Vec<usize> = e.leaves().iter().map(|c| c.column).collect();
        let expected: Vec<usize> = (0..1000).map(|i| 1 + i * 10).collect();
        assert_eq!(columns, expected);
    }

    #[test]
    fn double_quoted_arguments_take_go_escapes() {
        let e = parse(r#"A("a\tb\\c\"d\x41\101\u00e9\U0001F600\n")"#).unwrap();
        assert_eq!(e, call("A", &["a\tb\\c\"dAAé😀\n"], 1));
    }

    #[test]
    fn raw_arguments_keep_backslashes_and_drop_carriage_returns() {
        assert_eq!(parse("A(`^a\\.b\r$`)"), Ok(call("A", &["^a\\.b$"], 1)));
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let e = err("A(`é`) && B(`x`) &&");
        assert_eq!(e.column, 20);
    }

    #[test]
    fn bare_word_is_not_defined() {
        let e = err("foobar");
        assert_eq!((e.column, e.message.as_str()), (1, "foobar is not defined"));
        let e = err("Host(`a`) && foobar");
        assert_eq!(
            (e.column, e.message.as_str()),
            (14, "foobar is not defined")
        );
    }

    #[test]
    fn errors_carry_the_column() {
        let cases = [
            ("", 1, "empty rule"),
            ("   ", 1, "empty rule"),
            (
                "(Host(`a`)",
                11,
                "unexpected end of rule: expected ')' to close '(' at column 1",
            ),
            ("Host(`a`))", 10, "unexpected ')' without matching '('"),
            (
                "Host(`a`) &&",
                13,
                "unexpected end of rule: expected a matcher after '&&'",
            ),
            (
                "Host(`a`) ||  ",
                15,
                "unexpected end of rule: expected a matcher after '||'",
            ),
            ("|| Host(`a`)", 1, "unexpected '|': expected a matcher"),
            (
                "Host(`a`) & Path(`/`)",
                11,
                "unexpected '&': did you mean '&&'?",
            ),
            (
                "Host(`a`) Path(`/`)",
                11,
                "unexpected 'P': expected '&&' or '||'",
            ),
            ("Host(`a`", 9, "unexpected end of rule: expected ')'"),
            ("Host(`a`;", 9, "unexpected ';': expected ',' or ')'"),
            ("Host(`a)", 6, "unterminated string"),
            ("Host(\"a)", 6, "unterminated string"),
            ("Host(\"a\nb\")", 6, "unterminated string"),
            (r#"Host("a\qb")"#, 8, r"unknown escape sequence \q"),
            (r#"Host("\400")"#, 7, "octal escape value 256 > 255"),
            (
                r#"Host("\xZ1")"#,
                7,
                r"invalid \x escape: expected 2 hex digits",
            ),
            (
                r#"Host("\uD800")"#,
                7,
                r"escape \u is an invalid Unicode code point",
            ),
            (
                r#"Host("\xff")"#,
                6,
                "string escapes do not form valid UTF-8",
            ),
            (
                "Host('a')",
                6,
                "single-quoted arguments are not allowed: use `…` or \"…\"",
            ),
            ("Host(``)", 6, "empty args for matcher Host"),
            ("Host(`a`, \"\")", 11, "empty args for matcher Host"),
            ("Host()", 1, "no args for matcher Host"),
            (
                "Host(a)",
                6,
                "unexpected 'a': expected an argument in backticks or double quotes",
            ),
            ("Host `a`", 6, "unexpected '`': expected '(' after Host"),
            ("()", 2, "expected a matcher inside '()'"),
            ("Host(`a`) && ?", 14, "unexpected '?': expected a matcher"),
        ];
        for (src, column, message) in cases {
            let e = err(src);
            assert_eq!(
                (e.column, e.message.as_str()),
                (column, message),
                "rule {src:?}"
            );
        }
    }

    #[test]
    fn display_puts_the_column_first() {
        assert_eq!(
            err("(Host(`a`) && Path(`/`)").to_string(),
            "column 24: unexpected end of rule: expected ')' to close '(' at column 1"
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let ok = format!("{}A(`x`){}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(parse(&ok).is_ok());
        let hostile = "(".repeat(100_000);
        let e = err(&hostile);
        assert_eq!(e.column, MAX_DEPTH + 1);
        let nots = format!("{}A(`x`)", "!".repeat(100_000));
        assert_eq!(err(&nots).column, MAX_DEPTH + 1);
    }

    #[test]
    fn matcher_names_follow_traefik_casing() {
        for written in ["PathPrefix", "pathprefix", "PATHPREFIX", "Pathprefix"] {
            assert!(matcher_name_is(written, "PathPrefix"), "{written}");
        }
        for written in ["pathPrefix", "PathprefiX", "Path", "PathPrefixx", ""] {
            assert!(!matcher_name_is(written, "PathPrefix"), "{written}");
        }
        assert!(matcher_name_is("Clientip", "ClientIP"));
        assert!(!matcher_name_is("ClientIp", "ClientIP"));
    }

    #[test]
    fn eval_short_circuits_left_to_right() {
        let e = parse("A(`1`) || B(`2`) && C(`3`)").unwrap();
        let mut seen = Vec::new();
        let result = e.eval(&mut |c: &Call| {
            seen.push(c.name.clone());
            c.name == "A"
        });
        assert!(result);
        assert_eq!(seen, ["A"]);

        let e = parse("!A(`1`) && B(`2`)").unwrap();
        let mut seen = Vec::new();
        assert!(!e.eval(&mut |c: &Call| {
            seen.push(c.name.clone());
            c.name == "A"
        }));
        assert_eq!(seen, ["A"]);
    }

    #[test]
    fn try_map_keeps_shape_and_stops_at_first_error() {
        let e = parse("!A(`1`) || B(`22`)").unwrap();
        let lens: Expr<usize> = e
            .clone()
            .try_map(&mut |c: Call| Ok::<_, ()>(c.args[0].len()))
            .unwrap();
        assert_eq!(
            lens,
            Expr::Or(
                Box::new(Expr::Not(Box::new(Expr::Leaf(1)))),
                Box::new(Expr::Leaf(2))
            )
        );
        let mut calls = 0;
        let failed = e.try_map(&mut |c: Call| {
            calls += 1;
            Err::<(), _>(c.not_defined())
        });
        assert_eq!(failed, Err(RuleError::new(2, "A is not defined")));
        assert_eq!(calls, 1);
    }

    #[test]
    fn expect_args_words_like_traefik() {
        let Ok(Expr::Leaf(c)) = parse("Query(`a`, `b`, `c`)") else {
            panic!("not a leaf")
        };
        assert_eq!(c.expect_args(&[1, 2, 3]), Ok(()));
        assert_eq!(
            c.expect_args(&[1, 2]).map_err(|e| e.message),
            Err("Query: unexpected number of parameters; got 3, expected one of [1 2]".into())
        );
    }

    #[test]
    fn go_regex_takes_non_repetition_braces_literally() {
        let re = go_regex("{host:.+}").unwrap();
        assert!(re.is_match("{host:abc}"));
        assert!(!re.is_match("abc"));
        let re = go_regex("^a{2}b{1,}c{1,2}}$").unwrap();
        assert!(re.is_match("aabbcc}"));
        assert!(go_regex("^{subdomain:[a-z]+}.example.com$").is_ok());
    }

    #[test]
    fn go_regex_keeps_escape_braces_and_classes() {
        let re = go_regex(r"^\x{41}[[:digit:]]{2}$").unwrap();
        assert!(re.is_match("A77"));
        assert!(!re.is_match("A7"));
        let re = go_regex("^[]a]+$").unwrap();
        assert!(re.is_match("]a]"));
        let re = go_regex("^[a&&b[]+$").unwrap();
        assert!(re.is_match("&[ab"));
    }

    #[test]
    fn go_regex_is_unanchored_and_reports_errors_on_one_line() {
        assert!(go_regex("b").unwrap().is_match("abc"));
        let e = go_regex("a(").unwrap_err();
        assert!(e.starts_with("error parsing regexp \"a(\": "), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }
}
