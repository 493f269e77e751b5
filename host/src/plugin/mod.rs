//! The plugin runtime: one wasmtime engine (pooling allocator, epoch
//! deadlines, memory limits), plugins compiled once and cached on disk, and
//! chains of configured plugin instances called inline on the worker.

pub mod caps;
pub mod clock;
pub mod engine;
pub mod host_api;
pub mod instance;
pub mod limits;
pub mod memo;
pub mod registry;
pub mod sandbox;
pub mod schema;

pub use engine::{EngineLimits, Runtime};
pub use instance::{ChainLink, ConfigureError, Fault, FaultKind, Info, Outcome};
pub use registry::{LoadError, Plugin, WIT_VERSION};
