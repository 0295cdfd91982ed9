//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): the client's `traceparent` is
//! continued (same trace id, the gateway's own new span id, the parent's sampled flag) and its
//! `tracestate` passed on; without a valid one a new trace starts, sampled at the configured ratio.
//! The upstream is told its parent is the gateway's client span for the upstream call (a child
//! of the gateway's server span), as OpenTelemetry's HTTP conventions have a proxy do: a trace
//! shows the gateway's own time, the call, and the upstream's time beneath it.

use std::fmt;

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

/// `traceparent`: version, trace id, parent span id, flags.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate`: vendor data, passed on unchanged with a valid `traceparent`.
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The `sampled` bit of the trace flags.
const SAMPLED: u8 = 0x01;

/// A 16-byte trace id, shown as 32 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceId(pub u128);

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// An 8-byte span id, shown as 16 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanId(pub u64);

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The gateway's place in a trace for one request.
#[derive(Debug, Clone)]
pub struct TraceContext {
    /// The trace this request belongs to.
    pub trace_id: TraceId,
    /// The gateway's own (server) span.
    pub span_id: SpanId,
    /// The gateway's client span for the upstream call, a child of `span_id`: the parent the
    /// upstream is told of in `traceparent`.
    pub upstream_span_id: SpanId,
    /// The client's span, when the trace was continued.
    pub parent_id: Option<SpanId>,
    /// Whether the trace is sampled.
    pub sampled: bool,
    /// The client's `tracestate`, passed on when the trace was continued.
    pub tracestate: Option<HeaderValue>,
}

impl TraceContext {
    /// Continues the trace in `headers` if it has one valid `traceparent`, else starts a new one
    /// sampled with probability `sample_ratio`. Two `traceparent` lines are no valid one (W3C
    /// Trace Context's test suite: which parent is meant cannot be known); several `tracestate`
    /// lines are one list (W3C Trace Context 3.3.1.1, RFC 9110 5.3).
    pub fn from_headers(headers: &HeaderMap, sample_ratio: f64) -> Self {
        Self::continuing(headers, sample_ratio, true)
    }

    /// [`Self::from_headers`], continuing the client's trace only when `trusted`
    /// (`[tracing] trust_incoming`); otherwise a new trace, its `traceparent` and `tracestate`
    /// ignored (and replaced upstream).
    pub fn continuing(headers: &HeaderMap, sample_ratio: f64, trusted: bool) -> Self {
        let span_id = SpanId(nonzero_u64());
        let upstream_span_id = SpanId(nonzero_u64());
        if !trusted {
            return Self::new_trace(span_id, upstream_span_id, sample_ratio);
        }
        let mut parents = headers.get_all(TRACEPARENT).iter();
        let only_parent = match (parents.next(), parents.next()) {
            (Some(value), None) => Some(value),
            _ => None,
        };
        if let Some(parent) = only_parent.and_then(|v| parse_traceparent(v.as_bytes())) {
            return Self {
                trace_id: parent.trace_id,
                span_id,
                upstream_span_id,
                parent_id: Some(parent.span_id),
                sampled: parent.flags & SAMPLED != 0,
                tracestate: joined_tracestate(headers),
            };
        }
        Self::new_trace(span_id, upstream_span_id, sample_ratio)
    }

    /// A trace of the gateway's own, sampled at `sample_ratio`.
    fn new_trace(span_id: SpanId, upstream_span_id: SpanId, sample_ratio: f64) -> Self {
        Self {
            trace_id: TraceId(nonzero_u128()),
            span_id,
            upstream_span_id,
            parent_id: None,
            sampled: sample_ratio >= 1.0 || (sample_ratio > 0.0 && fastrand::f64() < sample_ratio),
            tracestate: None,
        }
    }

    /// The `traceparent` value sent upstream: this trace, the gateway's upstream call as parent
    /// (`00-<trace id>-<span id>-<flags>`, 55 bytes, written in place).
    pub fn traceparent(&self) -> [u8; 55] {
        traceparent(self.trace_id, self.upstream_span_id, if self.sampled { SAMPLED } else { 0 })
    }

