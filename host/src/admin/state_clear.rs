//! `POST /admin/state/clear?route=ID[&plugin=NAME]`: removes what a route's chain entries keep in
//! the state backend: a `proxy-cache` purged after a deploy (Kong's `DELETE /proxy-cache`,
//! nginx's `proxy_cache_purge`), a limiter's or quota's counters reset. With Redis, every gateway
//! sharing it sees the result at once.
//!
//! Each chain entry granted `state` has its own namespace (see `ScopedState`): the entries of
//! the route (its global ones included), or only those whose plugin is `plugin` (as
//! `/admin/routes` names it: `builtin:proxy-cache`, or a `[plugins.<name>]` name), are cleared
//! whole. A namespace may be shared: a global entry's, or a `[plugins.<name>]` definition's, serves
//! every route that runs it; the answer names those routes.

use std::collections::BTreeSet;

use http::StatusCode;
use serde_json::{Value, json};

use crate::gateway::Gateway;
use crate::runtime::host::types::query_param;

/// What the endpoint answers: a status and its JSON body.
pub type Answer = (StatusCode, Value);

/// Clears the state of the chain entries `query` names (`route`, and optionally `plugin`).
pub async fn clear(gateway: &Gateway, query: Option<&str>) -> Answer {
    let query = query.unwrap_or("");
    let Some(route_id) = query_param(query, "route").filter(|r| !r.is_empty()) else {
        return bad_request("`route` is required: POST /admin/state/clear?route=ID[&plugin=NAME]");
    };
    let plugin = query_param(query, "plugin").filter(|p| !p.is_empty());
    let routes = gateway.routes.routes();
    let Some(route) = routes.iter().find(|r| *r.id == route_id) else {
        return (StatusCode::NOT_FOUND, json!({ "error": "no_route", "message": format!("no route has the id `{route_id}`") }));
    };
    // The entries to clear: one per namespace.
    let mut targets = Vec::new();
    let mut seen = BTreeSet::new();
    for entry in route.chain.entries() {
        let Some(scope) = entry.pool.state() else { continue };
        if plugin.as_deref().is_some_and(|p| p != entry.name()) {
            continue;
        }
        if seen.insert(scope.prefix().to_owned()) {
            targets.push((entry.name().to_owned(), scope.clone()));
        }
    }
    if targets.is_empty() {
        let with_state: Vec<&str> = route.chain.entries().iter().filter(|e| e.pool.state().is_some()).map(|e| e.name()).collect();
        let what = plugin.map_or_else(String::new, |p| format!(" of plugin `{p}`"));
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
    for (name, scope) in targets {
        match scope.store().clear_namespace(scope.prefix()).await {
            Ok(keys) => {
                total += keys;
                let shared: Vec<&str> = routes
                    .iter()
                    .filter(|r| r.chain.entries().iter().any(|e| e.pool.state().is_some_and(|s| s.prefix() == scope.prefix())))
                    .map(|r| r.id.as_ref())
                    .collect();
                tracing::info!(route = %route_id, plugin = %name, keys, "state cleared from the admin API");
                cleared.push(json!({ "plugin": name, "keys": keys, "routes": shared }));
            }
            Err(e) => {
                // The backend's own words stay in the log (a Redis error may name its host).
                tracing::warn!(route = %route_id, plugin = %name, "clearing state failed: {e}");
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

fn bad_request(message: &str) -> Answer {
    (StatusCode::BAD_REQUEST, json!({ "error": "bad_request", "message": message }))
}
