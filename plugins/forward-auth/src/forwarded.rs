//! The auth call's headers: the client headers the operator chose, and what the gateway itself
//! knows about the request (`X-Forwarded-*`, as Traefik's ForwardAuth sends them).

/// Headers every auth call carries with the gateway's own values; the client's copies of these
/// are never passed on (the operator cannot list them in `request_headers`).
pub const ALWAYS_SENT: &[&str] =
    &["x-forwarded-method", "x-forwarded-uri", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-for", "x-request-id"];

/// What the gateway knows about the client's request, read once per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The request's method.
    pub method: String,
    /// Its path (as routed: normalized, and as earlier plugins left it).
    pub path: String,
    /// Its query string, without the `?`.
    pub query: Option<String>,
    /// The `Host` the client asked for.
    pub host: Option<Vec<u8>>,
    /// `http` or `https`.
    pub scheme: String,
    /// The client IP as the gateway determined it (`trusted_proxies` considered).
    pub client_ip: String,
    /// The gateway's request id.
    pub request_id: String,
}

impl Origin {
    /// The `X-Forwarded-*` and `X-Request-Id` headers of the auth call, in [`ALWAYS_SENT`]'s order
    /// (`x-forwarded-host` left out when the request had no `Host`).
    pub fn headers(&self) -> Vec<(String, Vec<u8>)> {
        let uri = match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        };
        let mut out = vec![
            ("x-forwarded-method".to_owned(), self.method.as_bytes().to_vec()),
            ("x-forwarded-uri".to_owned(), uri.into_bytes()),
        ];
        if let Some(host) = &self.host {
            out.push(("x-forwarded-host".to_owned(), host.clone()));
        }
        out.push(("x-forwarded-proto".to_owned(), self.scheme.as_bytes().to_vec()));
        out.push(("x-forwarded-for".to_owned(), self.client_ip.as_bytes().to_vec()));
        out.push(("x-request-id".to_owned(), self.request_id.as_bytes().to_vec()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin {
            method: "POST".into(),
            path: "/orders/7".into(),
            query: Some("a=1&b=%20".into()),
            host: Some(b"api.example.com:8443".to_vec()),
            scheme: "https".into(),
            client_ip: "203.0.113.7".into(),
            request_id: "req-1".into(),
        }
    }

    #[test]
    fn every_forwarded_header_is_sent() {
        let headers = origin().headers();
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| String::from_utf8_lossy(v).into_owned());
        assert_eq!(get("x-forwarded-method").as_deref(), Some("POST"));
        assert_eq!(get("x-forwarded-uri").as_deref(), Some("/orders/7?a=1&b=%20"));
        assert_eq!(get("x-forwarded-host").as_deref(), Some("api.example.com:8443"));
        assert_eq!(get("x-forwarded-proto").as_deref(), Some("https"));
        assert_eq!(get("x-forwarded-for").as_deref(), Some("203.0.113.7"));
        assert_eq!(get("x-request-id").as_deref(), Some("req-1"));
        let names: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ALWAYS_SENT);
    }

    #[test]
    fn no_query_no_question_mark_and_no_host_no_header() {
        let o = Origin { query: None, host: None, ..origin() };
        let headers = o.headers();
        assert!(headers.contains(&("x-forwarded-uri".to_owned(), b"/orders/7".to_vec())));
        assert!(!headers.iter().any(|(k, _)| k == "x-forwarded-host"));
    }
}
