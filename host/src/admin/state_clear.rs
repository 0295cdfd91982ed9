//! `POST /admin/state/clear?route=ID[&plugin=NAME][&global=true|false]`: removes what a route's
//! chain entries keep in the state backend: a `proxy-cache` purged after a deploy (Kong's
//! `DELETE /proxy-cache`, nginx's `proxy_cache_purge`), a limiter's or quota's counters reset.
//! With Redis, every gateway sharing it sees the result at once.
//!
//! Each chain entry granted `state` has its own namespace (see `ScopedState`): the entries of
//! the route (its global ones included), or only those whose plugin is `plugin` (as
//! `/admin/routes` names it: `builtin:proxy-cache`, or a `[plugins.<name>]` name), and with
//! `global` only the global chain's (`true`) or only the route's own (`false`), are cleared
//! whole. A namespace may be shared: a global entry's, or a `[plugins.<name>]` definition's, serves
//! every route that runs it; the answer names those routes.
//!
//! Each parameter is given at most once, and none other is taken: a misspelt `plugn=` read as
//! "no filter" would clear every entry of the route, a second `route=` read as the first would
//! clear another route than the one the operator meant last.

use std::collections::BTreeSet;

use http::StatusCode;
use serde_json::{Value, json};

use crate::config::Config;
use crate::gateway::Gateway;
use crate::runtime::host::types::form_decode;

/// What the endpoint answers: a status and its JSON body.
pub type Answer = (StatusCode, Value);

/// The endpoint's usage, for its 400s.
const USAGE: &str = "POST /admin/state/clear?route=ID[&plugin=NAME][&global=true|false]";

/// The parameters a request gave, checked: `route` present and not empty, `plugin` not empty if
/// present, `global` `true` or `false`.
#[derive(Debug, PartialEq)]
struct Params {
    route: String,
    plugin: Option<String>,
    global: Option<bool>,
}

/// Reads `query` (form-encoded, as `query_param` reads a request's) into [`Params`], or says
/// which parameter is wrong.
fn params(query: &str) -> Result<Params, Answer> {
    let (mut route, mut plugin, mut global) = (None, None, None);
    let mut unknown = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (key, value) = (form_decode(key), form_decode(value));
        let slot = match key.as_str() {
            "route" => &mut route,
            "plugin" => &mut plugin,
            "global" => &mut global,
            _ => {
                if !unknown.contains(&key) {
                    unknown.push(key);
                }
                continue;
            }
        };
        if slot.is_some() {
            return Err(bad_request(&format!("`{key}` is given more than once: give it once ({USAGE})"), &[&key]));
        }
        *slot = Some(value);
    }
    if !unknown.is_empty() {
        let names: Vec<String> = unknown.iter().map(|k| format!("`{k}`")).collect();
        let what = if names.len() == 1 { "unknown parameter" } else { "unknown parameters" };
        let named: Vec<&str> = unknown.iter().map(String::as_str).collect();
        return Err(bad_request(&format!("{what} {} ({USAGE})", names.join(", ")), &named));
    }
    let route = match route {
        Some(r) if !r.is_empty() => r,
        Some(_) => return Err(bad_request(&format!("`route` is empty: name the route by its id ({USAGE})"), &["route"])),
        None => return Err(bad_request(&format!("`route` is required: {USAGE}"), &["route"])),
    };
    if plugin.as_deref() == Some("") {
        let message = format!(
            "`plugin` is empty: name the plugin as /admin/routes does, or leave `plugin` out to clear every entry of the route ({USAGE})"
        );
        return Err(bad_request(&message, &["plugin"]));
    }
    let global = match global.as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            let message = format!("`global` is `true` (the global chain's entries only) or `false` (the route's own only), not `{other}`");
            return Err(bad_request(&message, &["global"]));
        }
    };
    Ok(Params { route, plugin, global })
}

