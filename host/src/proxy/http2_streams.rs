//! How many streams an HTTP/2 upstream connection has open, and how many its server allows.
//!
//! A server caps the streams open at once on each connection (`SETTINGS_MAX_CONCURRENT_STREAMS`,
//! RFC 9113 6.5.2: nginx 128, hyper 200, Go 250, some gRPC servers far fewer). hyper does not
//! say what the cap is, and past it a request is not refused: it waits in hyper's queue until a
//! stream on that connection ends. Behind long-lived streams (gRPC server streaming, a
//! WebSocket, a long poll) that may be never, and every other request of the worker to that
//! target would wait its timeout. So [`super::http2_pool::Http2Pool`] counts the streams it
//! opens on each connection ([`StreamCount`], one [`OpenStream`] per request until its response
//! is done) and reads the server's cap from the first frame the server sends, its SETTINGS
//! ([`WatchedPreface`]); a request finding every connection full opens another, as Envoy's
//! connection pool does.
//!
//! The same frame says whether the server takes extended CONNECT (RFC 8441's
//! `SETTINGS_ENABLE_CONNECT_PROTOCOL`, how a WebSocket goes over HTTP/2): a WebSocket to a
//! connection whose server did not allow it is answered 502 without being sent.
//!
//! The cap is read from that first SETTINGS frame only (a server lowering it later is honoured by
//! hyper, the request then waiting as before). Until it has been read, a new connection is taken
//! to allow 100 streams, as hyper assumes (RFC 9113 recommends no fewer).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::task::{Context, Poll};

use hyper::rt::{Read, ReadBuf, ReadBufCursor, Write};

/// The streams a new connection is taken to allow until its server's SETTINGS have been read:
/// hyper's own assumption, and RFC 9113's recommended least.
pub const ASSUMED_STREAM_LIMIT: u32 = 100;

/// Whether a connection's server takes extended CONNECT: not known until its SETTINGS are read.
const CONNECT_UNKNOWN: u8 = 0;
/// Its SETTINGS enabled extended CONNECT.
const CONNECT_ALLOWED: u8 = 1;
/// Its SETTINGS did not.
const CONNECT_REFUSED: u8 = 2;

/// One connection's open streams, the most its server allows at once, and whether it takes
/// extended CONNECT.
#[derive(Debug)]
pub struct StreamCount {
    open: AtomicU32,
    limit: AtomicU32,
    extended_connect: AtomicU8,
}

impl Default for StreamCount {
    fn default() -> Self {
        Self { open: AtomicU32::new(0), limit: AtomicU32::new(ASSUMED_STREAM_LIMIT), extended_connect: AtomicU8::new(CONNECT_UNKNOWN) }
    }
}

impl StreamCount {
    /// One more stream, counted until the guard is dropped, if the server allows one more.
    pub fn open(self: &Arc<Self>) -> Option<OpenStream> {
        let limit = self.limit.load(Ordering::Relaxed);
        self.open.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| (open < limit).then_some(open + 1)).ok()?;
        Some(OpenStream(self.clone()))
    }

    /// One more stream whatever the limit: the first request on a connection made for it.
    pub fn open_anyway(self: &Arc<Self>) -> OpenStream {
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenStream(self.clone())
    }
}

/// One request's stream on a connection, counted until its response is done (the response
/// body holds it, in [`super::upstream::InFlight`]) or the request fails.
#[derive(Debug)]
pub struct OpenStream(Arc<StreamCount>);

impl OpenStream {
    /// Whether the connection's server said, in its SETTINGS, that it does not take extended
    /// CONNECT (false while they are not read: the request is then sent, and refused by a
    /// server that does not).
    pub fn refuses_extended_connect(&self) -> bool {
        self.0.extended_connect.load(Ordering::Relaxed) == CONNECT_REFUSED
    }

