//! Session affinity (`[upstreams.<name>] hash_on`): requests that share a key (the client's IP,
//! its consumer, a header, a cookie, a query parameter or the path) go to the same target, as
//! Kong's `hash_on`, nginx's `hash ... consistent` and Envoy's ring hash do, so a backend's local
//! cache or session keeps serving the same clients.
//!
//! Targets are chosen by weighted rendezvous hashing (highest random weight): each target scores
//! the key, the best usable target wins. When a target leaves rotation (marked down, weight 0)
//! only its own keys move, to their second best; when it comes back they return. The hash is
//! FNV-1a with a SplitMix64 finish, fixed by this file rather than by a library or the standard
//! library's `Hasher` (neither promises stable output), so every gateway instance of one
//! deployment, whatever its build, sends a key to the same target.
//!
//! A request without the key (no such header, no consumer) is balanced as usual. The cost, only
//! on an upstream with `hash_on`: hashing the key once, and one mix and comparison per target.
//!
//! With `hash_cookie` ([`HashCookie`]), a request without the `hash_on` cookie is not balanced:
//! the gateway makes a random value, places the request by it as if the client had sent it, and
//! sets it as the cookie on the answer, so the client's next requests come back to that target
//! (Kong's `hash_on = cookie`, nginx's `sticky cookie`). An upstream without it pays one
//! `Option` check ([`placing_key`]).

use crate::exchange::RequestState;

/// What a request's target is chosen by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// The client's IP address (behind `trusted_proxies`, the one they vouch for).
    Ip,
    /// The consumer an authentication plugin established (`consumer` in the context).
    Consumer,
    /// A request header's value (lower-case name).
    Header(http::HeaderName),
    /// A cookie's value.
    Cookie(String),
    /// A query parameter's value, decoded (the first, if given twice).
    Query(String),
    /// The request path, as routed (normalized).
    Path,
}

impl HashOn {
    /// Parses `ip`, `consumer`, `path`, `header:<name>`, `cookie:<name>` or `query:<name>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let named = |prefix: &str| text.strip_prefix(prefix).filter(|name| !name.is_empty());
        match text {
            "ip" => return Ok(HashOn::Ip),
            "consumer" => return Ok(HashOn::Consumer),
            "path" => return Ok(HashOn::Path),
            _ => {}
        }
        if let Some(name) = named("header:") {
            return http::HeaderName::from_bytes(name.as_bytes())
                .map(HashOn::Header)
                .map_err(|_| format!("`{name}` is not a header name"));
        }
        if let Some(name) = named("cookie:") {
            return Ok(HashOn::Cookie(name.to_owned()));
        }
        if let Some(name) = named("query:") {
            return Ok(HashOn::Query(name.to_owned()));
        }
        Err(format!("`{text}` is not `ip`, `consumer`, `path`, `header:<name>`, `cookie:<name>` or `query:<name>`"))
    }

    /// The hash of the request's key ([`hash_key`]), if it has one (an empty value is none).
    /// The key is hashed where it lies, except a query parameter's, decoded as plugins read it
    /// (`a%20b` and `a+b` are one key).
    pub fn key_hash(&self, request: &RequestState) -> Option<u64> {
        let (v4, v6, decoded);
        let key: &[u8] = match self {
            HashOn::Ip => match request.client_ip {
                std::net::IpAddr::V4(ip) => {
                    v4 = ip.octets();
                    &v4
                }
                std::net::IpAddr::V6(ip) => {
                    v6 = ip.octets();
                    &v6
                }
            },
            HashOn::Consumer => request.context.get("consumer")?.as_bytes(),
            HashOn::Header(name) => request.headers.get(name)?.as_bytes(),
            HashOn::Cookie(name) => cookie(&request.headers, name)?,
            HashOn::Query(name) => {
                decoded = crate::runtime::host::types::query_param(request.query.as_deref()?, name)?;
                decoded.as_bytes()
            }
            HashOn::Path => request.path.as_bytes(),
        };
        (!key.is_empty()).then(|| hash_key(key))
    }
}

