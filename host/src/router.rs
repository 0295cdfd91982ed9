//! Picking the route for a request.
//!
//! # Precedence (most specific wins)
//! 1. **Host**: routes listing the exact host beat routes with a wildcard host (`*.example.com`,
//!    longest suffix first), which beat routes for any host. A more specific host that has no
//!    matching path falls through to the next level.
//! 2. **Path**, within one host level: a `path` route that matches beats every `path_prefix` route;
//!    among `path` patterns a static segment beats a `{param}` segment (matchit's order), so
//!    `path = "/users/me"` beats `path = "/users/{id}"`; among prefixes the longest wins. Prefixes
//!    are literal and match on segment boundaries: `/api` matches `/api`, `/api/` and `/api/x`.
//! 3. **Method**: at the same host level and path, a route listing the method beats a route for any
//!    method. A route listing `GET` takes `HEAD` too (RFC 9110 9.3.2: HEAD is GET without the
//!    content, and every server framework runs the GET handler for it), after any route there
//!    that lists `HEAD` itself: otherwise a `HEAD` passed a GET route's plugins (its
//!    authentication) for a catch-all route, and the upstream ran the GET handler all the same.
//! 4. **Headers**: at the same host level, path and method, a route whose `headers` all match
//!    beats a route without conditions (more conditions first, then config order). A route whose
//!    headers do not match is passed over as if its path did not match: the next candidate, then
//!    the prefixes, then the next host level. So a canary route (`headers = { x-canary = "1" }`)
//!    and the plain route can share a path.
//!
//! Two routes with the same host, path, method and headers are a config error, as are two
//! patterns matchit cannot tell apart (`/a/{x}` and `/a/{y}`).

use std::collections::HashMap;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

/// How a route matches paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// The whole path matches this pattern (`/users/{id}`).
    Exact(String),
    /// The path starts with this prefix on a segment boundary.
    Prefix(String),
}

/// What the router needs to know of a route.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    /// Route id, for error messages.
    pub id: String,
    /// Hosts (exact or `*.suffix`); empty for any host.
    pub hosts: Vec<String>,
    /// Methods; empty for any method.
    pub methods: Vec<Method>,
    /// Path matching.
    pub path: PathMatch,
    /// Headers the request must carry; empty: none.
    pub headers: Vec<HeaderMatch>,
}

/// A header a route requires: a field of that name with one of `values` (exactly), or with any
/// value when `values` is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatch {
    /// The header's name.
    pub name: HeaderName,
    /// The values accepted; empty: any.
    pub values: Vec<HeaderValue>,
}

impl HeaderMatch {
    /// Whether a field of `headers` satisfies this condition.
    fn matches(&self, headers: &HeaderMap) -> bool {
        headers.get_all(&self.name).iter().any(|v| self.values.is_empty() || self.values.contains(v))
    }

    /// The condition as text, to tell two routes' conditions apart (`x-a=1|2`).
    fn canonical(conditions: &[HeaderMatch]) -> String {
        let mut parts: Vec<String> = conditions
            .iter()
            .map(|c| {
                let mut values: Vec<&[u8]> = c.values.iter().map(HeaderValue::as_bytes).collect();
                values.sort();
                let values: Vec<String> = values.iter().map(|v| String::from_utf8_lossy(v).into_owned()).collect();
                format!("{}={}", c.name, values.join("|"))
            })
            .collect();
        parts.sort();
        parts.join(",")
    }
}

/// Why a route table could not be built.
#[derive(Debug, Clone, thiserror::Error)]
#[error("route `{route}`: {message}")]
pub struct RouteError {
    /// Index of the route at fault.
    pub index: usize,
    /// Its id.
    pub route: String,
    /// What is wrong.
    pub message: String,
}

#[derive(Default)]
struct Level {
    /// Exact patterns per method: the value is an index into `candidates`.
    by_method: HashMap<Method, matchit::Router<usize>>,
    any_method: matchit::Router<usize>,
    /// The routes one matched pattern may be, in precedence order (headers, then any-method
    /// routes after method-specific ones); the first whose headers match wins.
    candidates: Vec<Box<[usize]>>,
    /// Prefix routes: (prefix without trailing `/`, method or any, route index), longest first,
    /// at equal length by [`prefix_rank`] (method-specific, `GET` after the others as it also
    /// takes `HEAD`, then any-method), then routes with header conditions.
    prefixes: Vec<(String, Option<Method>, usize)>,
    /// Exact patterns as read, before they are compiled into the routers: (method or None,
    /// pattern, route indices), in insertion order.
    exact: Vec<(Option<Method>, String, Vec<usize>)>,
    /// (method or None, pattern, headers) -> route index, to name duplicates.
    seen: HashMap<(Option<Method>, String, String), usize>,
}

/// The compiled routes of one config.
pub struct RouteTable<T> {
    routes: Vec<T>,
    /// Each route's header conditions, by index (empty for most).
    conditions: Vec<Box<[HeaderMatch]>>,
    exact_hosts: HashMap<String, Level>,
    wildcard_hosts: Vec<(String, Level)>,
    any_host: Level,
}

