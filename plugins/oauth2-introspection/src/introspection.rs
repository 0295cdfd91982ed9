//! The authorization server's answer (RFC 7662 2.2), what a route's checks make of it, and how
//! answers are cached in `state`. Plain functions, unit-tested natively.

use airlock_sdk::http_client::{HttpError, Response};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::config::Settings;

/// An active token's introspection answer: the JSON object as the server sent it.
pub type Claims = Map<String, Value>;

/// Longest consumer id taken from `consumer_claim`, in bytes: it is a metrics label, an access
/// log field and a rate-limit key.
pub const MAX_CONSUMER_BYTES: usize = 256;

/// Most groups taken from `groups_claim`: `acl` and `rate-limit` read the list on every request.
pub const MAX_GROUPS: usize = 64;

/// Longest list of groups taken from `groups_claim`, joined with `,`, in bytes: it goes upstream
/// as `X-Consumer-Groups`.
pub const MAX_GROUPS_BYTES: usize = 4096;

/// Largest value the state backend takes (an entry larger than this is not cached).
pub const MAX_STATE_VALUE_BYTES: usize = 64 * 1024;

/// What a cache entry starts with: the format of what follows, so an entry of another release's
/// format is a miss rather than misread.
const ENTRY_FORMAT: &[u8] = b"1";

/// The authorization server's verdict on a token.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// `"active": true`, with every member of the answer.
    Active(Claims),
    /// `"active": false` (whatever else the answer said: RFC 7662 2.2 has an inactive answer
    /// carry nothing else).
    Inactive,
}

/// Why there is no usable answer, for the log (never the token). `what` is the same text for
/// every failure of its kind, whatever the request (it is the warning, and the gateway merges
/// identical warning lines); `detail` is what may vary (the HTTP client's error, the JSON
/// parser's), logged at debug level only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoAnswer {
    /// The kind of failure, in words.
    pub what: String,
    /// What else is known about it.
    pub detail: Option<String>,
}

impl NoAnswer {
    /// A failure with nothing more to say.
    fn new(what: impl Into<String>) -> Self {
        Self { what: what.into(), detail: None }
    }

    /// A failure and its details.
    fn with(what: &str, detail: impl Into<String>) -> Self {
        Self { what: what.to_owned(), detail: Some(detail.into()) }
    }
}

/// Judges the introspection call's outcome: an answer, or why there is none.
pub fn judge(outcome: Result<Response, HttpError>) -> Result<Answer, NoAnswer> {
    let response = outcome.map_err(|e| describe_error(&e))?;
    match response.status {
        200 => parse(&response.body),
        status @ (401 | 403) => Err(NoAnswer::new(format!(
            "the introspection endpoint answered {status}: does it know the gateway's `client_id` and `client_secret`?"
        ))),
        status => Err(NoAnswer::new(format!("the introspection endpoint answered {status}"))),
    }
}

/// Reads a 200's body: a JSON object with a boolean `active`.
pub fn parse(body: &[u8]) -> Result<Answer, NoAnswer> {
    let value: Value = serde_json::from_slice(body).map_err(|e| NoAnswer::with("the introspection answer is not JSON", e.to_string()))?;
    let Value::Object(claims) = value else {
        return Err(NoAnswer::new("the introspection answer is not a JSON object"));
    };
    match claims.get("active") {
        Some(Value::Bool(true)) => Ok(Answer::Active(claims)),
        Some(Value::Bool(false)) => Ok(Answer::Inactive),
        Some(_) => Err(NoAnswer::new("the introspection answer's `active` is not a boolean")),
        None => Err(NoAnswer::new("the introspection answer has no `active`")),
    }
}

/// A failed call. The gateway's texts (`Denied`, `Invalid`, `Connect`) go to the detail: the
/// gateway logs them itself, with the URL, at most every 10 s per plugin definition.
fn describe_error(e: &HttpError) -> NoAnswer {
    match e {
        HttpError::Denied(m) => NoAnswer::with("the gateway refused the introspection call", m.as_str()),
        HttpError::Invalid(m) => NoAnswer::with("the introspection call was invalid", m.as_str()),
        HttpError::Connect(m) => NoAnswer::with("the introspection endpoint could not be reached, or broke the exchange off", m.as_str()),
        HttpError::Timeout => NoAnswer::new("the introspection endpoint did not answer within the timeout"),
        HttpError::TooLarge => NoAnswer::new("the introspection answer was larger than the grant's `max_response_bytes`"),
    }
}

