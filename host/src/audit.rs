//! What a security team reviews: `airlock inspect PLUGIN.wasm` (one component: its hash, size,
//! contract version, imports and the capabilities they amount to, its phases, its signature) and
//! `airlock audit -c airlock.toml` (every route's chain: for each plugin what it requested, what
//! it was granted, and the limits it runs under). Both print text or, with `--json`, the
//! [`Inspection`] / [`Audit`] structures for CI pipelines.

use std::path::Path;

use serde::Serialize;

use crate::config::{Config, FailurePolicy, Isolation, RuntimeConfig};
use crate::gateway::Gateway;
use crate::runtime::cache::{CompileCache, ComponentBytes};
use crate::runtime::capabilities::{self, ImportKind};
use crate::runtime::{LoadedPlugin, SandboxEngine, builtin};
use crate::signing::{self, PublicKey, SigningError};

/// One import of a component, classified.
#[derive(Debug, Serialize)]
pub struct Import {
    /// Full interface name, e.g. `airlock:plugin/state@0.2.0`.
    pub name: String,
    /// `baseline`, `capability`, `never` or `unknown`.
    pub kind: &'static str,
    /// For `capability`: which one; for `never`: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<&'static str>,
}

/// The phases a component implements (its `describe` answer).
#[derive(Debug, Serialize)]
pub struct Phases {
    /// Implements `on-request`.
    pub on_request: bool,
    /// Implements `on-response`.
    pub on_response: bool,
    /// Reads or replaces the request body (the gateway buffers it).
    pub request_body: bool,
    /// Reads or replaces the response body.
    pub response_body: bool,
}

/// `airlock inspect`: what one component is and asks for.
#[derive(Debug, Serialize)]
pub struct Inspection {
    /// The plugin as named (`builtin:x` or a path).
    pub plugin: String,
    /// Hex sha256 of the bytes.
    pub sha256: String,
    /// Size in bytes.
    pub size: usize,
    /// The `airlock:plugin` version it was built against (from its imports).
    pub wit_version: Option<String>,
    /// Every import, classified.
    pub imports: Vec<Import>,
    /// The capabilities its imports need.
    pub capabilities: Vec<&'static str>,
    /// Its phases (`None` when it cannot load: see `load_error`).
    pub phases: Option<Phases>,
    /// Why it cannot load in this gateway, if it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_error: Option<String>,
    /// Signature status.
    pub signature: String,
}

/// `airlock audit`: one chain entry.
#[derive(Debug, Serialize)]
pub struct AuditEntry {
    /// The plugin as the chain names it.
    pub plugin: String,
    /// Where it comes from.
    pub source: String,
    /// Hex sha256 of the component.
    pub sha256: String,
    /// Capabilities its imports ask for.
    pub requested: Vec<&'static str>,
    /// Capabilities the config grants it (built-ins have `state`, `http-client`, `files` without
    /// parameters, which reach nothing until configured).
    pub granted: Vec<String>,
    /// Whether it receives the `[[consumers]]` list (credentials included).
    pub consumers: bool,
    /// The directory its `files` grant opens (read-only), if any: what it can read.
    pub files_dir: Option<String>,
    /// What its `http-client` grant lets it call, if anything.
    pub http_client: Option<crate::admin::inventory::HttpReach>,
    /// Memory cap of one instance, in bytes.
    pub memory_bytes: usize,
    /// CPU deadline of one call, in ms.
    pub cpu_ms: u64,
    /// The route's body limit, in bytes (what a body-reading plugin may be handed).
    pub max_body_bytes: u64,
    /// `pool` or `request`.
    pub isolation: &'static str,
    /// `closed` or `open`.
    pub failure: &'static str,
    /// Its phases on this route.
    pub phases: Phases,
    /// Signature status.
    pub signature: String,
}

/// `airlock audit`: one route.
#[derive(Debug, Serialize)]
pub struct AuditRoute {
    /// Route id.
    pub route: String,
    /// Its chain, global entries first.
    pub chain: Vec<AuditEntry>,
}

/// `airlock audit`: every route.
#[derive(Debug, Serialize)]
pub struct Audit {
    /// Whether `[trust] require_signatures` is on.
    pub require_signatures: bool,
    /// The routes.
    pub routes: Vec<AuditRoute>,
}

