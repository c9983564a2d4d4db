//! `sallyport check`: validate the static and dynamic configuration and print every
//! problem as `file:line:col: message`, exiting non-zero if there is any error.
//!
//! Router-level problems (an unknown service, a bad rule) only disable that router at
//! run time, but `check` reports them as errors: a configuration that silently drops a
//! route is what this command exists to catch. Warnings (a problem Traefik only logs,
//! such as a TLS-option conflict) are printed without failing the check, as are the
//! routers that can never match ([`shadow`]) and the services and middlewares no enabled
//! router uses ([`unused`]).

mod shadow;
mod unused;

use crate::config::{ConfigError, DynamicConfig, Report, StaticConfig, validate};
use crate::runtime::compile::compile;
use crate::runtime::internal::Internal;
use crate::runtime::provider::Source;
use crate::runtime::rules::Compilers;

/// What `check` found.
#[derive(Debug, Default)]
pub struct Findings {
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<ConfigError>,
}

/// Loads the dynamic configuration of `st`'s file provider (with entrypoint models applied)
/// and validates it as a reload would; `Ok(None)` without a file provider.
pub fn load_validated(
    st: &StaticConfig,
) -> Result<Option<(DynamicConfig, Report)>, Vec<ConfigError>> {
    let Some(source) = Source::from_static(st) else {
        return Ok(None);
    };
    let mut dy = source.load()?;
    crate::config::models::apply(st, &mut dy);
    let report = validate::validate(st, &dy, &Compilers);
    Ok(Some((dy, report)))
}

/// Checks the dynamic configuration of `st`'s file provider.
pub async fn check_dynamic(st: &StaticConfig) -> Findings {
    let (dy, report) = match load_validated(st) {
        Ok(Some(loaded)) => loaded,
        Ok(None) => return Findings::default(),
        Err(errors) => {
            return Findings {
                errors,
                warnings: Vec::new(),
            };
        }
    };
    let mut errors: Vec<ConfigError> = report.errors();
    // Compiling also loads certificates and builds TLS options and transports.
    let acme = crate::acme::Acme::new(st);
    errors.extend(acme.problems().iter().cloned().map(ConfigError::unlocated));
    match Internal::start(st, acme, Default::default()).await {
        Ok(internal) => errors.extend(
            compile(
                st,
                &dy,
                &report,
                &internal,
                &Default::default(),
                crate::runtime::compile::Carried {
                    servers: &Default::default(),
                    states: &l7::service::ServiceStates::new(),
                    transports: &l7::transport::TransportCache::new(),
                    certs: &mut Default::default(),
                    server_up: None,
                    retirements: &Default::default(),
                },
            )
            .problems,
        ),
        Err(e) => errors.push(ConfigError::unlocated(format!(
            "cannot start internal services: {e}"
        ))),
    }
    let mut seen = std::collections::HashSet::new();
    errors.retain(|e| seen.insert(e.to_string()));
    let mut warnings = dy.warnings.clone();
    warnings.extend(report.all_warnings());
    warnings.extend(shadow::shadowed_routers(st, &dy, &report));
    warnings.extend(unused::unused_objects(&dy, &report));
    Findings { errors, warnings }
}