/// Why an active token does not pass this route's checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Expired, not valid yet, another issuer or audience: 401 `invalid_token`. The reason is
    /// for the log only.
    Invalid(String),
    /// A required scope is missing: 403 `insufficient_scope`.
    Scope,
    /// Scopes are required, and the answer's `scope` is neither a string nor a list of strings:
    /// no scopes, so 403 `insufficient_scope` too. The reason is for the log only.
    ScopeUnreadable(&'static str),
}

/// Checks an active token's claims against the route's settings at `now` (seconds since the
/// epoch): `exp` and `nbf` (with `leeway_s`), `iss` (one of `issuers`), `aud`, then the scopes.
pub fn check(s: &Settings, claims: &Claims, now: i64) -> Result<(), Refusal> {
    let time = |name: &str| -> Result<Option<i64>, Refusal> {
        match claims.get(name) {
            None | Some(Value::Null) => Ok(None),
            // Saturating: a float beyond i64 is a far date, not an error.
            Some(v) => v.as_f64().map(|f| Some(f.floor() as i64)).ok_or_else(|| Refusal::Invalid(format!("`{name}` is not a number"))),
        }
    };
    if let Some(exp) = time("exp")?
        && now > exp.saturating_add(s.leeway_s)
    {
        return Err(Refusal::Invalid("expired (`exp`)".into()));
    }
    if let Some(nbf) = time("nbf")?
        && now < nbf.saturating_sub(s.leeway_s)
    {
        return Err(Refusal::Invalid("not valid yet (`nbf`)".into()));
    }
    if !s.issuers.is_empty() && !claims.get("iss").and_then(Value::as_str).is_some_and(|iss| s.issuers.iter().any(|i| i == iss)) {
        return Err(Refusal::Invalid("`iss` is none of the configured `issuer`/`issuers`".into()));
    }
    if !s.audiences.is_empty() && !audience_matches(&s.audiences, claims.get("aud")) {
        return Err(Refusal::Invalid("`aud` names none of the configured `audiences`".into()));
    }
    if !s.required_scopes.is_empty() {
        let granted = scopes(claims.get("scope")).map_err(Refusal::ScopeUnreadable)?;
        if !s.required_scopes.iter().all(|r| granted.contains(&r.as_str())) {
            return Err(Refusal::Scope);
        }
    }
    Ok(())
}

/// Whether `aud` (a string or a list of strings) names one of `audiences`.
pub fn audience_matches(audiences: &[String], aud: Option<&Value>) -> bool {
    match aud {
        Some(Value::String(aud)) => audiences.iter().any(|a| a == aud),
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(|aud| audiences.iter().any(|a| a == aud)),
        _ => false,
    }
}

/// The scopes an answer's `scope` grants: a string split at spaces (U+0020 only: RFC 6749 3.3
/// delimits scopes with `%x20`, so a tab is part of a scope, not a separator), or, as some servers
/// send it, a list of strings, each one scope; absent or null: none. Empty scopes are dropped.
/// Any other type (a number, an object, a list holding something else) is `Err`, the reason for
/// the log: such an answer grants no scope.
pub fn scopes(scope: Option<&Value>) -> Result<Vec<&str>, &'static str> {
    match scope {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(text.split(' ').filter(|s| !s.is_empty()).collect()),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|item| match item {
                Value::String(s) if s.is_empty() => None,
                Value::String(s) => Some(Ok(s.as_str())),
                _ => Some(Err("`scope` is a list holding something other than strings")),
            })
            .collect(),
        Some(Value::Bool(_)) => Err("`scope` is a boolean, not a space-separated string or a list of strings"),
        Some(Value::Number(_)) => Err("`scope` is a number, not a space-separated string or a list of strings"),
        Some(Value::Object(_)) => Err("`scope` is an object, not a space-separated string or a list of strings"),
    }
}

/// The answer's `scope` as RFC 7662 writes it, for the context and a header: a string as it is,
/// a list of strings joined with spaces (unless an item holds a space, which would split it);
/// `None` otherwise.
pub fn scope_text(scope: Option<&Value>) -> Option<String> {
    match scope? {
        Value::String(text) => Some(text.clone()),
        Value::Array(_) => {
            let list = scopes(scope).ok()?;
            (!list.is_empty() && !list.iter().any(|s| s.contains(' '))).then(|| list.join(" "))
        }
        _ => None,
    }
}