/// A matched route and the params its pattern captured.
pub struct RouteMatch<'a, T> {
    /// The route.
    pub route: &'a T,
    /// Captured params, percent-decoded.
    pub params: Vec<(String, String)>,
    /// The first param whose percent-decoded bytes are not UTF-8 (`%FF`), if any: it cannot be
    /// handed on as text without changing it, so the request is refused (as Express refuses it).
    pub undecodable: Option<String>,
}

impl<T> RouteTable<T> {
    /// Builds the table. `routes[i]` is the value returned when `specs[i]` matches.
    pub fn build(specs: &[RouteSpec], routes: Vec<T>) -> Result<Self, RouteError> {
        let mut exact_hosts: HashMap<String, Level> = HashMap::new();
        let mut wildcard_hosts: HashMap<String, Level> = HashMap::new();
        let mut any_host = Level::default();

        // Method-specific routes first, so they take a pattern before an any-method route does.
        let mut order: Vec<usize> = (0..specs.len()).collect();
        order.sort_by_key(|&i| specs[i].methods.is_empty());

        for &index in &order {
            let spec = &specs[index];
            let err = |message: String| RouteError { index, route: spec.id.clone(), message };
            check_path(&spec.path).map_err(err)?;
            for host in &spec.hosts {
                let wildcard_ok = host.strip_prefix("*.").is_some_and(|rest| !rest.is_empty() && !rest.contains('*'));
                if host.contains('*') && !wildcard_ok {
                    return Err(err(format!("host `{host}`: a wildcard must be one leading `*.`, as in `*.example.com`")));
                }
            }
            insert_everywhere(spec, index, &mut any_host, &mut exact_hosts, &mut wildcard_hosts).map_err(err)?;
        }

        let conditions_of = |i: usize| specs[i].headers.len();
        for level in exact_hosts.values_mut().chain(wildcard_hosts.values_mut()).chain(std::iter::once(&mut any_host)) {
            level.prefixes.sort_by(|a, b| {
                b.0.len()
                    .cmp(&a.0.len())
                    .then_with(|| prefix_rank(a.1.as_ref()).cmp(&prefix_rank(b.1.as_ref())))
                    .then_with(|| conditions_of(b.2).cmp(&conditions_of(a.2)))
            });
            level.compile(&conditions_of).map_err(|(index, message)| RouteError { index, route: specs[index].id.clone(), message })?;
        }
        let mut wildcard_hosts: Vec<(String, Level)> = wildcard_hosts.into_iter().collect();
        wildcard_hosts.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        let conditions = specs.iter().map(|s| s.headers.clone().into_boxed_slice()).collect();
        Ok(Self { routes, conditions, exact_hosts, wildcard_hosts, any_host })
    }

    /// Whether any route names a host: if none does, the request's host chooses nothing.
    pub fn names_hosts(&self) -> bool {
        !self.exact_hosts.is_empty() || !self.wildcard_hosts.is_empty()
    }

    /// Finds the route for a request. `host` may carry a port; it is ignored. So is one trailing
    /// dot: `api.example.com.` is the same name, fully qualified (nginx matches its server names
    /// so), and it must not miss a host's route (and its plugins) for a looser one.
    pub fn find(&self, host: Option<&str>, method: &Method, path: &str, headers: &HeaderMap) -> Option<RouteMatch<'_, T>> {
        // A config whose routes name no host (the common one) has nothing to look the host up
        // in: it is not cut from its port and lowered for nothing.
        let host = host.filter(|_| self.names_hosts());
        if let Some(host) = host {
            let host = strip_port(host);
            let host = host.strip_suffix('.').unwrap_or(host);
            let lowered;
            let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
                lowered = host.to_ascii_lowercase();
                lowered.as_str()
            } else {
                host
            };
            if let Some(found) = self.exact_hosts.get(host).and_then(|l| self.find_in(l, method, path, headers)) {
                return Some(found);
            }
            for (suffix, level) in &self.wildcard_hosts {
                if host.len() > suffix.len()
                    && host.ends_with(suffix.as_str())
                    && let Some(found) = self.find_in(level, method, path, headers)
                {
                    return Some(found);
                }
            }
        }
        self.find_in(&self.any_host, method, path, headers)
    }

    /// Whether route `index`'s header conditions (most routes have none) hold for `headers`.
    fn headers_match(&self, index: usize, headers: &HeaderMap) -> bool {
        self.conditions.get(index).is_none_or(|conditions| conditions.iter().all(|c| c.matches(headers)))
    }

    fn find_in(&self, level: &Level, method: &Method, path: &str, headers: &HeaderMap) -> Option<RouteMatch<'_, T>> {
        let router = level.by_method.get(method).unwrap_or(&level.any_method);
        if let Ok(matched) = router.at(path)
            && let Some(&index) = level.candidates.get(*matched.value)?.iter().find(|&&i| self.headers_match(i, headers))
        {
            let mut undecodable = None;
            let params = matched
                .params
                .iter()
                .map(|(k, v)| {
                    let value = match percent_encoding::percent_decode_str(v).decode_utf8() {
                        Ok(value) => value.into_owned(),
                        Err(_) => {
                            undecodable.get_or_insert_with(|| k.to_owned());
                            String::new()
                        }
                    };
                    (k.to_owned(), value)
                })
                .collect();
            return Some(RouteMatch { route: self.routes.get(index)?, params, undecodable });
        }
        level
            .prefixes
            .iter()
            .find(|(prefix, m, index)| {
                m.as_ref().is_none_or(|m| takes(m, method))
                    && path.strip_prefix(prefix.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
                    && self.headers_match(*index, headers)
            })
            .and_then(|(_, _, index)| Some(RouteMatch { route: self.routes.get(*index)?, params: Vec::new(), undecodable: None }))
    }

    /// Every route, in config order.
    pub fn routes(&self) -> &[T] {
        &self.routes
    }
}

