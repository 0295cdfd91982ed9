//! Proxy header semantics (RFC 9110 section 7.6): hop-by-hop headers stay on their hop,
//! `X-Forwarded-*` and `Via` record the gateway, `X-Request-Id` correlates the request end to end.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// `x-request-id`: kept from the client when well-formed, else generated; sent upstream and back.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `x-forwarded-for`: the client address chain.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `x-forwarded-proto`: the scheme the client used.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `x-forwarded-host`: the host the client asked for.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `x-forwarded-client-cert`: a client certificate as a proxy in front saw it (Envoy's XFCC).
pub const X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// Headers that are always hop-by-hop, whatever `Connection` says. Not `Trailer`: it is
/// end-to-end (RFC 9110 6.6.2), and hyper sends an HTTP/1.1 message's trailers only when it
/// declares them, so dropping it dropped every trailer on an HTTP/1.1 hop.
/// `Upgrade` too: a WebSocket handshake's is put back by the gateway itself (`upgrade::restore`).
/// `HTTP2-Settings` is the settings of an `Upgrade: h2c` request, for that one connection (RFC
/// 7540 3.2.1), whether or not `Connection` names it.
static ALWAYS_HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HTTP2_SETTINGS,
];

/// True if the client's `TE` says it accepts trailers (`TE: trailers`, as gRPC clients send).
pub fn accepts_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers")))
}

/// True for a header no plugin may set: a message's framing (`Content-Length`,
/// `Transfer-Encoding`) and its connection's management (`Connection`, `Keep-Alive`,
/// `Proxy-Connection`, `Upgrade`). The gateway and hyper set those for each hop. One from a
/// plugin that disagreed with the body would split the message on a kept-alive connection (a
/// response the client reads as two, a request a shared upstream connection reads as two), and
/// an `Upgrade` would switch an upstream connection the client never asked to switch (h2c
/// smuggling). `TE` is not among them: `call_upstream` keeps only `TE: trailers`, for HTTP/2.
pub fn gateway_managed(name: &HeaderName) -> bool {
    *name == header::CONTENT_LENGTH
        || *name == header::TRANSFER_ENCODING
        || *name == header::CONNECTION
        || *name == header::UPGRADE
        || *name == KEEP_ALIVE
        || *name == PROXY_CONNECTION
}

/// True for a header that is hop-by-hop whatever `Connection` says (the fixed list and `Upgrade`):
/// removed before plugins and the upstream see a request, so no route is chosen on one.
pub fn always_hop_by_hop(name: &HeaderName) -> bool {
    hop_by_hop_index(name).is_some()
}

/// Where `name` is in [`ALWAYS_HOP_BY_HOP`], if it is there. Names in a `HeaderMap` are lower
/// case: one match on the text (its length first) rather than eight `HeaderName` comparisons,
/// for every header of every request and response.
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    hop_by_hop_text_index(name.as_str().as_bytes())
}

/// [`hop_by_hop_index`] of a lower-case name's bytes.
fn hop_by_hop_text_index(name: &[u8]) -> Option<usize> {
    Some(match name {
        b"connection" => 0,
        b"keep-alive" => 1,
        b"proxy-connection" => 2,
        b"proxy-authenticate" => 3,
        b"proxy-authorization" => 4,
        b"te" => 5,
        b"transfer-encoding" => 6,
        b"upgrade" => 7,
        b"http2-settings" => 8,
        _ => return None,
    })
}

/// The options `Connection` lists (header names, `close`, `upgrade`, ...), trimmed, as sent.
pub fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers.get_all(header::CONNECTION).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).map(str::trim)
}

/// The first transfer coding in `Transfer-Encoding` other than `chunked`, if any: hyper takes
/// off the chunking alone, so a body in any other coding is not one the gateway can pass on.
pub fn other_transfer_coding(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("(not text)").split(','))
        .map(str::trim)
        .find(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case("chunked"))
        .map(str::to_owned)
}

/// Removes hop-by-hop headers: the fixed list, `Upgrade`, and every header `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    HopByHop::scan(headers).strip(headers);
}

/// The hop-by-hop fields a head carries, found in one pass over its fields: which of the fixed
/// names (`ALWAYS_HOP_BY_HOP`) are present, and whether a `Connection` value names more. A
/// check that reads `TE`, `Upgrade` or `Transfer-Encoding` asks first whether the head carries
/// it ([`HopByHop::has_te`], [`HopByHop::has_upgrade`], [`HopByHop::has_transfer_encoding`]) and
/// skips its lookup on the heads, most of them, without it; [`HopByHop::strip`] then removes
/// them. Valid until one of those fields is written.
#[derive(Clone, Copy)]
pub struct HopByHop {
    /// Bit `i` set: `ALWAYS_HOP_BY_HOP[i]` is present.
    present: u16,
    /// A `Connection` value other than a plain `keep-alive` or `close`: it may name more fields.
    names_others: bool,
}

impl HopByHop {
    /// One pass over `headers`. Most requests carry none of the names, and most responses only
    /// `Connection: keep-alive`, which names no other field: such a value is read here and not
    /// split again (the one is removed, the other is no field at all).
    pub fn scan(headers: &HeaderMap) -> Self {
        let mut found = Self { present: 0, names_others: false };
        for (name, value) in headers.iter() {
            if let Some(i) = hop_by_hop_index(name) {
                found.present |= 1 << i;
                found.names_others |= i == 0 && !is_plain_connection_option(value.as_bytes());
            }
        }
        found
    }

    /// Whether the head carries `TE` (its bit: its place in `ALWAYS_HOP_BY_HOP`; a bit test,
    /// where matching a name's text cost ~55 instructions a check).
    pub fn has_te(self) -> bool {
        self.present & 1 << 5 != 0
    }