/// As written in config (`ip`, `header:x-user`, ...), which [`HashOn::parse`] reads back: what
/// `/admin/routes` shows.
impl std::fmt::Display for HashOn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HashOn::Ip => f.write_str("ip"),
            HashOn::Consumer => f.write_str("consumer"),
            HashOn::Path => f.write_str("path"),
            HashOn::Header(name) => write!(f, "header:{name}"),
            HashOn::Cookie(name) => write!(f, "cookie:{name}"),
            HashOn::Query(name) => write!(f, "query:{name}"),
        }
    }
}

/// The key hash `request` is placed by on an upstream hashing `on` (`None`: balanced as usual),
/// and the cookie made for it when the upstream has `hash_cookie` (`cookie`) and the request came
/// without that cookie (or with it empty): the made value is then the key, so this request goes
/// where the cookie will send the client's next ones. Without `hash_cookie`, exactly
/// [`HashOn::key_hash`] and one `Option` check more.
pub fn placing_key<'a>(on: Option<&HashOn>, cookie: Option<&'a HashCookie>, request: &RequestState) -> (Option<u64>, Option<MadeCookie<'a>>) {
    if let Some(key_hash) = on.and_then(|on| on.key_hash(request)) {
        return (Some(key_hash), None);
    }
    match cookie {
        Some(cookie) => {
            let made = cookie.make();
            (Some(made.key_hash()), Some(made))
        }
        None => (None, None),
    }
}

/// `hash_cookie`: the `hash_on` cookie the gateway sets for a client that came without it.
/// Made only on an upstream that opts in: one hashing on an application's own session cookie
/// (`cookie:JSESSIONID`) must never have the gateway invent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashCookie {
    /// The cookie's name (`hash_on = "cookie:<name>"`): a token ([`cookie_name_problem`]).
    name: String,
    /// What follows the value in `Set-Cookie`, made once at load:
    /// `; Path=<path>[; Max-Age=<s>]; HttpOnly; SameSite=Lax`.
    attributes: String,
    /// A `__Secure-` or `__Host-` name: a browser keeps such a cookie only with `Secure`, so it
    /// always says `Secure` (and then works only over HTTPS).
    always_secure: bool,
    /// Its `Path`, as configured (for `/admin/routes`).
    path: String,
    /// Its `Max-Age` in seconds, as configured (for `/admin/routes`); none: a session cookie.
    max_age_s: Option<u64>,
}

impl HashCookie {
    /// Cookie `name` with `Path=path` and, given `max_age_s`, a `Max-Age` (else a session cookie,
    /// gone when the browser closes). `name` and `path` are checked at load
    /// ([`cookie_name_problem`], [`cookie_path_problem`]). `HttpOnly`: scripts have no use for
    /// it. `SameSite=Lax`: sent on a top-level navigation from another site (a link into the
    /// application lands on the client's target) but not on other sites' subrequests.
    pub fn new(name: &str, path: &str, max_age_s: Option<u64>) -> Self {
        let max_age = max_age_s.map(|s| format!("; Max-Age={s}")).unwrap_or_default();
        let always_secure = secure_prefix(name).is_some();
        Self {
            name: name.to_owned(),
            attributes: format!("; Path={path}{max_age}; HttpOnly; SameSite=Lax"),
            always_secure,
            path: path.to_owned(),
            max_age_s,
        }
    }

    /// The cookie's name (the one `hash_on = "cookie:<name>"` names).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its `Path` attribute.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Its `Max-Age` in seconds; `None`: a session cookie.
    pub fn max_age_s(&self) -> Option<u64> {
        self.max_age_s
    }

    /// A new cookie, for a request that came without one.
    pub fn make(&self) -> MadeCookie<'_> {
        let mut value = [0u8; 32];
        // 16 bytes into exactly 32 hex digits: encoding cannot fail.
        let _ = hex::encode_to_slice(random_bits(), &mut value);
        MadeCookie { cookie: self, value }
    }
}

