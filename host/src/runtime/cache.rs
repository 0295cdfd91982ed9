//! Compiled components cached on disk, keyed by the component's content hash and the engine's
//! compatibility hash: compiling a plugin takes tens of milliseconds, loading it back well under one.
//!
//! A cache entry is native code, run outside the sandbox and trusted by its name alone (a
//! signature covers the `.wasm`, not what it compiled to). So the cache is part of the trusted
//! base, like the binary: its directory is made `0700` and its entries `0600`, and an entry is
//! used only if it and its directory belong to the gateway's own user and nobody else can write
//! them (as ssh's `StrictModes`). Otherwise the component is compiled afresh, not cached, and the
//! log says why: another user who can write the cache cannot slip code past `require_signatures`.

use std::borrow::Cow;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;

/// Most entries the cache keeps. Each is a compiled plugin (~0.6 MiB for a built-in), and a new
/// build of a plugin, or a gateway upgrade, leaves the old entry unused: past this many, the
/// least recently used are removed when an entry is written (as ccache does), so a cache that
/// sees plugin after plugin built does not grow without end.
pub const MAX_ENTRIES: usize = 256;
use wasmtime::component::Component;

use super::builtin::Builtin;

/// A component's bytes and their hex SHA-256, hashed once: the cache's key, and the digest the
/// inventory shows. A built-in's was hashed when the binary was built ([`Builtin::sha256`]), so
/// loading it from a warm cache never reads its bytes. Made only by the two constructors: the
/// digest names the compiled code the cache hands back for these bytes, so it is never set apart
/// from them.
#[derive(Debug, Clone)]
pub struct ComponentBytes {
    bytes: Cow<'static, [u8]>,
    sha256: String,
}

impl ComponentBytes {
    /// The component.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Hex SHA-256 of the bytes.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Bytes read from a file, hashed now.
    pub fn read(bytes: Vec<u8>) -> Self {
        let sha256 = hex::encode(Sha256::digest(&bytes));
        Self { bytes: Cow::Owned(bytes), sha256 }
    }

    /// A built-in plugin, borrowed from the binary with the digest `build.rs` computed.
    pub fn builtin(builtin: &'static Builtin) -> Self {
        Self { bytes: Cow::Borrowed(builtin.bytes()), sha256: builtin.sha256.to_owned() }
    }
}

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

    /// Returns the compiled `component`, from the cache if present, else compiled now (and
    /// cached). Cache problems are logged and never fatal: the component is compiled instead.
    pub fn load(&self, engine: &Engine, component: &ComponentBytes) -> wasmtime::Result<Component> {
        let bytes: &[u8] = &component.bytes;
        // The bytes are read only to compile them: not to look in the cache, whose entries are
        // named by their digest (so exist only for bytes that compiled). A warm start then never
        // touches a built-in's bytes, not even its first page (which the kernel would map with
        // up to 64 KiB around it).
        let Some(dir) = &self.dir else {
            shape_checked(bytes)?;
            return Component::new(engine, bytes);
        };
        let path = dir.join(cache_file_name(engine, &component.sha256));
        let unsafe_dir = dir.exists().then(|| untrusted(dir)).flatten();
        if let Some(why) = &unsafe_dir {
            tracing::warn!(dir = %dir.display(), "compile cache not used: {why}; compiling instead (fix its owner and mode, or set runtime.cache_dir)");
        } else if path.is_file() {
            match untrusted(&path) {
                Some(why) => tracing::warn!(path = %path.display(), "ignoring compile cache entry: {why}"),
                None => match deserialize_cached(engine, &path) {
                    Ok(component) => {
                        // Used now: the last to be pruned (a failure only makes it older).
                        let _ = std::fs::File::options().write(true).open(&path).and_then(|f| f.set_modified(std::time::SystemTime::now()));
                        return Ok(component);
                    }
                    Err(e) => tracing::warn!(path = %path.display(), "ignoring unusable compile cache entry: {e}"),
                },
            }
        }
        shape_checked(bytes)?;
        let compiled = engine.precompile_component(bytes)?;
        if unsafe_dir.is_none() {
            match write_atomically(dir, &path, &compiled) {
                Ok(()) => prune(dir, MAX_ENTRIES),
                Err(e) => tracing::warn!(dir = %dir.display(), "cannot write compile cache: {e}"),
            }
        }
        // SAFETY: see `deserialize_cached`; these bytes were produced by this engine just now.
        #[allow(unsafe_code)]
        unsafe {
            Component::deserialize(engine, &compiled)
        }
    }
}