/// Inspects the component `plugin` (`builtin:<name>` or a path) without granting it anything.
pub async fn inspect(plugin: &str, trusted: &[PublicKey]) -> Result<Inspection, String> {
    let component_bytes = match plugin.strip_prefix("builtin:") {
        Some(name) => ComponentBytes::builtin(builtin::get(name).ok_or_else(|| format!("no built-in plugin `{name}`"))?),
        None => ComponentBytes::read(tokio::fs::read(plugin).await.map_err(|e| format!("cannot read `{plugin}`: {e}"))?),
    };
    let sandbox = SandboxEngine::new(&RuntimeConfig::default()).map_err(|e| e.to_string())?;
    let cache = CompileCache::new(CompileCache::default_dir());
    let engine = sandbox.engine.clone();
    let owned = component_bytes.clone();
    let cache_for_compile = cache.clone();
    let component = tokio::task::spawn_blocking(move || cache_for_compile.load(&engine, &owned))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("`{plugin}` is not a valid Wasm component: {e:#}"))?;
    let names = capabilities::import_names(&sandbox.engine, &component);
    let wanted = capabilities::requested(&names);
    // Describing it needs it instantiated: grant what it asks for, only to read its answer.
    let grants: Vec<String> = wanted.iter().map(|c| (*c).to_owned()).collect();
    let (phases, load_error) = match LoadedPlugin::from_bytes(&sandbox, &cache, plugin, component_bytes.clone(), &grants).await {
        Ok(p) => (Some(phases_of(p.descriptor)), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let wit_version = names
        .iter()
        .find_map(|n| n.strip_prefix("airlock:plugin/").and_then(|r| r.split_once('@')).map(|(_, v)| v.to_owned()));
    let signature = if plugin.starts_with("builtin:") {
        "built-in: trusted with the binary".to_owned()
    } else {
        signature_status(Path::new(plugin), component_bytes.bytes(), trusted)
    };
    Ok(Inspection {
        plugin: plugin.to_owned(),
        size: component_bytes.bytes().len(),
        sha256: component_bytes.sha256().to_owned(),
        wit_version,
        imports: names.iter().map(|n| import(n)).collect(),
        capabilities: wanted,
        phases,
        load_error,
        signature,
    })
}

fn import(name: &str) -> Import {
    let (kind, detail) = match capabilities::classify(name) {
        ImportKind::Baseline => ("baseline", None),
        ImportKind::Capability(c) => ("capability", Some(c)),
        ImportKind::Never(why) => ("never", Some(why)),
        ImportKind::Unknown => ("unknown", None),
    };
    Import { name: name.to_owned(), kind, detail }
}

fn phases_of(d: crate::runtime::Descriptor) -> Phases {
    Phases { on_request: d.on_request, on_response: d.on_response, request_body: d.request_body, response_body: d.response_body }
}

/// What the component's `.sig` says, checked against `trusted` (if any key is given).
fn signature_status(path: &Path, bytes: &[u8], trusted: &[PublicKey]) -> String {
    let sig_path = signing::signature_path(path);
    let Ok(text) = std::fs::read_to_string(&sig_path) else {
        return "unsigned".to_owned();
    };
    let shown = sig_path.display().to_string();
    if trusted.is_empty() {
        // Without trusted keys, say who signed it and whether the signature holds, nothing more.
        let signer = text.lines().find_map(|l| l.strip_prefix("key ")).map(PublicKey::parse);
        return match signer {
            Some(Ok(key)) => match signing::verify(bytes, &text, &shown, &[key]) {
                Ok(k) => format!("signed by {k} (valid; no trusted keys given to check it against)"),
                Err(e) => format!("invalid: {e}"),
            },
            Some(Err(e)) => format!("invalid: {e}"),
            None => format!("invalid: {shown} names no key"),
        };
    }
    match signing::verify(bytes, &text, &shown, trusted) {
        Ok(k) => format!("signed by trusted key {k}"),
        Err(SigningError::Untrusted(k)) => format!("signed by {k}, which is not trusted"),
        Err(e) => format!("invalid: {e}"),
    }
}

/// Audits every route of a built gateway.
pub fn audit(config: &Config, gateway: &Gateway, base_dir: &Path) -> Audit {
    let trusted: Vec<PublicKey> = config.trust.keys.iter().filter_map(|k| PublicKey::parse(k.get_ref()).ok()).collect();
    let routes = gateway
        .routes
        .routes()
        .iter()
        .map(|route| AuditRoute {
            route: route.id.to_string(),
            chain: route
                .chain
                .entries()
                .iter()
                .map(|entry| {
                    let plugin = entry.pool.plugin();
                    let facts = &entry.facts;
                    let signature = if facts.source.starts_with("builtin:") {
                        "built-in: trusted with the binary".to_owned()
                    } else {
                        let path = base_dir.join(&facts.source);
                        match std::fs::read(&path) {
                            Ok(bytes) => signature_status(&path, &bytes, &trusted),
                            Err(e) => format!("cannot read: {e}"),
                        }
                    };
                    AuditEntry {
                        plugin: entry.name().to_owned(),
                        source: facts.source.clone(),
                        sha256: plugin.sha256.clone(),
                        requested: capabilities::requested(&plugin.imports),
                        granted: facts.capabilities.clone(),
                        consumers: capabilities::consumers_granted(&facts.source, &facts.capabilities),
                        files_dir: facts.files_dir.as_ref().map(|d| d.display().to_string()),
                        http_client: facts.http.clone(),
                        memory_bytes: facts.memory_bytes,
                        cpu_ms: facts.cpu_ms,
                        max_body_bytes: route.max_body_bytes,
                        isolation: match facts.isolation {
                            Isolation::Pool => "pool",
                            Isolation::Request => "request",
                        },
                        failure: match entry.failure {
                            FailurePolicy::Closed => "closed",
                            FailurePolicy::Open => "open",
                        },
                        phases: phases_of(entry.descriptor),
                        signature,
                    }
                })
                .collect(),
        })
        .collect();
    Audit { require_signatures: config.trust.require_signatures, routes }
}

impl std::fmt::Display for Inspection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "plugin:       {}", self.plugin)?;
        writeln!(f, "sha256:       {}", self.sha256)?;
        writeln!(f, "size:         {} bytes", self.size)?;
        writeln!(f, "contract:     airlock:plugin@{}", self.wit_version.as_deref().unwrap_or("? (imports no airlock interface)"))?;
        let caps = if self.capabilities.is_empty() { "none".to_owned() } else { self.capabilities.join(", ") };
        writeln!(f, "capabilities: {caps}")?;
        // What no grant allows is said up front, not only in the import list below: such a
        // component is refused whatever the config grants.
        let never: Vec<&str> = self.imports.iter().filter(|i| i.kind == "never").map(|i| i.name.as_str()).collect();
        if !never.is_empty() {
            writeln!(f, "refused:      imports what Airlock never grants: {}", never.join(", "))?;
        }
        match (&self.phases, &self.load_error) {
            (Some(p), _) => writeln!(f, "phases:       {}", phase_list(p))?,
            (None, e) => writeln!(f, "phases:       unknown: cannot load: {}", e.as_deref().unwrap_or("?"))?,
        }
        writeln!(f, "signature:    {}", self.signature)?;
        writeln!(f, "imports:")?;
        for i in &self.imports {
            match i.detail {
                Some(d) => writeln!(f, "  {} ({}: {d})", i.name, i.kind)?,
                None => writeln!(f, "  {} ({})", i.name, i.kind)?,
            }
        }
        Ok(())
    }
}

