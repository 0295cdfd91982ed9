//! Checks on a chain's order that no single entry shows. A cache answers a hit without running
//! the entries after it: placed before the plugins that decide who may have an answer, it hands
//! one client's answer to any client (and `vary_consumer` cannot help: no consumer is named yet).

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
/// ahead of an access-control built-in: (the cache's index, that plugin's index).
pub fn cache_ahead_of_access_control<'a>(sources: impl IntoIterator<Item = &'a str>) -> Option<(usize, usize)> {
    let mut cache = None;
    for (index, source) in sources.into_iter().enumerate() {
        match cache {
            None if source == CACHE_BUILTIN => cache = Some(index),
            Some(at) if ACCESS_CONTROL_BUILTINS.contains(&source) => return Some((at, index)),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_may_follow_access_control_but_not_precede_it() {
        let check = |chain: &[&str]| cache_ahead_of_access_control(chain.iter().copied());
        assert_eq!(check(&["builtin:key-auth", "builtin:acl", "builtin:proxy-cache", "builtin:headers"]), None);
        assert_eq!(check(&["builtin:proxy-cache", "builtin:headers"]), None);
        assert_eq!(check(&["builtin:cors", "builtin:proxy-cache", "builtin:rate-limit", "builtin:jwt"]), Some((1, 3)));
        assert_eq!(check(&["builtin:proxy-cache", "builtin:proxy-cache", "builtin:ip-restrict"]), Some((0, 2)));
        assert_eq!(check(&["./auth.wasm", "builtin:proxy-cache", "builtin:forward-auth"]), Some((1, 2)));
        assert_eq!(check(&["builtin:proxy-cache", "builtin:oauth2-introspection"]), Some((0, 1)));
    }
}
