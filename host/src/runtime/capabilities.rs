//! A component's imports are its capabilities. This module decides, at load time, whether every
//! import of a component is either part of the harmless baseline or granted by the config, and
//! refuses the component with a message naming the import otherwise.

use wasmtime::Engine;
use wasmtime::component::Component;

/// The version of the `airlock:plugin` WIT package this host speaks (wit/plugin.wit). A patch
/// release only adds (0.2.1: `request.client-ip`; 0.2.2: `http-client.allows`,
/// `request.limit-response-body`, `request.context-remove`, `request.has-body`; 0.2.3:
/// `response.trailer-all`; 0.2.4: `crypto.digest`; 0.2.5: `request.edit`; 0.2.6: the
/// `fixed-edits` interface; 0.2.7: `fixed-edits.declare-templated`; 0.2.8:
/// `fixed-edits.declare-rules`; 0.2.9: `fixed-edits.declare-response-bodies`): components built
/// against an earlier 0.2.x link unchanged (wasmtime's linker resolves `@0.2.0` imports to these
/// `@0.2.9` definitions).
pub const WIT_VERSION: &str = "0.2.9";
/// The versions compatible with [`WIT_VERSION`] (same minor version, before 1.0).
const WIT_SERIES: &str = "0.2.";

/// Interfaces every plugin may import: the Airlock contract itself and the WASI baseline that a
/// Rust std guest imports without using (DESIGN.md section 2). Matched as prefixes of the import
/// name, so any `0.2.x` WASI patch version is accepted.
const BASELINE: &[&str] = &[
    "airlock:plugin/types@0.2.",
    "airlock:plugin/log@0.2.",
    "airlock:plugin/crypto@0.2.",
    "airlock:plugin/fixed-edits@0.2.",
    "wasi:io/error@0.2.",
    "wasi:io/poll@0.2.",
    "wasi:io/streams@0.2.",
    "wasi:cli/environment@0.2.",
    "wasi:cli/exit@0.2.",
    "wasi:cli/stdin@0.2.",
    "wasi:cli/stdout@0.2.",
    "wasi:cli/stderr@0.2.",
    "wasi:cli/terminal-input@0.2.",
    "wasi:cli/terminal-output@0.2.",
    "wasi:cli/terminal-stdin@0.2.",
    "wasi:cli/terminal-stdout@0.2.",
    "wasi:cli/terminal-stderr@0.2.",
    "wasi:clocks/wall-clock@0.2.",
    "wasi:clocks/monotonic-clock@0.2.",
    "wasi:random/random@0.2.",
    "wasi:random/insecure@0.2.",
    "wasi:random/insecure-seed@0.2.",
];

/// Capabilities a config may grant, with the imports each one covers. Those not in
/// [`IMPLEMENTED`] are listed so errors can say what an import would need.
const GRANTABLE: &[(&str, &str)] = &[
    ("state", "airlock:plugin/state@"),
    ("http-client", "airlock:plugin/http-client@"),
    ("metrics", "airlock:plugin/metrics@"),
    ("files", "wasi:filesystem/"),
];

/// Capabilities this version of the host links.
const IMPLEMENTED: &[&str] = &["state", "http-client", "files", "metrics"];

/// Capabilities built-in plugins may import without a grant in the config: they ship inside the
/// binary and are reviewed with it. `state` is reached only through their own namespace. The
/// other two reach nothing until the operator grants them: `http-client` without
/// `[plugins.<name>.http_client]` has no allowed origin (every call is denied), and `files`
/// without `[plugins.<name>.files]` has no directory (no file can be opened). So `builtin:jwt`
/// loads anywhere, and fetches a JWKS only where its origin is granted.
const BUILTIN_GRANTS: &[&str] = &["state", "http-client", "files"];

/// The capabilities a plugin from `source` has: those `grants` lists, plus [`BUILTIN_GRANTS`]
/// for `builtin:` sources.
pub fn effective_grants(source: &str, grants: &[String]) -> Vec<String> {
    let mut all = grants.to_vec();
    if source.starts_with("builtin:") {
        for g in BUILTIN_GRANTS {
            if !all.iter().any(|x| x == g) {
                all.push((*g).to_owned());
            }
        }
    }
    all
}