/// Whether a route listing `listed` takes a request of `method`: the same method, or a `HEAD`
/// for a `GET` route (RFC 9110 9.3.2: a server answers HEAD as GET, without the content, so the
/// upstream runs the GET handler and the GET route's plugins must run for it too).
fn takes(listed: &Method, method: &Method) -> bool {
    listed == method || (*listed == Method::GET && *method == Method::HEAD)
}

/// The order of prefix routes of one length: a route listing its method first, `GET` after the
/// others (a `HEAD` route at the same prefix wins a `HEAD` over it), any-method routes last.
fn prefix_rank(method: Option<&Method>) -> u8 {
    match method {
        Some(m) if *m == Method::GET => 1,
        Some(_) => 0,
        None => 2,
    }
}

/// The methods a route listing `methods` serves, as `Allow` and the admin API name them: those
/// listed, with `HEAD` after `GET` when it lists `GET` without it ([`takes`]). Empty: any method.
pub fn served_methods(methods: &[Method]) -> Vec<Method> {
    let mut served = methods.to_vec();
    if let Some(at) = served.iter().position(|m| *m == Method::GET)
        && !served.contains(&Method::HEAD)
    {
        served.insert(at + 1, Method::HEAD);
    }
    served
}

fn insert_everywhere(
    spec: &RouteSpec,
    index: usize,
    any_host: &mut Level,
    exact_hosts: &mut HashMap<String, Level>,
    wildcard_hosts: &mut HashMap<String, Level>,
) -> Result<(), String> {
    if spec.hosts.is_empty() {
        insert(any_host, spec, index)?;
    }
    for host in &spec.hosts {
        let host = host.to_ascii_lowercase();
        let host = host.strip_suffix('.').map(str::to_owned).unwrap_or(host);
        let level = match host.strip_prefix('*') {
            Some(suffix) => wildcard_hosts.entry(suffix.to_owned()).or_default(),
            None => exact_hosts.entry(host).or_default(),
        };
        insert(level, spec, index)?;
    }
    Ok(())
}

fn insert(level: &mut Level, spec: &RouteSpec, index: usize) -> Result<(), String> {
    let methods: Vec<Option<Method>> =
        if spec.methods.is_empty() { vec![None] } else { spec.methods.iter().cloned().map(Some).collect() };
    let headers = HeaderMatch::canonical(&spec.headers);
    for method in methods {
        let (kind, pattern) = match &spec.path {
            PathMatch::Exact(p) => ("path", p.clone()),
            PathMatch::Prefix(p) => ("prefix", p.trim_end_matches('/').to_owned()),
        };
        let key = (method.clone(), format!("{kind} {pattern}"), headers.clone());
        if let Some(&other) = level.seen.get(&key) {
            if other == index {
                continue;
            }
            return Err(format!(
                "same host, method{} and {kind} as route #{other}{}",
                if headers.is_empty() { "" } else { ", headers" },
                method.as_ref().map(|m| format!(" ({m})")).unwrap_or_default()
            ));
        }
        level.seen.insert(key, index);
        if kind == "prefix" {
            level.prefixes.push((pattern, method, index));
            continue;
        }
        match level.exact.iter_mut().find(|(m, p, _)| *m == method && *p == pattern) {
            Some((_, _, routes)) => routes.push(index),
            None => level.exact.push((method, pattern, vec![index])),
        }
    }
    Ok(())
}