/// [`shape_problem`] as the error compiling `bytes` would otherwise give.
fn shape_checked(bytes: &[u8]) -> wasmtime::Result<()> {
    match shape_problem(bytes) {
        Some(problem) => Err(wasmtime::Error::msg(problem)),
        None => Ok(()),
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

/// Why `path` (a cache entry or the cache directory) cannot be trusted with native code: it is a
/// symbolic link, another user's, or writable by group or others. `None` when it can.
#[cfg(unix)]
fn untrusted(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) => return Some(format!("cannot read its owner and mode: {e}")),
    };
    let me = rustix::process::geteuid().as_raw();
    if meta.file_type().is_symlink() {
        Some(format!("{} is a symbolic link", path.display()))
    } else if meta.uid() != me {
        Some(format!("{} belongs to uid {}, not to the gateway's user (uid {me})", path.display(), meta.uid()))
    } else if meta.mode() & 0o022 != 0 {
        Some(format!("{} is writable by group or others (mode {:o})", path.display(), meta.mode() & 0o777))
    } else {
        None
    }
}

#[cfg(not(unix))]
fn untrusted(_: &Path) -> Option<String> {
    None
}

/// The one place Airlock deserializes native code. Safe because the file's name binds it to this
/// exact engine configuration and component content, and [`untrusted`] found the file and its
/// directory the gateway's user's own, writable by nobody else: whoever can write there can
/// already act as the gateway.
#[allow(unsafe_code)]
fn deserialize_cached(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: as documented above; wasmtime also checks the engine compatibility header.
    unsafe { Component::deserialize_file(engine, path) }
}

/// The entry's name: the component's content digest, then the engine configuration's and the
/// gateway version's hash.
fn cache_file_name(engine: &Engine, content_sha256: &str) -> String {
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    env!("CARGO_PKG_VERSION").hash(&mut hasher);
    format!("{content_sha256}-{:016x}.cwasm", hasher.finish())
}