/// 128 bits from the system's CSPRNG (the one `signing` uses): values every gateway instance
/// makes, for however many clients, do not collide, and no client can guess another's. Should
/// the system source fail, fastrand's (a target's cookie need not be secret, only unique).
fn random_bits() -> [u8; 16] {
    let mut bits = [0u8; 16];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bits).is_err() {
        bits = fastrand::u128(..).to_be_bytes();
    }
    bits
}

/// A `hash_cookie` made for one request: its value, 32 hex digits.
#[derive(Debug)]
pub struct MadeCookie<'a> {
    cookie: &'a HashCookie,
    value: [u8; 32],
}

impl MadeCookie<'_> {
    /// The key hash the request is placed by: the one the cookie will give the client's next
    /// requests ([`HashOn::key_hash`] of the value they send).
    pub fn key_hash(&self) -> u64 {
        hash_key(&self.value)
    }

    /// Its key hash for another upstream hashing `on` (a route's `mirror`): when that one hashes
    /// on the same cookie, the copy goes where the client's later copies will.
    pub fn key_hash_for(&self, on: &HashOn) -> Option<u64> {
        matches!(on, HashOn::Cookie(name) if *name == self.cookie.name).then(|| self.key_hash())
    }

    /// Adds its `Set-Cookie` to a response for a client whose scheme is https (`secure`: the
    /// cookie then says `Secure`) or not. Not when the response sets the cookie itself: that
    /// value is the application's, and the one the client keeps.
    pub fn set_on(&self, headers: &mut http::HeaderMap, secure: bool) {
        if sets_cookie(headers, &self.cookie.name) {
            return;
        }
        if let Some(line) = self.set_cookie(secure) {
            headers.append(http::header::SET_COOKIE, line);
        }
    }

    /// The `Set-Cookie` value: `<name>=<value>; Path=...; HttpOnly; SameSite=Lax[; Secure]`.
    /// `None` only if the name or path were not checked at load.
    fn set_cookie(&self, secure: bool) -> Option<http::HeaderValue> {
        let value = std::str::from_utf8(&self.value).ok()?;
        let secure = if secure || self.cookie.always_secure { "; Secure" } else { "" };
        http::HeaderValue::try_from(format!("{}={value}{}{secure}", self.cookie.name, self.cookie.attributes)).ok()
    }
}

/// Whether `headers` (a response's) set cookie `name`.
fn sets_cookie(headers: &http::HeaderMap, name: &str) -> bool {
    headers.get_all(http::header::SET_COOKIE).iter().any(|line| {
        let pair = line.as_bytes().split(|b| *b == b';').next().unwrap_or_default();
        pair.split(|b| *b == b'=').next().is_some_and(|n| n.trim_ascii() == name.as_bytes())
    })
}

/// Why `name` cannot be the name of a cookie the gateway sets, if it cannot: a cookie name is a
/// token (RFC 6265 4.1.1), or the browser would read another cookie, or none.
pub fn cookie_name_problem(name: &str) -> Option<String> {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    (!name.bytes().all(tchar))
        .then(|| format!("`{name}` is not a cookie name a `Set-Cookie` can carry: letters, digits and any of !#$%&'*+-.^_`|~"))
}

/// The cookie name prefix (`__Secure-`, `__Host-`, in any case as browsers match them) that
/// makes a browser keep the cookie only with `Secure` (and, for `__Host-`, `Path=/`), if `name`
/// has one.
pub fn secure_prefix(name: &str) -> Option<&'static str> {
    ["__Secure-", "__Host-"].into_iter().find(|prefix| name.get(..prefix.len()).is_some_and(|start| start.eq_ignore_ascii_case(prefix)))
}

/// Why cookie `name` cannot have `path`, if it cannot: a `__Host-` cookie is kept by a browser
/// only with `Path=/`, so any other would be dropped on every answer.
pub fn cookie_prefix_problem(name: &str, path: &str) -> Option<String> {
    (secure_prefix(name) == Some("__Host-") && path != "/")
        .then(|| format!("a `__Host-` cookie (`{name}`) is kept by browsers only with `Path=/`: leave `path` out or write \"/\""))
}

