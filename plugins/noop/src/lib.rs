//! Does nothing: the baseline for measuring what a plugin call costs.

use wasmgate_sdk::prelude::*;

/// Continues every request untouched.
#[derive(Debug)]
pub struct Noop;

impl Plugin for Noop {
    type Config = serde::de::IgnoredAny;

    fn new(_config: Self::Config) -> Result<Self, ConfigError> {
        Ok(Self)
    }
}

export_plugin!(Noop);
