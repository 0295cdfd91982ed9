//! Hot reload (DESIGN.md section 4): the listeners serve whatever [`Generation`] is current, and a
//! reload swaps in a new one atomically, or nothing at all.
//!
//! A reload (SIGHUP, `POST /admin/reload`, or `airlock run --watch` noticing the file changed)
//! reads the config file again and builds a complete new generation first: parse, validate,
//! load, compile and configure every plugin, read the TLS certificates. If anything fails, the
//! running generation keeps serving and the error is reported (log, the
//! `airlock_config_reloads_total{result="error"}` metric, the admin response). Otherwise the new
//! generation is swapped in with one atomic store. Each request takes the generation current when
//! it arrives and finishes on it; an old generation (its plugin instances, upstream connection
//! pools) is torn down when its last request ends.
//!
//! What lives for the whole process is kept across reloads: the plugin sandbox, the state store
//! (rate-limit windows carry over), telemetry (counters keep counting), the listening sockets and
//! the admin listener. The config sections those come from take effect only on restart (but the
//! admin token, which the admin listener reads from the current config per request, so a reload
//! rotates it); a reload whose file changes one of them is refused, naming it, so a successful
//! reload always means the whole file is in effect.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, ConfigError, ConfigIssue, ConfigSource};
use crate::connections::ConnectionBuilders;
use crate::gateway::Gateway;
use crate::server;
use crate::state::StateStore;

/// Sections built once per process: changing them needs a restart.
const RESTART_ONLY: [&str; 7] = ["admin", "state", "metrics", "tracing", "access_log", "otlp", "analytics"];

/// Why a reload did not happen; the running generation keeps serving in every case.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The gateway runs a config that was not read from a file (the embedded quickstart).
    #[error("this gateway runs an embedded config; there is no file to reload")]
    NoFile,
    /// The file is unreadable or invalid, or changes a section that needs a restart.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A blocking read could not be run.
    #[error("internal error while reloading: {0}")]
    Internal(String),
}

/// Everything one config turns into, as the listeners serve it.
pub struct Generation {
    /// 1 for the config the process started with, then one more per successful reload.
    pub number: u64,
    /// Routes, chains, upstreams and limits.
    pub gateway: Arc<Gateway>,
    /// Each listener's TLS acceptor (its certificates), in config order; `None` for plain HTTP.
    pub tls: Vec<Option<TlsAcceptor>>,
    /// The HTTP/1.1 and HTTP/2 connection settings (`[limits]`, `[timeouts]`) new connections get.
    pub connections: Arc<ConnectionBuilders>,
    /// The config, as parsed.
    pub config: Config,
    /// The file it was read from.
    pub source: ConfigSource,
}

impl Generation {
    fn new(number: u64, gateway: Gateway, tls: Vec<Option<TlsAcceptor>>, config: Config, source: ConfigSource) -> Self {
        let connections = Arc::new(ConnectionBuilders::new(&config.limits, &config.timeouts));
        Self { number, gateway: Arc::new(gateway), tls, connections, config, source }
    }
}

/// The generation being served, and the one way to replace it.
pub struct LiveGateway {
    current: ArcSwap<Generation>,
    /// Reloads run one at a time, each building on the generation the last one left.
    reloading: tokio::sync::Mutex<()>,
    /// Shutting down: `/ready` fails from the first signal on (see [`crate::RunningGateway::shutdown`]).
    draining: std::sync::atomic::AtomicBool,
}

impl LiveGateway {
    /// Serves `gateway`, built from `config` read from `source`, as generation 1.
    pub fn new(gateway: Gateway, tls: Vec<Option<TlsAcceptor>>, config: Config, source: ConfigSource) -> Self {
        gateway.telemetry.metrics.reloads.generation(1);
        gateway.start_background_tasks();
        Self {
            current: ArcSwap::from_pointee(Generation::new(1, gateway, tls, config, source)),
            reloading: Default::default(),
            draining: Default::default(),
        }
    }

