//! A listener's `proxy_protocol`: the PROXY protocol header (HAProxy's spec, v1 text and v2
//! binary) an L4 load balancer writes first on every connection, naming the client whose
//! connection it relays. Read before TLS and HTTP; the client it announces becomes the
//! connection's peer (`server.rs`), for everything the TCP peer was used for.
//!
//! How it is read: by peeking, then consuming exactly the header's bytes, so the stream the
//! header leaves is the bare `TcpStream`, with the client's first TLS or HTTP bytes still in the
//! socket. A stream wrapper replaying a prefix would have to be a new type through TLS, protocol
//! sniffing and keep-alive parking, and would cost every read of the connection's life a branch;
//! this costs a connection one peek and one read, a header split over several segments a peek
//! and a read per segment (and a listener without `proxy_protocol` nothing at all). Bytes are
//! consumed only once they are known to be the header's: a v1 header up to its line feed, a v2
//! one up to the length its fixed part announces, and a prefix too short to tell only when all
//! of it must be header.
//!
//! Parsing is [`ppp`]'s, on a complete header only (its partial-input checks reject some
//! prefixes of valid v1 headers split at a space).

use std::net::SocketAddr;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Longest v1 header, its CRLF included (spec 2.1).
const V1_MAX: usize = 107;
/// What a v1 header starts with.
const V1_PREFIX: &[u8] = b"PROXY ";
/// What a v2 header starts with (spec 2.2).
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// A v2 header's fixed part: the signature, version and command, family and protocol, and the
/// big-endian length of the rest.
const V2_FIXED: usize = 16;

/// Why a connection's PROXY protocol header could not be read: it is closed, never served.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    /// The peer closed the connection before the header was complete (a balancer's TCP health
    /// check connects and closes).
    #[error("the connection closed before its PROXY protocol header was complete")]
    Closed,
    /// Reading the socket failed.
    #[error("reading the PROXY protocol header failed: {0}")]
    Io(std::io::Error),
    /// The first bytes are not the start of a PROXY protocol header (a client speaking TLS or
    /// HTTP straight to the listener, or garbage).
    #[error("the connection does not start with a PROXY protocol header")]
    Missing,
    /// No line feed within the 107 bytes a v1 header may take.
    #[error("the PROXY protocol v1 header is longer than {V1_MAX} bytes")]
    TooLong,
    /// A complete v1 line that is not a valid header.
    #[error("malformed PROXY protocol v1 header: {0}")]
    V1(#[source] ppp::v1::BinaryParseError),
    /// A complete v2 header that is not valid.
    #[error("malformed PROXY protocol v2 header: {0}")]
    V2(#[source] ppp::v2::ParseError),
}

impl From<std::io::Error> for ProxyHeaderError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::UnexpectedEof { Self::Closed } else { Self::Io(e) }
    }
}

/// How far the bytes seen so far go.
#[derive(Debug, PartialEq, Eq)]
enum Scan {
    /// The header is longer than them: all of them are header.
    Partial,
    /// A v1 header of this many bytes (through its line feed).
    V1(usize),
    /// A v2 header of this many bytes (fixed part, addresses and TLVs).
    V2(usize),
}

/// Where the header at the start of `seen` (not empty) ends, as far as they tell.
fn scan(seen: &[u8]) -> Result<Scan, ProxyHeaderError> {
    let starts = |prefix: &[u8]| {
        let n = seen.len().min(prefix.len());
        seen[..n] == prefix[..n]
    };
    if starts(V2_SIGNATURE) {
        let Some(length) = seen.get(V2_FIXED - 2..V2_FIXED) else { return Ok(Scan::Partial) };
        return Ok(Scan::V2(V2_FIXED + usize::from(u16::from_be_bytes([length[0], length[1]]))));
    }
    if !starts(V1_PREFIX) {
        return Err(ProxyHeaderError::Missing);
    }
    match seen.iter().position(|&b| b == b'\n') {
        Some(end) => Ok(Scan::V1(end + 1)),
        None if seen.len() >= V1_MAX => Err(ProxyHeaderError::TooLong),
        None => Ok(Scan::Partial),
    }
}