/// Removes the least recently used entries (by modification time, refreshed on each use) past
/// the newest `keep`, and temporary files a write cut short left behind over an hour ago.
fn prune(dir: &Path, keep: usize) {
    let Ok(read) = std::fs::read_dir(dir) else { return };
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let mut entries = Vec::new();
    for entry in read.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Ok(modified) = entry.metadata().and_then(|m| m.modified()) else { continue };
        if name.ends_with(".cwasm") {
            entries.push((modified, entry.path()));
        } else if name.starts_with(".tmp-") && modified < hour_ago {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    if entries.len() <= keep {
        return;
    }
    entries.sort_by_key(|e| std::cmp::Reverse(e.0));
    let removed = entries.len() - keep;
    for (_, path) in entries.drain(keep..) {
        let _ = std::fs::remove_file(path);
    }
    tracing::info!(dir = %dir.display(), removed, kept = keep, "compile cache: least recently used entries removed");
}

/// Writes an entry the way [`untrusted`] wants it: the directory (when made here) `0700`, the
/// file `0600`.
fn write_atomically(dir: &Path, path: &Path, data: &[u8]) -> std::io::Result<()> {
    #[cfg(unix)]
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    use std::io::Write;
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(0o700);
    builder.create(dir)?;
    let tmp = dir.join(format!(".tmp-{}-{:016x}", std::process::id(), fastrand::u64(..)));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(&tmp)?.write_all(data)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn respond() -> ComponentBytes {
        ComponentBytes::builtin(crate::runtime::builtin::get("respond").expect("built-in respond"))
    }

    #[test]
    fn a_builtins_digest_from_the_build_is_its_bytes_digest() {
        for builtin in crate::runtime::builtin::BUILTINS {
            let read = ComponentBytes::read(builtin.bytes().to_vec());
            assert_eq!(ComponentBytes::builtin(builtin).sha256, read.sha256, "{}", builtin.name);
        }
        assert!(!crate::runtime::builtin::BUILTINS.is_empty());
    }

    #[test]
    fn compiled_components_are_cached_and_reused() {
        let engine = Engine::default();
        let bytes = respond();
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::new(Some(dir.path().join("cache")));
        let first = cache.load(&engine, &bytes).unwrap();
        let files: Vec<_> = std::fs::read_dir(dir.path().join("cache")).unwrap().flatten().collect();
        assert_eq!(files.len(), 1, "one entry written");
        let name = files[0].file_name().to_string_lossy().into_owned();
        assert!(name.starts_with(&hex::encode(Sha256::digest(bytes.bytes()))), "{name}");
        // A rewrite renames a new file into place: another inode. A use only touches the time.
        use std::os::unix::fs::MetadataExt;
        let written = std::fs::metadata(files[0].path()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let second = cache.load(&engine, &bytes).unwrap();
        let read = std::fs::metadata(files[0].path()).unwrap();
        assert_eq!(read.ino(), written.ino(), "read back, not rewritten");
        assert!(read.modified().unwrap() > written.modified().unwrap(), "its use refreshed its time (the last to be pruned)");
        assert_eq!(
            first.component_type().imports(&engine).count(),
            second.component_type().imports(&engine).count()
        );
    }

    #[cfg(unix)]
    #[test]
    fn entries_are_private_and_a_cache_others_can_write_is_not_used() {
        use std::os::unix::fs::PermissionsExt;
        let engine = Engine::default();
        let bytes = respond();
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cache");
        let cache = CompileCache::new(Some(dir.clone()));
        cache.load(&engine, &bytes).unwrap();
        let entry = dir.join(cache_file_name(&engine, &bytes.sha256));
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(std::fs::metadata(&entry).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(untrusted(&entry), None);

        // Someone else's code in the entry, in a directory others may write: not run.
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(untrusted(&entry).unwrap().contains("writable by group or others"));
        std::fs::write(&entry, b"swapped").unwrap();
        assert!(cache.load(&engine, &bytes).is_ok(), "compiled afresh, the entry ignored");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(untrusted(&dir).unwrap().contains("mode 777"));
        let modified = std::fs::metadata(&entry).unwrap().modified().unwrap();
        assert!(cache.load(&engine, &bytes).is_ok());
        assert_eq!(std::fs::metadata(&entry).unwrap().modified().unwrap(), modified, "nothing written into it");
        // A link is never followed into native code.
        let link = root.path().join("link.cwasm");
        std::os::unix::fs::symlink(&entry, &link).unwrap();
        assert!(untrusted(&link).unwrap().contains("symbolic link"));
    }

    #[test]
    fn the_least_recently_used_entries_past_the_bound_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        for i in 0..5u64 {
            let path = dir.path().join(format!("{i}.cwasm"));
            std::fs::write(&path, b"x").unwrap();
            let when = old + std::time::Duration::from_secs(i);
            std::fs::File::options().write(true).open(&path).unwrap().set_modified(when).unwrap();
        }
        let stale_tmp = dir.path().join(".tmp-1-2");
        std::fs::write(&stale_tmp, b"x").unwrap();
        std::fs::File::options().write(true).open(&stale_tmp).unwrap().set_modified(old).unwrap();
        prune(dir.path(), 3);
        let mut left: Vec<String> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(left, ["2.cwasm", "3.cwasm", "4.cwasm"], "the two oldest and the stale temporary file went");
    }

    #[test]
    fn bytes_that_are_no_component_are_named_for_what_they_are_with_or_without_a_cache() {
        let engine = Engine::default();
        let dir = tempfile::tempdir().unwrap();
        for cache in [CompileCache::new(Some(dir.path().join("cache"))), CompileCache::new(None)] {
            let err = |bytes: &[u8]| format!("{:#}", cache.load(&engine, &ComponentBytes::read(bytes.to_vec())).expect_err("refused"));
            assert!(err(b"GET / HTTP/1.1").starts_with("not a WebAssembly file"), "{}", err(b"GET / HTTP/1.1"));
            assert!(err(b"\0asm\x01\0\0\0").starts_with("a core WebAssembly module, not a component"));
        }
        assert!(!dir.path().join("cache").exists(), "nothing cached for them");
    }

    #[test]
    fn a_corrupt_cache_entry_is_recompiled() {
        let engine = Engine::default();
        let bytes = respond();
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::new(Some(dir.path().to_path_buf()));
        std::fs::write(dir.path().join(cache_file_name(&engine, &bytes.sha256)), b"not a compiled component").unwrap();
        assert!(cache.load(&engine, &bytes).is_ok());
    }
}