    /// Marks the gateway as shutting down: `/ready` fails from now on, so balancers stop sending
    /// it new connections while it still serves them.
    pub fn begin_draining(&self) {
        self.draining.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the gateway is shutting down.
    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The generation new requests and connections get.
    pub fn current(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// The gateway a request arriving now runs on: it keeps it until it ends.
    pub fn gateway(&self) -> Arc<Gateway> {
        self.current.load().gateway.clone()
    }

    /// Reads the config file again and, if all of it builds, swaps it in. Returns the new
    /// generation's number; on error the running one keeps serving. Logged and counted either way.
    pub async fn reload(&self) -> Result<u64, ReloadError> {
        self.reload_from(None).await
    }

    /// [`LiveGateway::reload`], with `settled` as the config file's content when given (what
    /// `--watch` read and saw settle, with the generation it then compared it with), else the
    /// file read now. A settled text is not applied over a generation that came after it (a
    /// SIGHUP or admin reload queued ahead of the watch's): the watch looks again.
    async fn reload_from(&self, settled: Option<(Arc<str>, u64)>) -> Result<u64, ReloadError> {
        let _one_at_a_time = self.reloading.lock().await;
        let current = self.current();
        if let Some((_, seen)) = &settled
            && current.number != *seen
        {
            return Ok(current.number);
        }
        let text = settled.map(|(text, _)| text);
        let metrics = &current.gateway.telemetry.metrics;
        let reloads = &metrics.reloads;
        let mark = metrics.series_mark();
        match self.build_next(&current, text).await {
            Ok(next) => {
                let number = next.number;
                next.gateway.start_background_tasks();
                // The cap applies at the next accept; its gauge says so now, not then.
                metrics.connection_limit(next.connections.max_connections());
                self.current.store(Arc::new(next));
                reloads.succeeded(number);
                tracing::info!(generation = number, config = %current.source.name, "config reloaded");
                Ok(number)
            }
            Err(e) => {
                reloads.failed();
                metrics.forget_series_since(mark);
                tracing::error!("config reload failed; still serving generation {}:\n{e}", current.number);
                Err(e)
            }
        }
    }

    async fn build_next(&self, current: &Generation, text: Option<Arc<str>>) -> Result<Generation, ReloadError> {
        let path = current.source.path.clone().ok_or(ReloadError::NoFile)?;
        let name = current.source.name.clone();
        // Reading the file and the files it names (`token_file`, `redis_*_file`) is blocking.
        let (source, config) = blocking(move || -> Result<_, ConfigError> {
            let mut source = match text {
                Some(text) => ConfigSource::of_file(&path, text),
                None => ConfigSource::read(&path)?,
            };
            // Errors name the file as the operator first gave it.
            source.name = name;
            let config = source.parse()?;
            Ok((source, config))
        })
        .await??;
        let mut issues = restart_only_changes(&source, &current.config, &config);
        // Rotated Redis credentials or CAs apply to the next connection (`[state]` itself needs a
        // restart, but the files it names are re-read, as TLS certificates are).
        let redis_client = StateStore::rotated_redis_client(&current.config.state, &config.state).unwrap_or_else(|e| {
            issues.push(source.issue(e.span(&config.state), &e.key(), e.to_string()));
            None
        });
        let plan = {
            let (source, config) = (source.clone(), config.clone());
            blocking(move || server::plan_listeners(&source, &config)).await?
        };
        let (tls, certificates) = match plan {
            Ok(plan) => (plan.tls, plan.certificates),
            Err(e) => {
                issues.extend(e.issues().iter().cloned());
                (Vec::new(), Vec::new())
            }
        };
        match Gateway::rebuild(&source, &config, &current.gateway).await {
            Ok(gateway) if issues.is_empty() => {
                if let Some(client) = redis_client {
                    gateway.state.replace_redis_client(client);
                    tracing::info!(backend = "redis", "state backend: the files [state] names were read again; the next connection to Redis uses them");
                }
                gateway.telemetry.metrics.certificates_served(&certificates);
                Ok(Generation::new(current.number + 1, gateway, tls, config, source))
            }
            Ok(_) => Err(ConfigError::Invalid(issues).into()),
            Err(e) => {
                issues.extend(e.issues().iter().cloned());
                issues.sort_by_key(|i| i.line.unwrap_or(0));
                Err(if issues.is_empty() { e } else { ConfigError::Invalid(issues) }.into())
            }
        }
    }
}

/// Runs blocking file reads off the async workers.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, ReloadError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| ReloadError::Internal(e.to_string()))
}

/// Where `new` changes what only a restart applies: listener addresses, a listener's TLS
/// switched on or off, `runtime.max_instances` and `runtime.plugin_memory_mb` (size the
/// sandbox), `runtime.worker_threads` and
/// the [`RESTART_ONLY`] sections. Each is an issue located in `source`.
fn restart_only_changes(source: &ConfigSource, old: &Config, new: &Config) -> Vec<ConfigIssue> {
    let restart = "takes effect only on restart; the running config was kept (restart the gateway to apply it)";
    let mut issues = Vec::new();
    let old_addresses: Vec<&String> = old.listeners.iter().map(|l| l.address.get_ref()).collect();
    let new_addresses: Vec<&String> = new.listeners.iter().map(|l| l.address.get_ref()).collect();
    if old_addresses != new_addresses {
        let at = new.listeners.iter().zip(&old_addresses).find(|(n, o)| n.address.get_ref() != **o).map(|(n, _)| n.address.span());
        let at = at.or_else(|| new.listeners.last().map(|l| l.address.span()));
        let (mut old_sorted, mut new_sorted) = (old_addresses.clone(), new_addresses.clone());
        old_sorted.sort_unstable();
        new_sorted.sort_unstable();
        // Each listener's settings go with its socket by position: the same addresses in
        // another order are a change too, said as what it is.
        let what = if old_sorted == new_sorted { "the listeners are in another order (the same addresses: each listener's settings stay with its socket's place)" } else { "listener addresses changed" };
        issues.push(source.issue(at, "listeners", format!("{what} ({old_addresses:?} to {new_addresses:?}): {restart}")));
    } else {
        // A port's scheme is what its clients connect with: TLS switched off on reload would
        // serve plaintext where clients (and auditors) expect HTTPS. New certificates reload.
        for (i, (new_listener, old_listener)) in new.listeners.iter().zip(&old.listeners).enumerate() {
            if new_listener.tls.is_some() != old_listener.tls.is_some() {
                let (was, now) = if old_listener.tls.is_some() { ("HTTPS", "plain HTTP") } else { ("plain HTTP", "HTTPS") };
                let message = format!("listener {} would change from {was} to {now}: {restart}", new_listener.address.get_ref());
                issues.push(source.issue(Some(new_listener.address.span()), &format!("listeners[{i}].tls"), message));
            }
        }
    }
    let runtime = [
        ("runtime.max_instances", old.runtime.max_instances != new.runtime.max_instances, "sizes the plugin sandbox"),
        ("runtime.plugin_memory_mb", old.runtime.plugin_memory_mb != new.runtime.plugin_memory_mb, "sizes the plugin sandbox's memory budget"),
        ("runtime.worker_threads", old.runtime.worker_threads != new.runtime.worker_threads, "the worker threads run for the process"),
    ];
    for (key, changed, why) in runtime {
        if changed {
            // At the key's own line; at `[runtime]` when it was removed.
            let span = crate::config::locate::key_span(&source.text, key).or_else(|| section_span(&source.text, "runtime"));
            issues.push(source.issue(span, key, format!("{why}: {restart}")));
        }
    }
    // The admin token rotates on reload (`admin::AdminState` reads it per request); a reload
    // never removes it, which would open the admin API.
    if new.admin.enabled && old.admin.token.is_some() && new.admin.token.is_none() {
        let span = crate::config::locate::key_span(&source.text, "admin.token").or_else(|| section_span(&source.text, "admin"));
        let message = format!("removing the admin token would open the admin API to anyone who reaches it: {restart}");
        issues.push(source.issue(span, "admin.token", message));
    }
    let as_json = |config: &Config| {
        let mut json = serde_json::to_value(config).unwrap_or_default();
        if let Some(admin) = json.get_mut("admin").and_then(serde_json::Value::as_object_mut) {
            admin.remove("token");
            admin.remove("token_file");
        }
        json
    };
    let (old_json, new_json) = (as_json(old), as_json(new));
    for section in RESTART_ONLY {
        if old_json.get(section) != new_json.get(section) {
            issues.push(source.issue(section_span(&source.text, section), section, format!("this section {restart}")));
        }
    }
    issues
}

/// Where `section` starts in TOML `text`: its `[section]` (or `[section.x]`) header, or a
/// dotted `section.key = ...` line.
fn section_span(text: &str, section: &str) -> Option<Range<usize>> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let header = trimmed.strip_prefix('[').map(|h| h.trim_start());
        let names_it = |rest: &str| rest.strip_prefix(section).is_some_and(|after| after.starts_with(['.', ']', ' ', '=']));
        if header.is_some_and(names_it) || names_it(trimmed) {
            let start = offset + (line.len() - trimmed.len());
            return Some(start..start + trimmed.trim_end().len());
        }
        offset += line.len();
    }
    None
}

