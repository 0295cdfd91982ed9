//! Checks on a chain's order that no single entry shows. A cache answers a hit without running
//! the entries after it: placed before the plugins that decide who may have an answer, it hands
//! one client's answer to any client (and `vary_consumer` cannot help: no consumer is named yet).
//! A plugin that decides by the consumer, placed before the plugin that names it, sees none.

/// The built-ins that decide whether a request may be answered at all (authentication, access
/// control): their failing open is warned about, and a cache may not answer ahead of them.
pub const ACCESS_CONTROL_BUILTINS: [&str; 8] = [
    "builtin:key-auth",
    "builtin:basic-auth",
    "builtin:jwt",
    "builtin:http-signatures",
    "builtin:acl",
    "builtin:ip-restrict",
    "builtin:forward-auth",
    "builtin:oauth2-introspection",
];

/// The built-in that answers from stored responses.
pub const CACHE_BUILTIN: &str = "builtin:proxy-cache";

/// In a chain of plugin sources (global entries first, as they run), the first cache that runs
/// ahead of one of `skipped` (its hits would skip it: [`ACCESS_CONTROL_BUILTINS`],
/// [`EVERY_REQUEST_BUILTINS`]): (the cache's index, that plugin's index).
pub fn cache_ahead_of<'a>(sources: impl IntoIterator<Item = &'a str>, skipped: &[&str]) -> Option<(usize, usize)> {
    let mut cache = None;
    for (index, source) in sources.into_iter().enumerate() {
        match cache {
            None if source == CACHE_BUILTIN => cache = Some(index),
            Some(at) if skipped.contains(&source) => return Some((at, index)),
            _ => {}
        }
    }
    None
}

/// The built-ins that name the request's consumer (`consumer` in the context).
pub const AUTHENTICATION_BUILTINS: [&str; 6] = [
    "builtin:key-auth",
    "builtin:basic-auth",
    "builtin:jwt",
    "builtin:http-signatures",
    "builtin:forward-auth",
    "builtin:oauth2-introspection",
];

/// What a built-in that decides by the consumer does with none, if it is one: `acl` and `quota`
/// refuse every request, `rate-limit` keyed by consumer (its default) counts by client IP and
/// applies no plan. `config` is the entry's.
pub fn reads_consumer(source: &str, config: &toml::Table) -> Option<&'static str> {
    match source {
        "builtin:acl" => Some("refuses every request (no consumer)"),
        // With `anonymous = "ip"` a quota per client IP before authentication may be meant.
        "builtin:quota" if config.get("anonymous").and_then(toml::Value::as_str) != Some("ip") => {
            Some("refuses every request (no consumer)")
        }
        "builtin:rate-limit" => {
            let by_consumer = config.get("by").and_then(toml::Value::as_array).is_none_or(|by| by.iter().any(|p| p.as_str() == Some("consumer")));
            (by_consumer || config.contains_key("plans")).then_some("counts by client IP instead of consumer, and no plan applies")
        }
        "builtin:headers" | "builtin:transform" if config.values().any(|v| mentions(v, "${context.consumer")) => {
            Some("builds its `${context.consumer...}` values empty (no consumer yet)")
        }
        _ => None,
    }
}

/// Whether a string anywhere in `value` holds `text`.
fn mentions(value: &toml::Value, text: &str) -> bool {
    match value {
        toml::Value::String(s) => s.contains(text),
        toml::Value::Array(items) => items.iter().any(|v| mentions(v, text)),
        toml::Value::Table(table) => table.iter().any(|(k, v)| k.contains(text) || mentions(v, text)),
        _ => false,
    }
}

/// The built-ins that must see every request, a cache's hits included: a limit or quota
/// counting them, a validator refusing bad ones (a hit would answer an invalid request 200).
pub const EVERY_REQUEST_BUILTINS: [&str; 3] = ["builtin:rate-limit", "builtin:quota", "builtin:request-validator"];

/// In a chain of (plugin source, config), the first entry that decides by the consumer with no
/// authentication built-in before it but one after it: (its index, the authenticating entry's
/// index, what it does there).
pub fn consumer_read_before_named<'a>(chain: impl IntoIterator<Item = (&'a str, &'a toml::Table)>) -> Option<(usize, usize, &'static str)> {
    let mut reader = None;
    for (index, (source, config)) in chain.into_iter().enumerate() {
        if AUTHENTICATION_BUILTINS.contains(&source) {
            return reader.map(|(at, what)| (at, index, what));
        }
        if reader.is_none() {
            reader = reads_consumer(source, config).map(|what| (index, what));
        }
    }
    None
}

/// The built-in that answers CORS preflights.
pub const CORS_BUILTIN: &str = "builtin:cors";