/// The consumer id in claim `name`: `Ok(None)` when absent, null or empty; `Err` (the reason,
/// logged) when it is not a string or an integer, too long, or holds control characters.
pub fn consumer(claims: &Claims, name: &str) -> Result<Option<String>, String> {
    let text = match claims.get(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
        Some(_) => return Err(format!("claim `{name}` is not a string")),
    };
    if text.is_empty() {
        return Ok(None);
    }
    if text.len() > MAX_CONSUMER_BYTES {
        return Err(format!("claim `{name}` is longer than {MAX_CONSUMER_BYTES} bytes"));
    }
    if text.chars().any(char::is_control) {
        return Err(format!("claim `{name}` holds control characters"));
    }
    Ok(Some(text))
}

/// The consumer's groups in claim `name`, as the context's `consumer.groups` carries them:
/// comma-separated, in the answer's order, without repeats; `Ok("")` when the claim is absent or
/// null. The claim is a list of strings, or a string of groups separated by spaces (U+0020 only,
/// as `scope`); empty entries are skipped. Each group must be a name `[[consumers]] groups` would
/// take (no `,`, no white space at either end) without control characters. All or nothing:
/// another type, an entry that is not such a name, more than [`MAX_GROUPS`] groups or more than
/// [`MAX_GROUPS_BYTES`] bytes is `Err` (the reason, one text per kind, for the log), never a part
/// of the list: a group left out could be the one an `acl` `deny` names.
pub fn groups(claims: &Claims, name: &str) -> Result<String, String> {
    let items: Vec<&str> = match claims.get(name) {
        None | Some(Value::Null) => return Ok(String::new()),
        Some(Value::String(text)) => text.split(' ').collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().ok_or_else(|| format!("claim `{name}` is a list holding something other than strings")))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(format!("claim `{name}` is neither a list of strings nor a space-separated string")),
    };
    let mut out: Vec<&str> = Vec::new();
    for group in items.into_iter().filter(|g| !g.is_empty()) {
        if !airlock_sdk::consumer::is_group_name(group) {
            return Err(format!("claim `{name}` holds a group name with `,`, control characters or white space at either end"));
        }
        if !out.contains(&group) {
            out.push(group);
        }
    }
    if out.len() > MAX_GROUPS {
        return Err(format!("claim `{name}` names more than {MAX_GROUPS} groups"));
    }
    let joined = out.join(",");
    if joined.len() > MAX_GROUPS_BYTES {
        return Err(format!("claim `{name}` is longer than {MAX_GROUPS_BYTES} bytes"));
    }
    Ok(joined)
}

/// A claim as header text: a string as it is, a number or boolean as written, a list's items
/// joined with `,` (items that are not scalars as JSON), an object as JSON; `None` for null.
pub fn claim_text(value: &Value) -> Option<String> {
    fn scalar(value: &Value) -> String {
        match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
    match value {
        Value::Null => None,
        Value::Array(items) => Some(items.iter().map(scalar).collect::<Vec<_>>().join(",")),
        other => Some(scalar(other)),
    }
}

/// The state key of a token's cached answer: `t1:` and the hex SHA-256 digest of the endpoint,
/// the client id and the hint (each length-prefixed: two configurations sharing a namespace
/// never share answers) and the token. The token itself is never stored.
pub fn cache_key(s: &Settings, token: &str) -> String {
    let mut digest = Sha256::new();
    for part in [&s.endpoint, &s.client_id, &s.token_type_hint] {
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part.as_bytes());
    }
    digest.update(token.as_bytes());
    let mut key = String::from("t1:");
    for b in digest.finalize() {
        key.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        key.push(char::from(b"0123456789abcdef"[usize::from(b & 0x0f)]));
    }
    key
}

/// `exp` in milliseconds since the epoch, if the answer has a numeric one.
fn exp_ms(claims: &Claims) -> Option<u64> {
    // Saturating: negative is 0, beyond u64 is u64::MAX.
    claims.get("exp").and_then(Value::as_f64).map(|exp| (exp * 1000.0) as u64)
}

/// How long to cache `answer` at `now_ms`, in milliseconds (0: not at all): an active answer
/// `cache_ttl_s`, but never past its `exp`; an inactive one `negative_cache_ttl_s`.
pub fn ttl_ms(s: &Settings, answer: &Answer, now_ms: u64) -> u64 {
    match answer {
        Answer::Inactive => s.negative_cache_ttl_ms,
        Answer::Active(claims) => match exp_ms(claims) {
            Some(exp) => s.cache_ttl_ms.min(exp.saturating_sub(now_ms)),
            None => s.cache_ttl_ms,
        },
    }
}

