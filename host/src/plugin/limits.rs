//! The memory bound of one plugin store. Growth past the plugin's
//! `max_memory` fails the guest's allocation and is recorded, so a trap that
//! follows is reported as a memory overrun rather than a plain trap.

use wasmtime::ResourceLimiter;

#[derive(Debug)]
pub struct Limiter {
    max_memory: usize,
    /// Set when a growth was refused; cleared when the store is reused.
    pub(crate) exceeded: bool,
}

impl Limiter {
    pub fn new(max_memory: u64) -> Self {
        Self { max_memory: usize::try_from(max_memory).unwrap_or(usize::MAX), exceeded: false }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.exceeded = true;
            // Trapping here (rather than returning `false`) stops the guest at
            // the growth instead of leaving it to handle an allocation failure.
            return Err(wasmtime::Error::msg("plugin memory limit exceeded"));
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        16
    }

    fn tables(&self) -> usize {
        16
    }

    fn memories(&self) -> usize {
        4
    }
}