/// Reads the PROXY protocol header `stream` starts with, consuming exactly its bytes. Returns the
/// client it announces: `None` when it announces none the TCP peer should give way to (v1
/// `UNKNOWN`, v2 `LOCAL`: the balancer's own health checks; or a v2 family other than TCP over
/// IPv4 or IPv6, such as a UNIX socket or UDP, which spec 2.2 has a receiver treat as UNSPEC).
/// Waits as long as the header takes: the caller times it.
pub async fn read_header(stream: &mut TcpStream) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    // Room for the longest v1 header; a v2 one longer than that (TLVs) grows it once.
    let mut buf = vec![0u8; V1_MAX];
    // Bytes already consumed into `buf`: all of them the header's.
    let mut consumed = 0;
    loop {
        // Waits for bytes not yet consumed: never spins on the same ones.
        let n = stream.peek(&mut buf[consumed..V1_MAX]).await?;
        if n == 0 {
            return Err(ProxyHeaderError::Closed);
        }
        let seen = consumed + n;
        let (end, v2) = match scan(&buf[..seen])? {
            Scan::Partial => {
                stream.read_exact(&mut buf[consumed..seen]).await?;
                consumed = seen;
                continue;
            }
            Scan::V1(end) => (end, false),
            Scan::V2(end) => (end, true),
        };
        if end > buf.len() {
            buf.resize(end, 0);
        }
        stream.read_exact(&mut buf[consumed..end]).await?;
        let header = &buf[..end];
        return if v2 { announced_v2(header) } else { announced_v1(header) };
    }
}

/// The client a complete v1 header line announces.
fn announced_v1(line: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let header = ppp::v1::Header::try_from(line).map_err(ProxyHeaderError::V1)?;
    // ppp reads up to the first CR: a line with a stray one before its end is not a header.
    if header.header.len() != line.len() {
        return Err(ProxyHeaderError::V1(ppp::v1::ParseError::InvalidSuffix.into()));
    }
    Ok(match header.addresses {
        ppp::v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v1::Addresses::Unknown => None,
    })
}