/// The phases a plugin runs and, apart, the bodies it reads: a plugin declaring the request's
/// body reads it in `on-response` too, so the bodies are not tied to one phase.
fn phase_list(p: &Phases) -> String {
    let phases: Vec<&str> = [(p.on_request, "on-request"), (p.on_response, "on-response")].into_iter().filter_map(|(on, name)| on.then_some(name)).collect();
    let bodies: Vec<&str> =
        [(p.request_body, "the request body"), (p.response_body, "the response body")].into_iter().filter_map(|(on, name)| on.then_some(name)).collect();
    let phases = if phases.is_empty() { "none".to_owned() } else { phases.join(", ") };
    if bodies.is_empty() { phases } else { format!("{phases} (reads {})", bodies.join(" and ")) }
}

impl std::fmt::Display for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "signatures required: {}", if self.require_signatures { "yes" } else { "no" })?;
        for route in &self.routes {
            writeln!(f, "\nroute {}", route.route)?;
            if route.chain.is_empty() {
                writeln!(f, "  (no plugins)")?;
            }
            for (i, e) in route.chain.iter().enumerate() {
                let list = |v: &[&str]| if v.is_empty() { "none".to_owned() } else { v.join(", ") };
                let granted: Vec<&str> = e.granted.iter().map(String::as_str).collect();
                writeln!(f, "  {}. {} ({})", i + 1, e.plugin, e.source)?;
                writeln!(f, "     sha256 {}", e.sha256)?;
                writeln!(f, "     requested: {}; granted: {}{}", list(&e.requested), list(&granted), if e.consumers { "; receives [[consumers]]" } else { "" })?;
                if let Some(dir) = &e.files_dir {
                    writeln!(f, "     reads files under: {dir}")?;
                }
                if let Some(http) = &e.http_client {
                    writeln!(
                        f,
                        "     calls: {} (timeout {} ms, responses up to {} bytes)",
                        if http.allow.is_empty() { "nothing".to_owned() } else { http.allow.join(", ") },
                        http.timeout_ms,
                        http.max_response_bytes
                    )?;
                }
                writeln!(
                    f,
                    "     limits: memory {} MiB, cpu {} ms, body {} bytes, isolation {}, fails {}",
                    e.memory_bytes >> 20,
                    e.cpu_ms,
                    e.max_body_bytes,
                    e.isolation,
                    e.failure
                )?;
                writeln!(f, "     phases: {}", phase_list(&e.phases))?;
                writeln!(f, "     signature: {}", e.signature)?;
            }
        }
        Ok(())
    }
}
