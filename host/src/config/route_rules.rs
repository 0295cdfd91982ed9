//! Checks on one route's own settings that TOML types cannot express: a host that can match, a
//! `rewrite` whose variables the route's path captures, a `strip_prefix` the path can start with.
//! Each returns the problem as the operator reads it, so a route that would silently never match
//! or send `${param.typo}` upstream as text is refused at its line instead.

/// Why `host` (one entry of a route's `hosts`) can never match a request's host, if it cannot.
pub fn host_problem(host: &str) -> Option<String> {
    let name = host.strip_prefix("*.").unwrap_or(host);
    if name.is_empty() || name.contains('*') {
        return Some(format!("host `{host}`: a wildcard must be one leading `*.`, as in `*.example.com`"));
    }
    let valid = match name.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']').is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok()),
        None => name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'),
    };
    (!valid).then(|| {
        format!("host `{host}` is not a host name: letters, digits, `-` and `.` (or a bracketed IPv6 address), with no port or path")
    })
}

/// The params a `path` pattern captures: its `{name}` segments.
pub fn path_params(pattern: &str) -> Vec<&str> {
    let mut params = Vec::new();
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else { break };
        params.push(&after[..close]);
        rest = &after[close + 1..];
    }
    params
}

/// Why a route's `rewrite` template cannot be filled in, if it cannot: every `${...}` in it must
/// be `${param.NAME}` for a param its `path` pattern captures (`path`: `None` for a
/// `path_prefix` route, which captures none).
pub fn rewrite_problem(template: &str, path: Option<&str>) -> Option<String> {
    let captured = path.map(path_params).unwrap_or_default();
    let mut rest = template;
    while let Some(open) = rest.find("${") {
        let after = &rest[open + 2..];
        let Some(close) = after.find('}') else {
            return Some(format!("`${{` without its closing `}}` in `{template}`"));
        };
        let variable = &after[..close];
        let known = variable.strip_prefix("param.").is_some_and(|name| captured.contains(&name));
        if !known {
            let offered = match path {
                Some(p) if !captured.is_empty() => {
                    let names: Vec<String> = captured.iter().map(|n| format!("${{param.{n}}}")).collect();
                    format!("the route's path `{p}` gives {}", names.join(", "))
                }
                Some(p) => format!("the route's path `{p}` captures no params"),
                None => "a `path_prefix` route captures no params; use `path = \"/x/{name}\"` to capture one".to_owned(),
            };
            return Some(format!("unknown variable `${{{variable}}}`: {offered}"));
        }
        rest = &after[close + 1..];
    }
    None
}

/// Why a route's `strip_prefix` can never apply to the paths it matches, if it cannot:
/// `pattern` is its `path` (whose `{name}` segments match anything) or its `path_prefix`.
pub fn strip_prefix_problem(strip: &str, pattern: &str, is_prefix_route: bool) -> Option<String> {
    let strip_segments: Vec<&str> = strip.trim_end_matches('/').split('/').collect();
    let pattern_segments: Vec<&str> = pattern.trim_end_matches('/').split('/').collect();
    // A longer strip_prefix can still apply under a prefix route (`/api` stripping `/api/v1`
    // applies to `/api/v1/x`); under an exact path it must fit inside the pattern.
    let compared = strip_segments.len().min(pattern_segments.len());
    let fits = (is_prefix_route || strip_segments.len() <= pattern_segments.len())
        && strip_segments[..compared].iter().zip(&pattern_segments[..compared]).all(|(s, p)| s == p || p.starts_with('{'));
    let kind = if is_prefix_route { "path_prefix" } else { "path" };
    (!fits).then(|| format!("`{strip}` can never be stripped: the route's {kind} `{pattern}` does not start with it"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_that_cannot_match_are_named() {
        for ok in ["api.example.com", "*.example.com", "localhost", "[::1]", "x-1.io"] {
            assert_eq!(host_problem(ok), None, "{ok}");
        }
        for bad in ["a b", "api.example.com:8080", "*.*.bad", "*.", "a*.b", "x/y", "[::1", "[nope]", "user@host"] {
            assert!(host_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn rewrite_variables_must_be_captured_params() {
        assert_eq!(rewrite_problem("/v2/users/${param.id}", Some("/users/{id}")), None);
        assert_eq!(rewrite_problem("/static", None), None);
        let unknown = rewrite_problem("/v/${param.nope}/${param.id}", Some("/u/{id}")).unwrap_or_default();
        assert!(unknown.contains("`${param.nope}`") && unknown.contains("${param.id}"), "{unknown}");
        assert!(rewrite_problem("/v/${query.x}", Some("/u/{id}")).is_some());
        assert!(rewrite_problem("/v/${param.id", Some("/u/{id}")).unwrap_or_default().contains("closing"));
        let prefix = rewrite_problem("/v/${param.id}", None).unwrap_or_default();
        assert!(prefix.contains("path_prefix"), "{prefix}");
    }

    #[test]
    fn strip_prefixes_must_fit_the_route_path() {
        assert_eq!(strip_prefix_problem("/api", "/api", true), None);
        assert_eq!(strip_prefix_problem("/api/", "/api/v1", true), None);
        assert_eq!(strip_prefix_problem("/api/v1", "/api", true), None);
        assert_eq!(strip_prefix_problem("/acme", "/{tenant}/items", false), None);
        assert_eq!(strip_prefix_problem("/", "/anything", true), None);
        assert!(strip_prefix_problem("/other", "/api", true).is_some());
        assert!(strip_prefix_problem("/ap", "/api", true).is_some());
        assert!(strip_prefix_problem("/users/{id}/x", "/users/{id}", false).is_some());
    }
}