    /// Whether the head carries `Transfer-Encoding`.
    pub fn has_transfer_encoding(self) -> bool {
        self.present & 1 << 6 != 0
    }

    /// Whether the head carries `Upgrade`.
    pub fn has_upgrade(self) -> bool {
        self.present & 1 << 7 != 0
    }

    /// Removes what [`HopByHop::scan`] found: each fixed name present (one removal each, not
    /// eight lookups), and every field a `Connection` value names.
    pub fn strip(self, headers: &mut HeaderMap) {
        if self.present == 0 {
            return;
        }
        if self.names_others {
            let named: Vec<HeaderName> = connection_tokens(headers)
                .filter(|name| !name.eq_ignore_ascii_case("close") && !names_fixed_hop_by_hop(name))
                .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
                .collect();
            for name in named {
                headers.remove(name);
            }
        }
        for (i, name) in ALWAYS_HOP_BY_HOP.iter().enumerate() {
            if self.present & 1 << i != 0 {
                headers.remove(name);
            }
        }
    }
}

/// Whether a whole `Connection` value is the one option `keep-alive` or `close`, in any case.
fn is_plain_connection_option(value: &[u8]) -> bool {
    value.eq_ignore_ascii_case(b"keep-alive") || value.eq_ignore_ascii_case(b"close")
}

/// Whether a `Connection` option names one of [`ALWAYS_HOP_BY_HOP`], in any case (nginx sends
/// `keep-alive`, Apache `Keep-Alive`): lowered into a buffer and matched once, not compared
/// with each.
fn names_fixed_hop_by_hop(option: &str) -> bool {
    let mut lower = [0u8; 19];
    let Some(buf) = lower.get_mut(..option.len()) else { return false };
    buf.copy_from_slice(option.as_bytes());
    buf.make_ascii_lowercase();
    hop_by_hop_text_index(buf).is_some()
}

/// `ip` as text, written into `buf`: an IPv4 address digit by digit (most clients; through
/// `fmt`'s machinery it cost 0.7% of the gateway's CPU per request), an IPv6 one by its `Display`.
fn ip_text(ip: std::net::IpAddr, buf: &mut [u8; 48]) -> Option<&[u8]> {
    let len = match ip {
        std::net::IpAddr::V4(v4) => {
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[len] = b'.';
                    len += 1;
                }
                if octet >= 100 {
                    buf[len] = b'0' + octet / 100;
                    len += 1;
                }
                if octet >= 10 {
                    buf[len] = b'0' + octet / 10 % 10;
                    len += 1;
                }
                buf[len] = b'0' + octet % 10;
                len += 1;
            }
            len
        }
        std::net::IpAddr::V6(v6) => {
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            write!(cursor, "{v6}").ok()?;
            usize::try_from(cursor.position()).ok()?
        }
    };
    buf.get(..len)
}

/// `ip` as a `String`, written as [`ip_text`] writes it: what the `client-ip` host call gives
/// a plugin on every request it is asked (`to_string` through `fmt` cost ~1.3k instructions).
pub fn ip_string(ip: std::net::IpAddr) -> String {
    let mut buf = [0u8; 48];
    match ip_text(ip, &mut buf) {
        Some(text) => String::from_utf8_lossy(text).into_owned(),
        None => ip.to_string(),
    }
}

/// Adds the gateway's forwarding record: `X-Forwarded-For` gets the client IP appended;
/// `X-Forwarded-Proto` and `X-Forwarded-Host` are set to what the gateway itself saw (a client's own
/// values are not trusted at the edge).
pub fn add_forwarded(headers: &mut HeaderMap, client: SocketAddr, scheme: &'static str, host: Option<&HeaderValue>) {
    // The IP written in place (at most 45 bytes, an IPv4-mapped IPv6 address): the header
    // value's copy is the one allocation.
    let mut buf = [0u8; 48];
    let Some(ip) = ip_text(client.ip(), &mut buf) else {
        return;
    };
    if let Ok(ip) = HeaderValue::from_bytes(ip) {
        append_to_list(headers, X_FORWARDED_FOR, ip);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(scheme));
    match host {
        Some(host) => {
            headers.insert(X_FORWARDED_HOST, host.clone());
        }
        None => {
            headers.remove(X_FORWARDED_HOST);
        }
    }
}

/// Removes `X-Forwarded-Client-Cert` from a request that did not come through one of the
/// listener's trusted proxies (`trusted_from`): the gateway writes no such header, so one from
/// the client is forged, and an upstream that reads it as the caller's mTLS identity (as
/// services behind Envoy do) would take the client's word for it. Envoy removes it the same way
/// by default (`forward_client_cert_details: SANITIZE`); behind a trusted proxy that terminated
/// TLS and set it, it is kept.
pub fn sanitize_client_cert(headers: &mut HeaderMap, trusted_from: bool) {
    if !trusted_from {
        headers.remove(X_FORWARDED_CLIENT_CERT);
    }
}

/// The non-blank lines of a comma-separated list header: none, one (borrowed), or several
/// joined with `, ` into one list, as RFC 9110 5.3 says they mean.
enum Lines<'a> {
    None,
    One(&'a [u8]),
    Several(Vec<u8>),
}

fn list_lines<'a>(values: impl Iterator<Item = &'a HeaderValue>) -> Lines<'a> {
    let mut lines = values.map(HeaderValue::as_bytes).filter(|v| !v.trim_ascii().is_empty());
    let Some(first) = lines.next() else { return Lines::None };
    let Some(second) = lines.next() else { return Lines::One(first) };
    let mut joined = [first, b", ", second].concat();
    for line in lines {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(line);
    }
    Lines::Several(joined)
}

