//! Checks on one route's own settings that TOML types cannot express: a host that can match, a
//! `rewrite` whose variables the route's path captures, a `strip_prefix` the path can start with,
//! a `rewrite` or `prefix_rewrite` the upstream can be sent as written, and no two path settings
//! of which one would silently never apply,
//! `headers` conditions routing reads as the plugins and the upstream do, methods it can serve.
//! Each returns the problem as the operator reads it, so a route that would silently never match
//! or send `${param.typo}` upstream as text is refused at its line instead.

/// Why `host` (one entry of a route's `hosts`) can never match a request's host, if it cannot.
pub fn host_problem(host: &str) -> Option<String> {
    if host.is_empty() {
        return Some("an empty host: name one (`api.example.com`, `*.example.com`), or leave `hosts` out to match any".into());
    }
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

/// Why `value`, a route's `rewrite` or `prefix_rewrite` (named `field`), cannot be sent upstream
/// as written, if it cannot. It is put on the request line as is: a character no URI may hold
/// (a space, a control character, non-ASCII) failed every request with a 400 blaming the client,
/// a `#` cut the client's query off, and a `.`/`..` segment or `//` reached the upstream
/// unresolved, where route paths must be written normalized. So its static text (its
/// `${...}` variables, checked by [`rewrite_problem`], left out) must be a normalized path,
/// which in `rewrite` alone may end with a `?` and a query.
pub fn upstream_path_problem(field: &str, value: &str) -> Option<String> {
    let shown = escaped(value);
    if !value.starts_with('/') {
        let instead = match value.split_once("://") {
            // `proxy_pass http://up/v2/` ported as is: the address is the upstream's.
            Some((_, rest)) => format!(
                "the upstream's address belongs in its `[upstreams.<name>] targets`; write the path alone, `/{}`",
                rest.split_once('/').map_or("", |(_, path)| path)
            ),
            None => format!("write `/{}`", value.trim_start_matches('/')),
        };
        return Some(format!("`{field} = \"{shown}\"` must start with `/`: {instead}"));
    }
    let (path, query) = match value.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (value, None),
    };
    if field == "prefix_rewrite" {
        if value.contains("${") {
            return Some(
                "`prefix_rewrite` is literal text: a `path_prefix` route captures no params for `${...}`; to place params, use `path = \"/x/{name}\"` with `rewrite`".to_owned(),
            );
        }
        if query.is_some() {
            return Some(format!(
                "`prefix_rewrite = \"{shown}\"` holds a `?`: it swaps a path prefix, and the client's query goes on as it came; write the path alone, `{path}` (to add to the query, use `rewrite` on a `path` route, or `builtin:transform`'s `request.query`)"
            ));
        }
    }
    if let Some(problem) = uri_text_problem(path, false).or_else(|| query.and_then(|q| uri_text_problem(q, true))) {
        return Some(format!("`{field} = \"{shown}\"` {problem}"));
    }
    if query == Some("") {
        return Some(format!(
            "`{field} = \"{shown}\"` ends with a `?` and no query: write `{path}` (the client's query is sent on after it as it came)"
        ));
    }
    let normal = match crate::proxy::path::normalize(path) {
        Ok(None) => return None,
        Ok(Some(normal)) => normal,
        Err(e) => {
            return Some(format!(
                "`{field} = \"{shown}\"` is no path to send upstream: {e}; write the path the upstream gets, without `.` or `..` segments"
            ));
        }
    };
    let instead = match query {
        Some(q) => format!("{normal}?{q}"),
        None => normal,
    };
    let rule = "as route paths must be (no `.` or `..` segments, no `//`, no percent-encoded letter, digit, `-`, `.`, `_` or `~`)";
    // A `..` after a `${param.NAME}` would climb over the param: the normal form would drop
    // it, so it is not offered as the form to write.
    let params_before = path.matches("${").count();
    if instead.matches("${").count() != params_before {
        return Some(format!("`{field} = \"{shown}\"` is not written normalized, {rule}: a `..` there would remove a `${{...}}` value; write the path the upstream gets"));
    }
    Some(format!("`{field} = \"{shown}\"` is not written normalized, {rule}: it reads `{instead}`; write that"))
}