    /// Which connection the stream is on, to tell two refusals by one connection apart from
    /// refusals by two (the address of its count: unique while the connection lives).
    pub fn connection(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// SETTINGS, the frame type the server's connection preface begins with (RFC 9113 3.4).
const SETTINGS: u8 = 0x4;
/// The SETTINGS frame's ACK flag: an acknowledgement, not the server's settings.
const ACK: u8 = 0x1;
/// `SETTINGS_MAX_CONCURRENT_STREAMS`' identifier.
const MAX_CONCURRENT_STREAMS: u16 = 0x3;
/// `SETTINGS_ENABLE_CONNECT_PROTOCOL`'s identifier (RFC 8441 3).
const ENABLE_CONNECT_PROTOCOL: u16 = 0x8;
/// The most bytes read through a scratch buffer per read while the preface is watched.
const SCRATCH: usize = 512;
/// A frame header: length (3 bytes), type, flags, stream (4).
const HEADER: usize = 9;
/// A setting: identifier (2 bytes), value (4).
const SETTING: usize = 6;
/// The largest first frame read (RFC 9113's least `SETTINGS_MAX_FRAME_SIZE`, which hyper's
/// client announces): a server cannot send a longer one.
const MAX_PAYLOAD: usize = 16_384;

pin_project_lite::pin_project! {
    /// A connection's IO that reads its server's stream cap from the first frame the server
    /// sends into `count`, then passes reads through untouched.
    pub struct WatchedPreface<T> {
        #[pin]
        io: T,
        watch: Option<PrefaceWatch>,
    }
}

impl<T> WatchedPreface<T> {
    /// Wraps `io`, to write its server's stream cap into `count`.
    pub fn new(io: T, count: Arc<StreamCount>) -> Self {
        Self { io, watch: Some(PrefaceWatch { count, frame: Vec::new() }) }
    }
}

impl<T: Read> Read for WatchedPreface<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, mut buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let Some(watch) = this.watch.as_mut() else { return this.io.poll_read(cx, buf) };
        if buf.remaining() == 0 {
            return this.io.poll_read(cx, buf);
        }
        // Read through a scratch buffer, to see the bytes before hyper does.
        let mut scratch = [0u8; SCRATCH];
        let room = buf.remaining().min(SCRATCH);
        let mut read = ReadBuf::new(&mut scratch[..room]);
        std::task::ready!(this.io.poll_read(cx, read.unfilled()))?;
        let bytes = read.filled();
        let done = watch.feed(bytes) || bytes.is_empty();
        buf.put_slice(bytes);
        if done {
            *this.watch = None;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: Write> Write for WatchedPreface<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }
}

/// Reads the server's first frame as it arrives, in pieces of any size.
struct PrefaceWatch {
    count: Arc<StreamCount>,
    /// The frame's bytes so far.
    frame: Vec<u8>,
}

impl PrefaceWatch {
    /// Takes the next bytes the server sent; true once the first frame has been read (or is not
    /// a SETTINGS frame, which a server must begin with: then nothing is learnt).
    fn feed(&mut self, mut bytes: &[u8]) -> bool {
        if self.frame.len() < HEADER {
            bytes = self.take(bytes, HEADER);
            if self.frame.len() < HEADER {
                return false;
            }
            let length = self.length();
            if self.frame[3] != SETTINGS || self.frame[4] & ACK != 0 || !length.is_multiple_of(SETTING) || length > MAX_PAYLOAD {
                return true;
            }
        }
        let end = HEADER + self.length();
        self.take(bytes, end);
        if self.frame.len() < end {
            return false;
        }
        self.finish();
        true
    }

