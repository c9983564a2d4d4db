//! Feeds arbitrary text to the file provider as a dynamic configuration file: parsing,
//! deserializing and qualifying names may not panic or overflow the stack, and every error
//! and warning points at a line of the file.
//!
//! The first byte picks the format (odd: YAML, even: TOML; seeds start with `Y` or `T`),
//! the rest is the file, non-UTF-8 bytes replaced.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sallyport::config::ConfigError;
use sallyport::config::file_provider::parse_dynamic;
use sallyport::config::source::Format;

const FILE: &str = "fuzz.dyn";

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let format = if selector % 2 == 1 {
        Format::Yaml
    } else {
        Format::Toml
    };
    let text = String::from_utf8_lossy(rest);
    // YAML also breaks lines at a lone CR, so count CRLF, CR and LF each as one break.
    let breaks =
        text.matches('\n').count() + text.matches('\r').count() - text.matches("\r\n").count();
    let lines = breaks + 1;
    let in_file = |e: &ConfigError| {
        e.location
            .as_ref()
            .is_some_and(|l| &*l.file == FILE && (1..=lines).contains(&(l.line as usize)))
    };
    match parse_dynamic(&text, format, FILE) {
        Ok(config) => {
            for warning in &config.warnings {
                assert!(
                    in_file(warning),
                    "warning not located in the file: {warning:?}"
                );
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            for error in &errors {
                assert!(in_file(error), "error not located in the file: {error:?}");
            }
        }
    }
});