/// What is wrong with the first character of `text` (a `rewrite`'s path, or with `in_query`, its
/// query) that a URI cannot hold as written, if one is, with what to write instead. Its
/// `${...}` variables are skipped: they are filled in, percent-encoded, per request.
fn uri_text_problem(text: &str, in_query: bool) -> Option<String> {
    let mut i = 0;
    while let Some(c) = text[i..].chars().next() {
        if text[i..].starts_with("${")
            && let Some(close) = text[i..].find('}')
        {
            i += close + 1;
            continue;
        }
        let allowed = c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@/".contains(c) || (in_query && c == '?');
        let problem = match c {
            _ if allowed => None,
            '%' => {
                let hex = text.get(i + 1..i + 3).is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
                (!hex).then(|| "has a `%` not followed by two hex digits: write `%25` for a `%` itself".to_owned())
            }
            '#' => Some(
                "holds a `#`, which starts a fragment: never sent to a server, and the client's query, added after it, would be dropped with it; leave it out, or write `%23` for a `#` in the path".to_owned(),
            ),
            ' ' => Some("holds a space, which no request line can carry (every request would fail): write it `%20`".to_owned()),
            _ if c.is_control() => {
                Some(format!("holds a control character (`{}`), which no URI can carry: write it `{}`", c.escape_debug(), percent_encoded(c)))
            }
            _ if !c.is_ascii() => {
                Some(format!("holds `{c}`, which is not ASCII, as a request line must be: write its UTF-8 bytes percent-encoded, `{}`", percent_encoded(c)))
            }
            _ => Some(format!("holds `{c}`, which no URI can carry as is: write it `{}`", percent_encoded(c))),
        };
        if problem.is_some() {
            return problem;
        }
        i += c.len_utf8();
    }
    None
}

/// `c`'s UTF-8 bytes percent-encoded (`é` is `%C3%A9`), for an error message.
fn percent_encoded(c: char) -> String {
    let mut buf = [0u8; 4];
    c.encode_utf8(&mut buf).bytes().map(|b| format!("%{b:02X}")).collect()
}

/// Why a route's `prefix_rewrite` cannot apply, if it cannot: it swaps the prefix a `path_prefix`
/// route matched (an exact `path` route matches none), and sets the upstream path as `rewrite`
/// does, so the two together would leave one of them silently unused.
pub fn prefix_rewrite_problem(pattern: &str, is_prefix_route: bool, has_rewrite: bool) -> Option<String> {
    if !is_prefix_route {
        return Some(format!(
            "`prefix_rewrite` swaps the prefix a `path_prefix` route matched, and this route has `path = \"{pattern}\"`: write `path_prefix` instead, or `rewrite` for the whole upstream path (with `${{param.NAME}}` for the params the path captures)"
        ));
    }
    has_rewrite.then(|| {
        "`prefix_rewrite` and `rewrite` both set the upstream path: keep `prefix_rewrite` to swap the matched prefix and keep the rest of the path, or `rewrite` to replace the whole path".to_owned()
    })
}

/// Why a route's `strip_prefix` would never apply beside the route's other path settings, if
/// it would not: `rewrite` replaces the whole path, `prefix_rewrite` the prefix already. Before,
/// `strip_prefix` beside `rewrite` passed `check` and was silently ignored.
pub fn strip_prefix_conflict(has_rewrite: bool, has_prefix_rewrite: bool) -> Option<String> {
    if has_rewrite {
        return Some(
            "`strip_prefix` never applies beside `rewrite`, which replaces the whole path: to swap one prefix for another, remove both and write `prefix_rewrite` on the `path_prefix` route (`path_prefix = \"/v1\"` with `prefix_rewrite = \"/v2\"` sends `/v1/items` as `/v2/items`)".to_owned(),
        );
    }
    has_prefix_rewrite.then(|| {
        "`strip_prefix` never applies beside `prefix_rewrite`, which replaces the matched prefix already: remove it (`prefix_rewrite = \"/\"` alone removes the prefix)".to_owned()
    })
}

