//! Errors a request can end in, and the one place each kind becomes an HTTP status.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::proxy::body::ProxyBody;

/// Why the gateway answered a request itself with an error.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No route matches the request's host, method and path.
    #[error("no route matches {method} {path}")]
    NoRoute {
        /// Request method.
        method: String,
        /// Request path.
        path: String,
    },
    /// The request line and headers exceed the configured limit.
    #[error("request headers are too large: {0}")]
    HeadersTooLarge(String),
    /// The request body exceeds the route's limit.
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit in force.
        limit: u64,
    },
    /// The request could not be read or is malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The client stopped before the end of its request body (closed or broke the connection).
    #[error("the client aborted its request: {0}")]
    ClientAborted(String),
    /// The client stopped sending its streamed body for `timeouts.body_idle_ms` (408).
    #[error("{0}")]
    ClientTimeout(String),
    /// A plugin failed (trap, deadline, memory) and its chain entry fails closed. Why (with
    /// the plugin's stderr) is in the error line logged where it failed; the request's own 5xx
    /// line names only the kind, so a failing plugin's output is not logged twice per request.
    #[error("plugin `{plugin}` failed ({kind}; its error line with this request id says why)")]
    PluginFailed {
        /// The chain entry's plugin name.
        plugin: String,
        /// The failure's kind, as counted: `trap`, `deadline`, `memory`, ...
        kind: &'static str,
    },
    /// The route has no upstream and no plugin answered.
    #[error("route `{0}` has no upstream and no plugin answered the request")]
    NoUpstream(String),
    /// The upstream refused the connection or broke it.
    #[error("upstream `{upstream}` is unavailable: {reason}")]
    UpstreamUnavailable {
        /// Upstream name.
        upstream: String,
        /// What went wrong.
        reason: String,
    },
    /// Connecting to or waiting for the upstream took too long.
    #[error("upstream `{upstream}` timed out: {reason}")]
    UpstreamTimeout {
        /// Upstream name.
        upstream: String,
        /// Which timeout.
        reason: String,
    },
    /// The upstream's response body exceeds the limit a body-reading plugin can be handed.
    #[error("upstream response body exceeds the limit of {limit} bytes")]
    UpstreamBodyTooLarge {
        /// The limit in force.
        limit: u64,
    },
    /// No instance of the plugin could be made: every place of the sandbox
    /// (`runtime.max_instances`), or the entry's share of them, stayed taken for as long as the
    /// call could wait. Answered with `Retry-After`, as a retry soon is likely to be served.
    #[error("plugin `{0}` has no free instance")]
    PluginBusy(String),
    /// The client's body has a `Content-Encoding` the gateway cannot decode for a body-reading
    /// plugin.
    #[error("request {0}")]
    UnsupportedEncoding(String),
    /// The upstream's body has a `Content-Encoding` the gateway cannot decode for a body-reading
    /// plugin, or is not valid for its coding.
    #[error("upstream `{upstream}` answered a body the gateway cannot decode: {reason}")]
    UpstreamBadEncoding {
        /// Upstream name.
        upstream: String,
        /// What is wrong.
        reason: String,
    },
    /// An HTTP/2 WebSocket handshake (extended CONNECT) was answered with a success that is not
    /// a switch: passed on, it would open a stream with nothing behind it.
    #[error("the WebSocket handshake was answered {0} without switching protocols")]
    NotSwitched(u16),
    /// An HTTP/2 extended CONNECT for a protocol other than `websocket` (RFC 8441 allows any).
    #[error("extended CONNECT for `{0}` is not supported, only `websocket`")]
    UnsupportedProtocol(String),
    /// A plain `CONNECT host:port`: a forward proxy's tunnel, which an API gateway does not open.
    #[error("CONNECT to `{0}` is a forward proxy's tunnel; this gateway serves routes, not tunnels")]
    ConnectNotServed(String),
    /// A `TRACE`: the upstream would echo the request as it got it, with the headers the gateway
    /// and its plugins added for it (an upstream credential a `headers` or `transform` entry
    /// sets), to the client. Refused as nginx refuses it (cross-site tracing).
    #[error("TRACE is not served: it would echo to the client the headers added for the upstream")]
    TraceNotServed,
    /// A request body in a transfer coding other than `chunked` (RFC 9112 6.1: a 501): hyper
    /// removes only the chunking, so the rest would reach the upstream unlabelled.
    #[error("request Transfer-Encoding `{0}` is not supported, only `chunked`")]
    UnsupportedTransferCoding(String),
}

