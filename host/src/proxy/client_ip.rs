//! Who the client is, behind load balancers: a listener's `trusted_proxies`.
//!
//! A gateway behind a load balancer sees the balancer as every request's TCP peer. The balancer
//! names the client it saw in `X-Forwarded-For`, but so can any client, so the header is read
//! only when the peer is a trusted proxy, and then walked from the right (the entry the peer
//! itself added) past further trusted proxies: the first address not trusted is the client.
//! Entries left of it were written by the client and are never believed (the rule nginx's
//! `real_ip_recursive` and Envoy's `xff_num_trusted_hops` follow).
//!
//! The result is the request's client IP: what plugins read (`client-ip`: rate-limit, throttle
//! and quota `ip` keys, `ip-restrict`), what the access log and usage analytics record. The TCP
//! peer stays available to plugins as `client-addr`, and is what the gateway appends to
//! `X-Forwarded-For` on its way upstream.
//!
//! A trusted proxy that terminates TLS (AWS ALB, a GCP or Cloudflare balancer) says the scheme
//! the client used in `X-Forwarded-Proto`: believed from a trusted peer only
//! ([`TrustedProxies::forwarded_proto`]), it is the request's scheme, for plugins and upstreams
//! alike. Without it an `https` client behind such a balancer would reach upstreams as `http`
//! (links and redirects built from it would say `http://`).

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

/// The networks a listener believes `X-Forwarded-For` from. Empty (the default): the client is
/// the TCP peer, and `X-Forwarded-For` is never read.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses one `trusted_proxies` (or `proxy_protocol_from`) entry: a CIDR (`10.0.0.0/8`) or a
    /// single address. The error names the entry and says what it should be. An IPv4-mapped
    /// IPv6 entry (`::ffff:10.0.0.1`, `::ffff:10.0.0.0/104`) is its IPv4 network, as the
    /// addresses it is matched against are ([`canonical`]): written as is, it would match none.
    pub fn network(entry: &str) -> Result<IpNet, String> {
        let net = entry
            .parse::<IpNet>()
            .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| format!("`{entry}` is not an address or a CIDR such as \"10.0.0.0/8\""))?;
        if let IpNet::V6(v6) = net
            && let Some(v4) = v6.addr().to_ipv4_mapped()
        {
            let Some(prefix) = v6.prefix_len().checked_sub(96) else {
                return Err(format!("`{entry}` covers IPv4-mapped addresses with a prefix shorter than /96: write the IPv4 network instead"));
            };
            return IpNet::new(IpAddr::V4(v4), prefix).map_err(|e| format!("`{entry}`: {e}"));
        }
        Ok(net)
    }

    /// Whether `X-Forwarded-For` is ever read on this listener.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The request's client: `peer`, or behind trusted proxies the rightmost `X-Forwarded-For`
    /// address that is not one. A malformed entry ends the walk at the proxy that passed it on,
    /// so a client cannot pick its address by sending garbage.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = canonical(peer);
        if !self.trusts(client) {
            return client;
        }
        // From the last field, each field's entries right to left.
        for field in headers.get_all("x-forwarded-for").iter().rev() {
            for entry in field.as_bytes().rsplit(|&b| b == b',') {
                let entry = entry.trim_ascii();
                if entry.is_empty() {
                    continue;
                }
                let Some(ip) = parse_entry(entry) else { return client };
                client = ip;
                if !self.trusts(client) {
                    return client;
                }
            }
        }
        client
    }

    /// The scheme the client used, as a trusted peer says in `X-Forwarded-Proto`: `None` when
    /// the peer is not trusted, or the header is not one field saying `http` or `https` (any
    /// case), so the listener's own scheme stands. Not walked as `X-Forwarded-For` is: balancers
    /// set this header, they do not append to it.
    pub fn forwarded_proto(&self, peer: IpAddr, headers: &HeaderMap) -> Option<&'static str> {
        if !self.trusts(canonical(peer)) {
            return None;
        }
        let mut fields = headers.get_all("x-forwarded-proto").iter();
        let value = fields.next()?.as_bytes().trim_ascii();
        if fields.next().is_some() {
            return None;
        }
        if value.eq_ignore_ascii_case(b"https") {
            Some("https")
        } else if value.eq_ignore_ascii_case(b"http") {
            Some("http")
        } else {
            None
        }
    }

    /// Whether `peer` (a TCP peer: an IPv4-mapped IPv6 address counts as its IPv4 one) is in
    /// the list.
    pub fn admits(&self, peer: IpAddr) -> bool {
        self.trusts(canonical(peer))
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }
}

impl FromIterator<IpNet> for TrustedProxies {
    fn from_iter<I: IntoIterator<Item = IpNet>>(networks: I) -> Self {
        Self(networks.into_iter().collect())
    }
}

