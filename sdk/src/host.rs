//! The gateway's host functions: log, per-request context, clock.
//!
//! In a component they call the gateway; in a native test they use the
//! per-thread stand-ins in [`testing`](crate::testing).

/// Writes to the gateway's log, tagged with the plugin and request id.
pub mod log {
    /// Severity of a message.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    pub enum Level {
        Trace,
        Debug,
        Info,
        Warn,
        Error,
    }

    #[cfg(target_arch = "wasm32")]
    fn wit(level: Level) -> crate::bindings::wasmgate::plugin::log::Level {
        use crate::bindings::wasmgate::plugin::log::Level as L;
        match level {
            Level::Trace => L::Trace,
            Level::Debug => L::Debug,
            Level::Info => L::Info,
            Level::Warn => L::Warn,
            Level::Error => L::Error,
        }
    }

    /// Whether a message at `level` would be written.
    pub fn enabled(level: Level) -> bool {
        #[cfg(target_arch = "wasm32")]
        return crate::bindings::wasmgate::plugin::log::enabled(wit(level));
        #[cfg(not(target_arch = "wasm32"))]
        return {
            let _ = level;
            true
        };
    }

    /// Writes one message.
    pub fn log(level: Level, message: &str) {
        #[cfg(target_arch = "wasm32")]
        crate::bindings::wasmgate::plugin::log::log(wit(level), message);
        #[cfg(not(target_arch = "wasm32"))]
        crate::testing::stand_in::log(level, message);
    }

    pub fn debug(message: &str) {
        log(Level::Debug, message);
    }

    pub fn info(message: &str) {
        log(Level::Info, message);
    }

    pub fn warn(message: &str) {
        log(Level::Warn, message);
    }

    pub fn error(message: &str) {
        log(Level::Error, message);
    }
}

/// The per-request context shared along the plugin chain: how one policy
/// hands facts (verified JWT claims) to the next.
pub mod context {
    pub fn get(key: &str) -> Option<String> {
        #[cfg(target_arch = "wasm32")]
        return crate::bindings::wasmgate::plugin::context::get(key);
        #[cfg(not(target_arch = "wasm32"))]
        return crate::testing::stand_in::context_get(key);
    }

    pub fn set(key: &str, value: &str) {
        #[cfg(target_arch = "wasm32")]
        crate::bindings::wasmgate::plugin::context::set(key, value);
        #[cfg(not(target_arch = "wasm32"))]
        crate::testing::stand_in::context_set(key, value);
    }

    pub fn remove(key: &str) -> Option<String> {
        #[cfg(target_arch = "wasm32")]
        return crate::bindings::wasmgate::plugin::context::remove(key);
        #[cfg(not(target_arch = "wasm32"))]
        return crate::testing::stand_in::context_remove(key);
    }

    pub fn keys() -> Vec<String> {
        #[cfg(target_arch = "wasm32")]
        return crate::bindings::wasmgate::plugin::context::keys();
        #[cfg(not(target_arch = "wasm32"))]
        return crate::testing::stand_in::context_keys();
    }
}

/// Time as the gateway sees it.
pub mod clock {
    /// Milliseconds since the Unix epoch.
    pub fn now_unix_ms() -> u64 {
        #[cfg(target_arch = "wasm32")]
        return crate::bindings::wasmgate::plugin::clock::now_unix_ms();
        #[cfg(not(target_arch = "wasm32"))]
        return crate::testing::stand_in::now_unix_ms();
    }

    /// Monotonic nanoseconds, for intervals.
    pub fn monotonic_ns() -> u64 {
        #[cfg(target_arch = "wasm32")]
        return crate::bindings::wasmgate::plugin::clock::monotonic_ns();
        #[cfg(not(target_arch = "wasm32"))]
        return crate::testing::stand_in::monotonic_ns();
    }
}