/// Appends `item` to the list header `name`, on one line holding every earlier hop first (the
/// lines are one list, RFC 9110 5.3, and a proxy in front that adds a line of its own puts the
/// client it saw in the last one); `item` alone when there is none. The name is looked up once:
/// most requests carry no such header, and get `item` itself in the entry found vacant.
fn append_to_list(headers: &mut HeaderMap, name: HeaderName, item: HeaderValue) {
    match headers.entry(name) {
        http::header::Entry::Vacant(vacant) => {
            vacant.insert(item);
        }
        http::header::Entry::Occupied(mut occupied) => {
            // The joined bytes become the value as they are (`concat` allocates exactly their length).
            let value = match list_lines(occupied.iter()) {
                Lines::None => Ok(item),
                Lines::One(existing) => HeaderValue::from_maybe_shared(bytes::Bytes::from([existing, b", ", item.as_bytes()].concat())),
                Lines::Several(mut joined) => {
                    joined.extend_from_slice(b", ");
                    joined.extend_from_slice(item.as_bytes());
                    HeaderValue::from_maybe_shared(bytes::Bytes::from(joined))
                }
            };
            if let Ok(value) = value {
                occupied.insert(value);
            }
        }
    }
}

/// Joins the `Cookie` fields an HTTP/2 client may send one per cookie (RFC 9113 8.2.3) into
/// one, `; `-separated, as an HTTP/1.1 upstream (which may read only the first) and plugins
/// expect. One field, the usual case, is left as it is.
pub fn join_cookies(headers: &mut HeaderMap) {
    let mut fields = headers.get_all(header::COOKIE).iter();
    if fields.next().is_none() || fields.next().is_none() {
        return;
    }
    let joined = headers.get_all(header::COOKIE).iter().map(HeaderValue::as_bytes).collect::<Vec<_>>().join(&b"; "[..]);
    if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(joined)) {
        headers.insert(header::COOKIE, value);
    }
}

/// The bytes a `Host` name may hold (RFC 3986 3.2.2's reg-name: unreserved, sub-delims and `%`
/// of a pct-encoding), as a table: one load per byte of every request's `Host`.
const HOST_NAME_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let extra = b"-._~%!$&'()*+;=";
    let mut i = 0;
    while i < extra.len() {
        table[extra[i] as usize] = true;
        i += 1;
    }
    table
};

/// Whether a plugin may send `value` as the request's `Host`: one well-formed `host[:port]`, not
/// empty (a second, `a@b` or `a,b` would reach the upstream, or a proxy between, as a host).
pub fn valid_plugin_host(value: &[u8]) -> bool {
    !value.is_empty() && valid_host(value)
}

/// Whether a `Host` value is `host[:port]` (RFC 9110 7.2): a registered name or an IP literal,
/// and an all-digit port; no user info, path, list or spaces, which would let the gateway and
/// the upstream read different hosts. Empty is valid (RFC 9112 3.2: a target with no authority).
pub fn valid_host(value: &[u8]) -> bool {
    if value.is_empty() {
        return true;
    }
    let (host, port) = match value.strip_prefix(b"[") {
        Some(literal) => {
            let Some(end) = literal.iter().position(|&b| b == b']') else { return false };
            let port = match &literal[end + 1..] {
                [] => None,
                [b':', port @ ..] => Some(port),
                _ => return false,
            };
            let ip = &literal[..end];
            if ip.is_empty() || !ip.iter().all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
                return false;
            }
            (None, port)
        }
        None => match value.iter().rposition(|&b| b == b':') {
            Some(colon) => (Some(&value[..colon]), Some(&value[colon + 1..])),
            None => (Some(value), None),
        },
    };
    let name_ok = host.is_none_or(|h| !h.is_empty() && h.iter().all(|&b| HOST_NAME_BYTES[usize::from(b)]));
    // A port is at most 65535 (an empty one is allowed, RFC 3986 3.2.3).
    let port_ok = port.is_none_or(|p| p.len() <= 5 && p.iter().all(u8::is_ascii_digit) && p.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0')) <= 65535);
    name_ok && port_ok
}

/// RFC 9113 8.2.1: an HTTP/2 field value must not start or end with whitespace (SP, HTAB); a
/// request with one is malformed. HTTP/1.1's parser trims such whitespace, hyper's HTTP/2 server
/// passes it on: a plugin reading the value trimmed (a signature base does, RFC 9421 2.1) and an
/// upstream reading it as sent would read two values. Says which field, for the 400.
pub fn h2_values_trimmed(headers: &HeaderMap) -> Result<(), String> {
    for (name, value) in headers {
        let bytes = value.as_bytes();
        if matches!(bytes.first(), Some(b' ' | b'\t')) || matches!(bytes.last(), Some(b' ' | b'\t')) {
            return Err(format!("the value of `{name}` starts or ends with whitespace, which HTTP/2 does not allow (RFC 9113 8.2.1)"));
        }
    }
    Ok(())
}

/// Applies `[limits] headers_with_underscores` to a client's request headers: drops the names
/// with `_`, or (`reject`) says which one makes the request a 400. Scans the names only; nothing
/// is allocated unless such a name is there.
pub fn underscored_names(headers: &mut HeaderMap, policy: crate::config::UnderscoreHeaders) -> Result<(), String> {
    use crate::config::UnderscoreHeaders;
    if policy == UnderscoreHeaders::Allow {
        return Ok(());
    }
    let underscored = |name: &HeaderName| name.as_str().as_bytes().contains(&b'_');
    let Some(first) = headers.keys().find(|n| underscored(n)) else { return Ok(()) };
    if policy == UnderscoreHeaders::Reject {
        return Err(format!("header name `{first}` has an underscore (`[limits] headers_with_underscores = \"reject\"`)"));
    }
    let names: Vec<HeaderName> = headers.keys().filter(|n| underscored(n)).cloned().collect();
    for name in names {
        headers.remove(name);
    }
    Ok(())
}