/// Grants that are data rather than imports: the host hands them to the plugin's `configure`.
/// `consumers`: the `[[consumers]]` list, credentials included. The built-in plugins that check
/// credentials have it by default; no other plugin sees secrets unless granted.
const DATA_GRANTS: &[&str] = &["consumers"];

/// Built-in plugins that verify consumer credentials, and so receive `[[consumers]]` ungranted.
const CREDENTIAL_BUILTINS: &[&str] = &["builtin:key-auth", "builtin:basic-auth", "builtin:jwt", "builtin:http-signatures"];

/// Whether `grants` (or the plugin being a credential-checking built-in) allows the `consumers` list.
pub fn consumers_granted(source: &str, grants: &[String]) -> bool {
    CREDENTIAL_BUILTINS.contains(&source) || grants.iter().any(|g| g == "consumers")
}

/// Imports never granted to any plugin, with the reason given to the operator.
const NEVER: &[(&str, &str)] = &[
    ("wasi:sockets/", "network sockets are never available to plugins"),
    ("wasi:http/", "outbound HTTP goes through the `http-client` capability, not wasi:http"),
];

/// Capability names a config may mention.
pub fn known_capabilities() -> Vec<&'static str> {
    GRANTABLE.iter().map(|(name, _)| *name).chain(DATA_GRANTS.iter().copied()).collect()
}

/// What one import of a component amounts to, for `airlock inspect` and `airlock audit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportKind {
    /// The Airlock contract or the harmless WASI baseline: always linked.
    Baseline,
    /// Needs this capability granted.
    Capability(&'static str),
    /// Never granted to any plugin, for this reason.
    Never(&'static str),
    /// Neither Airlock nor WASI baseline: the component cannot load.
    Unknown,
}

/// Classifies one import by its full name.
pub fn classify(name: &str) -> ImportKind {
    if BASELINE.iter().any(|prefix| name.starts_with(prefix)) {
        ImportKind::Baseline
    } else if let Some((_, why)) = NEVER.iter().find(|(prefix, _)| name.starts_with(prefix)) {
        ImportKind::Never(why)
    } else if let Some((capability, _)) = GRANTABLE.iter().find(|(_, prefix)| name.starts_with(prefix)) {
        ImportKind::Capability(capability)
    } else {
        ImportKind::Unknown
    }
}

/// The full names of every interface `component` imports, in its order.
pub fn import_names(engine: &Engine, component: &Component) -> Vec<String> {
    component.component_type().imports(engine).map(|(name, _)| name.to_owned()).collect()
}

/// The capabilities `imports` ask for, each once, in order of first use.
pub fn requested(imports: &[String]) -> Vec<&'static str> {
    let mut out = Vec::new();
    for name in imports {
        if let ImportKind::Capability(c) = classify(name)
            && !out.contains(&c)
        {
            out.push(c);
        }
    }
    out
}

/// Why linking failed, said for what it is, when `component` was built against a later 0.2.x
/// than this gateway speaks and uses something only that version has: wasmtime's message
/// ("function implementation is missing") blames the plugin, where the gateway is the older.
/// `None` for any other failure.
pub fn newer_contract(engine: &Engine, component: &Component, link_error: &str) -> Option<String> {
    let ours = patch(WIT_VERSION)?;
    let newest = component
        .component_type()
        .imports(engine)
        .filter_map(|(name, _)| name.strip_prefix("airlock:plugin/")?.split_once('@').map(|(_, v)| v.to_owned()))
        .filter(|v| v.starts_with(WIT_SERIES))
        .max_by_key(|v| patch(v))?;
    if patch(&newest)? <= ours {
        return None;
    }
    // wasmtime names the missing item: "instance export `[method]request.client-ip` has the wrong type".
    let missing = link_error.split('`').nth(3).map(|item| item.trim_start_matches("[method]").trim_start_matches("[static]"));
    let uses = missing.map_or_else(String::new, |item| format!(" (`{item}`)"));
    Some(format!(
        "was built against airlock:plugin@{newest} and uses what this gateway, which speaks airlock:plugin@{WIT_VERSION}, \
         does not provide{uses}: upgrade the gateway, or rebuild the plugin against this gateway's airlock-sdk"
    ))
}

