//! Turns the parameters of a plugin's capability grants (`[plugins.<name>.http_client]`,
//! `[plugins.<name>.files]`) into what its instances get, checking them against the
//! `capabilities` list: a capability that needs parameters must have them, and parameters for a
//! capability that was not granted are refused, so the config says exactly what a plugin can reach.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{ConfigIssue, ConfigSource, PluginConfig};
use crate::runtime::host::http_client::{HttpClientGrant, OutboundClient, Origin};

/// Longest `http_client.timeout_ms` accepted: a plugin call waiting longer holds its request.
const MAX_HTTP_TIMEOUT_MS: u64 = 60_000;

/// What one plugin definition's grants resolve to.
#[derive(Default)]
pub struct ResolvedGrants {
    /// The absolute directory granted by `files`.
    pub files: Option<PathBuf>,
    /// The `http-client` grant.
    pub http: Option<Arc<HttpClientGrant>>,
}

/// Whether any plugin of the config is granted outbound HTTP (and so needs the shared client).
pub fn needs_outbound_client<'a>(plugins: impl IntoIterator<Item = &'a PluginConfig>) -> bool {
    plugins.into_iter().any(|p| p.http_client.is_some())
}

/// Most entries of a granted directory looked at for [`blocking_file_in`]: a directory of
/// descriptors or templates holds far fewer.
const MAX_SCANNED_ENTRIES: usize = 10_000;

/// A file under `dir` whose opening can block (a named pipe, a socket, a device), and what it
/// is, if there is one among the first [`MAX_SCANNED_ENTRIES`] entries. A plugin's `open` runs
/// on a worker's blocking pool, and one that blocks forever (a FIFO without a writer) holds its
/// thread after the call has failed: enough of them starved every plugin's file access and
/// every upstream's name lookup. Symbolic links are not followed (inside the sandbox they only
/// reach what the directory itself holds).
fn blocking_file_in(dir: &std::path::Path) -> Option<(PathBuf, &'static str)> {
    use std::os::unix::fs::FileTypeExt;
    let mut pending = vec![dir.to_path_buf()];
    let mut scanned = 0;
    while let Some(at) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&at) else { continue };
        for entry in entries.flatten() {
            scanned += 1;
            if scanned > MAX_SCANNED_ENTRIES {
                tracing::warn!(
                    dir = %dir.display(),
                    "a granted `files` directory holds more than {MAX_SCANNED_ENTRIES} entries: only those were checked for a named pipe, \
                     socket or device (a plugin opening one would hold a gateway thread); grant a smaller directory"
                );
                return None;
            }
            let Ok(kind) = entry.file_type() else { continue };
            let blocking = if kind.is_fifo() {
                "named pipe (FIFO)"
            } else if kind.is_socket() {
                "socket"
            } else if kind.is_char_device() || kind.is_block_device() {
                "device"
            } else {
                if kind.is_dir() {
                    pending.push(entry.path());
                }
                continue;
            };
            let path = entry.path();
            return Some((path.strip_prefix(dir).map(PathBuf::from).unwrap_or(path), blocking));
        }
    }
    None
}

/// The directories granted by `files` (as `resolve` names them: `source.base_dir` joined with
/// each `dir`) that hold a file whose opening can block, and which file ([`blocking_file_in`]).
pub type BlockingFiles = std::collections::HashMap<PathBuf, (PathBuf, &'static str)>;

/// [`BlockingFiles`] of `plugins`' granted directories: file-system reads, to be run off the
/// async workers.
pub fn blocking_files(base_dir: &std::path::Path, plugins: &[&PluginConfig]) -> impl FnOnce() -> BlockingFiles + Send + 'static {
    let dirs: Vec<PathBuf> = plugins.iter().filter_map(|def| def.files.as_ref().map(|f| base_dir.join(f.dir.get_ref()))).collect();
    move || dirs.into_iter().filter_map(|dir| blocking_file_in(&dir).map(|found| (dir, found))).collect()
}