/// Removes from a client's request trailers every field an upstream could take for one the
/// gateway vouched for or a plugin decided on. Some servers merge trailers into the header
/// section (Apache's `MergeTrailers`), and RFC 9110 6.5.1 forbids trailers that frame, route,
/// authenticate or modify a request: a trailer `x-consumer-id: admin` (or `x_consumer_id`, past
/// the underscore rule the header section gets) would otherwise arrive after the header an
/// authentication plugin set. Kept: the application's own fields (a checksum, gRPC metadata).
/// Nothing is allocated for trailers that need no change.
pub fn strip_client_trailers(trailers: &mut HeaderMap) {
    remove_named(trailers, forbidden_client_trailer);
}

/// Removes every field whose name is `forbidden`; nothing is allocated when none is.
fn remove_named(fields: &mut HeaderMap, forbidden: fn(&HeaderName) -> bool) {
    if !fields.keys().any(forbidden) {
        return;
    }
    let names: Vec<HeaderName> = fields.keys().filter(|n| forbidden(n)).cloned().collect();
    for name in names {
        fields.remove(name);
    }
}

/// RFC 9110 8.6: an upstream's `Content-Length` that came as a list of one repeated number
/// (`2, 2`, or on two lines), which its parser took as that number, goes on once as the
/// number: as sent, an HTTP/2 client refuses the answer (a malformed field) and an HTTP/1.1
/// one may frame the body differently. One plain value (nearly every response) is one lookup
/// and a scan of its few bytes.
pub fn single_content_length(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let Some(first) = values.next() else { return };
    if values.next().is_none() && !first.as_bytes().contains(&b',') {
        return;
    }
    let number = first.as_bytes().split(|&b| b == b',').next().map(<[u8]>::trim_ascii).filter(|n| !n.is_empty() && n.iter().all(u8::is_ascii_digit));
    match number.and_then(|n| HeaderValue::from_bytes(n).ok()) {
        Some(value) => drop(headers.insert(header::CONTENT_LENGTH, value)),
        None => drop(headers.remove(header::CONTENT_LENGTH)),
    }
}

/// Removes from a response's trailers (an upstream's, or a response phase's) the fields no
/// trailer may carry and a client could act on: RFC 9110 6.5.1's framing (`Content-Length`,
/// `Transfer-Encoding`), routing, authentication, response control data and how to process the
/// content, and RFC 9113 8.2.2's connection-specific fields, which make the whole answer
/// malformed for an HTTP/2 client: passed on, the stream was reset after its body and the
/// answer lost. Kept: the application's own fields (gRPC's `grpc-status`, a checksum, a
/// validator computed as the body streamed).
/// Nothing is allocated for trailers that need no change.
pub fn strip_response_trailers(trailers: &mut HeaderMap) {
    remove_named(trailers, forbidden_response_trailer);
}

/// Whether the gateway may not write a value of its own under `name` on every response (the
/// trace id `tracing.response_header` names): the fields a response trailer may not carry
/// ([`strip_response_trailers`]: framing, routing, authentication, control data, content, and
/// the gateway's `Via` and `X-Request-Id`), and the hop-by-hop ones.
pub fn reserved_response_field(name: &HeaderName) -> bool {
    forbidden_response_trailer(name) || always_hop_by_hop(name)
}

/// Whether a response trailer may not reach the client ([`strip_response_trailers`]).
fn forbidden_response_trailer(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "age" | "authentication-info" | "authorization" | "cache-control" | "connection" | "content-encoding" | "content-length"
            | "content-location" | "content-range" | "content-type" | "date" | "expires" | "host" | "keep-alive"
            | "location" | "proxy-authenticate" | "proxy-authentication-info" | "proxy-connection" | "retry-after"
            | "set-cookie" | "te" | "trailer" | "transfer-encoding" | "upgrade" | "vary" | "via" | "www-authenticate" | "x-request-id"
    )
}

/// The names of the request headers the request phases' plugins removed, kept so that a
/// client's trailers cannot bring one back ([`strip_trailers_named`]): an authentication plugin
/// removes a client's `x-user-id` before it decides, and one that fails open, or whose service
/// vouched for no user, sets none. A 128-bit Bloom filter, two bits a name: nothing allocated
/// on the request path. A false positive (well under 1% with a handful of names removed) drops
/// a client's trailer that shares a removed name's bits, rare and on the safe side.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RemovedNames(u128);

impl RemovedNames {
    /// Records that `name` was removed.
    pub fn insert(&mut self, name: &HeaderName) {
        self.0 |= Self::bits(name);
    }

    /// Whether `name` may have been removed (certainly, if it was).
    pub fn may_contain(&self, name: &HeaderName) -> bool {
        self.0 != 0 && self.0 & Self::bits(name) == Self::bits(name)
    }

    /// The name's two bits: a multiply-xorshift hash of its bytes (lower-case already), eight
    /// at a time, two 7-bit slices of it.
    fn bits(name: &HeaderName) -> u128 {
        let bytes = name.as_str().as_bytes();
        let mut hash = bytes.len() as u64;
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            hash = (hash ^ u64::from_le_bytes(word)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            hash ^= hash >> 29;
        }
        (1u128 << (hash & 127)) | (1u128 << ((hash >> 7) & 127))
    }
}

