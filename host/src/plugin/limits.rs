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

    /// One linear memory, as Rust, C and Go components have: `max_memory`
    /// bounds each memory, and the engine's pool holds one a component
    /// instance (`total_memories`), so a component with more would both
    /// get a multiple of `max_memory` and take other plugins' places.
    fn memories(&self) -> usize {
        1
    }
}

#[cfg(test)]
mod tests {
    use wasm_encoder::{Component, InstanceSection, MemorySection, MemoryType, Module, ModuleSection};
    use wasmtime::Store;
    use wasmtime::component::Linker;

    use super::*;
    use crate::plugin::engine::{EngineLimits, Runtime};

    /// A component of `n` core modules, each with a memory of one page,
    /// each instantiated.
    fn with_memories(n: u32) -> Vec<u8> {
        let mut memories = MemorySection::new();
        memories.memory(MemoryType { minimum: 1, maximum: None, memory64: false, shared: false, page_size_log2: None });
        let mut module = Module::new();
        module.section(&memories);
        let mut component = Component::new();
        let mut instances = InstanceSection::new();
        for i in 0..n {
            component.section(&ModuleSection(&module));
            instances.instantiate(i, Vec::<(&str, wasm_encoder::ModuleArg)>::new());
        }
        component.section(&instances);
        component.finish()
    }

    /// A component with a second linear memory is not instantiated: each
    /// would get `max_memory`, and the engine's pool keeps one memory a
    /// component instance.
    #[test]
    fn a_component_has_one_memory() {
        let runtime = Runtime::new(EngineLimits { max_instances: 4, max_memory: 1 << 20 }).unwrap();
        let cache = tempfile::tempdir().unwrap();
        let instantiate = |n: u32| {
            let component = runtime.component(&[n as u8; 32], &with_memories(n), cache.path()).unwrap();
            let mut store = Store::new(runtime.engine(), Limiter::new(1 << 20));
            store.limiter(|l| l);
            Linker::<Limiter>::new(runtime.engine()).instantiate(&mut store, &component).map(drop)
        };
        assert!(instantiate(1).is_ok());
        let refused = instantiate(2).unwrap_err();
        assert!(format!("{refused:#}").contains("memor"), "{refused:#}");
    }
}
