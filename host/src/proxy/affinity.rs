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
    fn cookies_are_found_by_exact_name() {
        let mut headers = http::HeaderMap::new();
        headers.append(http::header::COOKIE, "a=1; session=abc; sessionx=2".parse().unwrap());
        headers.append(http::header::COOKIE, "late=3".parse().unwrap());
        assert_eq!(cookie(&headers, "session"), Some(&b"abc"[..]));
        assert_eq!(cookie(&headers, "late"), Some(&b"3"[..]));
        assert_eq!(cookie(&headers, "sess"), None);
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
