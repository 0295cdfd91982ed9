//! `airlock:plugin/http-client`: outbound HTTP calls to the origins a plugin was granted
//! (capability `http-client`).
//!
//! The grant (`[plugins.<name>.http_client]`) fixes where a plugin may connect: every call's URL
//! must have one of the granted `scheme://host:port` origins. The connection goes to that origin
//! and `Host` is set from it, so no header a plugin (or a client, through a plugin) writes can
//! steer a call elsewhere; redirects are returned, never followed. Calls wait asynchronously, and
//! the wait is kept out of the plugin's CPU deadline; the grant's timeout and response size bound
//! them instead.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::HostState;
use super::airlock::plugin::http_client::{Host, HttpError, IncomingResponse, OutgoingRequest};

/// Default bound of one call, request sent to response read (`http_client.timeout_ms`).
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// Default largest response body a plugin receives (`http_client.max_response_bytes`): a JWKS
/// document or an authorization answer is a few KiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 1024 * 1024;

/// Headers a plugin cannot set on an outbound call: the gateway sets `host` and the framing.
const DROPPED_HEADERS: &[&str] =
    &["host", "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "content-length"];

/// The HTTP(S) client shared by every plugin granted `http-client`: pooled connections, system
/// root certificates, HTTP/1.1 and HTTP/2 by ALPN.
#[derive(Clone)]
pub struct OutboundClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl OutboundClient {
    /// Builds the client. Reads the system's root certificates: call it off the async workers.
    pub fn new() -> Result<Self, String> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| format!("cannot load the system's root certificates: {e}"))?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        Ok(Self { client: Client::builder(TokioExecutor::new()).build(https) })
    }
}

/// `scheme://host:port`, normalised: what a grant allows and what a call's URL is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: &'static str,
    host: String,
    port: u16,
}

impl Origin {
    /// Parses an origin as an operator writes it in a grant (`https://idp.example.com`,
    /// `http://127.0.0.1:8081`); a path other than `/`, a query or user info are errors.
    pub fn parse_grant(text: &str) -> Result<Self, String> {
        let uri: Uri = text.parse().map_err(|e| format!("`{text}` is not a URL: {e}"))?;
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!("`{text}`: give only `scheme://host[:port]`, without a path or query"));
        }
        Self::of(&uri).map_err(|e| format!("`{text}`: {e}"))
    }

    /// The origin a request URL connects to.
    fn of(uri: &Uri) -> Result<Self, String> {
        let scheme = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("http") => "http",
            Some(s) if s.eq_ignore_ascii_case("https") => "https",
            Some(other) => return Err(format!("scheme `{other}` is not http or https")),
            None => return Err("not an absolute URL".into()),
        };
        let authority = uri.authority().ok_or("no host")?;
        if authority.as_str().contains('@') {
            return Err("user info in a URL is not allowed".into());
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        if host.is_empty() {
            return Err("no host".into());
        }
        let port = authority.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
        Ok(Self { scheme, host, port })
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}://[{}]:{}", self.scheme, self.host, self.port)
        } else {
            write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
        }
    }
}

/// One plugin's `http-client` grant: where it may call, how long, how much it may read.
pub struct HttpClientGrant {
    /// Origins calls may go to.
    pub allow: Vec<Origin>,
    /// Longest a call may take.
    pub timeout: Duration,
    /// Largest response body accepted.
    pub max_response_bytes: usize,
    /// The shared client.
    pub client: OutboundClient,
}

impl std::fmt::Debug for HttpClientGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClientGrant")
            .field("allow", &self.allow)
            .field("timeout", &self.timeout)
            .field("max_response_bytes", &self.max_response_bytes)
            .finish_non_exhaustive()
    }
}

impl HttpClientGrant {
    /// A grant of calls to `allow`, sharing `client` with every other grant of the gateway.
    pub fn new(allow: Vec<Origin>, timeout_ms: u64, max_response_bytes: u64, client: &OutboundClient) -> Self {
        Self {
            allow,
            timeout: Duration::from_millis(timeout_ms),
            max_response_bytes: usize::try_from(max_response_bytes).unwrap_or(usize::MAX),
            client: client.clone(),
        }
    }