/// Removes from a client's request trailers every field named in `sent`, the header section
/// the request went upstream with, or one the plugins `removed`: a trailer repeating a header a
/// plugin set (`x-user`, `x-role` from a verified token) would stand beside it, and an upstream
/// that merges trailers into the headers would read the client's after the plugin's; one a
/// plugin removed would come back. Nothing is allocated for trailers that need no change.
pub fn strip_trailers_named(trailers: &mut HeaderMap, sent: &[HeaderName], removed: RemovedNames) {
    let barred = |name: &HeaderName| sent.contains(name) || removed.may_contain(name);
    if !trailers.keys().any(barred) {
        return;
    }
    let names: Vec<HeaderName> = trailers.keys().filter(|name| barred(name)).cloned().collect();
    for name in names {
        trailers.remove(name);
    }
}

/// Takes out of a client request's `Trailer` header (RFC 9110 6.6.2: the trailer fields its body
/// will end with) the names [`strip_client_trailers`] removes from those trailers, so the
/// upstream is not told of fields that never come; a `Trailer` left naming nothing goes. A
/// request without `Trailer` costs one lookup; one announcing only kept names, a scan of them.
pub fn announce_kept_trailers(headers: &mut HeaderMap) {
    let announced = headers.get_all(header::TRAILER);
    if !announced.iter().flat_map(trailer_names).any(|n| forbidden_client_trailer_name(n.as_bytes())) {
        return;
    }
    let kept: Vec<&str> = announced.iter().flat_map(trailer_names).filter(|n| !forbidden_client_trailer_name(n.as_bytes())).collect();
    // Kept names are tokens taken from a header value: joined, they make one again.
    let value = if kept.is_empty() { None } else { HeaderValue::from_str(&kept.join(", ")).ok() };
    match value {
        Some(value) => {
            headers.insert(header::TRAILER, value);
        }
        None => {
            headers.remove(header::TRAILER);
        }
    }
}

/// The field names a `Trailer` line lists, trimmed (none from a line that is not text: no
/// trailer field can be named so).
fn trailer_names(line: &HeaderValue) -> impl Iterator<Item = &str> {
    line.to_str().unwrap_or_default().split(',').map(str::trim).filter(|n| !n.is_empty())
}

/// Whether a client's request trailer may not reach the upstream ([`strip_client_trailers`]):
/// RFC 9110 6.5.1's framing, routing, authentication, request-modifier and content fields, the
/// fields the gateway writes (forwarding, tracing, request id, consumer identity), what servers
/// read as the client's address, method or URL (`True-Client-IP`, `X-HTTP-Method-Override`,
/// `X-Original-URL`), API key fields, and any name with an underscore.
fn forbidden_client_trailer(name: &HeaderName) -> bool {
    forbidden_client_trailer_name(name.as_str().as_bytes())
}

/// [`forbidden_client_trailer`] for a name in any case (as a `Trailer` header lists it).
fn forbidden_client_trailer_name(name: &[u8]) -> bool {
    const FORBIDDEN: [&str; 37] = [
        "apikey", "authorization", "cache-control", "connection", "content-encoding", "content-length", "content-range", "content-type",
        "cookie", "expect", "forwarded", "host", "keep-alive", "max-forwards", "pragma", "proxy-authorization", "proxy-connection", "range",
        "te", "traceparent", "tracestate", "trailer", "transfer-encoding", "true-client-ip", "upgrade", "via", "x-api-key", "x-client-ip",
        "x-http-method", "x-http-method-override", "x-method-override", "x-original-url", "x-real-ip", "x-request-id", "x-rewrite-url",
        "cf-connecting-ip", "fastly-client-ip",
    ];
    let starts = |prefix: &str| name.get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix.as_bytes()));
    let listed = |list: &[&str]| list.iter().any(|l| l.as_bytes().eq_ignore_ascii_case(name));
    name.contains(&b'_') || starts("if-") || starts("x-forwarded-") || listed(&FORBIDDEN) || listed(&crate::exchange::CONSUMER_HEADERS)
}

/// Appends this gateway to `Via` (`1.1 airlock`, or `2 airlock` for HTTP/2), after every hop
/// already listed, on however many lines they came.
pub fn add_via(headers: &mut HeaderMap, version: http::Version) {
    // RFC 9110 7.6.3: the protocol version of the message received.
    let me = match version {
        http::Version::HTTP_2 => "2 airlock",
        http::Version::HTTP_10 => "1.0 airlock",
        _ => "1.1 airlock",
    };
    append_to_list(headers, header::VIA, HeaderValue::from_static(me));
}

/// Longest client-supplied request id kept.
const MAX_REQUEST_ID_LEN: usize = 128;

/// The request id: the client's `X-Request-Id` if it is short printable ASCII, else a new random id
/// (32 hex digits, written in place: the `Arc` is the only allocation).
pub fn request_id(headers: &HeaderMap) -> Arc<str> {
    if let Some(id) = headers.get(&X_REQUEST_ID).and_then(|v| v.to_str().ok())
        && !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id.bytes().all(|b| b.is_ascii_graphic())
    {
        return id.into();
    }
    new_request_id()
}

/// A request id of the gateway's own: 32 random hex digits.
pub fn new_request_id() -> Arc<str> {
    let mut hex = [0u8; 32];
    // 16 random bytes into exactly 32 digits: encoding cannot fail.
    let _ = hex::encode_to_slice(fastrand::u128(..).to_be_bytes(), &mut hex);
    std::str::from_utf8(&hex).unwrap_or_default().into()
}

/// The request id as a header value sharing the id's own allocation: made once per request
/// (one small allocation), then cloned into the upstream request and the response by reference
/// count, where `HeaderValue::from_str` would copy it each time.
pub fn request_id_header(id: &Arc<str>) -> Option<HeaderValue> {
    struct Shared(Arc<str>);
    impl AsRef<[u8]> for Shared {
        fn as_ref(&self) -> &[u8] {
            self.0.as_bytes()
        }
    }
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(Shared(id.clone()))).ok()
}

