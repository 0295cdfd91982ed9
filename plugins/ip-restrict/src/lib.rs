//! `builtin:ip-restrict`: allows or denies clients by IP address.
//!
//! ```toml
//! [[routes.plugins]]
//! plugin = "builtin:ip-restrict"
//! [routes.plugins.config]
//! allow = ["10.0.0.0/8", "2001:db8::/32", "203.0.113.7"]   # CIDRs or single addresses
//! deny = ["10.6.6.0/24"]                                   # checked first
//! trusted_proxies = ["192.0.2.0/24"]                       # whose X-Forwarded-For is believed
//! # status = 403                                            # 403 or 404
//! ```
//!
//! Without `trusted_proxies` here, the client's address is the request's client IP as the
//! gateway's listener worked it out (the TCP peer, or behind the listener's own
//! `trusted_proxies` the client its load balancer named). With them, the plugin works it out
//! itself from the TCP peer: the peer is the client unless it is a trusted proxy; then
//! `X-Forwarded-For` is walked from the right (the entry nearest the gateway first), skipping
//! addresses that are themselves trusted proxies, and the first untrusted address is the client.
//! Entries left of it were written by parties nobody vouches for and are ignored. If every entry
//! is trusted, the leftmost one is the client. An entry that is not an IP address (or a header
//! that is not text) makes the address unknown, and an unknown address is refused whenever a rule
//! could apply. IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`) are treated as the IPv4 address.
//! The listener's `trusted_proxies` is the one place to name a load balancer for every plugin
//! (rate-limit, throttle and quota key `ip` on the same client IP); this one remains for a route
//! whose proxies the rest of the gateway should not trust.
//!
//! An address matching any `deny` entry is refused; then, if `allow` is not empty, an address
//! matching no `allow` entry is refused. At least one of the two lists must be given. Refusals
//! are `status` (403 by default) with `{"status":403,"error":"forbidden","message":"access denied","request_id":...}` (that status); with
//! `status = 404`, the gateway's own `no_route` answer, so the route does not show. The
//! context gets `client.ip`, the address the decision was made on.
//!
//! Each list is kept as sorted, merged address ranges and an address is found in it by binary
//! search: a block list of a hundred thousand networks costs a request a few dozen comparisons.

// Natively (unit tests) the plugin is only reached through `airlock_sdk::configure`.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use std::net::IpAddr;

#[cfg(target_arch = "wasm32")]
use airlock_sdk::export_plugin;
use airlock_sdk::{Action, Descriptor, Plugin, Request};
use ipnet::IpNet;
use serde::Deserialize;

/// The plugin's config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    #[serde(default = "default_status")]
    status: u16,
    /// Filled in by the gateway for built-in plugins; not used here.
    #[serde(default)]
    #[allow(dead_code)]
    consumers: serde_json::Value,
}

fn default_status() -> u16 {
    403
}

/// The configured plugin.
struct IpRestrict {
    allow: IpSet,
    deny: IpSet,
    trusted: IpSet,
    status: u16,
}

/// The addresses a list of networks covers, per family as sorted ranges that do not overlap
/// (overlapping and nested networks merged), so that finding an address is a binary search
/// rather than a test of every network. An IPv4 network covers IPv4 addresses only, an IPv6
/// one IPv6 addresses only (mapped IPv4 networks are made IPv4 ones when parsed, [`nets`]).
#[derive(Debug, Default)]
struct IpSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl IpSet {
    fn new(nets: &[IpNet]) -> Self {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for net in nets {
            match net {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
            }
        }
        Self { v4: merged(v4), v6: merged(v6) }
    }

    fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => in_ranges(&self.v4, u32::from(v4)),
            IpAddr::V6(v6) => in_ranges(&self.v6, u128::from(v6)),
        }
    }
}

/// `ranges` (first, last) sorted by their first address, each overlapping run made one.
fn merged<T: Ord + Copy>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (first, last) in ranges {
        match out.last_mut() {
            Some(run) if first <= run.1 => run.1 = run.1.max(last),
            _ => out.push((first, last)),
        }
    }
    out
}