/// Whether a cached answer stored at `stored_at_ms` may be used at `now_ms` by a route with
/// settings `s`: no older than the route's own TTL for its kind (routes sharing a `[plugins]`
/// definition share entries, and one may cache for less, or not at all), and an active one only
/// before its `exp`.
pub fn usable(s: &Settings, answer: &Answer, stored_at_ms: u64, now_ms: u64) -> bool {
    let age = now_ms.saturating_sub(stored_at_ms);
    match answer {
        Answer::Inactive => age < s.negative_cache_ttl_ms,
        Answer::Active(claims) => age < s.cache_ttl_ms && exp_ms(claims).is_none_or(|exp| now_ms < exp),
    }
}

/// A cache entry for `answer` stored at `now_ms`: the format byte, the time in decimal, a line
/// feed, then the answer as JSON (`{"active":false}` for an inactive one).
pub fn encode(answer: &Answer, now_ms: u64) -> Vec<u8> {
    let json = match answer {
        Answer::Active(claims) => serde_json::to_vec(claims),
        Answer::Inactive => serde_json::to_vec(&serde_json::json!({"active": false})),
    };
    let mut entry = ENTRY_FORMAT.to_vec();
    entry.extend(format!("{now_ms}\n").into_bytes());
    // A map of JSON values: serializing it cannot fail.
    entry.extend(json.unwrap_or_default());
    entry
}

