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

/// Resolves the grants of `[plugins.<name>]`, pushing every problem to `issues`.
pub fn resolve(
    source: &ConfigSource,
    name: &str,
    def: &PluginConfig,
    client: Option<&OutboundClient>,
    issues: &mut Vec<ConfigIssue>,
) -> ResolvedGrants {
    let granted = |cap: &str| def.capabilities.iter().any(|c| c.get_ref() == cap);
    let mut out = ResolvedGrants::default();
    let at = Some(def.source.span());

    match (&def.files, granted("files")) {
        (Some(files), true) => {
            let dir = source.base_dir.join(files.dir.get_ref());
            match std::fs::metadata(&dir) {
                Ok(m) if m.is_dir() => out.files = Some(std::path::absolute(&dir).unwrap_or(dir)),
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
