//! Temporary: replaced by the validation module from the config branch.
use super::ConfigError;
use super::dynamic::DynamicConfig;
use super::static_cfg::StaticConfig;

pub trait RuleChecker {
    fn tcp(&self, rule: &str, tls: bool) -> Result<(), String>;
    fn http(&self, rule: &str) -> Result<(), String>;
}

pub struct Report;

impl Report {
    pub fn errors(&self) -> Vec<ConfigError> {
        Vec::new()
    }
    pub fn tcp_router_enabled(&self, _name: &str) -> bool {
        true
    }
}

pub fn validate(_st: &StaticConfig, _dy: &DynamicConfig, _rules: &dyn RuleChecker) -> Report {
    Report
}