    /// Adds to the frame what `bytes` hold of it up to `end`; returns the rest.
    fn take<'a>(&mut self, bytes: &'a [u8], end: usize) -> &'a [u8] {
        let (taken, rest) = bytes.split_at((end - self.frame.len()).min(bytes.len()));
        self.frame.extend_from_slice(taken);
        rest
    }

    /// The frame's payload length, from its header.
    fn length(&self) -> usize {
        usize::from(self.frame[0]) << 16 | usize::from(self.frame[1]) << 8 | usize::from(self.frame[2])
    }

    /// The frame is read: its cap, or none (RFC 9113 6.5.2: unlimited until a server says), and
    /// whether it enables extended CONNECT. Settings apply in order: the last of one wins.
    fn finish(&self) {
        let (mut cap, mut connect) = (u32::MAX, false);
        for setting in self.frame[HEADER..].chunks_exact(SETTING) {
            let value = u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
            match u16::from_be_bytes([setting[0], setting[1]]) {
                MAX_CONCURRENT_STREAMS => cap = value,
                ENABLE_CONNECT_PROTOCOL => connect = value == 1,
                _ => {}
            }
        }
        self.count.limit.store(cap, Ordering::Relaxed);
        self.count.extended_connect.store(if connect { CONNECT_ALLOWED } else { CONNECT_REFUSED }, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SETTINGS frame with these settings.
    fn settings(entries: &[(u16, u32)], flags: u8) -> Vec<u8> {
        let length = entries.len() * 6;
        let mut frame = vec![(length >> 16) as u8, (length >> 8) as u8, length as u8, SETTINGS, flags, 0, 0, 0, 0];
        for (id, value) in entries {
            frame.extend_from_slice(&id.to_be_bytes());
            frame.extend_from_slice(&value.to_be_bytes());
        }
        frame
    }

    fn watched(pieces: &[&[u8]]) -> (u32, bool) {
        let count = Arc::new(StreamCount::default());
        let mut watch = PrefaceWatch { count: count.clone(), frame: Vec::new() };
        let done = pieces.iter().any(|piece| watch.feed(piece));
        (count.limit.load(Ordering::Relaxed), done)
    }

    #[test]
    fn the_cap_is_read_from_the_first_settings_frame_in_any_pieces() {
        let mut frame = settings(&[(0x4, 65_535), (MAX_CONCURRENT_STREAMS, 7), (0x6, 16_384)], 0);
        // A later SETTINGS frame is not read: the first is the server's preface.
        frame.extend_from_slice(&settings(&[(MAX_CONCURRENT_STREAMS, 1)], 0));
        assert_eq!(watched(&[&frame]), (7, true));
        let pieces: Vec<&[u8]> = frame.chunks(1).collect();
        assert_eq!(watched(&pieces), (7, true), "one byte at a time");
        assert_eq!(watched(&[&frame[..4], &frame[4..13], &frame[13..]]), (7, true));
    }

    #[test]
    fn extended_connect_is_refused_only_once_settings_without_it_are_read() {
        let count = Arc::new(StreamCount::default());
        let stream = count.open_anyway();
        assert!(!stream.refuses_extended_connect(), "not known yet: sent");
        PrefaceWatch { count: count.clone(), frame: Vec::new() }.feed(&settings(&[(MAX_CONCURRENT_STREAMS, 100)], 0));
        assert!(stream.refuses_extended_connect());
        let allowing = Arc::new(StreamCount::default());
        PrefaceWatch { count: allowing.clone(), frame: Vec::new() }.feed(&settings(&[(ENABLE_CONNECT_PROTOCOL, 1)], 0));
        assert!(!allowing.open_anyway().refuses_extended_connect());
        let unsaid = Arc::new(StreamCount::default());
        PrefaceWatch { count: unsaid.clone(), frame: Vec::new() }.feed(&settings(&[(ENABLE_CONNECT_PROTOCOL, 1), (ENABLE_CONNECT_PROTOCOL, 0)], 0));
        assert!(unsaid.open_anyway().refuses_extended_connect(), "the last value wins");
    }

    #[test]
    fn a_frame_without_the_setting_means_no_cap() {
        assert_eq!(watched(&[&settings(&[(0x4, 65_535)], 0)]), (u32::MAX, true));
        assert_eq!(watched(&[&settings(&[], 0)]), (u32::MAX, true), "an empty SETTINGS frame");
    }

    #[test]
    fn anything_else_first_leaves_the_assumed_cap() {
        let mut not_settings = settings(&[(MAX_CONCURRENT_STREAMS, 1)], 0);
        not_settings[3] = 0x8;
        assert_eq!(watched(&[&not_settings]), (ASSUMED_STREAM_LIMIT, true));
        assert_eq!(watched(&[&settings(&[(MAX_CONCURRENT_STREAMS, 1)], ACK)]), (ASSUMED_STREAM_LIMIT, true), "an ACK");
        assert_eq!(watched(&[&settings(&[(MAX_CONCURRENT_STREAMS, 1)], 0)[..12]]), (ASSUMED_STREAM_LIMIT, false), "not all in yet");
        let longer = [0x00, 0x40, 0x02, SETTINGS, 0, 0, 0, 0, 0];
        assert!(16_386_usize.is_multiple_of(SETTING));
        assert_eq!(watched(&[&longer]), (ASSUMED_STREAM_LIMIT, true), "longer than a server may send");
    }

    #[test]
    fn streams_are_counted_up_to_the_cap() {
        let count = Arc::new(StreamCount::default());
        count.limit.store(2, Ordering::Relaxed);
        let (a, b) = (count.open().expect("first"), count.open().expect("second"));
        assert!(count.open().is_none(), "at the cap");
        drop(a);
        let c = count.open().expect("a stream ended");
        let d = count.open_anyway();
        assert_eq!(count.open.load(Ordering::Relaxed), 3);
        drop((b, c, d));
        assert_eq!(count.open.load(Ordering::Relaxed), 0);
    }
}