/// Total size of the request line and headers, as counted against `limits.max_header_bytes`.
pub fn header_bytes(method: &http::Method, uri: &http::Uri, headers: &HeaderMap) -> usize {
    let line = method.as_str().len() + uri.path_and_query().map_or(1, |pq| pq.as_str().len()) + 12;
    line + crate::exchange::header_lines_bytes(headers)
}

/// RFC 9110 7.6.2, for an OPTIONS request (TRACE is refused outright): true when its
/// `Max-Forwards` is 0, so the gateway is the final recipient and answers it
/// ([`options_answer`], in place of the upstream: the route's plugins still run first, or an
/// `ip-restrict` hiding the route or an auth plugin would be skipped); a larger one is
/// decremented by one for the upstream.
pub fn max_forwards_ends_here(headers: &mut HeaderMap) -> bool {
    let Some(forwards) = headers.get(http::header::MAX_FORWARDS).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok())
    else {
        return false;
    };
    if forwards == 0 {
        return true;
    }
    headers.insert(http::header::MAX_FORWARDS, HeaderValue::from(forwards - 1));
    false
}

/// The gateway's own answer to an OPTIONS that ends at it ([`max_forwards_ends_here`]): 200,
/// `Allow` with the methods the route serves (a `GET` route's `HEAD` too, as it routes them:
/// [`crate::router::served_methods`]), or the usual ones for a route of any method.
pub fn options_answer(route_methods: &[http::Method]) -> crate::exchange::ResponseState {
    let allow = if route_methods.is_empty() {
        HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
    } else {
        let served = crate::router::served_methods(route_methods);
        let listed = served.iter().map(http::Method::as_str).collect::<Vec<_>>().join(", ");
        HeaderValue::from_str(&listed).unwrap_or(HeaderValue::from_static("OPTIONS"))
    };
    let mut headers = HeaderMap::new();
    headers.insert(http::header::ALLOW, allow);
    crate::exchange::ResponseState { status: http::StatusCode::OK, headers, body: Some(bytes::Bytes::new()), trailers: None }
}

/// Fields that vouch for a message's content bytes as its sender sent them: RFC 9530's
/// `Content-Digest` and `Repr-Digest`, RFC 3230's `Digest`, RFC 1864's `Content-MD5`. Wrong once
/// the gateway changes the bytes (decodes them for a plugin, compresses them, or a plugin
/// replaces them): a recipient checking one (an upstream verifying HTTP message signatures,
/// which bind the body through `Content-Digest`) would refuse the message.
pub const CONTENT_DIGESTS: [HeaderName; 4] = [
    HeaderName::from_static("content-digest"),
    HeaderName::from_static("repr-digest"),
    HeaderName::from_static("digest"),
    HeaderName::from_static("content-md5"),
];

/// `headers` of a message whose content the gateway changed: its digests go
/// ([`CONTENT_DIGESTS`]), and a strong `ETag` is made weak (`"x"` becomes `W/"x"`: the bytes
/// are equivalent to those it named, not identical).
pub fn content_changed(headers: &mut HeaderMap) {
    for digest in &CONTENT_DIGESTS {
        headers.remove(digest);
    }
    weaken_etag(headers);
}

