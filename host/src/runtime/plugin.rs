//! A loaded plugin component: read from its source, checked against its grants, compiled (or
//! taken from the compile cache), pre-instantiated and asked to describe itself. This is the
//! once-only step; instances are made from it by `runtime::pool`.

use std::path::Path;
use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::Component;

use super::SandboxEngine;
use super::builtin;
use super::cache::{CompileCache, ComponentBytes};
use super::capabilities;
use super::failure::{Failure, classify};
use super::host::{HostState, PluginPre};

/// What a plugin told the host about itself (`handler.describe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Descriptor {
    /// Implements `on-request`.
    pub on_request: bool,
    /// Implements `on-response`.
    pub on_response: bool,
    /// Reads or replaces the request body.
    pub request_body: bool,
    /// Reads or replaces the response body.
    pub response_body: bool,
}

/// Why a plugin could not be loaded or configured.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// `builtin:<name>` names no built-in plugin.
    #[error("no built-in plugin `{name}` (built-ins: {available})")]
    UnknownBuiltin {
        /// The name asked for.
        name: String,
        /// The names that exist.
        available: String,
    },
    /// The `.wasm` file could not be read.
    #[error("cannot read `{path}`: {reason}")]
    Read {
        /// The resolved path.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// The bytes are not a valid component, or do not compile.
    #[error("`{source_name}` is not a valid Wasm component: {reason}")]
    Compile {
        /// The plugin source.
        source_name: String,
        /// The compiler's message.
        reason: String,
    },
    /// The component imports something it was not granted.
    #[error("{0}")]
    Capability(String),
    /// The component does not fit the `airlock:plugin` world (missing exports, wrong types).
    #[error("`{source_name}` does not implement the airlock:plugin world: {reason}")]
    World {
        /// The plugin source.
        source_name: String,
        /// What did not fit.
        reason: String,
    },
    /// The plugin trapped or overran a limit while starting or describing itself.
    #[error("plugin failed while loading: {0}")]
    Failed(Failure),
    /// The plugin refused its config.
    #[error("plugin rejected its config: {0}")]
    Configure(String),
    /// `[trust] require_signatures` is on and the component's signature does not hold.
    #[error("refused by [trust]: {0}")]
    Untrusted(String),
}

/// A compiled, linked, described plugin component, shared by every chain entry that uses it.
pub struct LoadedPlugin {
    /// The source as written in the config (`builtin:headers`, `./x.wasm`).
    pub source: String,
    /// Hex sha256 of the component bytes.
    pub sha256: String,
    /// The sandbox it runs in.
    pub sandbox: SandboxEngine,
    /// Pre-instantiated component: instantiation needs no more linking.
    pub pre: PluginPre<HostState>,
    /// Its declared phases and body needs.
    pub descriptor: Descriptor,
    /// Every interface it imports (what it asked to be able to do), by full name.
    pub imports: Vec<String>,
}

impl LoadedPlugin {
    /// Loads the plugin at `source` (`builtin:<name>` or a path relative to `base_dir`).
    pub async fn load(
        sandbox: &SandboxEngine,
        cache: &CompileCache,
        source: &str,
        base_dir: &Path,
        granted: &[String],
    ) -> Result<Arc<Self>, PluginError> {
        let component = match source.strip_prefix("builtin:") {
            Some(name) => ComponentBytes::builtin(
                builtin::get(name)
                    .ok_or_else(|| PluginError::UnknownBuiltin { name: name.to_owned(), available: builtin::names().join(", ") })?,
            ),
            None => {
                let path = base_dir.join(source);
                let bytes = tokio::fs::read(&path).await.map_err(|e| {
                    let mut reason = e.to_string();
                    if e.kind() == std::io::ErrorKind::NotFound && source.ends_with(".wasm") {
                        // Most often a plugin crate not built yet, or built elsewhere.
                        reason.push_str(
                            " (not built yet? `cargo build --target wasm32-wasip2 --release` writes it under \
                             target/wasm32-wasip2/release/, or under $CARGO_TARGET_DIR when that is set)",
                        );
                    }
                    PluginError::Read { path: path.display().to_string(), reason }
                })?;
                ComponentBytes::read(bytes)
            }
        };
        Self::from_bytes(sandbox, cache, source, component, granted).await
    }

    /// Loads a plugin from component bytes (built-in and third-party alike end up here).
    pub async fn from_bytes(
        sandbox: &SandboxEngine,
        cache: &CompileCache,
        source: &str,
        component: ComponentBytes,
        granted: &[String],
    ) -> Result<Arc<Self>, PluginError> {
        let sha256 = component.sha256().to_owned();
        let engine = sandbox.engine.clone();
        let cache = cache.clone();
        // Compiling is CPU-bound for tens of milliseconds: keep it off the async workers. The
        // bytes move there (a built-in's are borrowed from the binary): never copied.
        let component: Component = tokio::task::spawn_blocking(move || cache.load(&engine, &component))
            .await
            .map_err(|e| PluginError::Compile { source_name: source.to_owned(), reason: e.to_string() })?
            .map_err(|e| PluginError::Compile { source_name: source.to_owned(), reason: format!("{e:#}") })?;

        capabilities::check(&sandbox.engine, &component, granted).map_err(PluginError::Capability)?;

        let instance_pre = sandbox.linker.instantiate_pre(&component).map_err(|e| {
            let reason = format!("{e:#}");
            match capabilities::newer_contract(&sandbox.engine, &component, &reason) {
                Some(newer) => PluginError::Capability(newer),
                None => PluginError::World { source_name: source.to_owned(), reason },
            }
        })?;
        let pre = PluginPre::new(instance_pre)
            .map_err(|e| PluginError::World { source_name: source.to_owned(), reason: format!("{e:#}") })?;

        let descriptor = describe(sandbox, &pre, source).await?;
        let imports = capabilities::import_names(&sandbox.engine, &component);
        Ok(Arc::new(Self { source: source.to_owned(), sha256, sandbox: sandbox.clone(), pre, descriptor, imports }))
    }
}

/// Memory and time a plugin gets while describing itself at load.
const DESCRIBE_MEMORY: usize = 64 * 1024 * 1024;
const DESCRIBE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(1);

async fn describe(sandbox: &SandboxEngine, pre: &PluginPre<HostState>, source: &str) -> Result<Descriptor, PluginError> {
    let mut store = Store::new(&sandbox.engine, HostState::new(source.into(), DESCRIBE_MEMORY, DESCRIBE_DEADLINE));
    super::pool::arm_store(&mut store, sandbox);
    super::pool::start_call(&mut store, sandbox, super::host::BodyAccess::NONE, false, std::time::Instant::now());
    let result = async {
        let bindings = pre.instantiate_async(&mut store).await?;
        bindings.airlock_plugin_handler().call_describe(&mut store).await
    }
    .await;
    match result {
        Ok(d) => Ok(Descriptor {
            on_request: d.on_request,
            on_response: d.on_response,
            request_body: d.request_body,
            response_body: d.response_body,
        }),
        Err(e) => Err(PluginError::Failed(classify(store.data(), e))),
    }
}