/// Why a route's `strip_prefix` can never apply to the paths it matches, if it cannot:
/// `pattern` is its `path` (whose `{name}` segments match anything) or its `path_prefix`.
pub fn strip_prefix_problem(strip: &str, pattern: &str, is_prefix_route: bool) -> Option<String> {
    // Literal text, unlike the route's pattern: `{id}` would strip only a path holding those
    // very characters, which a client sends percent-encoded (`%7Bid%7D`), so never. Before,
    // `strip_prefix = "/users/{id}"` on `path = "/users/{id}"` passed `check` and stripped nothing.
    if strip.contains(['{', '}']) {
        return Some(format!(
            "`{strip}` is literal text, so its `{{...}}` would match only a path holding those characters, never a captured segment: to send another path, write `rewrite` with the params it needs (`rewrite = \"/profile/${{param.id}}\"`)"
        ));
    }
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

/// Why a route's `headers` may not have a condition on header `header`, if it may not: a name
/// routing reads differently from the plugins and the upstream, or over HTTP/1.1 and HTTP/2.
/// Hop-by-hop fields (RFC 9110 7.6.1) manage the client's connection, not the request: the
/// gateway removes them before the request goes on ([`crate::proxy::headers::always_hop_by_hop`])
/// and HTTP/2 forbids them. `underscores` is `[limits] headers_with_underscores`, which decides
/// whether a name with `_` reaches the plugins and the upstream at all.
pub fn header_name_problem(header: &http::HeaderName, underscores: super::UnderscoreHeaders) -> Option<String> {
    use super::UnderscoreHeaders;
    let name = header.as_str();
    if name == "host" {
        return Some(
            "the host is matched by the route's `hosts` key (`hosts = [\"api.example.com\"]`): an HTTP/2 request names it in `:authority`, not `host`, so a `host` condition would match HTTP/1.1 requests only".to_owned(),
        );
    }
    if crate::proxy::headers::always_hop_by_hop(header) {
        return Some(format!(
            "`{name}` is hop-by-hop: it manages the client's connection, not the request, and is dropped or rewritten for each hop before plugins and the upstream see the request, so a route cannot be chosen on it"
        ));
    }
    if name == "cookie" {
        return Some(
            "values are compared whole, and an HTTP/1.1 client sends all its cookies on one `cookie` line while an HTTP/2 client sends one field per cookie: the same request would match over one and not the other".to_owned(),
        );
    }
    if matches!(name, "x-forwarded-proto" | "x-forwarded-host") {
        let instead = if name == "x-forwarded-host" { "; match the host with `hosts`" } else { "" };
        return Some(format!(
            "`{name}` is set by the gateway to what it saw: the client's own value is not trusted and is replaced before plugins and the upstream see the request, so a route cannot be chosen on it{instead}"
        ));
    }
    if name.contains('_') {
        return match underscores {
            UnderscoreHeaders::Allow => None,
            UnderscoreHeaders::Drop => Some(format!(
                "`{name}` has an underscore, and `[limits] headers_with_underscores = \"drop\"` (the default) removes such headers before plugins and the upstream see the request: the route would be chosen on a header they never get. Name it with `-`, or set `headers_with_underscores = \"allow\"`"
            )),
            UnderscoreHeaders::Reject => Some(format!(
                "`{name}` has an underscore, and `[limits] headers_with_underscores = \"reject\"` answers every request carrying such a header 400: the route could never serve a request it matches. Name it with `-`, or set `headers_with_underscores = \"allow\"`"
            )),
        };
    }
    None
}

/// Why `value`, one value of a route's header condition, can never match a request's field, if
/// it cannot (shown with its control characters escaped).
pub fn header_value_problem(value: &str) -> Option<String> {
    if value.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7f) {
        return Some(format!("`{}` is not a valid header value: it has a control character", escaped(value)));
    }
    if value.starts_with([' ', '\t']) || value.ends_with([' ', '\t']) {
        return Some(format!(
            "`{}` starts or ends with a space or tab: a field's value is read without them (RFC 9110 5.5), so it could never match; write it without",
            escaped(value)
        ));
    }
    None
}

