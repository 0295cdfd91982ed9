//! The plugin runtime: WebAssembly components in a wasmtime sandbox.
//!
//! Once-only steps (per process or per config load), in the order they happen: [`engine`] builds
//! the engine and linker; [`plugin`] loads a component (from [`builtin`] bytes or a file), checks
//! its [`capabilities`], compiles it through the [`cache`] and describes it; [`pool`] configures a
//! first instance per chain entry, each serving instance counted by the sandbox's [`budget`]. Per request: [`chain`] runs the phases, each call through
//! [`pool`], under the caps of [`limits`] and the epoch deadline (its running time kept by
//! [`call_clock`]), with failures sorted by [`failure`]; concurrency slots a request holds come
//! from [`slots`]. What a plugin can reach is in [`host`], one file per WIT interface.

pub mod budget;
pub mod builtin;
pub mod cache;
pub mod call_clock;
pub mod capabilities;
pub mod chain;
pub mod engine;
pub mod failure;
pub mod host;
pub mod limits;
pub mod plugin;
pub mod pool;
pub mod response_bodies;
pub mod slots;

pub use chain::{ChainEntry, PluginChain, RequestOutcome, ResponseBodyNeed};
pub use engine::SandboxEngine;
pub use plugin::{Descriptor, LoadedPlugin, PluginError};
pub use pool::{InstancePool, InstanceSettings, PhaseAction};
