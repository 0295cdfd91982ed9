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
    /// The upstream had `max_requests` requests in flight: this one was not sent (load shed, as
    /// Envoy's circuit breaker does). Answered with `Retry-After`; warned per upstream at most
    /// every 10 s, not per request.
    #[error("upstream `{upstream}` has {limit} requests in flight (max_requests)")]
    UpstreamOverloaded {
        /// Upstream name.
        upstream: String,
        /// Its `max_requests`.
        limit: u32,
    },
    /// The gateway could not open a connection to the upstream for want of its own resources (out
    /// of file descriptors, socket buffers or memory): its own overload, not the upstream's
    /// failure. Answered 503 with `Retry-After`; warned per upstream at most every 10 s, not per
    /// request, and no target is counted as failed.
    #[error("the gateway could not connect to upstream `{upstream}` for want of its own resources: {reason}")]
    GatewayOverloaded {
        /// Upstream name.
        upstream: String,
        /// What the system call said.
        reason: String,
    },
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
            GatewayError::PluginBusy(_) | GatewayError::UpstreamOverloaded { .. } | GatewayError::GatewayOverloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
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
            GatewayError::UpstreamOverloaded { .. } => "upstream_overloaded",
            GatewayError::GatewayOverloaded { .. } => "gateway_overloaded",
            GatewayError::UnsupportedEncoding(_) => "unsupported_encoding",
            GatewayError::UpstreamBadEncoding { .. } => "upstream_bad_encoding",
            GatewayError::NotSwitched(_) => "not_switched",
            GatewayError::UnsupportedProtocol(_) => "unsupported_protocol",
            GatewayError::ConnectNotServed(_) => "connect_not_served",
            GatewayError::TraceNotServed => "trace_not_served",
            GatewayError::UnsupportedTransferCoding(_) => "unsupported_transfer_coding",
        }
    }

    /// Whether the request's line for this error is a warning: what the operator must look at
    /// (the upstream, a plugin, capacity). What a client's own request earns is a debug line,
    /// as any client can send it as often as it likes: the 4xx, and the 501s for what the
    /// gateway never serves (`TRACE`, `CONNECT`, another extended CONNECT protocol, a transfer
    /// coding other than `chunked`), which no config change would serve either.
    pub fn is_operator_concern(&self) -> bool {
        match self {
            GatewayError::UnsupportedProtocol(_)
            | GatewayError::ConnectNotServed(_)
            | GatewayError::TraceNotServed
            | GatewayError::UnsupportedTransferCoding(_) => false,
            // The operator's concern, but told per upstream at most every 10 s
            // (`Upstream::admit`): shedding load is when a line per request hurts most.
            GatewayError::UpstreamOverloaded { .. } => false,
            // Likewise (`Upstream::short_of_resources`): out of descriptors, every request fails.
            GatewayError::GatewayOverloaded { .. } => false,
            other => other.status().is_server_error(),
        }
    }

    /// The message shown to the client. What went wrong on the gateway's side of a 5xx (which
    /// upstream or plugin, a refused port, a TLS or protocol error, a target's answer, which
    /// wait was too long) is the operator's to read, in the log line with this request id
    /// (the [`Display`](std::fmt::Display) text); clients get what nginx and Envoy tell them. A
    /// trap message could also leak plugin internals.
    fn public_message(&self) -> String {
        let message = match self {
            GatewayError::PluginFailed { .. } => "a gateway plugin failed",
            GatewayError::PluginBusy(_) => "a gateway plugin has no free instance; try again shortly",
            GatewayError::UpstreamOverloaded { .. } => "the upstream is at capacity; try again shortly",
            GatewayError::GatewayOverloaded { .. } => "the gateway is overloaded; try again shortly",
            GatewayError::NoUpstream(_) => "the route has no upstream and no plugin answered the request",
            GatewayError::UpstreamUnavailable { .. } => "the upstream is unavailable",
            GatewayError::UpstreamTimeout { .. } => "the upstream did not answer in time",
            GatewayError::UpstreamBodyTooLarge { .. } => "the upstream's response body is too large for the gateway to handle",
            GatewayError::UpstreamBadEncoding { .. } => "the upstream's response body could not be decoded",
            GatewayError::NotSwitched(_) => "the upstream did not accept the WebSocket handshake",
            other => return other.to_string(),
        };
        message.to_owned()
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
        let is_busy = matches!(
            self,
            GatewayError::PluginBusy(_) | GatewayError::UpstreamOverloaded { .. } | GatewayError::GatewayOverloaded { .. }
        );
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

/// An error and its sources on one line, joined with `: `: the whole reason, for a log line or
/// an error that outlives its cause.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::GatewayError;

    /// Every error the gateway answers with a 5xx, with upstream and plugin names, an address and
    /// reasons that must stay in the log line.
    fn server_errors() -> Vec<GatewayError> {
        vec![
            GatewayError::PluginFailed { plugin: "secret-plugin".into(), kind: "trap" },
            GatewayError::PluginBusy("secret-plugin".into()),
            GatewayError::NoUpstream("secret-route".into()),
            GatewayError::UpstreamUnavailable { upstream: "secret-upstream".into(), reason: "10.1.2.3:8443 refused".into() },
            GatewayError::UpstreamTimeout { upstream: "secret-upstream".into(), reason: "response timeout of 30000 ms".into() },
            GatewayError::UpstreamBodyTooLarge { limit: 1_234_567 },
            GatewayError::UpstreamBadEncoding { upstream: "secret-upstream".into(), reason: "corrupt deflate stream".into() },
            GatewayError::NotSwitched(299),
        ]
    }

    #[test]
    fn client_facing_5xx_bodies_name_no_upstream_plugin_address_or_reason() {
        for error in server_errors() {
            assert!(error.status().is_server_error(), "{error:?}");
            let body: serde_json::Value = serde_json::from_str(&error.json_body("id-1")).unwrap();
            let message = body["message"].as_str().unwrap();
            for secret in ["secret", "10.1.2.3", "refused", "30000", "1234567", "deflate", "299"] {
                assert!(!message.contains(secret), "{error:?}: `{secret}` in the body {body}");
            }
            assert_eq!(body["error"], error.code());
            assert_eq!(body["request_id"], "id-1");
        }
        // The log line (the Display text) keeps what the operator needs.
        let timeout = GatewayError::UpstreamTimeout { upstream: "one".into(), reason: "connect timed out".into() };
        assert_eq!(timeout.to_string(), "upstream `one` timed out: connect timed out");
    }

    #[test]
    fn what_a_client_alone_causes_is_not_an_operator_concern() {
        for error in server_errors() {
            assert!(error.is_operator_concern(), "{error:?}");
        }
        for error in [
            GatewayError::TraceNotServed,
            GatewayError::UpstreamOverloaded { upstream: "one".into(), limit: 10 },
            GatewayError::GatewayOverloaded { upstream: "one".into(), reason: "EMFILE".into() },
            GatewayError::ConnectNotServed("a:443".into()),
            GatewayError::UnsupportedProtocol("h2c".into()),
            GatewayError::UnsupportedTransferCoding("gzip".into()),
            GatewayError::BadRequest("x".into()),
            GatewayError::NoRoute { method: "GET".into(), path: "/".into() },
        ] {
            assert!(!error.is_operator_concern(), "{error:?}");
        }
    }

    #[test]
    fn the_gateways_own_shortage_is_a_503_to_retry_that_names_no_upstream() {
        let error = GatewayError::GatewayOverloaded { upstream: "secret-upstream".into(), reason: "Too many open files (os error 24)".into() };
        assert!(error.to_string().contains("Too many open files"), "the log line says why");
        let response = error.into_response("id-1");
        assert_eq!(response.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers().get(http::header::RETRY_AFTER).map(|v| v.as_bytes()), Some(&b"1"[..]));
        let body = GatewayError::GatewayOverloaded { upstream: "secret-upstream".into(), reason: "EMFILE".into() }.json_body("id-1");
        assert!(body.contains("gateway_overloaded") && !body.contains("secret") && !body.contains("EMFILE"), "{body}");
    }
}