/// Whether `x` is in one of `ranges` (sorted, not overlapping): the last range starting at or
/// before it is the only one that can hold it.
fn in_ranges<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
    let after = ranges.partition_point(|&(first, _)| first <= x);
    after > 0 && ranges.get(after - 1).is_some_and(|&(_, last)| x <= last)
}

impl Plugin for IpRestrict {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        if config.allow.is_empty() && config.deny.is_empty() {
            return Err("give `allow` or `deny` (or both): CIDRs such as \"10.0.0.0/8\" or addresses".into());
        }
        if config.status == 401 {
            // A 401 asks for credentials (and must carry a `WWW-Authenticate` challenge, RFC
            // 9110 15.5.2): an address is not one a client could send.
            return Err("`status`: 401 asks the client to authenticate, which no address can do: use 403 (the default) or 404".into());
        }
        if !matches!(config.status, 403 | 404) {
            return Err(format!("`status`: {} is not 403 or 404", config.status));
        }
        Ok(Self {
            allow: IpSet::new(&nets(&config.allow, "allow")?),
            deny: IpSet::new(&nets(&config.deny, "deny")?),
            trusted: IpSet::new(&nets(&config.trusted_proxies, "trusted_proxies")?),
            status: config.status,
        })
    }

    fn descriptor() -> Descriptor {
        Descriptor::request_only()
    }

    fn on_request(&self, req: &Request) -> Action {
        // Without its own `trusted_proxies`, the client the gateway's listener worked out.
        // The gateway's `client-ip` is the address as `Display` writes it: when it parses to
        // itself it goes in the context as given, not written again (formatting an address
        // in Wasm costs more than the rest of this call).
        let client = if self.trusted.is_empty() {
            let text = req.client_ip();
            match text.parse::<IpAddr>() {
                Ok(ip) if canonical(ip) == ip => Some((ip, text)),
                _ => parse_ip(&text).map(|ip| (ip, ip.to_string())),
            }
        } else {
            let xff = req.header_all("x-forwarded-for");
            peer_ip(&req.client_addr()).and_then(|peer| self.client_ip(peer, &xff)).map(|ip| (ip, ip.to_string()))
        };
        if let Some((_, text)) = &client {
            req.context_set("client.ip", text);
        }
        if client.is_some_and(|(ip, _)| self.permits(ip)) {
            Action::Continue
        } else if self.status == 404 {
            // Chosen to hide the route: answered as the gateway answers a path it has no route for.
            let message = format!("no route matches {} {}", req.method(), req.path());
            Action::error(404, "no_route", &message, &req.request_id())
        } else {
            Action::error(self.status, "forbidden", "access denied", &req.request_id())
        }
    }
}

impl IpRestrict {
    /// The client's address: the peer, or (behind trusted proxies) the rightmost untrusted
    /// `X-Forwarded-For` entry. `None` if an entry that must be read is not an address.
    fn client_ip(&self, peer: IpAddr, xff: &[Vec<u8>]) -> Option<IpAddr> {
        if !self.is_trusted(peer) {
            return Some(peer);
        }
        let mut entries = Vec::new();
        for value in xff {
            let text = std::str::from_utf8(value).ok()?;
            entries.extend(text.split(',').map(str::trim).filter(|e| !e.is_empty()));
        }
        // The gateway appends the peer it saw; that entry is `peer` itself, not news.
        if entries.last().and_then(|e| parse_ip(e)) == Some(peer) {
            entries.pop();
        }
        let mut client = peer;
        while self.is_trusted(client) {
            let Some(entry) = entries.pop() else { break };
            client = parse_ip(entry)?;
        }
        Some(client)
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.contains(ip)
    }

    fn permits(&self, ip: IpAddr) -> bool {
        if self.deny.contains(ip) {
            return false;
        }
        self.allow.is_empty() || self.allow.contains(ip)
    }
}

/// The IP of `ip:port` or `[ip6]:port` (or a bare address).
fn peer_ip(addr: &str) -> Option<IpAddr> {
    addr.parse::<std::net::SocketAddr>().map(|a| canonical(a.ip())).ok().or_else(|| parse_ip(addr))
}