/// The answer in a cache entry and when it was stored; `None` for another format or a damaged
/// entry (a miss).
pub fn decode(entry: &[u8]) -> Option<(Answer, u64)> {
    let rest = entry.strip_prefix(ENTRY_FORMAT)?;
    let newline = rest.iter().position(|&b| b == b'\n')?;
    let stored_at = std::str::from_utf8(&rest[..newline]).ok()?.parse().ok()?;
    Some((parse(&rest[newline + 1..]).ok()?, stored_at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn settings(extra: &str) -> Settings {
        let json = format!(r#"{{"endpoint": "http://idp/introspect", "client_id": "gw", "client_secret": "s"{extra}}}"#);
        let config: Config = serde_json::from_str(&json).unwrap();
        Settings::from_config(config, |s| Ok(s.to_owned())).unwrap()
    }

    fn claims(json: &str) -> Claims {
        serde_json::from_str(json).unwrap()
    }

    fn answer(status: u16, body: &str) -> Result<Response, HttpError> {
        Ok(Response { status, headers: vec![], body: body.as_bytes().to_vec() })
    }

    #[test]
    fn answers_are_read_strictly() {
        assert_eq!(judge(answer(200, r#"{"active": false, "sub": "leak"}"#)), Ok(Answer::Inactive));
        let Ok(Answer::Active(c)) = judge(answer(200, r#"{"active": true, "sub": "alice"}"#)) else { panic!() };
        assert_eq!(c["sub"], "alice");
        for (status, body, reason) in [
            (200, "not json", "not JSON"),
            (200, "[true]", "not a JSON object"),
            (200, r#"{"active": "true"}"#, "`active` is not a boolean"),
            (200, r#"{"sub": "alice"}"#, "has no `active`"),
            (500, r#"{"active": true}"#, "answered 500"),
            (401, "", "answered 401: does it know the gateway's `client_id`"),
            (204, "", "answered 204"),
        ] {
            let err = judge(answer(status, body)).unwrap_err();
            assert!(err.what.contains(reason), "{status} {body}: {err:?}");
        }
        assert!(judge(Err(HttpError::Timeout)).unwrap_err().what.contains("timeout"));
        let err = judge(Err(HttpError::Connect("refused".into()))).unwrap_err();
        assert_eq!((err.what.as_str(), err.detail.as_deref()), ("the introspection endpoint could not be reached, or broke the exchange off", Some("refused")));
    }

    /// The warning is `what`: one text per kind of failure, whatever varies between requests
    /// (the client's error text, the body's parse error), so identical lines can be merged.
    #[test]
    fn a_kind_of_failure_has_one_text() {
        let what = |outcome: Result<Response, HttpError>| judge(outcome).unwrap_err();
        for (a, b) in [
            (
                Err(HttpError::Connect("tcp connect error: Connection refused (os error 111)".into())),
                Err(HttpError::Connect("connected, but the connection closed before a complete response: x".into())),
            ),
            (Err(HttpError::Denied("a".into())), Err(HttpError::Denied("b".into()))),
            (Err(HttpError::Invalid("a".into())), Err(HttpError::Invalid("b".into()))),
            (Err(HttpError::Timeout), Err(HttpError::Timeout)),
            (Err(HttpError::TooLarge), Err(HttpError::TooLarge)),
            (answer(200, "<html>req 1</html>"), answer(200, r#"{"active": true} trailing, request 2"#)),
            (answer(200, "[1]"), answer(200, "\"tok-alice\"")),
            (answer(502, "a"), answer(502, "b")),
        ] {
            let (a, b) = (what(a), what(b));
            assert_eq!(a.what, b.what, "{a:?} {b:?}");
        }
        // The exact texts, as documented for operators.
        let texts: Vec<String> = [
            Err(HttpError::Denied("d".into())),
            Err(HttpError::Invalid("i".into())),
            Err(HttpError::Connect("c".into())),
            Err(HttpError::Timeout),
            Err(HttpError::TooLarge),
            answer(401, ""),
            answer(503, ""),
            answer(200, "x"),
            answer(200, "[]"),
            answer(200, r#"{"active": 1}"#),
            answer(200, "{}"),
        ]
        .into_iter()
        .map(|o| what(o).what)
        .collect();
        assert_eq!(texts, [
            "the gateway refused the introspection call",
            "the introspection call was invalid",
            "the introspection endpoint could not be reached, or broke the exchange off",
            "the introspection endpoint did not answer within the timeout",
            "the introspection answer was larger than the grant's `max_response_bytes`",
            "the introspection endpoint answered 401: does it know the gateway's `client_id` and `client_secret`?",
            "the introspection endpoint answered 503",
            "the introspection answer is not JSON",
            "the introspection answer is not a JSON object",
            "the introspection answer's `active` is not a boolean",
            "the introspection answer has no `active`",
        ]);
        assert!(what(answer(200, "x")).detail.is_some_and(|d| d.contains("line 1")), "the parser's error is the detail");
    }

    #[test]
    fn time_issuer_audience_and_scope_checks() {
        let s = settings(r#", "leeway_s": 10, "issuer": "https://idp", "audiences": ["orders", "billing"], "required_scopes": ["read", "write"]"#);
        let ok = r#""iss": "https://idp", "aud": ["x", "billing"], "scope": "write  read admin""#;
        assert_eq!(check(&s, &claims(&format!(r#"{{"active": true, "exp": 1000, "nbf": 500, {ok}}}"#)), 1005), Ok(()));
        assert_eq!(check(&s, &claims(&format!(r#"{{"active": true, "exp": 1000, {ok}}}"#)), 1011), Err(Refusal::Invalid("expired (`exp`)".into())));
        assert_eq!(check(&s, &claims(&format!(r#"{{"active": true, "exp": 1000.9, {ok}}}"#)), 1010), Ok(()));
        assert_eq!(check(&s, &claims(&format!(r#"{{"active": true, "nbf": 500, {ok}}}"#)), 489), Err(Refusal::Invalid("not valid yet (`nbf`)".into())));
        assert!(matches!(check(&s, &claims(&format!(r#"{{"active": true, "exp": "soon", {ok}}}"#)), 0), Err(Refusal::Invalid(m)) if m.contains("not a number")));
        assert_eq!(check(&s, &claims(&format!(r#"{{"active": true, {ok}}}"#)), 0), Ok(()), "no `exp`: the server's `active` stands");
        let other = |json: &str| check(&s, &claims(json), 0);
        assert!(matches!(other(r#"{"iss": "https://evil", "aud": "orders", "scope": "read write"}"#), Err(Refusal::Invalid(m)) if m.contains("iss")));
        assert!(matches!(other(r#"{"aud": "orders", "scope": "read write"}"#), Err(Refusal::Invalid(m)) if m.contains("iss")));
        assert!(matches!(other(r#"{"iss": "https://idp", "aud": "shipping", "scope": "read write"}"#), Err(Refusal::Invalid(m)) if m.contains("aud")));
        assert!(matches!(other(r#"{"iss": "https://idp", "scope": "read write"}"#), Err(Refusal::Invalid(m)) if m.contains("aud")));
        assert_eq!(other(r#"{"iss": "https://idp", "aud": "orders", "scope": "read"}"#), Err(Refusal::Scope));
        assert_eq!(other(r#"{"iss": "https://idp", "aud": "orders"}"#), Err(Refusal::Scope));
        // A list of strings (some servers send one) is the same set of scopes.
        assert_eq!(other(r#"{"iss": "https://idp", "aud": "orders", "scope": ["read", "write"]}"#), Ok(()));
        assert_eq!(other(r#"{"iss": "https://idp", "aud": "orders", "scope": ["read"]}"#), Err(Refusal::Scope));
        // A tab is not a separator (RFC 6749 3.3: `%x20`): "admin\tread" is one scope.
        assert_eq!(other(r#"{"iss": "https://idp", "aud": "orders", "scope": "write admin\tread"}"#), Err(Refusal::Scope));
        for ws in [r"\n", r"\r", r"\u000b", r"\u000c", r"\u00a0", r"\u3000"] {
            let json = format!(r#"{{"iss": "https://idp", "aud": "orders", "scope": "write{ws}read"}}"#);
            assert_eq!(other(&json), Err(Refusal::Scope), "{json}");
        }
        // Any other type is no scopes, never a pass, whatever it holds.
        let odd = [r#"5"#, r#"true"#, r#"{"read": true, "write": true}"#, r#"["read", "write", 5]"#, r#"["read", ["write"]]"#, r#"[null, "read", "write"]"#];
        for scope in odd {
            let json = format!(r#"{{"iss": "https://idp", "aud": "orders", "scope": {scope}}}"#);
            assert!(matches!(other(&json), Err(Refusal::ScopeUnreadable(m)) if m.starts_with("`scope` is")), "{json}");
        }
        // Nothing configured: nothing checked but time.
        assert_eq!(check(&settings(""), &claims(r#"{"active": true}"#), 0), Ok(()));
    }

    #[test]
    fn iss_is_one_of_the_issuers() {
        let s = settings(r#", "issuers": ["https://a/", "https://b/"]"#);
        assert_eq!(check(&s, &claims(r#"{"iss": "https://a/"}"#), 0), Ok(()));
        assert_eq!(check(&s, &claims(r#"{"iss": "https://b/"}"#), 0), Ok(()));
        for iss in [r#""https://c/""#, r#""https://a""#, r#""https://A/""#, r#"["https://a/"]"#, "null", "5"] {
            let refused = check(&s, &claims(&format!(r#"{{"iss": {iss}}}"#)), 0);
            assert!(matches!(refused, Err(Refusal::Invalid(ref m)) if m.contains("iss")), "{iss}: {refused:?}");
        }
        assert!(matches!(check(&s, &claims("{}"), 0), Err(Refusal::Invalid(_))), "no `iss`");
    }

    #[test]
    fn audiences_and_scopes_match_exactly() {
        let auds = ["orders".to_owned()];
        assert!(audience_matches(&auds, Some(&serde_json::json!("orders"))));
        assert!(audience_matches(&auds, Some(&serde_json::json!(["a", "orders"]))));
        assert!(!audience_matches(&auds, Some(&serde_json::json!("orders-admin"))));
        assert!(!audience_matches(&auds, Some(&serde_json::json!([7, {"orders": 1}]))));
        assert!(!audience_matches(&auds, None));
        let granted = |json: serde_json::Value| scopes(Some(&json)).map(|s| s.into_iter().map(str::to_owned).collect::<Vec<_>>());
        assert_eq!(granted(serde_json::json!("write  read ")).unwrap(), ["write", "read"]);
        assert_eq!(granted(serde_json::json!("reader")).unwrap(), ["reader"], "scope tokens, not substrings");
        assert_eq!(granted(serde_json::json!("a\tb c")).unwrap(), ["a\tb", "c"], "split at U+0020 only");
        assert_eq!(granted(serde_json::json!("a\u{a0}b\u{3000}c")).unwrap(), ["a\u{a0}b\u{3000}c"]);
        assert_eq!(granted(serde_json::json!(["a", "", "b"])).unwrap(), ["a", "b"]);
        assert_eq!(granted(serde_json::json!([])).unwrap(), Vec::<String>::new());
        assert!(granted(serde_json::json!(["a", 1])).unwrap_err().contains("list holding something other than strings"));
        assert!(granted(serde_json::json!(7)).unwrap_err().contains("is a number"));
        assert!(granted(serde_json::json!({"a": 1})).unwrap_err().contains("is an object"));
        assert_eq!(scopes(None), Ok(vec![]));
        assert_eq!(scopes(Some(&serde_json::Value::Null)), Ok(vec![]));

        let text = |json: serde_json::Value| scope_text(Some(&json));
        assert_eq!(text(serde_json::json!("a b")).as_deref(), Some("a b"));
        assert_eq!(text(serde_json::json!(["a", "b"])).as_deref(), Some("a b"), "a list, as RFC 7662 writes it");
        assert_eq!(text(serde_json::json!(["a b", "c"])), None, "an item with a space would be split");
        assert_eq!(text(serde_json::json!(["a", 1])), None);
        assert_eq!(text(serde_json::json!([])), None);
        assert_eq!(text(serde_json::json!(5)), None);
        assert_eq!(scope_text(None), None);
    }

    #[test]
    fn consumers_and_claim_texts() {
        let c = claims(r#"{"sub": " alice ", "uid": 42, "f": 1.5, "ctl": "a\u0007b", "empty": "", "long": "LONG", "obj": {}}"#);
        assert_eq!(consumer(&c, "sub"), Ok(Some("alice".into())));
        assert_eq!(consumer(&c, "uid"), Ok(Some("42".into())));
        assert_eq!(consumer(&c, "missing"), Ok(None));
        assert_eq!(consumer(&c, "empty"), Ok(None));
        assert!(consumer(&c, "f").is_err() && consumer(&c, "obj").is_err() && consumer(&c, "ctl").is_err());
        let long = claims(&format!(r#"{{"sub": "{}"}}"#, "x".repeat(MAX_CONSUMER_BYTES + 1)));
        assert!(consumer(&long, "sub").unwrap_err().contains("longer than 256"));

        let text = |json: &str| claim_text(&serde_json::from_str(json).unwrap());
        assert_eq!(text(r#""alice""#).as_deref(), Some("alice"));
        assert_eq!(text("1700000000").as_deref(), Some("1700000000"));
        assert_eq!(text("true").as_deref(), Some("true"));
        assert_eq!(text(r#"["a", "b", 3]"#).as_deref(), Some("a,b,3"));
        assert_eq!(text(r#"{"k": "v"}"#).as_deref(), Some(r#"{"k":"v"}"#));
        assert_eq!(text("null"), None);
    }

    #[test]
    fn groups_are_a_list_or_space_separated_and_all_or_nothing() {
        let g = |json: &str| groups(&claims(&format!(r#"{{"g": {json}}}"#)), "g");
        assert_eq!(g(r#"["admin", "ops"]"#).as_deref(), Ok("admin,ops"));
        assert_eq!(g(r#"" admin  ops admin ""#).as_deref(), Ok("admin,ops"), "split at spaces, repeats dropped");
        assert_eq!(g(r#"["team a", "", "team a", "é"]"#).as_deref(), Ok("team a,é"), "a list keeps inner spaces");
        assert_eq!(g(r#""""#).as_deref(), Ok(""));
        assert_eq!(g("[]").as_deref(), Ok(""));
        assert_eq!(g("null").as_deref(), Ok(""));
        assert_eq!(groups(&claims("{}"), "g").as_deref(), Ok(""));
        for odd in [r#"["admin", 5]"#, r#"[["admin"]]"#, r#"[null]"#] {
            assert!(g(odd).unwrap_err().contains("a list holding something other than strings"), "{odd}");
        }
        for odd in ["5", "true", r#"{"admin": true}"#] {
            assert!(g(odd).unwrap_err().contains("neither a list of strings nor a space-separated string"), "{odd}");
        }
        // Never a part of the list: `admin,root` would be two groups, a control character a
        // header split, a name with spaces at its ends one `[[consumers]]` refuses.
        for odd in [r#"["admin,root"]"#, r#""admin,root""#, r#"["ops\r\nx-admin: true"]"#, r#""ops\tdev""#, r#"[" admin"]"#, r#"["admin\u00a0"]"#, r#"["a", "\u0000"]"#] {
            assert!(g(odd).unwrap_err().contains("holds a group name with"), "{odd}");
        }
        let many = |n: usize| format!("[{}]", (0..n).map(|i| format!(r#""g{i}""#)).collect::<Vec<_>>().join(","));
        assert_eq!(g(&many(MAX_GROUPS)).map(|t| t.split(',').count()), Ok(MAX_GROUPS));
        assert!(g(&many(MAX_GROUPS + 1)).unwrap_err().contains("more than 64 groups"));
        let long = format!(r#"["{}", "{}"]"#, "a".repeat(MAX_GROUPS_BYTES / 2), "b".repeat(MAX_GROUPS_BYTES / 2));
        assert!(g(&long).unwrap_err().contains("longer than 4096 bytes"));
    }

    #[test]
    fn cache_ttls_follow_the_settings_and_never_pass_exp() {
        let s = settings("");
        let now = 1_000_000_000; // ms
        let active = |exp: &str| Answer::Active(claims(&format!(r#"{{"active": true{exp}}}"#)));
        assert_eq!(ttl_ms(&s, &active(""), now), 60_000, "no `exp`: cache_ttl_s");
        assert_eq!(ttl_ms(&s, &active(r#", "exp": 1000030"#), now), 30_000, "`exp` in 30 s: until then");
        assert_eq!(ttl_ms(&s, &active(r#", "exp": 1003600"#), now), 60_000, "`exp` in an hour: cache_ttl_s");
        assert_eq!(ttl_ms(&s, &active(r#", "exp": 1000000"#), now), 0, "expires now: not cached");
        assert_eq!(ttl_ms(&s, &active(r#", "exp": 999000"#), now), 0, "expired: not cached");
        assert_eq!(ttl_ms(&s, &active(r#", "exp": -5"#), now), 0);
        assert_eq!(ttl_ms(&s, &active(r#", "exp": 1e300"#), now), 60_000);
        assert_eq!(ttl_ms(&s, &Answer::Inactive, now), 5_000);
        let off = settings(r#", "cache_ttl_s": 0, "negative_cache_ttl_s": 0"#);
        assert_eq!((ttl_ms(&off, &active(""), now), ttl_ms(&off, &Answer::Inactive, now)), (0, 0));
        assert!(!off.caches());

        // Used while younger than this route's TTL for its kind, and an active one before `exp`.
        let stored = now - 10_000;
        assert!(usable(&s, &active(""), stored, now));
        assert!(usable(&s, &active(r#", "exp": 1000001"#), stored, now));
        assert!(!usable(&s, &active(r#", "exp": 1000000"#), stored, now), "a cached answer past its `exp` is not used");
        assert!(!usable(&s, &active(""), now - 60_000, now), "older than cache_ttl_s");
        assert!(usable(&s, &Answer::Inactive, now - 4_999, now));
        assert!(!usable(&s, &Answer::Inactive, now - 5_000, now), "older than negative_cache_ttl_s");
        assert!(!usable(&off, &active(""), now, now) && !usable(&off, &Answer::Inactive, now, now), "a route that does not cache uses no entry");
        assert!(usable(&s, &active(""), now + 5_000, now), "stored by a clock ahead of this one: fresh");
    }

    #[test]
    fn cache_entries_round_trip_and_keys_hide_the_token() {
        let s = settings("");
        let a = Answer::Active(claims(r#"{"active": true, "sub": "alice", "exp": 12}"#));
        assert_eq!(decode(&encode(&a, 77)), Some((a, 77)));
        assert_eq!(encode(&Answer::Inactive, 5), b"15\n{\"active\":false}");
        assert_eq!(decode(&encode(&Answer::Inactive, 5)), Some((Answer::Inactive, 5)));
        assert_eq!(decode(b"25\n{\"active\":true}"), None, "another format is a miss");
        assert_eq!(decode(b"15\n{broken"), None);
        assert_eq!(decode(b"1x\n{\"active\":true}"), None);
        assert_eq!(decode(b"1{\"active\":true}"), None);

        let token = "ory_at_SECRET-token-value";
        let key = cache_key(&s, token);
        assert!(key.starts_with("t1:") && key.len() == 3 + 64, "{key}");
        assert!(!key.contains("SECRET"));
        assert_eq!(key, cache_key(&s, token), "stable");
        assert_ne!(key, cache_key(&s, "ory_at_SECRET-token-valuf"));
        // Another endpoint, client or hint under the same definition: another entry.
        for other in [r#", "client_id": "gw2""#, r#", "token_type_hint": """#] {
            let json = format!(r#"{{"endpoint": "http://idp/introspect", "client_secret": "s"{}}}"#, if other.contains("client_id") { other.to_owned() } else { format!(r#", "client_id": "gw"{other}"#) });
            let o = Settings::from_config(serde_json::from_str(&json).unwrap(), |s| Ok(s.to_owned())).unwrap();
            assert_ne!(cache_key(&o, token), key, "{other}");
        }
        let elsewhere = Settings { endpoint: "http://idp2/introspect".into(), ..s.clone() };
        assert_ne!(cache_key(&elsewhere, token), key);
        // Known vector: SHA-256 over the length-prefixed parts and the token.
        let mut d = Sha256::new();
        for p in ["http://idp/introspect", "gw", "access_token"] {
            d.update((p.len() as u64).to_be_bytes());
            d.update(p);
        }
        d.update(token);
        let hex: String = d.finalize().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(key, format!("t1:{hex}"));
    }
}
