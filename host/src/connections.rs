//! How a new client connection is set up for HTTP: the settings `[limits]` and `[timeouts]` ask
//! for, and which protocol the connection speaks, so hyper starts in that protocol directly.
//!
//! Why it matters: hyper's version detection reads the first bytes itself and hands them back
//! through a rewind buffer, after which hyper's HTTP/1 read buffer grows to 16 KiB for the
//! connection's whole life. Peeking at the bytes instead (cleartext) or reading the ALPN answer
//! (TLS) keeps it at 8 KiB (heaptrack: 16.4 -> 8.2 KB per idle keep-alive connection).

use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;

use crate::config::{LimitsConfig, TimeoutsConfig};

/// Slack over the configured header limits given to hyper's own parser, so oversized headers
/// reach the gateway's check and get its JSON 431 with a request id (hyper's own is bare).
const PARSER_HEADER_SLACK: usize = 2;

/// What every HTTP/2 client sends first (RFC 9113 section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Descriptors kept out of the connection budget when `limits.max_connections` is derived from
/// the open-file limit (at most a quarter of it): listening sockets, the admin listener, plugin
/// files and the compile cache, log files, Redis and OTLP connections, the runtime's own.
const RESERVED_FDS: u64 = 256;

/// `limits.max_connections` where the open-file limit is unlimited or unknown (not Unix): a
/// fixed cap that still stops a flood of idle connections before memory runs out (an idle
/// keep-alive connection holds ~2 KB, a busy one ~20 KB: 65,536 of them 1.3 GiB).
const UNLIMITED_FDS_MAX_CONNECTIONS: usize = 65_536;

/// The protocol a connection speaks, as far as its first bytes or its TLS handshake tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.x.
    Http1,
    /// HTTP/2 (prior knowledge on cleartext, or ALPN `h2`).
    Http2,
    /// Not known yet (too few bytes to tell, or no ALPN): hyper detects it.
    Unknown,
}

impl Protocol {
    /// What a connection's first bytes say: the HTTP/2 preface, or anything that cannot begin it.
    pub fn from_first_bytes(first: &[u8]) -> Self {
        if first.starts_with(H2_PREFACE) {
            Protocol::Http2
        } else if H2_PREFACE.starts_with(first) {
            Protocol::Unknown
        } else {
            Protocol::Http1
        }
    }

    /// What the TLS handshake agreed (ALPN), if it agreed anything.
    pub fn from_alpn(alpn: Option<&[u8]>) -> Self {
        match alpn {
            Some(b"h2") => Protocol::Http2,
            Some(b"http/1.1") | Some(b"http/1.0") => Protocol::Http1,
            _ => Protocol::Unknown,
        }
    }

    /// Peeks at a cleartext connection's first bytes (without consuming them) to tell its
    /// protocol. Waits for the client's first bytes; returns `Unknown` if it closes first.
    pub async fn sniff(stream: &TcpStream) -> Self {
        let mut first = [0u8; H2_PREFACE.len()];
        match stream.peek(&mut first).await {
            Ok(n) if n > 0 => Protocol::from_first_bytes(&first[..n]),
            _ => Protocol::Unknown,
        }
    }
}

/// Applies the HTTP/1 settings to hyper's own HTTP/1 builder and to the auto builder's HTTP/1
/// half alike (two types with the same methods), so the two cannot drift apart. The parser gets
/// slack over the configured header limits, and its read buffer room for the largest accepted
/// head plus some body.
macro_rules! http1_settings {
    ($builder:expr, $limits:expr, $idle:expr) => {
        $builder
            .timer(TokioTimer::new())
            .keep_alive(true)
            .header_read_timeout($idle)
            .max_headers($limits.max_headers * PARSER_HEADER_SLACK + 16)
            .max_buf_size(($limits.max_header_bytes * PARSER_HEADER_SLACK).max(8192) + 8192)
    };
}

/// The HTTP/1.1 and HTTP/2 connection settings `[limits]` and `[timeouts]` ask for, one builder
/// per [`Protocol`] a new connection may turn out to speak.
pub struct ConnectionBuilders {
    detect: auto::Builder<TokioExecutor>,
    http2: auto::Builder<TokioExecutor>,
    http1: http1::Builder,
    idle: Duration,
    send: Duration,
    max_connections: usize,
    max_connections_per_client: Option<usize>,
}

impl ConnectionBuilders {
    /// Builds them from the config's limits and timeouts.
    pub fn new(limits: &LimitsConfig, timeouts: &TimeoutsConfig) -> Self {
        let idle = Duration::from_millis(timeouts.idle_ms);
        let detect = builder(limits, idle);
        let mut http1 = http1::Builder::new();
        http1_settings!(http1, limits, idle);
        Self {
            http2: detect.clone().http2_only(),
            detect,
            http1,
            idle,
            send: Duration::from_millis(timeouts.send_ms),
            max_connections: connection_limit(limits.max_connections, open_file_limit()),
            max_connections_per_client: limits.max_connections_per_client,
        }
    }

    /// The builder for a connection speaking HTTP/2, or one whose protocol hyper must detect
    /// (`Unknown`; HTTP/1 connections get [`Self::http1`]).
    pub fn auto(&self, protocol: Protocol) -> &auto::Builder<TokioExecutor> {
        match protocol {
            Protocol::Http2 => &self.http2,
            Protocol::Http1 | Protocol::Unknown => &self.detect,
        }
    }

    /// The builder for a connection known to speak HTTP/1.x.
    pub fn http1(&self) -> &http1::Builder {
        &self.http1
    }

    /// How long an idle keep-alive connection is kept (`timeouts.idle_ms`).
    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// Longest an HTTP/1.1 client may take no byte of its response (`timeouts.send_ms`).
    pub fn send(&self) -> Duration {
        self.send
    }