/// An `X-Forwarded-For` entry: an address, possibly `[v6]`, `v4:port` or `[v6]:port`.
fn parse_ip(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sock) = entry.parse::<std::net::SocketAddr>() {
        return Some(canonical(sock.ip()));
    }
    entry.strip_prefix('[')?.strip_suffix(']')?.parse::<IpAddr>().ok().map(canonical)
}

/// IPv4-mapped IPv6 addresses as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn nets(entries: &[String], key: &str) -> Result<Vec<IpNet>, String> {
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let entry = entry.trim();
            let net = match entry.parse::<IpNet>() {
                Ok(net) => net,
                Err(_) => match entry.parse::<IpAddr>() {
                    Ok(ip) => IpNet::from(ip),
                    Err(_) => {
                        return Err(format!(
                            "`{key}[{i}]`: `{entry}` is not a CIDR (\"10.0.0.0/8\", \"2001:db8::/32\") or an IP address"
                        ));
                    }
                },
            };
            // A CIDR with host bits set ("10.1.2.3/8") means its network; say nothing, as iptables.
            Ok(match net {
                IpNet::V6(v6) if v6.prefix_len() >= 96 && v6.addr().to_ipv4_mapped().is_some() => {
                    let v4 = v6.addr().to_ipv4_mapped().expect("checked");
                    IpNet::V4(ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).expect("prefix <= 32")).trunc()
                }
                net => net.trunc(),
            })
        })
        .collect()
}

#[cfg(target_arch = "wasm32")]
export_plugin!(IpRestrict);

#[cfg(test)]
mod tests {
    use super::*;