/// Reloads on every SIGHUP `hangups` receives, for as long as the process runs. Make `hangups`
/// (`tokio::signal::unix::signal(SignalKind::hangup())`) before loading the config: from then on
/// a SIGHUP no longer ends the process, and one that arrives while it starts is served once it runs.
#[cfg(unix)]
pub fn reload_on_sighup(live: Arc<LiveGateway>, mut hangups: tokio::signal::unix::Signal) {
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the config");
            // The outcome is logged and counted by `reload`.
            let _ = live.reload().await;
        }
    });
}

/// How long the watched file may stay unreadable (an editor's save) before the watch warns.
const UNREADABLE_WARNING: Duration = Duration::from_secs(2);

/// How long a changed config file must read the same before `--watch` reloads it.
pub const SETTLE: Duration = Duration::from_millis(200);

/// Checks the config file every `interval` and reloads when its content changes and has stayed
/// the same for [`SETTLE`] (`airlock run --watch`). A content that failed to reload is not tried
/// again until the file changes again.
/// A file that stays unreadable is warned about once, and the running config kept.
pub fn reload_on_change(live: Arc<LiveGateway>, interval: Duration) -> Result<(), ReloadError> {
    let path: PathBuf = live.current().source.path.clone().ok_or(ReloadError::NoFile)?;
    tokio::spawn(async move {
        let mut tried: Option<Arc<str>> = None;
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Unreadable since when, and whether that was said: mid-save (an editor's rename) it
        // is a tick or two; longer, the file is gone and the operator should know.
        let mut unreadable: Option<(std::time::Instant, bool)> = None;
        let mut files = WatchedFiles::default();
        loop {
            ticks.tick().await;
            let text = match tokio::fs::read_to_string(&path).await {
                Ok(text) => {
                    if let Some((_, true)) = unreadable {
                        tracing::info!(path = %path.display(), "config watch: the file is readable again");
                    }
                    unreadable = None;
                    text
                }
                Err(e) => {
                    let (since, warned) = unreadable.get_or_insert((std::time::Instant::now(), false));
                    if !*warned && since.elapsed() >= UNREADABLE_WARNING.max(interval * 3) {
                        *warned = true;
                        tracing::warn!(path = %path.display(), "config watch: cannot read the config file ({e}); still serving the running config");
                    } else {
                        tracing::debug!(path = %path.display(), "config watch: cannot read: {e}");
                    }
                    continue;
                }
            };
            let current = live.current();
            if *current.source.text == *text {
                // Reverted to what is served after a reload failed (by the watch, SIGHUP or the
                // admin API): nothing to reload, and the failure alert is over.
                let reloads = &current.gateway.telemetry.metrics.reloads;
                if reloads.last_failed() && tried.is_some() {
                    reloads.file_matches_running();
                    tracing::info!(path = %path.display(), generation = current.number, "config file is back to the running config: nothing to reload");
                }
                tried = None;
                // The files it reads (a renewed certificate, a rotated password): reloaded when
                // one changes, as cert-manager or certbot rewrite them in place.
                if let Some(changed) = files.changed(&current).await {
                    tracing::info!(path = %changed.display(), "a file the config reads changed: reloading");
                    // The config as just read (the running one's), not read again.
                    if let Ok(number) = live.reload_from(Some((text.into(), current.number))).await {
                        // Its files as seen before the reload read them: one written again
                        // while it ran, or right after, is still a change at the next look.
                        files.carry_to(number);
                    }
                }
                continue;
            }
            if tried.as_deref() == Some(text.as_str()) {
                continue;
            }
            // A file written in place (`envsubst > airlock.toml`, most editors) is read as it is
            // being written: a prefix that parses (fewer routes) or an empty file would be taken.
            // Reloaded once it reads the same after a pause.
            tokio::time::sleep(SETTLE).await;
            if tokio::fs::read_to_string(&path).await.ok().as_deref() != Some(text.as_str()) {
                tracing::debug!(path = %path.display(), "config watch: the file is still being written");
                continue;
            }
            tracing::info!(path = %path.display(), "config file changed: reloading");
            let text: Arc<str> = text.into();
            tried = Some(text.clone());
            // What settled, not the file read again: it may be mid-write once more by then.
            let _ = live.reload_from(Some((text, current.number))).await;
        }
    });
    Ok(())
}

/// The files a served config reads besides itself, as `--watch` last saw them: a change (new
/// content written in place, a renamed-over file, a Kubernetes secret's symlink swapped) is
/// seen in their metadata, without reading them.
#[derive(Default)]
struct WatchedFiles {
    /// The generation the files are the ones of (`None`: not looked at yet).
    generation: Option<u64>,
    /// Each file, with what its metadata said at the last look.
    files: Vec<(PathBuf, Option<FileStamp>)>,
}

/// What a file's metadata says of its content: length, modification time and (on Unix) inode.
/// `None` for a file that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
}

