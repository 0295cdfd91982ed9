//! The gRPC-web wire format (the gRPC project's PROTOCOL-WEB.md) against gRPC's over HTTP/2:
//! the same length-prefixed messages, the trailers sent as one more frame in the body (flag
//! `0x80`), and for `-text` the whole body base64-encoded.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The flag of a frame holding trailers rather than a message.
pub const TRAILER_FLAG: u8 = 0x80;

/// How a gRPC-web client frames its bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `application/grpc-web[+proto|+json]`: binary frames.
    Binary,
    /// `application/grpc-web-text[+proto]`: the frames base64-encoded.
    Text,
}

/// A gRPC-web request's content type, read: its mode and the message format suffix (`+proto`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebType {
    /// Binary or text.
    pub mode: Mode,
    /// `""`, `"+proto"`, `"+json"`, ...: kept for the upstream's `application/grpc` type.
    pub suffix: String,
}

impl WebType {
    /// Reads a `Content-Type`: `None` when it is not gRPC-web (plain gRPC, JSON, ...).
    pub fn parse(content_type: &str) -> Option<Self> {
        let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        let (mode, rest) = if let Some(rest) = media.strip_prefix("application/grpc-web-text") {
            (Mode::Text, rest)
        } else {
            (Mode::Binary, media.strip_prefix("application/grpc-web")?)
        };
        if !(rest.is_empty() || rest.starts_with('+')) {
            return None;
        }
        Some(Self { mode, suffix: rest.to_owned() })
    }

    /// The content type the gRPC server is sent.
    pub fn upstream_type(&self) -> String {
        format!("application/grpc{}", self.suffix)
    }

    /// The content type the client gets back.
    pub fn client_type(&self) -> String {
        match self.mode {
            Mode::Binary => format!("application/grpc-web{}", self.suffix),
            Mode::Text => format!("application/grpc-web-text{}", self.suffix),
        }
    }
}

/// A `-text` body decoded: base64, possibly several padded pieces one after the other (a client
/// may encode each message on its own), so it is read a padded piece at a time.
pub fn decode_text(body: &[u8]) -> Result<Vec<u8>, String> {
    let body: Vec<u8> = body.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    if !body.len().is_multiple_of(4) {
        return Err(format!("a grpc-web-text body is base64 in groups of 4 characters; this one has {}", body.len()));
    }
    let mut out = Vec::with_capacity(body.len() / 4 * 3);
    let mut start = 0;
    for (i, group) in body.chunks(4).enumerate() {
        let end = (i + 1) * 4;
        if group.contains(&b'=') || end == body.len() {
            STANDARD.decode_vec(&body[start..end], &mut out).map_err(|e| format!("the grpc-web-text body is not base64: {e}"))?;
            start = end;
        }
    }
    Ok(out)
}

/// A `-text` body encoded.
pub fn encode_text(body: &[u8]) -> Vec<u8> {
    STANDARD.encode(body).into_bytes()
}

/// The trailers as the frame a gRPC-web body ends with: `name: value\r\n` lines, names in lower
/// case, behind the flag byte and the block's length.
pub fn trailer_frame(trailers: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in trailers {
        block.extend_from_slice(name.to_ascii_lowercase().as_bytes());
        block.extend_from_slice(b": ");
        block.extend_from_slice(value);
        block.extend_from_slice(b"\r\n");
    }
    let mut frame = Vec::with_capacity(5 + block.len());
    frame.push(TRAILER_FLAG);
    frame.extend_from_slice(&u32::try_from(block.len()).unwrap_or(u32::MAX).to_be_bytes());
    frame.extend_from_slice(&block);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_are_read_with_their_mode_and_suffix() {
        let web = |t: &str| WebType::parse(t).map(|w| (w.mode, w.suffix.clone(), w.upstream_type(), w.client_type()));
        assert_eq!(
            web("application/grpc-web"),
            Some((Mode::Binary, String::new(), "application/grpc".into(), "application/grpc-web".into()))
        );
        assert_eq!(
            web("Application/GRPC-Web+Proto; charset=x"),
            Some((Mode::Binary, "+proto".into(), "application/grpc+proto".into(), "application/grpc-web+proto".into()))
        );
        assert_eq!(
            web("application/grpc-web-text+proto"),
            Some((Mode::Text, "+proto".into(), "application/grpc+proto".into(), "application/grpc-web-text+proto".into()))
        );
        assert_eq!(web("application/grpc"), None);
        assert_eq!(web("application/grpc-webx"), None);
        assert_eq!(web("application/json"), None);
    }

    #[test]
    fn text_bodies_decode_whole_or_in_padded_pieces() {
        let frame = [0u8, 0, 0, 0, 2, 8, 1];
        let one = encode_text(&frame);
        assert_eq!(decode_text(&one).unwrap(), frame);
        // Two pieces, each padded on its own.
        let mut two = encode_text(b"ab");
        two.extend(encode_text(b"c"));
        assert_eq!(decode_text(&two).unwrap(), b"abc");
        assert_eq!(decode_text(b"YWJj\r\n").unwrap(), b"abc", "line breaks are not data");
        assert!(decode_text(b"YWJ").unwrap_err().contains("groups of 4"));
        assert!(decode_text(b"YW!j").unwrap_err().contains("not base64"));
        assert_eq!(decode_text(b"").unwrap(), b"");
    }

    #[test]
    fn trailers_become_the_last_frame() {
        let frame = trailer_frame(&[("grpc-status".into(), b"0".to_vec()), ("Grpc-Message".into(), b"ok".to_vec())]);
        let block = b"grpc-status: 0\r\ngrpc-message: ok\r\n";
        assert_eq!(frame[0], TRAILER_FLAG);
        assert_eq!(&frame[1..5], &(block.len() as u32).to_be_bytes());
        assert_eq!(&frame[5..], block);
    }
}