/// Clears the state of the chain entries `query` names (`route`, and optionally `plugin` and
/// `global`). `config` is the one `gateway` was built from: it says how many of the route's
/// entries are the global chain's.
pub async fn clear(gateway: &Gateway, config: &Config, query: Option<&str>) -> Answer {
    let Params { route: route_id, plugin, global } = match params(query.unwrap_or("")) {
        Ok(p) => p,
        Err(answer) => return answer,
    };
    let routes = gateway.routes.routes();
    let Some(route) = routes.iter().find(|r| *r.id == route_id) else {
        return (StatusCode::NOT_FOUND, json!({ "error": "no_route", "message": format!("no route has the id `{route_id}`") }));
    };
    // A chain is the global entries (unless the route sets `global_plugins = false`), then the
    // route's own: the same `Arc`s in every route, nothing in the entry itself says which.
    let globals = config.global_entries(&route_id).min(route.chain.entries().len());
    // The entries to clear: one per namespace.
    let mut targets = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, entry) in route.chain.entries().iter().enumerate() {
        let Some(scope) = entry.pool.state() else { continue };
        let is_global = i < globals;
        if plugin.as_deref().is_some_and(|p| p != entry.name()) || global.is_some_and(|g| g != is_global) {
            continue;
        }
        if seen.insert(scope.prefix().to_owned()) {
            targets.push((entry.name().to_owned(), is_global, scope.clone()));
        }
    }
    if targets.is_empty() {
        let with_state: Vec<&str> = route.chain.entries().iter().filter(|e| e.pool.state().is_some()).map(|e| e.name()).collect();
        let mut what = plugin.map_or_else(String::new, |p| format!(" of plugin `{p}`"));
        match global {
            Some(true) => what.push_str(" from the global chain"),
            Some(false) => what.push_str(" of its own (not from the global chain)"),
            None => {}
        }
        return (
            StatusCode::NOT_FOUND,
            json!({
                "error": "no_state",
                "message": format!("route `{route_id}` has no chain entry{what} with the `state` capability"),
                "entries_with_state": with_state,
            }),
        );
    }
    let mut cleared = Vec::new();
    let mut total = 0;
    for (name, is_global, scope) in targets {
        match scope.store().clear_namespace(scope.prefix()).await {
            Ok(keys) => {
                total += keys;
                let shared: Vec<&str> = routes
                    .iter()
                    .filter(|r| r.chain.entries().iter().any(|e| e.pool.state().is_some_and(|s| s.prefix() == scope.prefix())))
                    .map(|r| r.id.as_ref())
                    .collect();
                tracing::info!(route = %route_id, plugin = %name, global = is_global, keys, "state cleared from the admin API");
                cleared.push(json!({ "plugin": name, "global": is_global, "keys": keys, "routes": shared }));
            }
            Err(e) => {
                // The backend's own words stay in the log (a Redis error may name its host).
                tracing::warn!(route = %route_id, plugin = %name, global = is_global, "clearing state failed: {e}");
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({
                        "error": "state_unavailable",
                        "message": format!("the state backend failed while clearing `{name}` (see the gateway's log); entries listed in `cleared` were cleared"),
                        "cleared": cleared,
                    }),
                );
            }
        }
    }
    (StatusCode::OK, json!({ "route": route_id, "cleared": cleared, "keys": total }))
}

/// A 400 naming the parameters at fault.
fn bad_request(message: &str, parameters: &[&str]) -> Answer {
    (StatusCode::BAD_REQUEST, json!({ "error": "bad_request", "message": message, "parameters": parameters }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(query: &str) -> (Value, String) {
        let (status, body) = params(query).expect_err(query);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        (body["parameters"].clone(), body["message"].as_str().unwrap().to_owned())
    }

    #[test]
    fn parameters_are_read_once_each_and_decoded() {
        let read = |q: &str| params(q).unwrap_or_else(|e| panic!("{q}: {e:?}"));
        assert_eq!(read("route=api"), Params { route: "api".into(), plugin: None, global: None });
        assert_eq!(
            read("plugin=builtin%3Arate-limit&route=a+b&global=false&"),
            Params { route: "a b".into(), plugin: Some("builtin:rate-limit".into()), global: Some(false) }
        );
        assert_eq!(read("route=api&global=true").global, Some(true));
    }

    #[test]
    fn empty_repeated_unknown_and_malformed_parameters_are_named() {
        for (query, named) in [
            ("", "route"),
            ("route=", "route"),
            ("route", "route"),
            ("route=a&plugin=", "plugin"),
            ("route=a&plugin", "plugin"),
            ("route=a&route=b", "route"),
            ("route=a&ro%75te=b", "route"),
            ("route=a&plugin=x&plugin=y", "plugin"),
            ("route=a&global=1", "global"),
            ("route=a&global=", "global"),
            ("route=a&global=true&global=true", "global"),
            ("rout=a", "rout"),
            ("route=a&plugn=x", "plugn"),
        ] {
            let (parameters, message) = refused(query);
            assert_eq!(parameters, json!([named]), "{query}: {message}");
            assert!(message.contains(&format!("`{named}`")), "{query}: {message}");
        }
        let (parameters, message) = refused("route=a&x=1&y=2&x=3");
        assert_eq!(parameters, json!(["x", "y"]));
        assert!(message.starts_with("unknown parameters `x`, `y`"), "{message}");
    }
}