/// Why a route's `methods` entry `method` (upper-case) can never be served, if it cannot.
pub fn method_problem(method: &str) -> Option<String> {
    match method {
        "TRACE" => Some(
            "the gateway answers every TRACE itself (501 `trace_not_served`: the upstream would echo the headers added for it), so a route never serves one".to_owned(),
        ),
        "CONNECT" => Some(
            "the gateway answers a CONNECT itself (501 `connect_not_served`: it opens no tunnels), so a route never serves one; a WebSocket over HTTP/2 (an extended CONNECT) is routed as its handshake's `GET`".to_owned(),
        ),
        _ => None,
    }
}

/// `text` for an error message: control characters escaped (`\u{1}`, `\n`), so the message shows
/// what was written rather than the raw byte.
pub fn escaped(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { c.escape_debug().to_string() } else { c.to_string() }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UnderscoreHeaders;

    #[test]
    fn header_conditions_on_names_routing_sees_alone_are_refused() {
        let problem = |name: &'static str, underscores| header_name_problem(&http::HeaderName::from_static(name), underscores);
        for ok in ["x-canary", "accept-version", "authorization", "trailer", "x-forwarded-for"] {
            assert_eq!(problem(ok, UnderscoreHeaders::Drop), None, "{ok}");
        }
        let host = problem("host", UnderscoreHeaders::Drop).unwrap_or_default();
        assert!(host.contains("`hosts`") && host.contains(":authority"), "{host}");
        for name in ["connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te", "transfer-encoding", "upgrade", "http2-settings"] {
            let found = problem(name, UnderscoreHeaders::Allow).unwrap_or_default();
            assert!(found.contains("hop-by-hop"), "{name}: {found}");
        }
        assert!(problem("cookie", UnderscoreHeaders::Drop).is_some_and(|p| p.contains("HTTP/2")));
        assert!(problem("x-forwarded-proto", UnderscoreHeaders::Allow).is_some());
        assert!(problem("x-forwarded-host", UnderscoreHeaders::Allow).is_some());
    }

    #[test]
    fn underscored_condition_names_are_refused_unless_such_headers_reach_the_upstream() {
        let problem = |underscores| header_name_problem(&http::HeaderName::from_static("x_canary"), underscores);
        let drop = problem(UnderscoreHeaders::Drop).unwrap_or_default();
        assert!(drop.contains("headers_with_underscores = \"drop\"") && drop.contains("\"allow\""), "{drop}");
        let reject = problem(UnderscoreHeaders::Reject).unwrap_or_default();
        assert!(reject.contains("400"), "{reject}");
        assert_eq!(problem(UnderscoreHeaders::Allow), None);
    }

    #[test]
    fn condition_values_that_cannot_match_are_refused_and_shown_escaped() {
        for ok in ["1", "a b", "a\tb", "", "caf\u{e9}"] {
            assert_eq!(header_value_problem(ok), None, "{ok:?}");
        }
        for bad in [" 1", "1 ", "\t1", "1\t"] {
            assert!(header_value_problem(bad).is_some_and(|p| p.contains("space or tab")), "{bad:?}");
        }
        let control = header_value_problem("a\u{1}b\n").unwrap_or_default();
        assert_eq!(control, "`a\\u{1}b\\n` is not a valid header value: it has a control character");
        assert!(header_value_problem("a\u{7f}").is_some());
    }

    #[test]
    fn trace_and_connect_routes_are_refused() {
        assert!(method_problem("TRACE").is_some_and(|p| p.contains("trace_not_served")));
        assert!(method_problem("CONNECT").is_some_and(|p| p.contains("connect_not_served")));
        for ok in ["GET", "OPTIONS", "PURGE"] {
            assert_eq!(method_problem(ok), None, "{ok}");
        }
    }

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
    fn rewrites_must_be_normalized_paths_the_upstream_can_be_sent() {
        for ok in ["/v2", "/", "/v2/", "/v2/items/${param.id}", "/v2/items/${param.id}?from=gw", "/a%20b/x;y=1/@:~", "/s?q=a/b?c&d=${param.id}"] {
            assert_eq!(upstream_path_problem("rewrite", ok), None, "{ok}");
        }
        let says = |value: &str, words: &[&str]| {
            let problem = upstream_path_problem("rewrite", value).unwrap_or_default();
            assert!(problem.starts_with("`rewrite = "), "{value}: {problem}");
            for word in words {
                assert!(problem.contains(word), "{value}: {problem} (no {word:?})");
            }
        };
        says("v2", &["must start with `/`", "write `/v2`"]);
        says("http://up/v2/", &["targets", "`/v2/`"]);
        says("/v2/my items/${param.id}", &["space", "`%20`"]);
        says("/v2/items/${param.id}#frag", &["`#`", "query", "`%23`"]);
        says("/v2/caf\u{e9}", &["ASCII", "`%C3%A9`"]);
        says("/v2/a\u{1}b", &["control character", "`\\u{1}`", "`%01`"]);
        says("/v2/a|b", &["`|`", "`%7C`"]);
        says("/v2/100%", &["`%25`"]);
        says("/v2/%zz", &["`%25`"]);
        says("/v2?a b", &["space"]);
        says("/v2?", &["no query", "write `/v2`"]);
        says("/v2/../admin/${param.id}", &["normalized", "`/admin/${param.id}`"]);
        says("/v2//items?x=1", &["normalized", "`/v2/items?x=1`"]);
        says("/v2/./items", &["`/v2/items`"]);
        says("/%76%32/items", &["`/v2/items`"]);
        says("/../admin", &["above the root"]);
        // Found by a review: the form offered dropped the param the `..` climbed over.
        says("/v2/${param.id}/..", &["would remove a `${...}` value"]);
        assert!(!upstream_path_problem("rewrite", "/v2/${param.id}/..").unwrap_or_default().contains("reads `/v2/`"));
    }

    #[test]
    fn prefix_rewrites_are_literal_paths_without_a_query() {
        for ok in ["/v2", "/", "/v2/", "/internal/v2"] {
            assert_eq!(upstream_path_problem("prefix_rewrite", ok), None, "{ok}");
        }
        let query = upstream_path_problem("prefix_rewrite", "/v2?x=1").unwrap_or_default();
        assert!(query.contains("`?`") && query.contains("`/v2`"), "{query}");
        let variable = upstream_path_problem("prefix_rewrite", "/v2/${param.id}").unwrap_or_default();
        assert!(variable.contains("literal") && variable.contains("`rewrite`"), "{variable}");
        let dots = upstream_path_problem("prefix_rewrite", "/v2/..").unwrap_or_default();
        assert!(dots.starts_with("`prefix_rewrite = ") && dots.contains("reads `/`"), "{dots}");
        assert!(upstream_path_problem("prefix_rewrite", "v2").is_some_and(|p| p.contains("write `/v2`")));
    }

    #[test]
    fn path_settings_that_would_leave_another_unused_are_refused() {
        assert_eq!(prefix_rewrite_problem("/v1", true, false), None);
        let exact = prefix_rewrite_problem("/v1/{id}", false, false).unwrap_or_default();
        assert!(exact.contains("path_prefix") && exact.contains("`rewrite`"), "{exact}");
        let both = prefix_rewrite_problem("/v1", true, true).unwrap_or_default();
        assert!(both.contains("`rewrite`") && both.contains("whole path"), "{both}");
        assert_eq!(strip_prefix_conflict(false, false), None);
        let rewrite = strip_prefix_conflict(true, false).unwrap_or_default();
        assert!(rewrite.contains("replaces the whole path") && rewrite.contains("prefix_rewrite = \"/v2\""), "{rewrite}");
        let swap = strip_prefix_conflict(false, true).unwrap_or_default();
        assert!(swap.contains("prefix_rewrite = \"/\""), "{swap}");
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
        let literal = strip_prefix_problem("/users/{id}", "/users/{id}", false).unwrap_or_default();
        assert!(literal.starts_with("`/users/{id}` is literal text"), "{literal}");
        assert!(strip_prefix_problem("/users/me", "/users/{id}", false).is_none(), "a literal segment where a param is: applies to that path");
    }
}
