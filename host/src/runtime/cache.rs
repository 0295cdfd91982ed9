//! Compiled components cached on disk, keyed by the component's content hash and the engine's
//! compatibility hash: compiling a plugin takes tens of milliseconds, loading it back well under one.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where compiled components are kept, or nowhere.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: Option<PathBuf>,
}

impl CompileCache {
    /// A cache in `dir`, created on first write; `None` disables caching.
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self { dir }
    }

    /// The default directory: `$XDG_CACHE_HOME/airlock`, else `$HOME/.cache/airlock`.
    pub fn default_dir() -> Option<PathBuf> {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|d| d.join("airlock"))
    }

    /// Returns the compiled component for `bytes`, from the cache if present, else compiled now
    /// (and cached). Cache problems are logged and never fatal: the component is compiled instead.
    pub fn load(&self, engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
        if let Some(problem) = shape_problem(bytes) {
            return Err(wasmtime::Error::msg(problem));
        }
        let Some(dir) = &self.dir else {
            return Component::new(engine, bytes);
        };
        let path = dir.join(cache_file_name(engine, bytes));
        if path.is_file() {
            match deserialize_cached(engine, &path) {
                Ok(component) => return Ok(component),
                Err(e) => tracing::warn!(path = %path.display(), "ignoring unusable compile cache entry: {e}"),
            }
        }
        let compiled = engine.precompile_component(bytes)?;
        if let Err(e) = write_atomically(dir, &path, &compiled) {
            tracing::warn!(dir = %dir.display(), "cannot write compile cache: {e}");
        }
        // SAFETY: see `deserialize_cached`; these bytes were produced by this engine just now.
        #[allow(unsafe_code)]
        unsafe {
            Component::deserialize(engine, &compiled)
        }
    }
}

/// Why `bytes` cannot be a component at all, said plainly: wasmtime's own error for a file that
/// is not Wasm prints the expected and found magic bytes as two multi-line arrays.
fn shape_problem(bytes: &[u8]) -> Option<&'static str> {
    if !bytes.starts_with(b"\0asm") || bytes.len() < 8 {
        return Some("not a WebAssembly file (it does not start with the `\\0asm` magic bytes)");
    }
    if bytes[4..8] == [1, 0, 0, 0] {
        return Some("a core WebAssembly module, not a component: build the plugin for `wasm32-wasip2`");
    }
    None
}

/// The one place Airlock deserializes native code. Safe because the file's name binds it to this
/// exact engine configuration and component content, and the cache directory is the operator's
/// own (like the binary itself): whoever can write there can already replace the gateway.
#[allow(unsafe_code)]
fn deserialize_cached(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: as documented above; wasmtime also checks the engine compatibility header.
    unsafe { Component::deserialize_file(engine, path) }
}

fn cache_file_name(engine: &Engine, bytes: &[u8]) -> String {
    let content = hex::encode(Sha256::digest(bytes));
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    env!("CARGO_PKG_VERSION").hash(&mut hasher);
    format!("{content}-{:016x}.cwasm", hasher.finish())
}

fn write_atomically(dir: &Path, path: &Path, data: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".tmp-{}-{:016x}", std::process::id(), fastrand::u64(..)));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiled_components_are_cached_and_reused() {
        let engine = Engine::default();
        let bytes = crate::runtime::builtin::bytes("respond").expect("built-in respond");
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::new(Some(dir.path().join("cache")));
        let first = cache.load(&engine, bytes).unwrap();
        let files: Vec<_> = std::fs::read_dir(dir.path().join("cache")).unwrap().flatten().collect();
        assert_eq!(files.len(), 1, "one entry written");
        let name = files[0].file_name().to_string_lossy().into_owned();
        assert!(name.starts_with(&hex::encode(Sha256::digest(bytes))), "{name}");
        let modified = files[0].metadata().unwrap().modified().unwrap();
        let second = cache.load(&engine, bytes).unwrap();
        assert_eq!(files[0].metadata().unwrap().modified().unwrap(), modified, "read back, not rewritten");
        assert_eq!(
            first.component_type().imports(&engine).count(),
            second.component_type().imports(&engine).count()
        );
    }

    #[test]
    fn a_corrupt_cache_entry_is_recompiled() {
        let engine = Engine::default();
        let bytes = crate::runtime::builtin::bytes("respond").expect("built-in respond");
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::new(Some(dir.path().to_path_buf()));
        std::fs::write(dir.path().join(cache_file_name(&engine, bytes)), b"not a compiled component").unwrap();
        assert!(cache.load(&engine, bytes).is_ok());
    }
}