    fn build(json: &str) -> IpRestrict {
        airlock_sdk::configure::<IpRestrict>(json).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_edges() {
        let p = build(
            r#"{"allow": ["192.0.2.7/32", "10.0.0.0/8", "2001:db8::/32", "::ffff:198.51.100.0/120"], "deny": ["10.6.6.0/24"]}"#,
        );
        assert!(p.permits(ip("192.0.2.7")));
        assert!(!p.permits(ip("192.0.2.8")));
        assert!(p.permits(ip("10.255.255.255")));
        assert!(!p.permits(ip("10.6.6.1")));
        assert!(!p.permits(ip("11.0.0.0")));
        assert!(p.permits(ip("2001:db8:ffff::1")));
        assert!(!p.permits(ip("2001:db9::1")));
        assert!(p.permits(ip("198.51.100.9")), "a mapped CIDR matches the IPv4 address");
        let all4 = build(r#"{"allow": ["0.0.0.0/0"]}"#);
        assert!(all4.permits(ip("255.255.255.255")));
        assert!(!all4.permits(ip("::1")), "0.0.0.0/0 is IPv4 only");
        let deny_all6 = build(r#"{"deny": ["::/0"]}"#);
        assert!(!deny_all6.permits(ip("::1")));
        assert!(deny_all6.permits(ip("127.0.0.1")));
    }

    /// Merged and searched, the ranges answer as testing every network would: overlapping,
    /// nested and adjacent networks, the ends of each family, and thousands of entries.
    #[test]
    fn a_set_of_networks_answers_as_each_network_would() {
        let list: Vec<&str> = vec![
            "10.0.0.0/8", "10.1.0.0/16", "10.255.255.255", "11.0.0.0/9", "11.64.0.0/10", "11.128.0.0/9",
            "192.0.2.0/25", "192.0.2.128/25", "0.0.0.0/32", "255.255.255.255/32", "2001:db8::/48",
            "2001:db8:0:8000::/49", "::/128", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", "fe80::/10",
        ];
        let parsed = nets(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "deny").unwrap();
        let set = IpSet::new(&parsed);
        let probes = [
            "9.255.255.255", "10.0.0.0", "10.1.2.3", "10.255.255.255", "11.0.0.0", "11.63.255.255", "11.64.0.0",
            "11.255.255.255", "12.0.0.0", "192.0.2.127", "192.0.2.128", "192.0.2.255", "192.0.3.0", "0.0.0.0",
            "0.0.0.1", "255.255.255.254", "255.255.255.255", "2001:db8::1", "2001:db8:0:ffff:ffff::", "2001:db8:1::",
            "::", "::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fe80::1",
            "febf:ffff::", "fec0::",
        ];
        for probe in probes {
            let each = parsed.iter().any(|net| net.contains(&ip(probe)));
            assert_eq!(set.contains(ip(probe)), each, "{probe}");
        }
        assert_eq!(set.v4.len(), 7, "10/8 holds its two and 11/9 its /10; neighbours stay two: {:?}", set.v4);

        // A block list of 20,000 single addresses and networks.
        let many: Vec<String> = (0..20_000u32).map(|i| if i % 2 == 0 { format!("100.{}.{}.0/24", i >> 8 & 255, i & 255) } else { format!("198.18.{}.{}", i >> 8 & 255, i & 255) }).collect();
        let p = build(&format!(r#"{{"deny": {}}}"#, serde_json::to_string(&many).unwrap()));
        assert!(!p.permits(ip("100.0.0.7")) && !p.permits(ip("100.78.30.255")), "in a denied /24");
        assert!(p.permits(ip("100.0.1.0")), "100.0.1.0/24 is i = 1: odd, not a network");
        assert!(!p.permits(ip("198.18.0.1")) && !p.permits(ip("198.18.78.31")));
        assert!(p.permits(ip("198.18.0.2")) && p.permits(ip("198.19.0.0")) && p.permits(ip("::1")));
    }

    #[test]
    fn forwarded_for_is_walked_from_the_right_past_trusted_proxies() {
        let p = build(r#"{"deny": ["203.0.113.66"], "trusted_proxies": ["10.0.0.0/8", "fd00::/8"]}"#);
        let xff = |s: &str| vec![s.as_bytes().to_vec()];
        // Untrusted peer: XFF ignored.
        assert_eq!(p.client_ip(ip("198.51.100.1"), &xff("1.1.1.1")), Some(ip("198.51.100.1")));
        // Trusted peer; the gateway's own appended entry is skipped; spoofed left entries ignored.
        assert_eq!(
            p.client_ip(ip("10.0.0.1"), &xff("6.6.6.6, 203.0.113.5, 10.0.0.2, 10.0.0.1")),
            Some(ip("203.0.113.5"))
        );
        assert_eq!(
            p.client_ip(ip("10.0.0.1"), &xff("10.0.0.3, 10.0.0.1")),
            Some(ip("10.0.0.3")),
            "all trusted: leftmost"
        );
        assert_eq!(p.client_ip(ip("10.0.0.1"), &xff("10.0.0.1")), Some(ip("10.0.0.1")));
        assert_eq!(p.client_ip(ip("10.0.0.1"), &xff("junk, 10.0.0.1")), None);
        assert_eq!(
            p.client_ip(ip("10.0.0.1"), &[b"1.2.3.4".to_vec(), b"[fd00::1]:80, 10.0.0.1".to_vec()]),
            Some(ip("1.2.3.4"))
        );
        assert_eq!(peer_ip("[::ffff:10.0.0.1]:4"), Some(ip("10.0.0.1")));
    }

    #[test]
    fn config_errors_name_the_key() {
        let err = |json: &str| airlock_sdk::configure::<IpRestrict>(json).err().unwrap();
        assert!(err("{}").contains("`allow` or `deny`"));
        assert!(err(r#"{"allow": ["10.0.0.0/33"]}"#).starts_with("`allow[0]`: `10.0.0.0/33` is not a CIDR"));
        assert!(err(r#"{"deny": ["::1"], "trusted_proxies": ["1.2.3"]}"#).starts_with("`trusted_proxies[0]`:"));
        assert_eq!(err(r#"{"deny": ["::1"], "status": 500}"#), "`status`: 500 is not 403 or 404");
        assert!(err(r#"{"deny": ["::1"], "status": 401}"#).contains("no address can do"));
    }
}