/// A strong `ETag` made weak (`W/"..."`), for content equivalent to what it named.
pub fn weaken_etag(headers: &mut HeaderMap) {
    if let Some(etag) = headers.get(header::ETAG)
        && etag.as_bytes().starts_with(b"\"")
    {
        let mut weak = b"W/".to_vec();
        weak.extend_from_slice(etag.as_bytes());
        if let Ok(value) = HeaderValue::from_bytes(&weak) {
            headers.insert(header::ETAG, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailers_lose_the_names_sent_and_removed() {
        let name = |n: &'static str| HeaderName::from_static(n);
        let mut removed = RemovedNames::default();
        assert!(!removed.may_contain(&name("x-user-id")), "empty: nothing");
        for n in ["x-user-id", "x-consumer-id", "authorization", "x-api-key"] {
            removed.insert(&name(n));
        }
        let mut trailers = HeaderMap::new();
        for n in ["x-user-id", "x-role", "x-checksum", "x-api-key"] {
            trailers.insert(name(n), HeaderValue::from_static("client"));
        }
        strip_trailers_named(&mut trailers, &[name("x-role")], removed);
        assert_eq!(trailers.keys().map(HeaderName::as_str).collect::<Vec<_>>(), ["x-checksum"]);
        // A few names removed leave most others through: two bits each of 128.
        let kept = (0..1000).filter(|i| !removed.may_contain(&HeaderName::from_bytes(format!("x-trailer-{i}").as_bytes()).unwrap())).count();
        assert!(kept > 980, "{kept} of 1000 kept");
    }

    #[test]
    fn trailer_announces_only_the_trailers_kept() {
        let mut h = HeaderMap::new();
        h.append(header::TRAILER, HeaderValue::from_static("x-checksum, X-Consumer-Id ,authorization"));
        h.append(header::TRAILER, HeaderValue::from_static("x_user, grpc-status"));
        announce_kept_trailers(&mut h);
        assert_eq!(h.get_all(header::TRAILER).iter().collect::<Vec<_>>(), ["x-checksum, grpc-status"]);
        // Nothing to take out: left as it came, on its lines.
        let mut h = HeaderMap::new();
        h.append(header::TRAILER, HeaderValue::from_static("a"));
        h.append(header::TRAILER, HeaderValue::from_static("b"));
        announce_kept_trailers(&mut h);
        assert_eq!(h.get_all(header::TRAILER).iter().collect::<Vec<_>>(), ["a", "b"]);
        let mut h = HeaderMap::new();
        h.insert(header::TRAILER, HeaderValue::from_static("If-Match, x-forwarded-for"));
        announce_kept_trailers(&mut h);
        assert!(!h.contains_key(header::TRAILER));
        announce_kept_trailers(&mut h);
        assert!(h.is_empty());
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, X-Secret-Hop"));
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("http2-settings", HeaderValue::from_static("AAMAAABkAAQAoAAAAAIAAAAA"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }

    /// Each spelling of `Connection` values: a plain `keep-alive` or `close` (any case) names
    /// nothing, and a value that names a header still has it removed, whether it comes first,
    /// second, beside a plain value or in a second `Connection` field.
    #[test]
    fn connection_values_plain_or_naming_headers() {
        let named = [
            vec!["keep-alive, x-hop"],
            vec!["x-hop"],
            vec!["Keep-Alive", "X-Hop"],
            vec!["close", "x-hop, keep-alive"],
            vec!["keep-alive,x-hop"],
            vec![" x-hop "],
        ];
        for values in named {
            let mut h = HeaderMap::new();
            for v in &values {
                h.append(header::CONNECTION, HeaderValue::from_str(v).unwrap());
            }
            h.insert("x-hop", HeaderValue::from_static("1"));
            h.insert("x-keep", HeaderValue::from_static("1"));
            strip_hop_by_hop(&mut h);
            assert!(!h.contains_key("x-hop"), "{values:?}: the named header is removed");
            assert!(!h.contains_key(header::CONNECTION), "{values:?}");
            assert!(h.contains_key("x-keep"), "{values:?}");
        }
        for plain in ["keep-alive", "close", "KEEP-ALIVE", "Close"] {
            let mut h = HeaderMap::new();
            h.insert(header::CONNECTION, HeaderValue::from_static(plain));
            h.insert("x-keep", HeaderValue::from_static("1"));
            strip_hop_by_hop(&mut h);
            assert_eq!(h.len(), 1, "{plain}");
            assert!(h.contains_key("x-keep"), "{plain}");
        }
        assert!(is_plain_connection_option(b"Keep-Alive") && is_plain_connection_option(b"CLOSE"));
        assert!(!is_plain_connection_option(b"keep-alive, x") && !is_plain_connection_option(b"closed") && !is_plain_connection_option(b""));
    }

    /// The scan answers for `TE`, `Transfer-Encoding` and `Upgrade` each alone, in any number
    /// of fields, and not for a name `Connection` lists or an end-to-end field; what it found is
    /// what `strip` removes.
    #[test]
    fn the_scan_has_the_fixed_names_the_head_carries() {
        let checks = |found: HopByHop| [found.has_te(), found.has_transfer_encoding(), found.has_upgrade()];
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("a.example"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        h.insert(header::CONNECTION, HeaderValue::from_static("x-te, x-upgrade"));
        h.insert(header::TRAILER, HeaderValue::from_static("x-sum"));
        assert_eq!(checks(HopByHop::scan(&h)), [false; 3]);
        for (i, name) in [header::TE, header::TRANSFER_ENCODING, header::UPGRADE].into_iter().enumerate() {
            let mut one = h.clone();
            one.append(&name, HeaderValue::from_static("a"));
            one.append(&name, HeaderValue::from_static("b"));
            let found = HopByHop::scan(&one);
            let mut expected = [false; 3];
            expected[i] = true;
            assert_eq!(checks(found), expected, "{name}");
            found.strip(&mut one);
            assert!(!one.contains_key(&name) && !one.contains_key(header::CONNECTION), "{name}");
            assert_eq!(one.len(), 3, "{name}: {one:?}");
        }
    }

    #[test]
    fn an_ip_is_written_as_its_display_writes_it() {
        let ips = ["0.0.0.0", "1.2.3.4", "10.0.0.1", "99.100.109.110", "127.0.0.1", "192.168.255.9", "255.255.255.255", "::1", "2001:db8::8a2e:370:7334", "::ffff:255.255.255.255", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"];
        for text in ips {
            let ip: std::net::IpAddr = text.parse().unwrap();
            let mut buf = [0u8; 48];
            assert_eq!(ip_text(ip, &mut buf), Some(ip.to_string().as_bytes()), "{text}");
            assert_eq!(ip_string(ip), text, "{text}");
        }
        for octet in 0..=255u8 {
            let ip = std::net::IpAddr::from([octet, 7, octet, 70]);
            let mut buf = [0u8; 48];
            assert_eq!(ip_text(ip, &mut buf), Some(ip.to_string().as_bytes()));
            assert_eq!(ip_string(ip), ip.to_string());
        }
    }

    #[test]
    fn the_hop_by_hop_index_is_each_names_place_in_the_list() {
        for (i, name) in ALWAYS_HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name), Some(i), "{name}");
        }
        for other in [header::HOST, header::TRAILER, header::CONTENT_LENGTH, HeaderName::from_static("x-connection")] {
            assert_eq!(hop_by_hop_index(&other), None, "{other}");
        }
        // As `Connection` options, in any case; nothing else, however long.
        for name in &ALWAYS_HOP_BY_HOP {
            assert!(names_fixed_hop_by_hop(name.as_str()), "{name}");
            assert!(names_fixed_hop_by_hop(&name.as_str().to_ascii_uppercase()), "{name}");
        }
        for other in ["Keep-Alive", "PROXY-Authorization"] {
            assert!(names_fixed_hop_by_hop(other), "{other}");
        }
        for other in ["", "close", "x-trace", "keep-alive2", "proxy-authorization-x", "a-much-longer-option-than-any-name"] {
            assert!(!names_fixed_hop_by_hop(other), "{other}");
        }
    }

    #[test]
    fn each_fixed_hop_by_hop_header_alone_is_removed_and_nothing_else() {
        for name in &ALWAYS_HOP_BY_HOP {
            let mut h = HeaderMap::new();
            h.insert(header::SERVER, HeaderValue::from_static("nginx"));
            h.append(name, HeaderValue::from_static("close"));
            h.append(name, HeaderValue::from_static("x"));
            strip_hop_by_hop(&mut h);
            assert_eq!(h.len(), 1, "{name}");
            assert!(h.contains_key(header::SERVER), "{name}");
        }
    }

    #[test]
    fn headers_without_hop_by_hop_ones_are_kept_and_a_lone_one_is_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("a.example"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
        // No `Connection`, one fixed hop-by-hop name: the fast path must not skip it.
        for hop in ["upgrade", "keep-alive", "transfer-encoding", "proxy-authorization"] {
            h.insert(HeaderName::from_static(hop), HeaderValue::from_static("x"));
            strip_hop_by_hop(&mut h);
            assert!(!h.contains_key(hop), "{hop} kept");
            assert_eq!(h.len(), 2);
        }
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.1"));
        add_forwarded(&mut h, "10.0.0.9:5555".parse().unwrap(), "http", Some(&HeaderValue::from_static("a.example")));
        assert_eq!(h[X_FORWARDED_FOR], "203.0.113.1, 10.0.0.9");
        assert_eq!(h[X_FORWARDED_PROTO], "http");
        assert_eq!(h[X_FORWARDED_HOST], "a.example");
        // The longest IPv6 text, alone (a blank client value is not kept), and no host.
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("  "));
        add_forwarded(&mut h, "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:1".parse().unwrap(), "https", None);
        assert_eq!(h[X_FORWARDED_FOR], "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
        assert!(!h.contains_key(X_FORWARDED_HOST));
    }

    #[test]
    fn host_values_are_one_host_and_port() {
        for ok in ["api.example.com", "api.example.com:8080", "127.0.0.1:1", "[::1]", "[2001:db8::1]:443", "", "a_b.local", "host:", "x:65535"] {
            assert!(valid_host(ok.as_bytes()), "{ok}");
        }
        for bad in ["evil@x", "a, b", "x/../admin", "internal.example:abc", "a b", "[::1", "[::1]x", "[]", ":80", "x:123456", "x:99999", "x:1:2", "h\\x"] {
            assert!(!valid_host(bad.as_bytes()), "{bad}");
        }
        // The table holds RFC 3986's reg-name bytes, and only those.
        for b in 0..=255u8 {
            let reg_name = b.is_ascii_alphanumeric() || b"-._~%!$&'()*+;=".contains(&b);
            assert_eq!(HOST_NAME_BYTES[usize::from(b)], reg_name, "byte {b:#04x}");
            assert_eq!(valid_host(&[b]), reg_name && b != b':', "byte {b:#04x}");
        }
    }

    #[test]
    fn split_cookie_fields_are_joined() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        join_cookies(&mut h);
        assert_eq!(h[header::COOKIE], "a=1");
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        h.append(header::COOKIE, HeaderValue::from_static("c=3"));
        join_cookies(&mut h);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h[header::COOKIE], "a=1; b=2; c=3");
    }

    #[test]
    fn every_forwarded_for_and_via_line_is_kept_in_order() {
        // A proxy in front that adds its own line (HAProxy's `option forwardfor`) puts the
        // client it saw last: dropping later lines let the client's own first line pass for it.
        let mut h = HeaderMap::new();
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1"));
        h.append(X_FORWARDED_FOR, HeaderValue::from_static(" "));
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("2.2.2.2, 3.3.3.3"));
        add_forwarded(&mut h, "10.0.0.9:5555".parse().unwrap(), "http", None);
        assert_eq!(h.get_all(X_FORWARDED_FOR).iter().count(), 1);
        assert_eq!(h[X_FORWARDED_FOR], "1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.9");
        h.append(header::VIA, HeaderValue::from_static("1.1 edge"));
        h.append(header::VIA, HeaderValue::from_static("1.1 lb"));
        add_via(&mut h, http::Version::HTTP_11);
        assert_eq!(h[header::VIA], "1.1 edge, 1.1 lb, 1.1 airlock");
        add_via(&mut h, http::Version::HTTP_2);
        assert_eq!(h[header::VIA], "1.1 edge, 1.1 lb, 1.1 airlock, 2 airlock");
        let mut fresh = HeaderMap::new();
        add_via(&mut fresh, http::Version::HTTP_2);
        assert_eq!(fresh[header::VIA], "2 airlock");
        let mut from_http10 = HeaderMap::new();
        add_via(&mut from_http10, http::Version::HTTP_10);
        assert_eq!(from_http10[header::VIA], "1.0 airlock", "the version received (RFC 9110 7.6.3)");
    }

    #[test]
    fn request_id_is_kept_when_sane() {
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(&*request_id(&h), "abc-123");
        h.insert(X_REQUEST_ID, HeaderValue::from_static("has space"));
        let generated = request_id(&h);
        assert_eq!(generated.len(), 32);
        assert!(generated.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(generated, request_id(&h));
        assert_eq!(request_id_header(&generated).unwrap().as_bytes(), generated.as_bytes());
        assert!(request_id_header(&"bad\nid".into()).is_none());
    }

    #[test]
    fn changed_content_loses_its_digests_and_its_strong_etag() {
        let mut h = HeaderMap::new();
        for (name, value) in [("content-digest", "sha-256=:A:"), ("repr-digest", "sha-256=:A:"), ("digest", "md5=A"), ("content-md5", "A"), ("etag", "\"v1\""), ("x-kept", "1")] {
            h.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        content_changed(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!((h["etag"].as_bytes(), h["x-kept"].as_bytes()), (&b"W/\"v1\""[..], &b"1"[..]));
        content_changed(&mut h);
        assert_eq!(h["etag"], "W/\"v1\"", "weak once");
    }
}