impl WatchedFiles {
    /// The first file of `current`'s that changed since the last look, if one did. A new
    /// generation (any reload) is looked at afresh; a change is reported once, so a file that
    /// makes the reload fail is not tried again until it changes again.
    async fn changed(&mut self, current: &Generation) -> Option<PathBuf> {
        if self.generation != Some(current.number) {
            self.generation = Some(current.number);
            self.files.clear();
            for path in files_read(&current.config, &current.source.base_dir) {
                let stamp = stamp(&path).await;
                self.files.push((path, stamp));
            }
            return None;
        }
        let mut changed = None;
        for (path, before) in &mut self.files {
            let now = stamp(path).await;
            if now != *before {
                *before = now;
                changed.get_or_insert_with(|| path.clone());
            }
        }
        changed
    }

    /// Takes the files as last seen for generation `number`'s: a reload this watch started for
    /// a file's change, the config unchanged (so are the files it reads), is not looked at
    /// afresh, which would take a change made while the reload ran for its starting point.
    fn carry_to(&mut self, number: u64) {
        self.generation = Some(number);
    }
}

/// `path`'s [`FileStamp`] (following symlinks, as reading it does).
async fn stamp(path: &std::path::Path) -> Option<FileStamp> {
    let meta = tokio::fs::metadata(path).await.ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(FileStamp { len: meta.len(), modified: meta.modified().ok(), inode })
}