impl GatewayError {
    /// The status this kind of error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::NoRoute { .. } => StatusCode::NOT_FOUND,
            GatewayError::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            GatewayError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::BadRequest(_) | GatewayError::ClientAborted(_) => StatusCode::BAD_REQUEST,
            GatewayError::ClientTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            GatewayError::PluginFailed { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            GatewayError::NoUpstream(_) => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamUnavailable { .. } => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::UpstreamBodyTooLarge { .. } => StatusCode::BAD_GATEWAY,
            GatewayError::PluginBusy(_) => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            GatewayError::UpstreamBadEncoding { .. } => StatusCode::BAD_GATEWAY,
            GatewayError::NotSwitched(_) => StatusCode::BAD_GATEWAY,
            GatewayError::UnsupportedProtocol(_) | GatewayError::ConnectNotServed(_)
            | GatewayError::TraceNotServed
            | GatewayError::UnsupportedTransferCoding(_) => {
                StatusCode::NOT_IMPLEMENTED
            }
        }
    }

    /// A short machine-readable code for the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::NoRoute { .. } => "no_route",
            GatewayError::HeadersTooLarge(_) => "headers_too_large",
            GatewayError::BodyTooLarge { .. } => "body_too_large",
            GatewayError::BadRequest(_) => "bad_request",
            GatewayError::ClientAborted(_) => "client_aborted",
            GatewayError::ClientTimeout(_) => "request_timeout",
            GatewayError::PluginFailed { .. } => "plugin_failed",
            GatewayError::NoUpstream(_) => "no_upstream",
            GatewayError::UpstreamUnavailable { .. } => "upstream_unavailable",
            GatewayError::UpstreamTimeout { .. } => "upstream_timeout",
            GatewayError::UpstreamBodyTooLarge { .. } => "upstream_body_too_large",
            GatewayError::PluginBusy(_) => "plugin_busy",
            GatewayError::UnsupportedEncoding(_) => "unsupported_encoding",
            GatewayError::UpstreamBadEncoding { .. } => "upstream_bad_encoding",
            GatewayError::NotSwitched(_) => "not_switched",
            GatewayError::UnsupportedProtocol(_) => "unsupported_protocol",
            GatewayError::ConnectNotServed(_) => "connect_not_served",
            GatewayError::TraceNotServed => "trace_not_served",
            GatewayError::UnsupportedTransferCoding(_) => "unsupported_transfer_coding",
        }
    }

    /// The message shown to the client. Plugin failures are not detailed to clients (the log has
    /// the reason under the same request id): a trap message could leak plugin internals.
    fn public_message(&self) -> String {
        match self {
            GatewayError::PluginFailed { .. } => "a gateway plugin failed".to_owned(),
            // What broke between the gateway and its upstream (a refused port, a TLS or protocol
            // error, which target) is the operator's to read, in the log line with this request
            // id; clients get what nginx and Envoy tell them. (A timeout's reason is the
            // gateway's own words, which wait was too long, and stays.)
            GatewayError::UpstreamUnavailable { .. } => "the upstream is unavailable".to_owned(),
            other => other.to_string(),
        }
    }

    /// The JSON body of the error response: status, code, public message and request id.
    pub fn json_body(&self, request_id: &str) -> String {
        serde_json::json!({
            "status": self.status().as_u16(),
            "error": self.code(),
            "message": self.public_message(),
            "request_id": request_id,
        })
        .to_string()
    }

    /// The JSON error response, carrying the request id.
    pub fn into_response(self, request_id: &str) -> Response<ProxyBody> {
        let is_busy = matches!(self, GatewayError::PluginBusy(_));
        let body = self.json_body(request_id);
        let mut response = Response::new(ProxyBody::full(Bytes::from(body)));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Ok(value) = HeaderValue::from_str(request_id) {
            headers.insert(crate::proxy::headers::X_REQUEST_ID, value);
        }
        if is_busy {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
