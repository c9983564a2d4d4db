//! `sallyport check`: validate the static and dynamic configuration and print every
//! problem as `file:line:col: message`, exiting non-zero if there is any.
//!
//! Router-level problems (an unknown service, a bad rule) only disable that router at
//! run time, but `check` reports them as errors: a configuration that silently drops a
//! route is what this command exists to catch.

use crate::config::{ConfigError, StaticConfig, validate};
use crate::runtime::compile::compile;
use crate::runtime::internal::Internal;
use crate::runtime::provider::Source;
use crate::runtime::rules::Compilers;

/// Checks the dynamic configuration of `st`'s file provider. Returns every problem.
pub async fn check_dynamic(st: &StaticConfig) -> Vec<ConfigError> {
    let Some(source) = Source::from_static(st) else {
        return Vec::new();
    };
    let dy = match source.load() {
        Ok(dy) => dy,
        Err(errors) => return errors,
    };
    let report = validate::validate(st, &dy, &Compilers);
    let mut problems: Vec<ConfigError> = report.errors();
    // Compiling also loads certificates and builds TLS options and transports.
    match Internal::start().await {
        Ok(internal) => problems.extend(compile(st, &dy, &report, &internal).problems),
        Err(e) => problems.push(ConfigError::unlocated(format!(
            "cannot start internal services: {e}"
        ))),
    }
    problems.dedup_by(|a, b| a.to_string() == b.to_string());
    problems
}