/// The files `config` reads at load besides itself whose new contents a reload applies,
/// resolved against `base_dir`: listener certificates, keys and client CAs, upstream CA bundles
/// and client certificates, the Redis TLS files and password file, and plugin components given
/// as paths with their signatures (`<path>.sig`, read with `[trust] require_signatures`), and
/// `admin.token_file` (a rotated token applies on reload).
fn files_read(config: &Config, base_dir: &std::path::Path) -> Vec<PathBuf> {
    let mut names: Vec<&str> = Vec::new();
    for tls in config.listeners.iter().filter_map(|l| l.tls.as_ref()) {
        for pair in &tls.certificates {
            names.extend([pair.cert.get_ref().as_str(), pair.key.get_ref().as_str()]);
        }
        names.extend(tls.client_ca.as_ref().map(|c| c.get_ref().as_str()));
    }
    for tls in config.upstreams.values().filter_map(|u| u.tls.as_ref()) {
        names.extend([&tls.ca_file, &tls.cert, &tls.key].into_iter().flatten().map(|f| f.get_ref().as_str()));
    }
    let state = &config.state;
    names.extend(
        [&state.redis_ca_file, &state.redis_cert_file, &state.redis_key_file, &state.redis_password_file]
            .into_iter()
            .flatten()
            .map(|f| f.get_ref().as_str()),
    );
    names.extend(config.admin.token_file.as_ref().map(|f| f.get_ref().as_str()));
    // A plugin source that is a path (not `builtin:`, not a definition's name).
    let entries = config.global.plugins.iter().chain(config.routes.iter().flat_map(|r| r.plugins.iter()));
    let sources = config.plugins.values().map(|p| p.source.get_ref().as_str());
    let direct = entries.map(|e| e.plugin.get_ref().as_str()).filter(|name| !config.plugins.contains_key(*name));
    let components: Vec<&str> = sources.chain(direct).filter(|source| !source.starts_with("builtin:")).collect();
    let mut paths: Vec<PathBuf> = names.into_iter().map(|name| base_dir.join(name)).collect();
    for component in components {
        let path = base_dir.join(component);
        paths.push(crate::signing::signature_path(&path));
        paths.push(path);
    }
    paths.sort();
    paths.dedup();
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> ConfigSource {
        ConfigSource::inline("airlock.toml", text, PathBuf::from("."))
    }

    #[test]
    fn the_watch_looks_at_what_a_reload_applies_and_signatures() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("secrets")).unwrap();
        std::fs::write(dir.path().join("secrets/admin-token"), "t0ken\n").unwrap();
        std::fs::write(dir.path().join("secrets/redis"), "pw\n").unwrap();
        let text = 
            r#"