    /// Parses `url` and checks its origin against the grant.
    fn check(&self, url: &str) -> Result<Uri, HttpError> {
        let uri: Uri = url.parse().map_err(|e| HttpError::Invalid(format!("`{url}` is not a URL: {e}")))?;
        let origin = Origin::of(&uri).map_err(|e| HttpError::Invalid(format!("`{url}`: {e}")))?;
        if !self.allow.contains(&origin) {
            return Err(HttpError::Denied(format!("{origin} is not in this plugin's `http_client.allow`")));
        }
        Ok(uri)
    }

    /// Checks `req` against the grant and turns it into the request to send.
    fn prepare(&self, req: OutgoingRequest) -> Result<(Request<Full<Bytes>>, Duration), HttpError> {
        let uri = self.check(&req.url)?;
        let method = Method::from_bytes(req.method.as_bytes())
            .map_err(|_| HttpError::Invalid(format!("`{}` is not an HTTP method", req.method)))?;
        let mut builder = Request::builder().method(method).uri(uri);
        for (name, value) in req.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| HttpError::Invalid(format!("`{name}` is not a header name")))?;
            if DROPPED_HEADERS.contains(&name.as_str()) || name.as_str().starts_with("proxy-") {
                continue;
            }
            let value = HeaderValue::from_bytes(&value)
                .map_err(|_| HttpError::Invalid(format!("the value of `{name}` is not a valid header value")))?;
            builder = builder.header(name, value);
        }
        let body = Full::new(req.body.map(Bytes::from).unwrap_or_default());
        let request = builder.body(body).map_err(|e| HttpError::Invalid(e.to_string()))?;
        let asked = Duration::from_millis(u64::from(req.timeout_ms));
        let timeout = if asked.is_zero() { self.timeout } else { asked.min(self.timeout) };
        Ok((request, timeout))
    }

    /// Sends a prepared request and reads the response whole.
    async fn send(&self, request: Request<Full<Bytes>>) -> Result<IncomingResponse, HttpError> {
        let response = self.client.client.request(request).await.map_err(|e| HttpError::Connect(error_chain(&e)))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, self.max_response_bytes).collect().await.map_err(|e| {
            if e.downcast_ref::<LengthLimitError>().is_some() { HttpError::TooLarge } else { HttpError::Connect(error_chain(&*e)) }
        })?;
        Ok(IncomingResponse {
            status: parts.status.as_u16(),
            headers: parts.headers.iter().map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec())).collect(),
            body: body.to_bytes().to_vec(),
        })
    }
}

/// An error and its sources, on one line.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl Host for HostState {
    async fn send(&mut self, request: OutgoingRequest) -> Result<IncomingResponse, HttpError> {
        let Some(grant) = self.http.clone() else {
            return Err(HttpError::Denied("this plugin was not granted `http-client`".into()));
        };
        let url = request.url.clone();
        let outcome = match grant.prepare(request) {
            Ok((request, timeout)) => {
                let call = tokio::time::timeout(timeout, grant.send(request));
                call.await.unwrap_or(Err(HttpError::Timeout))
            }
            Err(e) => Err(e),
        };
        match &outcome {
            Ok(r) => tracing::debug!(plugin = %self.plugin, %url, status = r.status, "outbound call"),
            Err(e) => super::log::plugin_warn!(&self.log, %url, error = ?e, "outbound call failed"),
        }
        outcome
    }

    async fn allows(&mut self, url: String) -> Result<(), HttpError> {
        match &self.http {
            Some(grant) => grant.check(&url).map(drop),
            None => Err(HttpError::Denied("this plugin was not granted `http-client`".into())),
        }
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_normalise_default_ports_and_case() {
        let a = Origin::parse_grant("HTTPS://IdP.Example.com").unwrap();
        let b = Origin::of(&"https://idp.example.com:443/keys?x=1".parse().unwrap()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "https://idp.example.com:443");
        let other_port = Origin::of(&"https://idp.example.com:8443/".parse().unwrap()).unwrap();
        assert_ne!(a, other_port);
    }

    #[test]
    fn grants_refuse_paths_user_info_and_other_schemes() {
        assert!(Origin::parse_grant("https://idp.example.com/keys").unwrap_err().contains("without a path"));
        assert!(Origin::parse_grant("ftp://idp.example.com").unwrap_err().contains("not http or https"));
        assert!(Origin::of(&"http://user@evil.example".parse().unwrap()).unwrap_err().contains("user info"));
    }
}
