//! The dashboard at `/` on the admin listener: one HTML page with its script and styles inline,
//! compiled into the binary (no CDN, no build step). It polls `/admin/analytics` and
//! `/admin/plugins` every two seconds and draws requests per second, latency percentiles, error
//! rates, top consumers and endpoints, anomalies and plugin failures (SVG).
//!
//! The page holds no data, so it is served without the admin token; with `admin.token` set, the
//! page asks for it (or takes it from the URL fragment, `/#token=...`, which browsers never send
//! to the server) and sends it as `Authorization: Bearer` with every poll.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::Response;
use http_body_util::Full;

/// The page.
pub const PAGE: &str = include_str!("dashboard.html");

/// The page as a response; scripts may only come from the page itself.
pub fn page() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(PAGE.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