[admin]
token_file = "secrets/admin-token"
[state]
redis_password_file = "secrets/redis"
[plugins.mine]
source = "plugins/mine.wasm"
[upstreams.api]
targets = ["127.0.0.1:9"]
tls = { ca_file = "ca.pem" }
[[routes]]
path = "/"
upstream = "api"
[[routes.plugins]]
plugin = "mine"
[[routes.plugins]]
plugin = "direct.wasm"
[[routes.plugins]]
plugin = "builtin:headers"
"#;
        let config = ConfigSource::inline("airlock.toml", text, dir.path().to_path_buf()).parse().unwrap();
        let files: Vec<String> = files_read(&config, std::path::Path::new("/etc/airlock")).iter().map(|p| p.display().to_string()).collect();
        assert_eq!(
            files,
            [
                "/etc/airlock/ca.pem",
                "/etc/airlock/direct.wasm",
                "/etc/airlock/direct.wasm.sig",
                "/etc/airlock/plugins/mine.wasm",
                "/etc/airlock/plugins/mine.wasm.sig",
                "/etc/airlock/secrets/admin-token",
                "/etc/airlock/secrets/redis",
            ],
        );
    }

    fn changes(old: &str, new: &str) -> Vec<ConfigIssue> {
        let (old, new_source) = (source(old).parse().unwrap(), source(new));
        restart_only_changes(&new_source, &old, &new_source.parse().unwrap())
    }

    #[test]
    fn routes_plugins_limits_and_tls_reload_without_restart() {
        let old = "[[routes]]\npath = \"/a\"\nupstream = \"u\"\n[upstreams.u]\ntargets = [\"127.0.0.1:1\"]\n";
        let new = "[limits]\nmax_body_bytes = 10\n[[routes]]\npath = \"/b\"\nupstream = \"u\"\n[upstreams.u]\ntargets = [\"127.0.0.1:2\"]\n";
        assert!(changes(old, new).is_empty());
    }

    #[test]
    fn a_restart_only_section_is_named_at_its_line() {
        let issues = changes("", "[[routes]]\npath = \"/\"\n\n[state]\nmax_keys = 5\n");
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!((issues[0].key.as_str(), issues[0].line), ("state", Some(4)));
        assert!(issues[0].message.contains("only on restart"), "{}", issues[0].message);
    }

    #[test]
    fn sandbox_size_and_worker_threads_are_restart_only() {
        let issues = changes("", "[[routes]]\npath = \"/\"\n\n[runtime]\nworker_threads = 3\nmax_instances = 64\nplugin_memory_mb = 512\n");
        let keys: Vec<(&str, Option<usize>)> = issues.iter().map(|i| (i.key.as_str(), i.line)).collect();
        assert_eq!(keys, [("runtime.max_instances", Some(6)), ("runtime.plugin_memory_mb", Some(7)), ("runtime.worker_threads", Some(5))]);
        // Removed, it is named at the section that no longer has it.
        let issues = changes("[runtime]\nworker_threads = 3\n", "[runtime]\ncpu_ms = 50\n");
        assert_eq!(issues.iter().map(|i| (i.key.as_str(), i.line)).collect::<Vec<_>>(), [("runtime.worker_threads", Some(1))]);
        // Other `[runtime]` settings reload.
        assert!(changes("", "[runtime]\ncpu_ms = 50\n").is_empty());
    }

    #[test]
    fn the_admin_token_rotates_and_is_added_on_reload_but_is_never_removed() {
        assert!(changes("[admin]\ntoken = \"old\"\n", "[admin]\ntoken = \"new\"\n").is_empty(), "rotated");
        assert!(changes("", "[admin]\ntoken = \"new\"\n").is_empty(), "added");
        let issues = changes("[admin]\ntoken = \"old\"\n", "[admin]\naddress = \"127.0.0.1:9901\"\n");
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!((issues[0].key.as_str(), issues[0].line), ("admin.token", Some(1)));
        assert!(issues[0].message.contains("would open the admin API") && issues[0].message.contains("only on restart"), "{}", issues[0].message);
        // Without an admin listener there is nothing to open.
        assert!(changes("[admin]\nenabled = false\ntoken = \"old\"\n", "[admin]\nenabled = false\n").is_empty());
        // The rest of `[admin]` still needs a restart.
        let issues = changes("[admin]\ntoken = \"old\"\n", "[admin]\ntoken = \"new\"\naddress = \"127.0.0.1:9902\"\n");
        assert_eq!(issues.iter().map(|i| i.key.as_str()).collect::<Vec<_>>(), ["admin"]);
    }

    #[test]
    fn a_changed_listener_address_is_named_at_its_line() {
        let issues = changes(
            "[[listeners]]\naddress = \"127.0.0.1:1000\"\n",
            "[[listeners]]\naddress = \"127.0.0.1:2000\"\n[admin]\nenabled = false\n",
        );
        let keys: Vec<(&str, Option<usize>)> = issues.iter().map(|i| (i.key.as_str(), i.line)).collect();
        assert_eq!(keys, [("listeners", Some(2)), ("admin", Some(3))]);
        // The same addresses in another order: said as such, not as changed addresses.
        let two = |a: u16, b: u16| format!("[[listeners]]\naddress = \"127.0.0.1:{a}\"\n[[listeners]]\naddress = \"127.0.0.1:{b}\"\n");
        let issues = changes(&two(1000, 2000), &two(2000, 1000));
        assert!(issues.len() == 1 && issues[0].message.starts_with("the listeners are in another order"), "{issues:?}");
        assert!(changes(&two(1000, 2000), &two(1000, 3000))[0].message.starts_with("listener addresses changed"));
    }

    #[test]
    fn switching_a_listeners_tls_on_or_off_is_restart_only_and_new_certificates_reload() {
        let plain = "[[listeners]]\naddress = \"127.0.0.1:1000\"\n";
        let tls = |cert: &str| format!("[[listeners]]\naddress = \"127.0.0.1:1000\"\n[listeners.tls]\ncertificates = [{{ cert = \"{cert}\", key = \"k.pem\" }}]\n");
        for (old, new, message) in [(tls("a.pem"), plain.to_owned(), "from HTTPS to plain HTTP"), (plain.to_owned(), tls("a.pem"), "from plain HTTP to HTTPS")] {
            let issues = changes(&old, &new);
            assert_eq!(issues.len(), 1, "{issues:?}");
            assert_eq!((issues[0].key.as_str(), issues[0].line), ("listeners[0].tls", Some(2)));
            assert!(issues[0].message.contains(message) && issues[0].message.contains("only on restart"), "{}", issues[0].message);
        }
        assert!(changes(&tls("a.pem"), &tls("b.pem")).is_empty());
    }

    #[test]
    fn sections_are_found_by_header_or_dotted_key() {
        let text = "[routesx]\n[ admin ]\nstate.backend = \"memory\"\n";
        assert_eq!(section_span(text, "admin"), Some(10..19));
        assert_eq!(section_span(text, "state"), Some(20..44));
        assert_eq!(section_span(text, "routes"), None);
    }
}