impl Level {
    /// Builds the routers from the exact patterns read: each pattern's candidates ordered by
    /// their number of header conditions (`conditions_of`), more first, config order kept among
    /// equals; a method's router also holds the any-method routes' patterns, their candidates
    /// after the method's own, and `HEAD`'s the `GET` routes' between the two
    /// ([`Level::method_router`]). Errors name the first route of the pattern at fault.
    fn compile(&mut self, conditions_of: &dyn Fn(usize) -> usize) -> Result<(), (usize, String)> {
        let ordered = |routes: &[usize]| {
            let mut routes = routes.to_vec();
            routes.sort_by_key(|&i| std::cmp::Reverse(conditions_of(i)));
            routes
        };
        let exact = std::mem::take(&mut self.exact);
        let listing = |method: Option<&Method>| -> Vec<(&String, Vec<usize>)> {
            exact.iter().filter(|(m, _, _)| m.as_ref() == method).map(|(_, p, r)| (p, ordered(r))).collect()
        };
        let any = listing(None);
        for (pattern, routes) in &any {
            let id = self.candidates.len();
            self.candidates.push(routes.clone().into_boxed_slice());
            self.any_method.insert((*pattern).clone(), id).map_err(|e| (routes[0], conflict(pattern, e)))?;
        }
        let mut methods: Vec<&Method> = Vec::new();
        for method in exact.iter().filter_map(|(m, _, _)| m.as_ref()) {
            if !methods.contains(&method) {
                methods.push(method);
            }
        }
        // GET's routes take HEAD too (`takes`): HEAD gets a router wherever GET has one.
        if methods.contains(&&Method::GET) && !methods.contains(&&Method::HEAD) {
            methods.push(&Method::HEAD);
        }
        for method in methods {
            let mut layers = vec![listing(Some(method))];
            if *method == Method::HEAD {
                layers.push(listing(Some(&Method::GET)));
            }
            layers.push(any.clone());
            let router = self.method_router(&layers)?;
            self.by_method.insert(method.clone(), router);
        }
        Ok(())
    }

    /// One method's router, from `layers` of (pattern, routes) in precedence order: the routes
    /// listing the method, for `HEAD` then those listing `GET`, then the any-method routes. A
    /// pattern's candidates are its routes in the first layer holding it, then in each later one
    /// (a `HEAD` route's, then the `GET` route's, then the any-method route's), so one whose
    /// headers do not match passes the request to the next. A pattern a later layer holds that
    /// matchit cannot tell apart from one an earlier layer holds is left to the earlier one; in
    /// the first layer it is a config error.
    fn method_router(&mut self, layers: &[Vec<(&String, Vec<usize>)>]) -> Result<matchit::Router<usize>, (usize, String)> {
        let mut router = matchit::Router::new();
        let mut held: Vec<&String> = Vec::new();
        for (depth, layer) in layers.iter().enumerate() {
            for (pattern, routes) in layer {
                if held.contains(pattern) {
                    continue;
                }
                let mut candidates = routes.clone();
                for later in &layers[depth + 1..] {
                    for &index in later.iter().filter(|(p, _)| p == pattern).flat_map(|(_, r)| r) {
                        if !candidates.contains(&index) {
                            candidates.push(index);
                        }
                    }
                }
                let id = self.candidates.len();
                match router.insert((*pattern).clone(), id) {
                    Ok(()) => self.candidates.push(candidates.into_boxed_slice()),
                    Err(matchit::InsertError::Conflict { .. }) if depth > 0 => {}
                    Err(e) => return Err((routes[0], conflict(pattern, e))),
                }
                held.push(pattern);
            }
        }
        Ok(router)
    }
}

/// Explains a pattern matchit cannot add beside another.
fn conflict(pattern: &str, error: matchit::InsertError) -> String {
    match error {
        matchit::InsertError::Conflict { with } => format!(
            "path `{pattern}` cannot be told apart from `{with}` of an earlier route \
             (params at the same place must have the same name)"
        ),
        other => format!("path `{pattern}`: {other}"),
    }
}

/// Checks a route's path or prefix.
fn check_path(path: &PathMatch) -> Result<(), String> {
    let (PathMatch::Exact(p) | PathMatch::Prefix(p)) = path;
    if p.starts_with('~') {
        return Err(format!(
            "path `{p}`: there are no regular-expression routes (nginx's `location ~`): match segments with `path = \"/users/{{id}}\"`, or everything under a prefix with `path_prefix`"
        ));
    }
    if !p.starts_with('/') {
        return Err(format!("path `{p}` must start with `/`"));
    }
    // A glob (Kong's and Traefik's habit) would be matched as a literal `*`, and never match.
    if p.split('/').any(|segment| segment.ends_with('*')) {
        let prefix = p.split('*').next().unwrap_or(p).trim_end_matches('/');
        return Err(format!(
            "path `{p}`: `*` is no wildcard here (it would match only a literal `*`): for everything under a prefix write `path_prefix = \"{}\"`, for one segment `{{name}}`",
            if prefix.is_empty() { "/" } else { prefix }
        ));
    }
    if p.contains("{*") {
        return Err(format!("path `{p}`: use `path_prefix` instead of a catch-all segment"));
    }
    if matches!(path, PathMatch::Prefix(_)) && (p.contains('{') || p.contains('}')) {
        return Err(format!("path_prefix `{p}` is literal: `{{params}}` belong in `path`"));
    }
    // Requests are routed on their normalized path (`proxy::path`): a route written otherwise
    // (`/a/../b`, `/a//b`, `/%61dmin`) would silently never match.
    match crate::proxy::path::normalize(p) {
        Ok(None) => {}
        Ok(Some(normal)) => {
            return Err(format!("`{p}` never matches: requests are routed on their normalized path, where it reads `{normal}`; write that"));
        }
        Err(e) => return Err(format!("`{p}` never matches: {e}, and such a request is refused with a 400")),
    }
    // A request's path holds no query, fragment, space or raw non-ASCII byte (its URI cannot).
    if let Some(c) = p.chars().find(|&c| !path_char(c)) {
        let why = match c {
            '?' => "a path is matched without the query, which `?` starts".to_owned(),
            '#' => "a fragment (`#`) is never sent in a request".to_owned(),
            c => format!("`{}` cannot be in a request's path as it is: write it percent-encoded", c.escape_debug()),
        };
        return Err(format!("`{p}` never matches: {why}"));
    }
    // Two parameters of one name: `${param.x}` could name only one of them.
    let mut names = crate::config::route_rules::path_params(p);
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(format!("path `{p}` names the parameter `{{{}}}` twice", pair[0]));
    }
    Ok(())
}