/// Resolves the grants of `[plugins.<name>]`, pushing every problem to `issues`. `blocking`:
/// the granted directories holding a file whose opening can block, looked for beforehand.
pub fn resolve(
    source: &ConfigSource,
    name: &str,
    def: &PluginConfig,
    (client, blocking): (Option<&OutboundClient>, &BlockingFiles),
    issues: &mut Vec<ConfigIssue>,
) -> ResolvedGrants {
    let granted = |cap: &str| def.capabilities.iter().any(|c| c.get_ref() == cap);
    let mut out = ResolvedGrants::default();
    let at = Some(def.source.span());

    match (&def.files, granted("files")) {
        (Some(files), true) => {
            let dir = source.base_dir.join(files.dir.get_ref());
            match std::fs::metadata(&dir) {
                Ok(m) if m.is_dir() => match blocking.get(&dir) {
                    None => out.files = Some(std::path::absolute(&dir).unwrap_or(dir)),
                    Some((path, kind)) => issues.push(source.issue(
                        Some(files.dir.span()),
                        &format!("plugins.{name}.files.dir"),
                        format!(
                            "`{}` holds `{}`, a {kind}: opening it waits for a peer, and a plugin doing so would hold one of the gateway's threads until one came (grant a directory of regular files)",
                            dir.display(),
                            path.display()
                        ),
                    )),
                },
                Ok(_) => issues.push(source.issue(
                    Some(files.dir.span()),
                    &format!("plugins.{name}.files.dir"),
                    format!("`{}` is not a directory", dir.display()),
                )),
                Err(e) => issues.push(source.issue(
                    Some(files.dir.span()),
                    &format!("plugins.{name}.files.dir"),
                    format!("cannot use `{}`: {e}", dir.display()),
                )),
            }
        }
        (None, true) => issues.push(source.issue(
            at.clone(),
            &format!("plugins.{name}.files"),
            "capability `files` needs the directory it grants: add `files = { dir = \"...\" }`",
        )),
        (Some(files), false) => issues.push(source.issue(
            Some(files.dir.span()),
            &format!("plugins.{name}.files"),
            "`files` is set but capability `files` is not granted: add \"files\" to `capabilities`",
        )),
        (None, false) => {}
    }

    match (&def.http_client, granted("http-client")) {
        (Some(http), true) => {
            let key = format!("plugins.{name}.http_client");
            let mut allow = Vec::new();
            for origin in &http.allow {
                match Origin::parse_grant(origin.get_ref()) {
                    Ok(o) => allow.push(o),
                    Err(e) => issues.push(source.issue(Some(origin.span()), &format!("{key}.allow"), e)),
                }
            }
            // At the key's own line (the plugin's `source` line when it cannot be found).
            let located = |path: &str| crate::config::locate::key_span(&source.text, path).or(at.clone());
            if http.allow.is_empty() {
                let path = format!("{key}.allow");
                issues.push(source.issue(located(&path), &path, "list at least one origin the plugin may call"));
            }
            if http.timeout_ms == 0 || http.timeout_ms > MAX_HTTP_TIMEOUT_MS {
                let path = format!("{key}.timeout_ms");
                issues.push(source.issue(located(&path), &path, format!("must be between 1 and {MAX_HTTP_TIMEOUT_MS}")));
            }
            if http.max_response_bytes == 0 {
                let path = format!("{key}.max_response_bytes");
                issues.push(source.issue(located(&path), &path, "must be at least 1"));
            }
            if let Some(client) = client {
                out.http = Some(Arc::new(HttpClientGrant::new(allow, http.timeout_ms, http.max_response_bytes, client)));
            }
        }
        (None, true) => issues.push(source.issue(
            at,
            &format!("plugins.{name}.http_client"),
            "capability `http-client` needs the origins it grants: add `http_client = { allow = [\"https://host\"] }`",
        )),
        (Some(_), false) => issues.push(source.issue(
            crate::config::locate::key_span(&source.text, &format!("plugins.{name}.http_client")).or(at),
            &format!("plugins.{name}.http_client"),
            "`http_client` is set but capability `http-client` is not granted: add \"http-client\" to `capabilities`",
        )),
        (None, false) => {}
    }
    out
}
