//! The real rule compilers, as configuration validation sees them.

use crate::config::validate::RuleChecker;

/// Validates TCP rules with `l4` and HTTP rules with `l7`.
pub struct Compilers;

impl RuleChecker for Compilers {
    fn tcp(&self, rule: &str, tls: bool) -> Result<(), String> {
        l4::tcp::rule::TcpRule::compile(rule, tls)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn http(&self, rule: &str) -> Result<(), String> {
        l7::rule::HttpRule::compile(rule)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn http_domains(&self, rule: &str) -> Option<Vec<String>> {
        l7::rule::HttpRule::compile(rule).ok().map(|r| r.hosts())
    }
}