/// Why `path` cannot be a cookie's `Path`, if it cannot: it starts with `/` (a browser replaces
/// any other with the request's directory, RFC 6265 5.2.4) and is visible ASCII without `;`,
/// which would end the attribute.
pub fn cookie_path_problem(path: &str) -> Option<String> {
    let ok = path.starts_with('/') && path.bytes().all(|b| b.is_ascii_graphic() && b != b';');
    (!ok).then(|| format!("{path:?} is not a cookie path: one starting with `/`, visible ASCII without `;`"))
}

/// The value of cookie `name` in the request's `Cookie` fields (the first, if given twice).
fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers.get_all(http::header::COOKIE).iter().flat_map(|field| field.as_bytes().split(|b| *b == b';')).find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|b| *b == b'=')?;
        (&pair[..eq] == name.as_bytes()).then(|| &pair[eq + 1..])
    })
}

/// FNV-1a, 64 bits: the key's hash, the same in every build.
pub fn hash_key(key: &[u8]) -> u64 {
    key.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// SplitMix64's finish: spreads `key_hash ^ target_hash` over all 64 bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Target `target`'s score for a key: the highest wins. `weight` scales it (weighted rendezvous:
/// `-weight / ln(u)`, u uniform in (0, 1)), so a target of weight 2 wins twice as many keys as
/// one of weight 1.
pub fn score(key_hash: u64, target_hash: u64, weight: u32) -> f64 {
    let u = ((mix(key_hash ^ target_hash) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    f64::from(weight) / -u.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_and_name_what_is_wrong() {
        assert_eq!(HashOn::parse("ip"), Ok(HashOn::Ip));
        assert_eq!(HashOn::parse("header:X-User"), Ok(HashOn::Header(http::HeaderName::from_static("x-user"))));
        assert_eq!(HashOn::parse("cookie:session"), Ok(HashOn::Cookie("session".into())));
        assert_eq!(HashOn::parse("query:tenant"), Ok(HashOn::Query("tenant".into())));
        assert!(HashOn::parse("header:").unwrap_err().contains("is not `ip`"));
        assert_eq!(HashOn::parse("header:a b"), Err("`a b` is not a header name".into()));
        assert!(HashOn::parse("client").is_err());
    }

    #[test]
    fn a_source_displays_as_written_and_parses_back() {
        for text in ["ip", "consumer", "path", "header:x-user", "cookie:Session", "query:tenant"] {
            let on = HashOn::parse(text).unwrap();
            assert_eq!(on.to_string(), text);
            assert_eq!(HashOn::parse(&on.to_string()), Ok(on));
        }
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut headers = http::HeaderMap::new();
        headers.append(http::header::COOKIE, "a=1; session=abc; sessionx=2".parse().unwrap());
        headers.append(http::header::COOKIE, "late=3".parse().unwrap());
        assert_eq!(cookie(&headers, "session"), Some(&b"abc"[..]));
        assert_eq!(cookie(&headers, "late"), Some(&b"3"[..]));
        assert_eq!(cookie(&headers, "sess"), None);
    }

    #[test]
    fn a_made_cookie_says_its_attributes_and_is_placed_by_its_value() {
        let session = HashCookie::new("sticky", "/", None);
        let made = session.make();
        let line = made.set_cookie(false).unwrap();
        let line = line.to_str().unwrap();
        let (pair, attributes) = line.split_once(';').unwrap();
        let value = pair.strip_prefix("sticky=").unwrap();
        assert!(value.len() == 32 && value.bytes().all(|b| b.is_ascii_hexdigit()), "{line}");
        assert_eq!(attributes, " Path=/; HttpOnly; SameSite=Lax");
        // The request is placed by the value the client will send back.
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::COOKIE, format!("sticky={value}").parse().unwrap());
        assert_eq!(cookie(&headers, "sticky").map(hash_key), Some(made.key_hash()));
        assert_ne!(session.make().value, made.value, "each cookie is new");

        let srv = HashCookie::new("srv", "/app", Some(3600));
        let kept = srv.make();
        let line = kept.set_cookie(true).unwrap();
        assert!(line.to_str().unwrap().ends_with("; Path=/app; Max-Age=3600; HttpOnly; SameSite=Lax; Secure"), "{line:?}");
        assert_eq!(kept.key_hash_for(&HashOn::Cookie("srv".into())), Some(kept.key_hash()));
        assert_eq!(kept.key_hash_for(&HashOn::Cookie("other".into())), None);
        assert_eq!(kept.key_hash_for(&HashOn::Ip), None);
    }

    #[test]
    fn a_prefixed_cookie_always_says_secure_and_a_host_one_takes_only_the_root_path() {
        // Found by a review: browsers drop a `__Secure-`/`__Host-` cookie without `Secure`, so
        // behind plain HTTP every request got a new one and stuck to nothing.
        for name in ["__Secure-srv", "__Host-srv", "__host-srv"] {
            let line = HashCookie::new(name, "/", None).make().set_cookie(false).unwrap();
            assert!(line.to_str().unwrap().ends_with("; Secure"), "{line:?}");
        }
        let plain = HashCookie::new("srv", "/", None).make().set_cookie(false).unwrap();
        assert!(!plain.to_str().unwrap().contains("Secure"));
        assert!(cookie_prefix_problem("__Host-srv", "/app").is_some_and(|m| m.contains("Path=/")));
        assert_eq!(cookie_prefix_problem("__Host-srv", "/"), None);
        assert_eq!(cookie_prefix_problem("__Secure-srv", "/app"), None);
    }

    #[test]
    fn a_response_setting_the_cookie_itself_keeps_its_own() {
        let session = HashCookie::new("sticky", "/", None);
        let made = session.make();
        let mut headers = http::HeaderMap::new();
        headers.append(http::header::SET_COOKIE, "stickyx=1".parse().unwrap());
        made.set_on(&mut headers, false);
        assert_eq!(headers.get_all(http::header::SET_COOKIE).iter().count(), 2, "another cookie's name");
        let mut headers = http::HeaderMap::new();
        headers.append(http::header::SET_COOKIE, "sticky=app; Path=/".parse().unwrap());
        made.set_on(&mut headers, false);
        assert_eq!(headers.get_all(http::header::SET_COOKIE).iter().collect::<Vec<_>>(), ["sticky=app; Path=/"]);
    }

    #[test]
    fn cookie_names_and_paths_are_checked() {
        assert_eq!(cookie_name_problem("JSESSIONID"), None);
        assert_eq!(cookie_name_problem("__Host-srv.1"), None);
        assert!(cookie_name_problem("a b").is_some_and(|p| p.contains("`a b` is not a cookie name")));
        assert!(cookie_name_problem("a=b").is_some());
        assert_eq!(cookie_path_problem("/"), None);
        assert_eq!(cookie_path_problem("/app/v1"), None);
        for bad in ["", "app", "/a;b", "/a b", "/\u{e9}"] {
            assert!(cookie_path_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn the_hash_is_fixed_and_weights_share_keys() {
        // FNV-1a's published test vector: every build agrees.
        assert_eq!(hash_key(b"a"), 0xaf63_dc4c_8601_ec8c);
        let targets = [hash_key(b"10.0.0.1:80"), hash_key(b"10.0.0.2:80")];
        let winner = |key: u64, weights: [u32; 2]| if score(key, targets[0], weights[0]) >= score(key, targets[1], weights[1]) { 0 } else { 1 };
        let keys: Vec<u64> = (0..10_000u32).map(|i| hash_key(&i.to_le_bytes())).collect();
        let first = keys.iter().filter(|k| winner(**k, [1, 1]) == 0).count();
        assert!((4_500..5_500).contains(&first), "equal weights split keys evenly: {first}");
        let first = keys.iter().filter(|k| winner(**k, [3, 1]) == 0).count();
        assert!((7_000..8_000).contains(&first), "weight 3 against 1 wins ~3/4 of keys: {first}");
    }
}