/// The client IP of a request on a listener without trusted proxies: the peer, an IPv4-mapped
/// IPv6 address read as the IPv4 one (so a dual-stack listener keys one client one way).
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// An `X-Forwarded-For` entry: an address, possibly `[v6]`, `v4:port` or `[v6]:port`.
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?;
    let ip = text
        .parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| text.strip_prefix('[')?.strip_suffix(']')?.parse().ok())?;
    Some(canonical(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(trusted: &[&str], peer: &str, xff: &[&str]) -> String {
        let trusted: TrustedProxies = trusted.iter().map(|t| TrustedProxies::network(t).unwrap()).collect();
        let mut headers = HeaderMap::new();
        for field in xff {
            headers.append("x-forwarded-for", field.parse().unwrap());
        }
        trusted.client(peer.parse().unwrap(), &headers).to_string()
    }

    #[test]
    fn ipv4_mapped_entries_are_their_ipv4_networks() {
        assert_eq!(TrustedProxies::network("::ffff:10.0.0.1"), Ok("10.0.0.1/32".parse().unwrap()));
        assert_eq!(TrustedProxies::network("::ffff:10.0.0.0/104"), Ok("10.0.0.0/8".parse().unwrap()));
        assert_eq!(TrustedProxies::network("2001:db8::/32"), Ok("2001:db8::/32".parse().unwrap()), "other IPv6 unchanged");
        assert!(TrustedProxies::network("::ffff:0:0/80").unwrap_err().contains("shorter than /96"));
        let trusted: TrustedProxies = [TrustedProxies::network("::ffff:127.0.0.0/104").unwrap()].into_iter().collect();
        assert!(trusted.admits("127.0.0.1".parse().unwrap()) && trusted.admits("::ffff:127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client_whatever_the_header_says() {
        assert_eq!(client(&[], "198.51.100.7", &["203.0.113.1"]), "198.51.100.7");
        assert_eq!(client(&["10.0.0.0/8"], "198.51.100.7", &["203.0.113.1"]), "198.51.100.7");
    }

    #[test]
    fn the_walk_goes_from_the_right_past_trusted_proxies_only() {
        // The client wrote "1.1.1.1"; the balancer appended the address it saw.
        assert_eq!(client(&["10.0.0.0/8"], "10.0.0.2", &["1.1.1.1, 203.0.113.9"]), "203.0.113.9");
        // Two proxies deep, across two fields, with ports and brackets.
        assert_eq!(client(&["10.0.0.0/8", "fd00::/8"], "10.0.0.2", &["203.0.113.9:443", "[fd00::1]:80, 10.1.1.1"]), "203.0.113.9");
        assert_eq!(client(&["10.0.0.0/8"], "10.0.0.2", &["[2001:db8::5]"]), "2001:db8::5");
        // Every hop trusted: the leftmost is as far as the walk can see.
        assert_eq!(client(&["10.0.0.0/8"], "10.0.0.2", &["10.9.9.9"]), "10.9.9.9");
        // No header: the proxy itself.
        assert_eq!(client(&["10.0.0.2"], "10.0.0.2", &[]), "10.0.0.2");
    }

    #[test]
    fn a_malformed_entry_stops_the_walk_at_the_proxy_that_passed_it() {
        assert_eq!(client(&["10.0.0.0/8"], "10.0.0.2", &["203.0.113.9, unknown"]), "10.0.0.2");
        assert_eq!(client(&["10.0.0.0/8"], "10.0.0.2", &["203.0.113.9, 10.0.0.3, garbage"]), "10.0.0.2");
        assert_eq!(client(&["10.0.0.0/8"], "10.0.0.2", &["garbage, 10.0.0.3"]), "10.0.0.3");
    }

    #[test]
    fn ipv4_mapped_peers_are_read_as_ipv4() {
        assert_eq!(client(&[], "::ffff:192.0.2.1", &[]), "192.0.2.1");
        assert_eq!(client(&["192.0.2.0/24"], "::ffff:192.0.2.1", &["::ffff:203.0.113.4"]), "203.0.113.4");
    }

    #[test]
    fn the_scheme_is_believed_from_a_trusted_peer_saying_one_of_http_and_https() {
        let trusted: TrustedProxies = ["10.0.0.0/8"].iter().map(|t| TrustedProxies::network(t).unwrap()).collect();
        let proto = |peer: &str, fields: &[&str]| {
            let mut headers = HeaderMap::new();
            for field in fields {
                headers.append("x-forwarded-proto", field.parse().unwrap());
            }
            trusted.forwarded_proto(peer.parse().unwrap(), &headers)
        };
        assert_eq!(proto("10.0.0.2", &["https"]), Some("https"));
        assert_eq!(proto("10.0.0.2", &[" HTTPS "]), Some("https"));
        assert_eq!(proto("::ffff:10.0.0.2", &["http"]), Some("http"));
        assert_eq!(proto("198.51.100.7", &["https"]), None, "an untrusted peer");
        assert_eq!(proto("10.0.0.2", &[]), None);
        for unclear in [&["https", "http"][..], &["https, http"], &["wss"], &[""]] {
            assert_eq!(proto("10.0.0.2", unclear), None, "{unclear:?}");
        }
        assert_eq!(TrustedProxies::default().forwarded_proto("10.0.0.2".parse().unwrap(), &HeaderMap::new()), None);
    }

    #[test]
    fn entries_are_cidrs_or_addresses() {
        for entry in ["10.0.0.0/8", "::1", "fd00::/8", "192.0.2.7"] {
            assert!(TrustedProxies::network(entry).is_ok(), "{entry}");
        }
        let err = TrustedProxies::network("10.0.0.0/33").unwrap_err();
        assert!(err.contains("`10.0.0.0/33`"), "{err}");
        assert!(TrustedProxies::network("lb.internal").is_err());
    }
}