    /// Sets `traceparent` (and `tracestate`, if the client sent one) on the upstream request.
    pub fn inject(&self, headers: &mut HeaderMap) {
        // One allocation: the header value's copy of the 55 bytes.
        if let Ok(value) = HeaderValue::from_bytes(&self.traceparent()) {
            headers.insert(TRACEPARENT, value);
        }
        match &self.tracestate {
            Some(state) => {
                headers.insert(TRACESTATE, state.clone());
            }
            None => {
                headers.remove(TRACESTATE);
            }
        }
    }
}

/// A version-00 `traceparent` value: `trace_id`, `parent` as the caller's span, `flags`
/// (`00-<trace id>-<span id>-<flags>`, 55 bytes, written in place).
pub fn traceparent(trace_id: TraceId, parent: SpanId, flags: u8) -> [u8; 55] {
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
    // Each slice is exactly twice its field's byte length, so encoding cannot fail.
    let _ = hex::encode_to_slice(trace_id.0.to_be_bytes(), &mut out[3..35]);
    let _ = hex::encode_to_slice(parent.0.to_be_bytes(), &mut out[36..52]);
    let _ = hex::encode_to_slice([flags], &mut out[53..55]);
    out
}

/// A new span id: never zero, which `traceparent` forbids.
pub fn new_span_id() -> SpanId {
    SpanId(nonzero_u64())
}

/// W3C Trace Context: a `tracestate` has at most this many list members; one with more is
/// not passed on (nor exported).
const MAX_TRACESTATE_MEMBERS: usize = 32;

/// The client's `tracestate` as one value: its lines joined with `,` (copied only when there
/// are several); none past [`MAX_TRACESTATE_MEMBERS`].
fn joined_tracestate(headers: &HeaderMap) -> Option<HeaderValue> {
    let members: usize = headers.get_all(TRACESTATE).iter().map(|line| line.as_bytes().split(|&b| b == b',').filter(|m| !m.trim_ascii().is_empty()).count()).sum();
    if members > MAX_TRACESTATE_MEMBERS {
        return None;
    }
    let mut lines = headers.get_all(TRACESTATE).iter();
    let first = lines.next()?;
    let Some(second) = lines.next() else {
        return Some(first.clone());
    };
    let mut joined = first.as_bytes().to_vec();
    for line in std::iter::once(second).chain(lines) {
        joined.push(b',');
        joined.extend_from_slice(line.as_bytes());
    }
    HeaderValue::from_bytes(&joined).ok()
}

/// The fields of a parsed `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// Trace id.
    pub trace_id: TraceId,
    /// The caller's span id.
    pub span_id: SpanId,
    /// Trace flags.
    pub flags: u8,
}

/// Parses `traceparent` as the spec says: version 00 is exactly 55 characters; a higher version
/// may carry more after a `-`; `ff`, all-zero ids and upper-case hex are invalid.
pub fn parse_traceparent(value: &[u8]) -> Option<TraceParent> {
    let text = std::str::from_utf8(value).ok()?.trim();
    if text.len() < 55 {
        return None;
    }
    let (head, rest) = text.split_at(55);
    let version = &head[0..2];
    if !is_lower_hex(version) || version == "ff" || (version == "00" && !rest.is_empty()) || (!rest.is_empty() && !rest.starts_with('-')) {
        return None;
    }
    let bytes = head.as_bytes();
    if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return None;
    }
    let (trace, span, flags) = (&head[3..35], &head[36..52], &head[53..55]);
    if !(is_lower_hex(trace) && is_lower_hex(span) && is_lower_hex(flags)) {
        return None;
    }
    let trace_id = u128::from_str_radix(trace, 16).ok().filter(|&t| t != 0)?;
    let span_id = u64::from_str_radix(span, 16).ok().filter(|&s| s != 0)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(TraceParent { trace_id: TraceId(trace_id), span_id: SpanId(span_id), flags })
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A random id other than zero (the W3C invalid value). Drawn over the full range and drawn
/// again on zero: `fastrand`'s `1..` range costs a wide multiplication per draw, on every
/// request.
fn nonzero_u128() -> u128 {
    loop {
        let id = fastrand::u128(..);
        if id != 0 {
            return id;
        }
    }
}

