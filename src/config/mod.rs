//! Configuration: the one place that knows Traefik's schema.
//!
//! - [`source`] reads YAML and TOML (and flags / environment variables) into a located tree;
//! - [`de`] deserializes that tree into the schema types with Traefik's conversions;
//! - [`static_cfg`] is the install configuration (entrypoints, providers, logs…) and where
//!   it is read from;
//! - [`dynamic`] is the file-provider routing schema, [`file_provider`] loads it from a file
//!   or a directory and qualifies names (`name@file`);
//! - [`validate`] computes what Traefik's API would report for every router, service and
//!   middleware (enabled / warning / disabled, with reasons and locations).
//!
//! Nothing here opens sockets or builds runtime objects: later stages take the validated
//! configuration and compile it into `l4`/`l7` specifications.

pub mod de;
pub mod dynamic;
pub mod file_provider;
pub mod merge;
pub mod models;
pub mod precedence;
pub mod source;
pub mod static_cfg;
pub mod validate;

use std::fmt;

pub use de::{Duration, Located, from_node};
pub use dynamic::DynamicConfig;
pub use file_provider::{load_dynamic_dir, load_dynamic_file};
pub use source::{Location, Node, NodeKind};
pub use static_cfg::{LoadedStatic, StaticConfig, load_static};
pub use validate::{Report, RuleChecker, Status, validate};

/// A configuration problem, with where it was written when that is known.
/// Displays as `file:line:col: message`.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigError {
    pub location: Option<Location>,
    pub message: String,
}

impl ConfigError {
    pub fn at(location: Location, message: impl Into<String>) -> ConfigError {
        ConfigError {
            location: Some(location),
            message: message.into(),
        }
    }

    pub fn unlocated(message: impl Into<String>) -> ConfigError {
        ConfigError {
            location: None,
            message: message.into(),
        }
    }

    /// Sets the location if the error has none yet: errors bubble up from the innermost
    /// node, which is the most precise place to point at.
    pub fn or_location(mut self, location: &Location) -> ConfigError {
        if self.location.is_none() {
            self.location = Some(location.clone());
        }
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(location) => write!(f, "{location}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigError {}