/// In a chain of plugin sources, the first authentication built-in that runs ahead of a CORS
/// entry: (that plugin's index, the cors entry's index). A browser's preflight carries no
/// credentials, so the authentication plugin refuses it (401) before cors can answer, and the
/// refusal has no CORS headers: every call from an allowed origin fails in the browser.
pub fn authentication_ahead_of_cors<'a>(sources: impl IntoIterator<Item = &'a str>) -> Option<(usize, usize)> {
    let mut auth = None;
    for (index, source) in sources.into_iter().enumerate() {
        match auth {
            None if AUTHENTICATION_BUILTINS.contains(&source) => auth = Some(index),
            Some(at) if source == CORS_BUILTIN => return Some((at, index)),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_after_authentication_is_found() {
        let check = |chain: &[&str]| authentication_ahead_of_cors(chain.iter().copied());
        assert_eq!(check(&["builtin:key-auth", "builtin:headers", "builtin:cors"]), Some((0, 2)));
        assert_eq!(check(&["builtin:cors", "builtin:jwt", "builtin:cors"]), Some((1, 2)));
        assert_eq!(check(&["builtin:cors", "builtin:forward-auth"]), None);
        assert_eq!(check(&["builtin:ip-restrict", "builtin:cors"]), None, "access control without credentials refuses no preflight of an allowed client");
    }

    #[test]
    fn a_cache_may_follow_access_control_but_not_precede_it() {
        let check = |chain: &[&str]| cache_ahead_of(chain.iter().copied(), &ACCESS_CONTROL_BUILTINS);
        assert_eq!(check(&["builtin:key-auth", "builtin:acl", "builtin:proxy-cache", "builtin:headers"]), None);
        assert_eq!(check(&["builtin:proxy-cache", "builtin:headers"]), None);
        assert_eq!(check(&["builtin:cors", "builtin:proxy-cache", "builtin:rate-limit", "builtin:jwt"]), Some((1, 3)));
        assert_eq!(check(&["builtin:proxy-cache", "builtin:proxy-cache", "builtin:ip-restrict"]), Some((0, 2)));
        assert_eq!(check(&["./auth.wasm", "builtin:proxy-cache", "builtin:forward-auth"]), Some((1, 2)));
        assert_eq!(check(&["builtin:proxy-cache", "builtin:oauth2-introspection"]), Some((0, 1)));
    }

    #[test]
    fn a_cache_ahead_of_a_limit_or_validator_is_found() {
        let check = |chain: &[&str]| cache_ahead_of(chain.iter().copied(), &EVERY_REQUEST_BUILTINS);
        assert_eq!(check(&["builtin:proxy-cache", "builtin:headers", "builtin:rate-limit"]), Some((0, 2)));
        assert_eq!(check(&["builtin:proxy-cache", "builtin:request-validator"]), Some((0, 1)));
        assert_eq!(check(&["builtin:quota", "builtin:proxy-cache", "builtin:throttle"]), None);
    }

    #[test]
    fn a_header_built_from_the_consumer_before_authentication_is_found() {
        let table = |text: &str| text.parse::<toml::Table>().expect("toml");
        let (none, reads) = (table(""), table("[request.headers.set]\nx-user = \"id ${context.consumer}\""));
        let check = |chain: &[(&'static str, &toml::Table)]| consumer_read_before_named(chain.iter().copied());
        assert_eq!(check(&[("builtin:transform", &reads), ("builtin:key-auth", &none)]).map(|f| (f.0, f.1)), Some((0, 1)));
        assert_eq!(check(&[("builtin:headers", &reads), ("builtin:jwt", &none)]).map(|f| f.0), Some(0));
        assert_eq!(check(&[("builtin:headers", &none), ("builtin:jwt", &none)]), None);
        assert_eq!(check(&[("builtin:jwt", &none), ("builtin:headers", &reads)]), None);
    }

    #[test]
    fn a_plugin_deciding_by_consumer_before_the_one_naming_it_is_found() {
        let table = |text: &str| text.parse::<toml::Table>().expect("toml");
        let (none, by_ip, ip_quota, plans) = (table(""), table("by = [\"ip\"]"), table("anonymous = \"ip\""), table("by = [\"ip\"]\nplans = {}"));
        let check = |chain: &[(&'static str, &toml::Table)]| consumer_read_before_named(chain.iter().copied());
        assert_eq!(check(&[("builtin:rate-limit", &none), ("builtin:key-auth", &none)]).map(|f| (f.0, f.1)), Some((0, 1)));
        assert_eq!(check(&[("builtin:cors", &none), ("builtin:acl", &none), ("builtin:headers", &none), ("builtin:jwt", &none)]).map(|f| (f.0, f.1)), Some((1, 3)));
        assert_eq!(check(&[("builtin:quota", &none), ("builtin:basic-auth", &none)]).map(|f| f.2), Some("refuses every request (no consumer)"));
        assert_eq!(check(&[("builtin:rate-limit", &plans), ("builtin:key-auth", &none)]).map(|f| f.0), Some(0));
        // Meant: a limit by IP ahead of authentication (against guessing), a quota per IP.
        assert_eq!(check(&[("builtin:rate-limit", &by_ip), ("builtin:key-auth", &none)]), None);
        assert_eq!(check(&[("builtin:quota", &ip_quota), ("builtin:key-auth", &none)]), None);
        // After authentication, or with no authentication on the route at all.
        assert_eq!(check(&[("builtin:key-auth", &none), ("builtin:acl", &none), ("builtin:jwt", &none)]), None);
        assert_eq!(check(&[("builtin:rate-limit", &none), ("builtin:headers", &none)]), None);
    }
}