/// [`nonzero_u128`]'s 64-bit twin, for span ids.
fn nonzero_u64() -> u64 {
    loop {
        let id = fastrand::u64(..);
        if id != 0 {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_continued_with_a_new_span() {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static(PARENT));
        h.insert(TRACESTATE, HeaderValue::from_static("vendor=x"));
        let ctx = TraceContext::from_headers(&h, 0.0);
        assert_eq!(ctx.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ctx.parent_id, Some(SpanId(0x00f0_67aa_0ba9_02b7)));
        assert_ne!(ctx.span_id, SpanId(0x00f0_67aa_0ba9_02b7));
        assert!(ctx.sampled, "the parent's sampled flag wins over the ratio");
        let mut out = HeaderMap::new();
        ctx.inject(&mut out);
        let sent = out[TRACEPARENT].to_str().unwrap();
        assert!(sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && sent.ends_with("-01"), "{sent}");
        // The upstream's parent is the gateway's client span for the call, not its server span.
        assert_eq!(&sent[36..52], format!("{:016x}", ctx.upstream_span_id.0));
        assert_eq!(parse_traceparent(sent.as_bytes()).map(|p| p.span_id), Some(ctx.upstream_span_id));
        assert_ne!(ctx.upstream_span_id, ctx.span_id);
        assert_eq!(out[TRACESTATE], "vendor=x");
    }

    #[test]
    fn two_traceparents_start_a_new_trace_and_tracestate_lines_are_one_list() {
        let mut h = HeaderMap::new();
        h.append(TRACEPARENT, HeaderValue::from_static(PARENT));
        h.append(TRACEPARENT, HeaderValue::from_static("00-11111111111111111111111111111111-00f067aa0ba902b7-01"));
        let ctx = TraceContext::from_headers(&h, 0.0);
        assert_eq!(ctx.parent_id, None, "which parent is meant cannot be known");
        assert_ne!(ctx.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");

        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static(PARENT));
        h.append(TRACESTATE, HeaderValue::from_static("a=1"));
        h.append(TRACESTATE, HeaderValue::from_static("b=2,c=3"));
        h.append(TRACESTATE, HeaderValue::from_static("d=4"));
        let mut out = HeaderMap::new();
        TraceContext::from_headers(&h, 0.0).inject(&mut out);
        assert_eq!(out.get_all(TRACESTATE).iter().collect::<Vec<_>>(), ["a=1,b=2,c=3,d=4"]);
    }

    #[test]
    fn invalid_traceparents_start_a_new_trace() {
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert_eq!(parse_traceparent(bad.as_bytes()), None, "{bad}");
        }
        assert!(parse_traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-later").is_some());
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static("garbage"));
        h.insert(TRACESTATE, HeaderValue::from_static("vendor=x"));
        let ctx = TraceContext::from_headers(&h, 0.0);
        assert_eq!(ctx.parent_id, None);
        assert!(!ctx.sampled);
        let mut out = HeaderMap::new();
        out.insert(TRACESTATE, HeaderValue::from_static("vendor=x"));
        ctx.inject(&mut out);
        assert!(!out.contains_key(TRACESTATE), "tracestate without a valid traceparent is dropped");
        assert!(out[TRACEPARENT].to_str().unwrap().ends_with("-00"));
    }

    #[test]
    fn new_traces_follow_the_sample_ratio() {
        let h = HeaderMap::new();
        assert!(TraceContext::from_headers(&h, 1.0).sampled);
        assert!(!TraceContext::from_headers(&h, 0.0).sampled);
        let sampled = (0..2000).filter(|_| TraceContext::from_headers(&h, 0.25).sampled).count();
        assert!((300..700).contains(&sampled), "{sampled} of 2000 sampled at 0.25");
    }
}