    /// Most client connections served at once (`limits.max_connections`, or its derived default).
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// Most connections one client address may hold (`limits.max_connections_per_client`).
    pub fn max_connections_per_client(&self) -> Option<usize> {
        self.max_connections_per_client
    }
}

/// `limits.max_connections` as configured, or else derived from the open-file limit (the soft
/// `RLIMIT_NOFILE`; `None`: unlimited or unknown). Derived, it keeps descriptors for what is not
/// a client connection ([`RESERVED_FDS`], at most a quarter of the limit) and gives half of
/// the rest to client connections, the other half to the upstream connections they cause (a
/// proxied HTTP/1.1 request holds one of each, as nginx's `worker_connections` counts both), so
/// HTTP/1.1 clients meet the cap before `accept` and upstream connects fail with `EMFILE`.
///
/// The 1:1 split is a bound for HTTP/1.1 clients only. One HTTP/2 client connection carries up
/// to `limits.max_concurrent_streams` requests at once, each holding its own upstream
/// connection to an HTTP/1.1 upstream (one shared connection per worker to an HTTP/2 one), so a
/// few HTTP/2 clients can use up the upstream half while far below this cap. Upstream connects
/// then fail with `EMFILE`: answered 503 `gateway_overloaded`, counted in
/// `airlock_upstream_connect_shortages_total`, and not held against any target
/// ([`crate::proxy::upstream`]); the budget is not divided by the stream limit, which would
/// starve the HTTP/1.1 clients that are most of the traffic.
pub fn connection_limit(configured: Option<usize>, open_files: Option<u64>) -> usize {
    if let Some(n) = configured {
        return n;
    }
    let Some(fds) = open_files else { return UNLIMITED_FDS_MAX_CONNECTIONS };
    let budget = fds.saturating_sub(RESERVED_FDS.min(fds / 4)) / 2;
    usize::try_from(budget).unwrap_or(usize::MAX).max(1)
}

/// The process's soft open-file limit (`RLIMIT_NOFILE`), read once; `None` if unlimited.
fn open_file_limit() -> Option<u64> {
    static LIMIT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| rustix::process::getrlimit(rustix::process::Resource::Nofile).current)
}

fn builder(limits: &LimitsConfig, idle: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    http1_settings!(builder.http1(), limits, idle);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes * PARSER_HEADER_SLACK).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(idle / 2))
        // hyper's default is 200, each stream an upstream connection (`connection_limit`).
        .max_concurrent_streams(limits.max_concurrent_streams)
        // WebSocket over HTTP/2 (RFC 8441, `proxy::upgrade`).
        .enable_connect_protocol();
    builder
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_tell_http1_from_http2_as_soon_as_they_can() {
        assert_eq!(Protocol::from_first_bytes(b"GET / HTTP/1.1\r\n"), Protocol::Http1);
        assert_eq!(Protocol::from_first_bytes(b"G"), Protocol::Http1);
        // POST, PUT and PATCH share the preface's first byte and part ways at the second.
        assert_eq!(Protocol::from_first_bytes(b"P"), Protocol::Unknown);
        assert_eq!(Protocol::from_first_bytes(b"POST / HTTP/1.1\r\n"), Protocol::Http1);
        assert_eq!(Protocol::from_first_bytes(b"PRI * HTTP/2.0\r\n"), Protocol::Unknown);
        assert_eq!(Protocol::from_first_bytes(H2_PREFACE), Protocol::Http2);
        assert_eq!(Protocol::from_first_bytes(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\x12\x04"), Protocol::Http2);
        // A method that merely starts like the preface is HTTP/1.
        assert_eq!(Protocol::from_first_bytes(b"PRI * HTTP/1.1\r\n\r\nSM\r\n\r\n"), Protocol::Http1);
    }

    #[test]
    fn the_connection_cap_is_the_configured_one_or_half_the_descriptors_left_after_a_reserve() {
        assert_eq!(connection_limit(Some(3), Some(1024)), 3, "configured wins");
        assert_eq!(connection_limit(None, Some(1024)), (1024 - 256) / 2);
        assert_eq!(connection_limit(None, Some(1_048_576)), (1_048_576 - 256) / 2);
        // A small limit keeps a quarter, not 256, so some connections are still served.
        assert_eq!(connection_limit(None, Some(512)), (512 - 128) / 2);
        assert_eq!(connection_limit(None, Some(2)), 1, "never 0: nothing would ever be served");
        assert_eq!(connection_limit(None, None), UNLIMITED_FDS_MAX_CONNECTIONS);
        assert!(open_file_limit().is_none_or(|n| n > 0));
    }

    #[test]
    fn alpn_tells_the_protocol_when_the_handshake_agreed_one() {
        assert_eq!(Protocol::from_alpn(Some(b"h2")), Protocol::Http2);
        assert_eq!(Protocol::from_alpn(Some(b"http/1.1")), Protocol::Http1);
        assert_eq!(Protocol::from_alpn(None), Protocol::Unknown);
        assert_eq!(Protocol::from_alpn(Some(b"spdy/3")), Protocol::Unknown);
    }

    #[tokio::test]
    async fn sniffing_leaves_the_bytes_for_hyper() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert_eq!(Protocol::sniff(&server).await, Protocol::Http1);
        let mut read = [0u8; 3];
        server.read_exact(&mut read).await.unwrap();
        assert_eq!(&read, b"GET");
        drop(client);
        let (server2, _) = {
            let c = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
            drop(c);
            listener.accept().await.unwrap()
        };
        assert_eq!(Protocol::sniff(&server2).await, Protocol::Unknown, "closed before a byte");
    }
}