/// Whether `c` can be in a route's path: what a request's path can hold (RFC 3986 `pchar`,
/// `/`, `%` of percent-encoding) and the braces of `{params}`.
fn path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@/%{}".contains(c)
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(h, _)| &h[1..]);
    }
    host.rsplit_once(':').map_or(host, |(h, port)| if port.bytes().all(|b| b.is_ascii_digit()) { h } else { host })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_that_could_never_match_or_names_a_parameter_twice_is_refused() {
        for (path, says) in [
            ("/x/../y", "reads `/y`"),
            ("/p//q", "reads `/p/q`"),
            ("/%61dmin", "reads `/admin`"),
            ("/a/./b/", "reads `/a/b/`"),
            ("/../x", "climbs above the root"),
            ("/a\\b", "raw `\\`"),
            ("/f/a?b=1", "without the query"),
            ("/g/a#b", "fragment"),
            ("/h/a b", "` ` cannot be"),
            ("/caf\u{e9}", "`\u{e9}` cannot be"),
            ("/tab\there", "`\\t` cannot be"),
        ] {
            for route in [PathMatch::Exact(path.into()), PathMatch::Prefix(path.into())] {
                let err = check_path(&route).expect_err(path);
                assert!(err.contains("never matches") && err.contains(says), "{path}: {err}");
            }
        }
        for (glob, prefix) in [("/api/*", "`path_prefix = \"/api\"`"), ("/v1/files*", "`path_prefix = \"/v1/files\"`"), ("/**", "`path_prefix = \"/\"`")] {
            let err = check_path(&PathMatch::Exact(glob.into())).expect_err(glob);
            assert!(err.contains("no wildcard") && err.contains(prefix), "{glob}: {err}");
        }
        let err = check_path(&PathMatch::Prefix("~ ^/v[0-9]+/".into())).expect_err("regex");
        assert!(err.contains("no regular-expression routes"), "{err}");
        let err = check_path(&PathMatch::Exact("/orders/{id}/items/{id}".into())).expect_err("twice");
        assert!(err.contains("`{id}` twice"), "{err}");
        for fine in ["/", "/api/", "/orders/{id}/items/{item}", "/a%2Fb", "/caf%C3%A9", "/{a}/{b}/{c}"] {
            assert_eq!(check_path(&PathMatch::Exact(fine.into())), Ok(()), "{fine}");
        }
    }

    fn spec(id: &str, hosts: &[&str], methods: &[&str], path: PathMatch) -> RouteSpec {
        RouteSpec {
            id: id.into(),
            hosts: hosts.iter().map(|s| s.to_string()).collect(),
            methods: methods.iter().map(|m| m.parse().unwrap()).collect(),
            path,
            headers: Vec::new(),
        }
    }

    fn table(specs: Vec<RouteSpec>) -> RouteTable<String> {
        let ids = specs.iter().map(|s| s.id.clone()).collect();
        RouteTable::build(&specs, ids).unwrap()
    }

    fn find(t: &RouteTable<String>, host: &str, method: &str, path: &str) -> Option<String> {
        t.find(Some(host), &method.parse().unwrap(), path, &HeaderMap::new()).map(|m| m.route.clone())
    }

    #[test]
    fn static_beats_param_beats_prefix() {
        let t = table(vec![
            spec("prefix", &[], &[], PathMatch::Prefix("/users".into())),
            spec("param", &[], &[], PathMatch::Exact("/users/{id}".into())),
            spec("me", &[], &[], PathMatch::Exact("/users/me".into())),
        ]);
        assert_eq!(find(&t, "x", "GET", "/users/me").as_deref(), Some("me"));
        assert_eq!(find(&t, "x", "GET", "/users/42").as_deref(), Some("param"));
        assert_eq!(find(&t, "x", "GET", "/users/42/posts").as_deref(), Some("prefix"));
        assert_eq!(find(&t, "x", "GET", "/users").as_deref(), Some("prefix"));
        assert_eq!(find(&t, "x", "GET", "/users/").as_deref(), Some("prefix"));
        assert_eq!(find(&t, "x", "GET", "/usersx"), None);
    }

    #[test]
    fn longer_prefix_wins() {
        let t = table(vec![
            spec("root", &[], &[], PathMatch::Prefix("/".into())),
            spec("api", &[], &[], PathMatch::Prefix("/api".into())),
            spec("v2", &[], &[], PathMatch::Prefix("/api/v2".into())),
        ]);
        assert_eq!(find(&t, "x", "GET", "/api/v2/x").as_deref(), Some("v2"));
        assert_eq!(find(&t, "x", "GET", "/api/v1/x").as_deref(), Some("api"));
        assert_eq!(find(&t, "x", "GET", "/other").as_deref(), Some("root"));
        assert_eq!(find(&t, "x", "GET", "/").as_deref(), Some("root"));
    }

    #[test]
    fn method_specific_beats_any_method_on_same_path() {
        let t = table(vec![
            spec("any", &[], &[], PathMatch::Exact("/items".into())),
            spec("post", &[], &["POST"], PathMatch::Exact("/items".into())),
        ]);
        assert_eq!(find(&t, "x", "POST", "/items").as_deref(), Some("post"));
        assert_eq!(find(&t, "x", "GET", "/items").as_deref(), Some("any"));
    }

    #[test]
    fn method_only_route_does_not_match_other_methods() {
        let t = table(vec![spec("get", &[], &["GET"], PathMatch::Exact("/a".into()))]);
        assert_eq!(find(&t, "x", "GET", "/a").as_deref(), Some("get"));
        assert_eq!(find(&t, "x", "DELETE", "/a"), None);
        assert_eq!(find(&t, "x", "HEAD", "/a").as_deref(), Some("get"), "HEAD is GET without the content");
    }

    #[test]
    fn a_get_route_takes_head_and_a_head_route_at_the_same_place_wins_it() {
        // The pentest's config: a HEAD slipped past the GET route's key-auth to the catch-all.
        let t = table(vec![
            spec("public", &[], &[], PathMatch::Prefix("/".into())),
            spec("reports", &[], &["GET"], PathMatch::Exact("/reports/{id}".into())),
            spec("docs", &[], &["GET"], PathMatch::Prefix("/docs".into())),
            spec("docs-any", &[], &[], PathMatch::Prefix("/docs".into())),
            spec("items", &[], &[], PathMatch::Exact("/items".into())),
            spec("items-get", &[], &["GET", "POST"], PathMatch::Exact("/items".into())),
        ]);
        for method in ["GET", "HEAD"] {
            assert_eq!(find(&t, "x", method, "/reports/7").as_deref(), Some("reports"), "{method}");
            assert_eq!(find(&t, "x", method, "/docs/a").as_deref(), Some("docs"), "{method}");
            assert_eq!(find(&t, "x", method, "/items").as_deref(), Some("items-get"), "{method}");
        }
        assert_eq!(find(&t, "x", "DELETE", "/reports/7").as_deref(), Some("public"), "other methods still pass it by");
        assert_eq!(find(&t, "x", "DELETE", "/docs/a").as_deref(), Some("docs-any"));
        assert_eq!(find(&t, "x", "OPTIONS", "/items").as_deref(), Some("items"));

        // A route listing HEAD itself, at the same path or prefix, wins a HEAD.
        let t = table(vec![
            spec("public", &[], &[], PathMatch::Prefix("/".into())),
            spec("reports", &[], &["GET"], PathMatch::Exact("/reports/{id}".into())),
            spec("reports-head", &[], &["HEAD"], PathMatch::Exact("/reports/{id}".into())),
            spec("docs", &[], &["GET"], PathMatch::Prefix("/docs".into())),
            spec("docs-head", &[], &["HEAD"], PathMatch::Prefix("/docs".into())),
            spec("docs-sub", &[], &["GET"], PathMatch::Prefix("/docs/sub".into())),
        ]);
        assert_eq!(find(&t, "x", "HEAD", "/reports/7").as_deref(), Some("reports-head"));
        assert_eq!(find(&t, "x", "GET", "/reports/7").as_deref(), Some("reports"));
        assert_eq!(find(&t, "x", "HEAD", "/docs/a").as_deref(), Some("docs-head"));
        assert_eq!(find(&t, "x", "GET", "/docs/a").as_deref(), Some("docs"));
        assert_eq!(find(&t, "x", "HEAD", "/docs/sub/a").as_deref(), Some("docs-sub"), "the longer prefix first, as for any method");

        // A HEAD route whose headers do not match passes a HEAD to the GET route of its path,
        // not to the catch-all.
        let t = table(vec![
            spec("reports", &[], &["GET"], PathMatch::Exact("/reports/{id}".into())),
            with_headers(spec("reports-head", &[], &["HEAD"], PathMatch::Exact("/reports/{id}".into())), &[("x-h", &["1"])]),
            spec("public", &[], &[], PathMatch::Prefix("/".into())),
        ]);
        assert_eq!(find_with(&t, "HEAD", "/reports/7", &[("x-h", "1")]).as_deref(), Some("reports-head"));
        assert_eq!(find_with(&t, "HEAD", "/reports/7", &[]).as_deref(), Some("reports"));
    }

    #[test]
    fn a_get_route_serves_head_too_as_allow_says() {
        let served = |methods: &[&str]| {
            let methods: Vec<Method> = methods.iter().map(|m| m.parse().unwrap()).collect();
            served_methods(&methods).iter().map(|m| m.to_string()).collect::<Vec<_>>().join(", ")
        };
        assert_eq!(served(&["GET"]), "GET, HEAD");
        assert_eq!(served(&["POST", "GET", "OPTIONS"]), "POST, GET, HEAD, OPTIONS");
        assert_eq!(served(&["HEAD", "GET"]), "HEAD, GET");
        assert_eq!(served(&["POST"]), "POST");
        assert_eq!(served(&[]), "");
    }

    #[test]
    fn exact_host_beats_wildcard_beats_any_and_falls_through() {
        let t = table(vec![
            spec("any", &[], &[], PathMatch::Prefix("/".into())),
            spec("wild", &["*.example.com"], &[], PathMatch::Prefix("/".into())),
            spec("exact", &["api.example.com"], &[], PathMatch::Exact("/only".into())),
        ]);
        assert_eq!(find(&t, "api.example.com:8080", "GET", "/only").as_deref(), Some("exact"));
        assert_eq!(find(&t, "API.example.com", "GET", "/other").as_deref(), Some("wild"));
        assert_eq!(find(&t, "www.example.com", "GET", "/x").as_deref(), Some("wild"));
        assert_eq!(find(&t, "example.com", "GET", "/x").as_deref(), Some("any"));
        assert_eq!(find(&t, "other.org", "GET", "/x").as_deref(), Some("any"));
    }

    /// A table whose routes name no host looks none up: any host, or none, finds the same
    /// routes. One host route is enough for the host to be read.
    #[test]
    fn a_table_without_host_routes_routes_every_host_alike() {
        let t = table(vec![spec("any", &[], &[], PathMatch::Prefix("/".into())), spec("only", &[], &[], PathMatch::Exact("/only".into()))]);
        assert!(!t.names_hosts());
        for host in ["api.example.com:8080", "API.EXAMPLE.COM.", "[::1]:80", "not a host"] {
            assert_eq!(find(&t, host, "GET", "/only").as_deref(), Some("only"), "{host}");
            assert_eq!(find(&t, host, "GET", "/x").as_deref(), Some("any"), "{host}");
        }
        assert_eq!(t.find(None, &Method::GET, "/only", &HeaderMap::new()).map(|m| m.route.clone()).as_deref(), Some("only"));
        let t = table(vec![spec("any", &[], &[], PathMatch::Prefix("/".into())), spec("exact", &["a.example"], &[], PathMatch::Prefix("/".into()))]);
        assert!(t.names_hosts());
        assert_eq!(find(&t, "A.example:1", "GET", "/x").as_deref(), Some("exact"));
    }

    #[test]
    fn a_fully_qualified_host_with_its_trailing_dot_matches_its_route() {
        let t = table(vec![
            spec("any", &[], &[], PathMatch::Prefix("/".into())),
            spec("wild", &["*.example.com"], &[], PathMatch::Prefix("/".into())),
            spec("exact", &["internal.example.org."], &[], PathMatch::Prefix("/".into())),
        ]);
        for host in ["internal.example.org", "internal.example.org.", "INTERNAL.example.org.:8080"] {
            assert_eq!(find(&t, host, "GET", "/x").as_deref(), Some("exact"), "{host}");
        }
        assert_eq!(find(&t, "www.example.com.", "GET", "/x").as_deref(), Some("wild"));
        assert_eq!(find(&t, "internal.example.org..", "GET", "/x").as_deref(), Some("any"), "one dot only");
    }

    #[test]
    fn params_are_captured_and_decoded() {
        let specs = vec![spec("p", &[], &[], PathMatch::Exact("/users/{id}/files/{name}".into()))];
        let t = RouteTable::build(&specs, vec![()]).unwrap();
        let m = t.find(None, &Method::GET, "/users/7/files/a%20b", &HeaderMap::new()).unwrap();
        assert_eq!(m.params, vec![("id".into(), "7".into()), ("name".into(), "a b".into())]);
        assert_eq!(m.undecodable, None);
        // Bytes that are not UTF-8 once decoded are not made text (`%FF` and `%FE` would both
        // read U+FFFD): the first such param is named, for the request to be refused.
        let m = t.find(None, &Method::GET, "/users/%FF/files/%FE", &HeaderMap::new()).unwrap();
        assert_eq!(m.undecodable.as_deref(), Some("id"));
        let m = t.find(None, &Method::GET, "/users/caf%C3%A9/files/x", &HeaderMap::new()).unwrap();
        assert_eq!((m.params[0].1.as_str(), m.undecodable), ("café", None));
    }

    fn with_headers(mut spec: RouteSpec, headers: &[(&str, &[&str])]) -> RouteSpec {
        spec.headers = headers
            .iter()
            .map(|(name, values)| HeaderMatch { name: name.parse().unwrap(), values: values.iter().map(|v| v.parse().unwrap()).collect() })
            .collect();
        spec
    }

    fn find_with(t: &RouteTable<String>, method: &str, path: &str, headers: &[(&str, &str)]) -> Option<String> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(k.parse::<HeaderName>().unwrap(), v.parse().unwrap());
        }
        t.find(Some("x"), &method.parse().unwrap(), path, &map).map(|m| m.route.clone())
    }

    #[test]
    fn a_route_whose_headers_match_beats_the_plain_one_and_falls_through_when_they_do_not() {
        let t = table(vec![
            spec("plain", &[], &[], PathMatch::Exact("/users/{id}".into())),
            with_headers(spec("canary", &[], &[], PathMatch::Exact("/users/{id}".into())), &[("x-canary", &["1", "yes"])]),
            with_headers(spec("two", &[], &[], PathMatch::Exact("/users/{id}".into())), &[("x-canary", &["1"]), ("x-beta", &["on"])]),
            with_headers(spec("get-canary", &[], &["GET"], PathMatch::Exact("/users/{id}".into())), &[("x-get", &["1"])]),
            with_headers(spec("only-canary", &[], &[], PathMatch::Exact("/only".into())), &[("x-canary", &["1"])]),
            spec("prefix", &[], &[], PathMatch::Prefix("/".into())),
            with_headers(spec("prefix-canary", &[], &[], PathMatch::Prefix("/".into())), &[("x-canary", &["1"])]),
        ]);
        assert_eq!(find_with(&t, "GET", "/users/7", &[]).as_deref(), Some("plain"));
        assert_eq!(find_with(&t, "GET", "/users/7", &[("x-canary", "1")]).as_deref(), Some("canary"));
        assert_eq!(find_with(&t, "PUT", "/users/7", &[("x-canary", "yes")]).as_deref(), Some("canary"), "any of the values");
        assert_eq!(find_with(&t, "GET", "/users/7", &[("x-canary", "2")]).as_deref(), Some("plain"), "values match exactly");
        assert_eq!(find_with(&t, "GET", "/users/7", &[("x-canary", "1"), ("x-beta", "on")]).as_deref(), Some("two"), "more conditions first");
        // The method comes before headers: a GET route's headers are tried before any-method ones.
        assert_eq!(find_with(&t, "GET", "/users/7", &[("x-get", "1"), ("x-canary", "1")]).as_deref(), Some("get-canary"));
        assert_eq!(find_with(&t, "GET", "/users/7", &[("x-canary", "1")]).as_deref(), Some("canary"), "the GET route passed over");
        // No exact candidate's headers match: the prefixes, with their own conditions.
        assert_eq!(find_with(&t, "GET", "/only", &[]).as_deref(), Some("prefix"));
        assert_eq!(find_with(&t, "GET", "/only", &[("x-canary", "1")]).as_deref(), Some("only-canary"));
        assert_eq!(find_with(&t, "GET", "/else", &[("x-canary", "1")]).as_deref(), Some("prefix-canary"));
        // One field of a repeated header is enough.
        assert_eq!(find_with(&t, "GET", "/else", &[("x-canary", "0"), ("x-canary", "1")]).as_deref(), Some("prefix-canary"));
    }

    #[test]
    fn the_same_path_and_headers_twice_is_an_error_other_headers_are_not() {
        let same = vec![
            with_headers(spec("a", &[], &["GET"], PathMatch::Exact("/x".into())), &[("x-a", &["1", "2"])]),
            with_headers(spec("b", &[], &["GET"], PathMatch::Exact("/x".into())), &[("x-a", &["2", "1"])]),
        ];
        let err = RouteTable::build(&same, vec![(), ()]).err().unwrap();
        assert_eq!((err.index, err.message.as_str()), (1, "same host, method, headers and path as route #0 (GET)"));
        let other = vec![
            with_headers(spec("a", &[], &["GET"], PathMatch::Exact("/x".into())), &[("x-a", &["1"])]),
            with_headers(spec("b", &[], &["GET"], PathMatch::Exact("/x".into())), &[("x-a", &["2"])]),
            spec("c", &[], &["GET"], PathMatch::Exact("/x".into())),
        ];
        assert!(RouteTable::build(&other, vec![(), (), ()]).is_ok());
    }

    #[test]
    fn duplicates_and_conflicts_are_errors() {
        let dup = vec![
            spec("a", &[], &["GET"], PathMatch::Exact("/x".into())),
            spec("b", &[], &["GET"], PathMatch::Exact("/x".into())),
        ];
        let err = RouteTable::build(&dup, vec![(), ()]).err().unwrap();
        assert_eq!(err.index, 1);
        let conflict = vec![
            spec("a", &[], &[], PathMatch::Exact("/x/{id}".into())),
            spec("b", &[], &[], PathMatch::Exact("/x/{name}".into())),
        ];
        assert!(RouteTable::build(&conflict, vec![(), ()]).is_err());
        let bad = vec![spec("a", &["a.*.com"], &[], PathMatch::Exact("/".into()))];
        assert!(RouteTable::build(&bad, vec![()]).is_err());
    }
}