/// The patch number of a `0.2.x` version.
fn patch(version: &str) -> Option<u32> {
    version.strip_prefix(WIT_SERIES)?.parse().ok()
}

/// Checks every import of `component` against the baseline and `granted`.
pub fn check(engine: &Engine, component: &Component, granted: &[String]) -> Result<(), String> {
    let ty = component.component_type();
    // Every capability missing is named at once, not one per `check` run.
    let mut missing: Vec<(&str, String)> = Vec::new();
    for (name, _) in ty.imports(engine) {
        if BASELINE.iter().any(|prefix| name.starts_with(prefix)) {
            continue;
        }
        if let Some(version) = name.strip_prefix("airlock:plugin/").and_then(|rest| rest.split_once('@')).map(|(_, v)| v)
            && !version.starts_with(WIT_SERIES)
        {
            return Err(format!(
                "was built against airlock:plugin@{version} (it imports `{name}`), but this gateway speaks \
                 airlock:plugin@{WIT_VERSION}: rebuild it against this gateway's airlock-sdk"
            ));
        }
        if let Some((_, why)) = NEVER.iter().find(|(prefix, _)| name.starts_with(prefix)) {
            return Err(format!("imports `{name}`, which Airlock never grants: {why}"));
        }
        if let Some((capability, _)) = GRANTABLE.iter().find(|(_, prefix)| name.starts_with(prefix)) {
            if granted.iter().any(|g| g == capability) {
                if IMPLEMENTED.contains(capability) {
                    continue;
                }
                return Err(format!(
                    "imports `{name}` (capability `{capability}`), which this version of Airlock does not provide yet"
                ));
            }
            if !missing.iter().any(|(c, _)| c == capability) {
                missing.push((capability, name.to_string()));
            }
            continue;
        }
        return Err(format!("imports `{name}`, which is not an Airlock capability or part of the WASI baseline"));
    }
    match missing_grants_problem(&missing) {
        None => Ok(()),
        Some(problem) => Err(problem),
    }
}

/// How a component named by path in a chain gets a grant: it has no definition to add one to.
const GRANTED_BY_DEFINITION: &str =
    "; a `.wasm` named directly in a chain is granted nothing: define it as [plugins.<name>] with its `source` and \
     `capabilities`, and name that in the chain";

/// The error for imports whose capabilities were not granted, `(capability, import)` each: one
/// message naming them all, with the `capabilities` line that grants them.
fn missing_grants_problem(missing: &[(&str, String)]) -> Option<String> {
    Some(match missing {
        [] => return None,
        [(capability, name)] => format!(
            "imports `{name}`, which needs capability `{capability}`; it was not granted \
             (add `capabilities = [\"{capability}\"]` to its [plugins.<name>] definition{GRANTED_BY_DEFINITION})"
        ),
        several => {
            let imports: Vec<String> = several.iter().map(|(c, n)| format!("`{n}` (capability `{c}`)")).collect();
            let names: Vec<String> = several.iter().map(|(c, _)| format!("\"{c}\"")).collect();
            format!(
                "imports {}, which were not granted (add `capabilities = [{}]` to its [plugins.<name>] definition{GRANTED_BY_DEFINITION})",
                imports.join(", "),
                names.join(", ")
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_missing_grant_is_named_in_one_error() {
        assert_eq!(missing_grants_problem(&[]), None);
        let one = missing_grants_problem(&[("state", "airlock:plugin/state@0.2.0".into())]).unwrap();
        assert!(one.contains("needs capability `state`") && one.contains(r#"capabilities = ["state"]"#), "{one}");
        let two = missing_grants_problem(&[
            ("state", "airlock:plugin/state@0.2.0".into()),
            ("http-client", "airlock:plugin/http-client@0.2.0".into()),
        ])
        .unwrap();
        assert!(two.contains("`airlock:plugin/state@0.2.0` (capability `state`), `airlock:plugin/http-client@0.2.0`"), "{two}");
        assert!(two.contains(r#"capabilities = ["state", "http-client"]"#), "{two}");
        // A component named by path in a chain has no definition: the message says to make one.
        assert!(one.contains("named directly in a chain is granted nothing: define it as [plugins.<name>] with its `source`"), "{one}");
    }
}
