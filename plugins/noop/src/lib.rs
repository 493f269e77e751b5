//! Does nothing: the baseline for measuring what a plugin call costs.

use schemars::JsonSchema;
use serde::Deserialize;
use wasmgate_sdk::prelude::*;

/// None: noop has no settings, and any table is accepted and ignored.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Config {}

/// Continues every request untouched.
#[derive(Debug)]
pub struct Noop;

impl Plugin for Noop {
    type Config = Config;

    fn new(_config: Config) -> Result<Self, ConfigError> {
        Ok(Self)
    }
}

export_plugin!(Noop, config_schema = "config.schema.json");
