//! A stored response, as the bytes of one state value.
//!
//! Format 1, big-endian numbers:
//!
//! ```text
//! u8  format (1)            u16 status            u64 stored at (Unix ms)     u32 age at store (s)
//! u16 header count, then per header: u16 name length, name, u16 value length, value
//! u32 body length, body
//! ```
//!
//! The first byte is the format: an entry of another format (written by a later or earlier
//! release sharing the Redis) is never misread, only treated as a miss and overwritten.

/// The format written by this release.
pub const FORMAT: u8 = 1;

/// A response as stored and served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The status.
    pub status: u16,
    /// When it was stored, in milliseconds since the Unix epoch (the `Age` of a hit counts from it).
    pub stored_at_ms: u64,
    /// The `Age` the response had when it was stored, in seconds.
    pub age_secs: u32,
    /// Header lines in order: lower-case name, raw value.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body (decoded: the gateway buffers it without its content coding).
    pub body: Vec<u8>,
}

/// Why bytes read from the backend are not an entry this release can serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Written in another format.
    Format(u8),
    /// Cut short, or longer than its lengths say.
    Malformed,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Format(v) => write!(f, "entry of format {v}, this gateway reads format {FORMAT}"),
            DecodeError::Malformed => f.write_str("malformed entry"),
        }
    }
}

impl Entry {
    /// The entry's bytes, or `None` if a header is too long for the format (64 KiB: more than
    /// the state backend takes for a whole entry anyway).
    pub fn encode(&self) -> Option<Vec<u8>> {
        let size = 1 + 2 + 8 + 4 + 2 + self.headers.iter().map(|(n, v)| 4 + n.len() + v.len()).sum::<usize>() + 4 + self.body.len();
        let mut out = Vec::with_capacity(size);
        out.push(FORMAT);
        out.extend_from_slice(&self.status.to_be_bytes());
        out.extend_from_slice(&self.stored_at_ms.to_be_bytes());
        out.extend_from_slice(&self.age_secs.to_be_bytes());
        out.extend_from_slice(&u16::try_from(self.headers.len()).ok()?.to_be_bytes());
        for (name, value) in &self.headers {
            out.extend_from_slice(&u16::try_from(name.len()).ok()?.to_be_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&u16::try_from(value.len()).ok()?.to_be_bytes());
            out.extend_from_slice(value);
        }
        out.extend_from_slice(&u32::try_from(self.body.len()).ok()?.to_be_bytes());
        out.extend_from_slice(&self.body);
        Some(out)
    }

    /// Reads an entry; anything but a whole entry of [`FORMAT`] is an error.
    pub fn decode(bytes: &[u8]) -> Result<Entry, DecodeError> {
        let mut r = Reader(bytes);
        let format = r.take(1)?[0];
        if format != FORMAT {
            return Err(DecodeError::Format(format));
        }
        let status = r.u16()?;
        let stored_at_ms = u64::from_be_bytes(r.array()?);
        let age_secs = u32::from_be_bytes(r.array()?);
        let count = r.u16()?;
        let mut headers = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let len = usize::from(r.u16()?);
            let name = std::str::from_utf8(r.take(len)?).map_err(|_| DecodeError::Malformed)?.to_owned();
            let len = usize::from(r.u16()?);
            headers.push((name, r.take(len)?.to_vec()));
        }
        let len = u32::from_be_bytes(r.array()?) as usize;
        let body = r.take(len)?.to_vec();
        if !r.0.is_empty() || !(200..=599).contains(&status) {
            return Err(DecodeError::Malformed);
        }
        Ok(Entry { status, stored_at_ms, age_secs, headers, body })
    }

    /// The `Age` of this entry served at `now_ms`, in seconds: its age when stored plus the
    /// whole seconds since (never negative, whatever the clocks of the gateways sharing it say).
    pub fn age_at(&self, now_ms: u64) -> u64 {
        u64::from(self.age_secs) + now_ms.saturating_sub(self.stored_at_ms) / 1000
    }
}

/// Reads the entry's fields in order.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Malformed);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        self.take(N)?.try_into().map_err(|_| DecodeError::Malformed)
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.array().map(u16::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Entry {
        Entry {
            status: 200,
            stored_at_ms: 1_700_000_000_123,
            age_secs: 4,
            headers: vec![("content-type".into(), b"application/json".to_vec()), ("x-raw".into(), vec![0xff, 0x00])],
            body: b"{\"a\":1}".to_vec(),
        }
    }

    #[test]
    fn entries_round_trip() {
        let e = sample();
        let bytes = e.encode().unwrap();
        assert_eq!(bytes[0], FORMAT);
        assert_eq!(Entry::decode(&bytes), Ok(e));
        let empty = Entry { status: 301, stored_at_ms: 0, age_secs: 0, headers: vec![], body: vec![] };
        assert_eq!(Entry::decode(&empty.encode().unwrap()), Ok(empty));
    }

    #[test]
    fn other_formats_and_damaged_bytes_are_refused() {
        let mut bytes = sample().encode().unwrap();
        assert_eq!(Entry::decode(&[]), Err(DecodeError::Malformed));
        for cut in 1..bytes.len() {
            assert_eq!(Entry::decode(&bytes[..cut]), Err(DecodeError::Malformed), "cut at {cut}");
        }
        bytes.push(0);
        assert_eq!(Entry::decode(&bytes), Err(DecodeError::Malformed), "trailing bytes");
        bytes.pop();
        bytes[0] = 2;
        assert_eq!(Entry::decode(&bytes), Err(DecodeError::Format(2)));
        // Text a counter or another plugin could have left.
        assert!(Entry::decode(b"17").is_err());
    }

    #[test]
    fn age_counts_from_the_store_and_never_goes_negative() {
        let e = sample();
        assert_eq!(e.age_at(e.stored_at_ms + 2_999), 6);
        assert_eq!(e.age_at(e.stored_at_ms - 5_000), 4, "a gateway whose clock is behind");
    }

    #[test]
    fn oversized_headers_do_not_encode() {
        let mut e = sample();
        e.headers.push(("x-big".into(), vec![b'a'; 70_000]));
        assert_eq!(e.encode(), None);
    }
}