/// The client a complete v2 header announces.
fn announced_v2(bytes: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let header = ppp::v2::Header::try_from(bytes).map_err(ProxyHeaderError::V2)?;
    // DGRAM (UDP over INET or INET6, `0x12`, `0x22`): a datagram flow no TCP connection of ours
    // relays. Spec 2.2 has a receiver treat a combination it does not support as UNSPEC: the
    // connection is served, with its real endpoints.
    if header.command == ppp::v2::Command::Local || header.protocol == ppp::v2::Protocol::Datagram {
        return Ok(None);
    }
    Ok(match header.addresses {
        ppp::v2::Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v2::Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v2::Addresses::Unspecified | ppp::v2::Addresses::Unix(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    /// Writes `chunks` (pausing between them) to a fresh loopback connection; returns what
    /// `read_header` made of it and the bytes left on the server's side after it.
    async fn read(chunks: &[&[u8]]) -> (Result<Option<SocketAddr>, ProxyHeaderError>, Vec<u8>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let chunks: Vec<Vec<u8>> = chunks.iter().map(|c| c.to_vec()).collect();
        let writer = tokio::spawn(async move {
            for chunk in chunks {
                client.write_all(&chunk).await.unwrap();
                client.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            client.shutdown().await.unwrap();
            // Kept open for reading until the server is done.
            tokio::time::sleep(Duration::from_millis(200)).await;
        });
        let result = tokio::time::timeout(Duration::from_secs(5), read_header(&mut server)).await.expect("not stuck");
        let mut rest = Vec::new();
        if result.is_ok() {
            server.read_to_end(&mut rest).await.unwrap();
        }
        writer.await.unwrap();
        (result, rest)
    }

    fn v2(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut bytes = V2_SIGNATURE.to_vec();
        bytes.extend([0x20 | command, family]);
        bytes.extend(u16::try_from(addresses.len() + tlvs.len()).unwrap().to_be_bytes());
        bytes.extend(addresses);
        bytes.extend(tlvs);
        bytes
    }

    #[tokio::test]
    async fn v1_headers_announce_their_source_and_leave_what_follows() {
        let (announced, rest) = read(&[b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\nGET / HTTP/1.1\r\n\r\n"]).await;
        assert_eq!(announced.unwrap(), Some("203.0.113.7:51234".parse().unwrap()));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n\r\n");
        let (announced, rest) = read(&[b"PROXY TCP6 2001:db8::7 2001:db8::1 51234 443\r\n", b"x"]).await;
        assert_eq!(announced.unwrap(), Some("[2001:db8::7]:51234".parse().unwrap()));
        assert_eq!(rest, b"x");
        let (announced, rest) = read(&[b"PROXY UNKNOWN\r\nrest"]).await;
        assert_eq!(announced.unwrap(), None);
        assert_eq!(rest, b"rest");
    }

    #[tokio::test]
    async fn a_header_split_anywhere_is_read_whole_and_no_byte_after_it_is_lost() {
        let (announced, rest) = read(&[b"PRO", b"XY TCP4 203.0.113.7 ", b"10.0.0.1 5", b"1234 443\r", b"\nGET"]).await;
        assert_eq!(announced.unwrap(), Some("203.0.113.7:51234".parse().unwrap()));
        assert_eq!(rest, b"GET");
        let header = v2(1, 0x11, &[198, 51, 100, 9, 10, 0, 0, 1, 0x1f, 0x90, 0x01, 0xbb], b"");
        let (announced, rest) = read(&[&header[..5], &header[5..15], &header[15..20], &[&header[20..], b"GET"].concat()]).await;
        assert_eq!(announced.unwrap(), Some("198.51.100.9:8080".parse().unwrap()));
        assert_eq!(rest, b"GET");
    }

    #[tokio::test]
    async fn v2_headers_with_tlvs_local_and_other_families() {
        let mut v6 = vec![0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x07];
        v6.extend([0u8; 16]);
        v6.extend([0x30, 0x39, 0x01, 0xbb]);
        // A 300-byte NOOP TLV: longer than the first buffer.
        let mut tlv = vec![0x04, 0x01, 0x2c];
        tlv.extend([0u8; 300]);
        let (announced, rest) = read(&[&[v2(1, 0x21, &v6, &tlv), b"after".to_vec()].concat()]).await;
        assert_eq!(announced.unwrap(), Some("[2001:db8::7]:12345".parse().unwrap()));
        assert_eq!(rest, b"after");
        let (announced, rest) = read(&[&[v2(0, 0x00, b"", b""), b"after".to_vec()].concat()]).await;
        assert_eq!(announced.unwrap(), None, "LOCAL: the TCP peer stays");
        assert_eq!(rest, b"after");
        let (announced, _) = read(&[&v2(1, 0x31, &[0u8; 216], b"")]).await;
        assert_eq!(announced.unwrap(), None, "a UNIX socket: the TCP peer stays");
    }

    /// DGRAM over INET or INET6 (0x12, 0x22): a datagram flow, which never reaches a TCP
    /// listener; spec 2.2 has a receiver treat a combination it does not support as UNSPEC. The
    /// header is consumed, its addresses ignored, and the connection served with the TCP peer.
    #[tokio::test]
    async fn v2_dgram_is_treated_as_unspec_and_the_tcp_peer_stays() {
        let v4 = [198, 51, 100, 9, 10, 0, 0, 1, 0x1f, 0x90, 0x01, 0xbb];
        let mut v6 = vec![0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x07];
        v6.extend([0u8; 16]);
        v6.extend([0x30, 0x39, 0x01, 0xbb]);
        for (family, addresses) in [(0x12, v4.as_slice()), (0x22, v6.as_slice())] {
            let (announced, rest) = read(&[&[v2(1, family, addresses, b""), b"GET".to_vec()].concat()]).await;
            assert_eq!(announced.unwrap(), None, "{family:#04x}: the TCP peer stays");
            assert_eq!(rest, b"GET", "{family:#04x}: the header's bytes, and only them, consumed");
        }
        // STREAM over the same families still announces its source.
        let (announced, _) = read(&[&v2(1, 0x11, &v4, b"")]).await;
        assert_eq!(announced.unwrap(), Some("198.51.100.9:8080".parse().unwrap()));
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        let refused = |r: Result<Option<SocketAddr>, ProxyHeaderError>| r.expect_err("refused");
        assert!(matches!(refused(read(&[b"GET / HTTP/1.1\r\n\r\n"]).await.0), ProxyHeaderError::Missing));
        assert!(matches!(refused(read(&[b"\x16\x03\x01\x02\x00"]).await.0), ProxyHeaderError::Missing));
        assert!(matches!(refused(read(&[b"PROXY TCP4 1.2.3.4 5.6.7.8 80\r\n"]).await.0), ProxyHeaderError::V1(_)));
        assert!(matches!(refused(read(&[b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443\n"]).await.0), ProxyHeaderError::V1(_)));
        assert!(matches!(refused(read(&[b"PROXY TCP4 1.2.3.4\r5.6.7.8 80 443\r\n"]).await.0), ProxyHeaderError::V1(_)));
        assert!(matches!(refused(read(&[&[b"PROXY UNKNOWN ".as_slice(), &[b'a'; 120]].concat()]).await.0), ProxyHeaderError::TooLong));
        // Version 1 in the binary form, and an address block shorter than its family's.
        let mut bad_version = v2(1, 0x11, &[0; 12], b"");
        bad_version[12] = 0x11;
        assert!(matches!(refused(read(&[&bad_version]).await.0), ProxyHeaderError::V2(_)));
        assert!(matches!(refused(read(&[&v2(1, 0x11, &[0; 4], b"")]).await.0), ProxyHeaderError::V2(_)));
        // Closed part way.
        assert!(matches!(refused(read(&[b"PROXY TCP4 1.2.3.4"]).await.0), ProxyHeaderError::Closed));
        assert!(matches!(refused(read(&[&v2(1, 0x11, &[0; 12], b"")[..20]]).await.0), ProxyHeaderError::Closed));
        assert!(matches!(refused(read(&[]).await.0), ProxyHeaderError::Closed));
    }
}
