//! `builtin:oauth2-introspection`: OAuth 2.0 Token Introspection (RFC 7662), as Kong's
//! oauth2-introspection, Tyk, APISIX and KrakenD do it. Opaque access tokens (Keycloak, Okta,
//! Auth0, Ory Hydra...) cannot be verified locally: for each request the plugin asks the
//! authorization server's introspection endpoint, through the `http-client` capability, whether
//! the bearer token is active, and caches the answer in `state`.
//!
//! ```toml
//! [plugins.introspect]
//! source = "builtin:oauth2-introspection"
//! capabilities = ["http-client"]        # add "files" for a `file:` secret
//! http_client = { allow = ["https://idp.example.com"], timeout_ms = 1000 }
//!
//! [[routes.plugins]]
//! plugin = "introspect"
//! [routes.plugins.config]
//! endpoint = "https://idp.example.com/oauth2/introspect"  # required; its origin in `http_client.allow`
//! client_id = "airlock"                 # required: the gateway's client at the server
//! client_secret = "file:introspect.secret" # required; inline, or `file:` in the `files` grant
//! token_header = "authorization"        # `Authorization: Bearer <token>` (default); another header: its whole value
//! token_query = "access_token"          # also read the token from this query parameter (default: not read)
//! token_type_hint = "access_token"      # sent with the token (default; "" sends none)
//! timeout_ms = 500                      # default: the grant's `timeout_ms`, which also bounds it
//! leeway_s = 30                         # clock skew allowed for `exp` and `nbf`
//! required_scopes = ["orders:read"]     # all of them in the answer's `scope`, split at spaces or a list (else 403)
//! audiences = ["orders-api"]            # `aud` names one of them (default: not checked)
//! issuers = ["https://idp.example.com/"] # `iss` is one of these (default: not checked); or `issuer = "..."`, one
//! consumer_claim = "sub"                # the claim naming the consumer
//! groups_claim = "groups"               # the answer's member listing its groups (default: none)
//! claims_to_headers = { sub = "x-user-id", scope = "x-scopes" } # upstream headers (a client's own removed)
//! upstream_headers = true               # X-Consumer-Id (X-Consumer-Groups, X-Anonymous-Consumer) upstream when a consumer is named
//! keep_token = false                    # remove the token before the upstream (default)
//! cache_ttl_s = 60                      # cache an active answer (never past its `exp`; 0: off)
//! negative_cache_ttl_s = 5              # cache an inactive answer (0: off)
//! realm = "airlock"                     # WWW-Authenticate: Bearer realm="airlock"
//! failure = "closed"                    # endpoint down, slow, non-200 or garbage: 503 ("open": let through)
//! anonymous = "guest"                   # consumer id used when no valid token is presented (default: refused);
//!                                       # needs `capabilities = ["http-client", "consumers"]`
//! ```
//!
//! Per request ([`OAuth2Introspection::on_request`]): the client's copies of the
//! `claims_to_headers` headers and of `X-Consumer-Id`, `X-Consumer-Groups` and
//! `X-Anonymous-Consumer` are removed first, whatever the outcome (with `anonymous`, a request an
//! earlier auth plugin authenticated is left as it is, its consumer headers included, as
//! `builtin:jwt` leaves it). Then the token is found ([`wire::find`]: `Bearer`, one or more
//! spaces, the token, as RFC 6750 2.1 and `builtin:jwt` have it); none is a 401 with
//! `WWW-Authenticate: Bearer realm="..."`, two (two header values, or the header and the query)
//! a 400 `invalid_request`. Its answer comes from the cache
//! (a `state` key that is a SHA-256 digest, never the token: [`introspection::cache_key`]) or
//! from a `POST` of `token=...&token_type_hint=...` to the endpoint with the client's HTTP Basic
//! credentials ([`wire`]). Inactive, expired, not yet valid, another issuer or audience: 401
//! `invalid_token`; a missing scope: 403 `insufficient_scope` (RFC 6750 3.1). Otherwise the
//! request goes on, without the token (unless `keep_token`), with the consumer from
//! `consumer_claim` and its groups from `groups_claim` ([`introspection::groups`]) in the context
//! (as `builtin:jwt` and `builtin:forward-auth` set them) and the `claims_to_headers`. No usable
//! answer: with `failure = "closed"` a 503 `auth_unavailable` with `Retry-After: 5`, the reason
//! logged (a warning at most every 10 s per instance).
//!
//! With `anonymous` ([`config::Config::anonymous`]), every 401 and 403 above (no token, a token
//! refused) and the `failure = "open"` pass become the anonymous consumer's request, as
//! `builtin:jwt` does it: its `[[consumers]]` groups, `consumer.anonymous` and
//! `X-Anonymous-Consumer: true`, the refused token removed (unless `keep_token`). The 400 and the
//! 503 stay.
//!
//! Modules: [`config`], [`wire`], [`introspection`]; the grant is checked with `http_client::check_granted`.

// Natively (unit tests) the plugin is only reached through `airlock_sdk::configure`.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

pub mod config;
pub mod introspection;
pub mod wire;

use airlock_sdk::serde_json::Value;
use airlock_sdk::state::{self, StateError};
use airlock_sdk::{Action, Descriptor, Plugin, Request, RequestEdit, ResponseInit, export_plugin, files, http_client, log};

use config::{Config, Failure, Settings};
use introspection::{Answer, Claims, NoAnswer, Refusal};
use wire::Found;

/// `Retry-After` of the 503 `auth_unavailable`, in seconds, as `builtin:forward-auth` sends it.
pub const RETRY_AFTER_SECS: u32 = 5;

/// Claims copied into the request context as `oauth2.<claim>` when they are strings, for later
/// plugins and templates (`${context.oauth2.client_id}`).
const CONTEXT_CLAIMS: [&str; 3] = ["sub", "client_id", "scope"];

/// Longest claim text put in the context or a header, in bytes.
const MAX_CLAIM_TEXT_BYTES: usize = 4096;

/// The configured plugin.
#[derive(Debug)]
pub struct OAuth2Introspection {
    /// The checked config.
    settings: Settings,
    /// Introspection failures, warned at most every 10 s per instance.
    outage: log::Throttled,
    /// State backend failures, likewise.
    state_outage: log::Throttled,
    /// Unusable consumer claims, likewise.
    odd_consumer: log::Throttled,
}

impl Plugin for OAuth2Introspection {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        let settings = Settings::from_config(config, |value| files::secret(value).map(std::borrow::Cow::into_owned))?;
        // Natively (unit tests) there is no gateway to ask.
        #[cfg(target_arch = "wasm32")]
        http_client::check_granted("endpoint", &settings.endpoint)?;
        Ok(Self {
            settings,
            outage: log::Throttled::new(10_000),
            state_outage: log::Throttled::new(10_000),
            odd_consumer: log::Throttled::new(10_000),
        })
    }

    /// The request phase only, no body.
    fn descriptor() -> Descriptor {
        Descriptor::request_only()
    }

    /// Finds the token, gets its answer (cached or asked), checks it, and lets the request on
    /// with its identity or answers the refusal.
    fn on_request(&self, req: &Request) -> Action {
        let s = &self.settings;
        // What the upstream reads as vouched for comes from this plugin only, whatever the
        // outcome (a refusal, `failure = "open"`, a token without the claim).
        req.edit(s.claims_to_headers.iter().map(|(_, header)| RequestEdit::RemoveHeader(header)));
        // Either credential (two auth plugins with `anonymous`), as `builtin:jwt`: the first
        // one's consumer stands, and its headers with it.
        if s.anonymous.is_some() && req.authenticated_before() {
            return Action::Continue;
        }
        airlock_sdk::consumer::remove_forged(req);
        let query = if s.token_query.is_some() { req.query() } else { None };
        let (token, in_header) =
            match wire::find(&req.header_all(&s.token_header), s.bearer_scheme, query.as_deref(), s.token_query.as_deref()) {
                Found::One { token, in_header } => (token, in_header),
                Found::Missing => return self.as_anonymous(req, None).unwrap_or_else(|| self.missing(req)),
                Found::Several => return self.sent_twice(req),
            };
        let presented = Some((in_header, query.as_deref()));
        if !wire::is_token_syntax(&token) {
            log::debug("token refused without a call: not printable ASCII, or too long");
            return self.as_anonymous(req, presented).unwrap_or_else(|| self.invalid(req));
        }
        let claims = match self.answer(&token) {
            Ok(Answer::Active(claims)) => claims,
            Ok(Answer::Inactive) => {
                log::debug("token refused: not active");
                return self.as_anonymous(req, presented).unwrap_or_else(|| self.invalid(req));
            }
            Err(no_answer) => return self.failed(req, in_header, query.as_deref(), &no_answer),
        };
        match introspection::check(s, &claims, i64::try_from(now_ms() / 1000).unwrap_or(i64::MAX)) {
            Ok(()) => {}
            Err(Refusal::Invalid(reason)) => {
                log::debug(format!("token refused: {reason}"));
                return self.as_anonymous(req, presented).unwrap_or_else(|| self.invalid(req));
            }
            Err(Refusal::Scope) => {
                log::debug("token refused: a required scope is missing");
                return self
                    .as_anonymous(req, presented)
                    .unwrap_or_else(|| self.insufficient_scope(req, "the token does not have the scope this route requires"));
            }
            Err(Refusal::ScopeUnreadable(reason)) => {
                log::debug(format!("token refused: the answer's {reason}: it grants no scope"));
                let message = "the authorization server gave this token's scopes in a form the gateway does not read, \
                               so it has none of the scopes this route requires";
                return self.as_anonymous(req, presented).unwrap_or_else(|| self.insufficient_scope(req, message));
            }
        }
        self.hide_token(req, in_header, query.as_deref());
        if !self.admit(req, &claims) {
            // No consumer named (a client-credentials token has no `sub`): what follows (a cache
            // keyed by consumer) must still tell this token's holder from another's. The cache
            // key's digest of the token, never the token.
            airlock_sdk::consumer::credential(req, &format!("oauth2:{}", introspection::cache_key(s, &token)));
        }
        Action::Continue
    }
}

impl OAuth2Introspection {
    /// The server's answer for `token`: from the cache when a usable entry is there, else from
    /// the endpoint (then cached, if its kind is). `Err` when there is no usable answer.
    fn answer(&self, token: &str) -> Result<Answer, NoAnswer> {
        let s = &self.settings;
        let key = s.caches().then(|| introspection::cache_key(s, token));
        if let Some(key) = &key {
            match state::get(key) {
                Ok(Some(entry)) => match introspection::decode(&entry) {
                    Some((answer, stored_at)) if introspection::usable(s, &answer, stored_at, now_ms()) => {
                        log::trace("introspection answer from the cache");
                        return Ok(answer);
                    }
                    Some(_) => log::trace("cached introspection answer too old for this route, or past its `exp`"),
                    None => log::debug("cache entry of another format, or damaged: asking again"),
                },
                Ok(None) => {}
                Err(e) => self.state_failed("look up", &e),
            }
        }
        let answer = introspection::judge(http_client::send(&self.call(token)))?;
        if let Some(key) = &key {
            let now = now_ms();
            let ttl_ms = introspection::ttl_ms(s, &answer, now);
            if ttl_ms > 0 {
                let entry = introspection::encode(&answer, now);
                if entry.len() > introspection::MAX_STATE_VALUE_BYTES {
                    log::debug(format!("introspection answer not cached: {} bytes, more than the state backend takes", entry.len()));
                } else if let Err(e) = state::set(key, &entry, ttl_ms) {
                    self.state_failed("store", &e);
                }
            }
        }
        Ok(answer)
    }

    /// The introspection call for `token` (RFC 7662 2.1).
    fn call(&self, token: &str) -> http_client::Request {
        let s = &self.settings;
        http_client::Request {
            method: "POST".into(),
            url: s.endpoint.clone(),
            headers: vec![
                ("content-type".into(), b"application/x-www-form-urlencoded".to_vec()),
                ("accept".into(), b"application/json".to_vec()),
                ("authorization".into(), s.client_authorization.as_bytes().to_vec()),
            ],
            body: Some(wire::introspection_body(token, &s.token_type_hint).into_bytes()),
            timeout_ms: s.timeout_ms,
        }
    }

    /// Removes the token from where it was found, unless `keep_token`; and every `token_query`
    /// parameter, even with the token in the header: an empty one (which carries no token, so
    /// does not make the token sent twice) is still the token's parameter, not the upstream's.
    fn hide_token(&self, req: &Request, in_header: bool, query: Option<&str>) {
        let s = &self.settings;
        if s.keep_token {
            return;
        }
        if in_header {
            req.remove_header(&s.token_header);
        }
        if let (Some(query), Some(name)) = (query, &s.token_query)
            && !wire::query_values(query, name).is_empty()
        {
            req.set_query(wire::strip_query(query, name).as_deref());
        }
    }

    /// Names the consumer (with its groups from `groups_claim`) and copies the claims an active
    /// token's answer carries. Whether a consumer was named.
    fn admit(&self, req: &Request, claims: &Claims) -> bool {
        let s = &self.settings;
        // Groups from the answer, if the route reads them; never those an earlier plugin gave
        // another consumer.
        let groups = s.groups_claim.as_deref().map_or(Ok(String::new()), |name| introspection::groups(claims, name));
        let named = match (introspection::consumer(claims, &s.consumer_claim), groups) {
            (Ok(Some(id)), Ok(groups)) => {
                self.name_consumer(req, &id, &groups, false);
                true
            }
            (Ok(Some(_)), Err(reason)) | (Err(reason), _) => {
                self.odd_consumer.warn(format!("allowed without a consumer: {reason}"));
                false
            }
            (Ok(None), _) => {
                log::debug(format!("allowed without a consumer: the answer has no `{}`", s.consumer_claim));
                false
            }
        };
        for claim in CONTEXT_CLAIMS {
            if let Some(text) = context_text(claims, claim).filter(|t| plain_text(t)) {
                req.context_set(&format!("oauth2.{claim}"), &text);
            }
        }
        for (claim, header) in &s.claims_to_headers {
            // A list `scope` as RFC 7662 writes it (space-separated), as it goes to the context.
            let text = if claim == "scope" {
                introspection::scope_text(claims.get(claim))
            } else {
                claims.get(claim).and_then(introspection::claim_text)
            };
            match text {
                Some(text) if plain_text(&text) => req.set_header(header, text),
                Some(_) => log::debug(format!("claim `{claim}` not sent as `{header}`: control characters, or longer than {MAX_CLAIM_TEXT_BYTES} bytes")),
                None => {}
            }
        }
        named
    }

    /// With `anonymous`: lets the request on as the anonymous consumer, in place of a refusal,
    /// as `builtin:jwt` does. `presented`: where the refused token was (in the header, else in
    /// the query), `None` when there was none; a refused token let through is removed as an
    /// accepted one is (unless `keep_token`): the upstream never gets it. `None` without
    /// `anonymous`: the caller refuses.
    fn as_anonymous(&self, req: &Request, presented: Option<(bool, Option<&str>)>) -> Option<Action> {
        let anonymous = self.settings.anonymous.as_ref()?;
        if let Some((in_header, query)) = presented {
            self.hide_token(req, in_header, query);
        }
        self.name_consumer(req, &anonymous.id, &anonymous.groups, true);
        Some(Action::Continue)
    }

    /// Names the consumer `id` with its comma-separated `groups` in the context and, with
    /// `upstream_headers`, to the upstream, as `builtin:jwt` does: `X-Consumer-Id`,
    /// `X-Consumer-Groups` when it has groups, and `X-Anonymous-Consumer: true` for the
    /// `anonymous` consumer. A consumer named from a token overrules an earlier auth plugin's
    /// anonymous fallback (`consumer.anonymous` removed).
    fn name_consumer(&self, req: &Request, id: &str, groups: &str, anonymous: bool) {
        airlock_sdk::consumer::name(req, id, groups, anonymous, self.settings.upstream_headers);
    }

    /// No token: 401 with the bare challenge (RFC 6750 3.1: no error code).
    fn missing(&self, req: &Request) -> Action {
        ResponseInit::error(401, "unauthorized", "no bearer token found in the request", &req.request_id())
            .header("www-authenticate", &self.settings.challenge)
            .into()
    }

    /// The token more than once: 400 `invalid_request`.
    fn sent_twice(&self, req: &Request) -> Action {
        ResponseInit::error(400, "bad_request", "the access token is sent more than once; send it once", &req.request_id())
            .header("www-authenticate", format!("{}, error=\"invalid_request\"", self.settings.challenge))
            .into()
    }

    /// Inactive, expired, or not for this route: 401 `invalid_token`. What was wrong is only
    /// logged (at debug), never sent.
    fn invalid(&self, req: &Request) -> Action {
        ResponseInit::error(401, "unauthorized", "invalid token", &req.request_id())
            .header("www-authenticate", format!("{}, error=\"invalid_token\"", self.settings.challenge))
            .into()
    }

    /// A required scope is missing: 403 `insufficient_scope` with `message`, naming the scopes the
    /// route needs.
    fn insufficient_scope(&self, req: &Request, message: &str) -> Action {
        let s = &self.settings;
        ResponseInit::error(403, "forbidden", message, &req.request_id())
            .header("www-authenticate", format!("{}, error=\"insufficient_scope\", scope=\"{}\"", s.challenge, s.required_scopes.join(" ")))
            .into()
    }

    /// The endpoint gave no usable answer: logs why, then refuses (503) or lets the request
    /// through unauthenticated (without the token; as the `anonymous` consumer, if configured),
    /// as `failure` says.
    fn failed(&self, req: &Request, in_header: bool, query: Option<&str>, no_answer: &NoAnswer) -> Action {
        if let Some(detail) = &no_answer.detail {
            log::debug(format!("{}: {detail}", no_answer.what));
        }
        self.outage.warn(outage_warning(&no_answer.what, self.settings.failure));
        match self.settings.failure {
            Failure::Closed => Action::Respond(
                ResponseInit::error(503, "auth_unavailable", "the request could not be authorized now; try again later", &req.request_id())
                    .header("retry-after", RETRY_AFTER_SECS.to_string()),
            ),
            // Unauthenticated: as the anonymous consumer, if there is one.
            Failure::Open => self.as_anonymous(req, Some((in_header, query))).unwrap_or_else(|| {
                self.hide_token(req, in_header, query);
                Action::Continue
            }),
        }
    }

    /// The state backend failed: the request goes on uncached.
    fn state_failed(&self, what: &str, e: &StateError) {
        match e {
            StateError::Full => log::debug(format!("introspection answer not cached: {e}")),
            _ => {
                log::debug(format!("cannot {what} a cached introspection answer: {e}"));
                self.state_outage.warn(state_warning(what, e));
            }
        }
    }
}

/// The warning for an endpoint that gave no usable answer: the kind of failure (`what`, one text
/// per kind) and what is done about it. Nothing of the request (token, timings, request id): the
/// gateway merges identical warning lines, so the same failure must read the same.
fn outage_warning(what: &str, failure: Failure) -> String {
    let policy = match failure {
        Failure::Closed => "refusing the request (503)",
        Failure::Open => "letting the request through unauthenticated (`failure = \"open\"`)",
    };
    format!("{what}; {policy}")
}

/// The warning for a state backend failure (`op`: `look up` or `store`), one text per kind: the
/// backend's own text (which may vary) is logged at debug level.
fn state_warning(op: &str, e: &StateError) -> String {
    let why = match e {
        StateError::Unavailable(_) => "the state backend is unavailable",
        StateError::Invalid(_) => "the state backend refused the operation",
        StateError::Full => "the state store is full",
    };
    format!("cannot {op} a cached introspection answer ({why}), asking the endpoint")
}

/// A claim copied into the context as `oauth2.<claim>`: a string as it is; `scope` also a list
/// of strings, joined with spaces ([`introspection::scope_text`]).
fn context_text(claims: &Claims, claim: &str) -> Option<String> {
    if claim == "scope" {
        introspection::scope_text(claims.get(claim))
    } else {
        claims.get(claim).and_then(Value::as_str).map(str::to_owned)
    }
}

/// Whether a claim's text may go into a header or the context: no control characters, not too
/// long.
fn plain_text(text: &str) -> bool {
    text.len() <= MAX_CLAIM_TEXT_BYTES && !text.chars().any(char::is_control)
}

/// Milliseconds since the epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

export_plugin!(OAuth2Introspection);

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#""endpoint": "http://127.0.0.1:9000/introspect", "client_id": "gw", "client_secret": "s""#;

    #[test]
    fn configure_checks_the_config() {
        assert!(airlock_sdk::configure::<OAuth2Introspection>(&format!("{{{BASE}}}")).is_ok());
        let err = airlock_sdk::configure::<OAuth2Introspection>("{}").err().unwrap();
        assert!(err.contains("missing field `endpoint`"), "{err}");
        let err = airlock_sdk::configure::<OAuth2Introspection>(&format!(r#"{{{BASE}, "failure": "maybe"}}"#)).err().unwrap();
        assert!(err.starts_with("`failure`"), "{err}");
        let err = airlock_sdk::configure::<OAuth2Introspection>(&format!(r#"{{{BASE}, "cache_ttl": 5}}"#)).err().unwrap();
        assert!(err.contains("unknown field `cache_ttl`"), "{err}");
        let err = airlock_sdk::configure::<OAuth2Introspection>(&format!(r#"{{{BASE}, "required_scopes": ["a", 5]}}"#)).err().unwrap();
        assert!(err.starts_with("`required_scopes[1]`"), "{err}");
    }

    #[test]
    fn only_the_request_phase_runs() {
        let plugin = airlock_sdk::configure::<OAuth2Introspection>(&format!("{{{BASE}}}")).unwrap();
        assert_eq!(plugin.configured_descriptor(), Descriptor::request_only());
    }

    /// The exact warning texts: one per kind of failure, nothing of the request in them.
    #[test]
    fn warnings_are_one_text_per_kind_of_failure() {
        assert_eq!(
            outage_warning("the introspection endpoint did not answer within the timeout", Failure::Closed),
            "the introspection endpoint did not answer within the timeout; refusing the request (503)"
        );
        assert_eq!(
            outage_warning("the introspection endpoint answered 500", Failure::Open),
            "the introspection endpoint answered 500; letting the request through unauthenticated (`failure = \"open\"`)"
        );
        let a = state_warning("look up", &StateError::Unavailable("connecting: no answer within 250 ms".into()));
        let b = state_warning("look up", &StateError::Unavailable("connection closed".into()));
        assert_eq!(a, b);
        assert_eq!(a, "cannot look up a cached introspection answer (the state backend is unavailable), asking the endpoint");
        assert_eq!(
            state_warning("store", &StateError::Invalid("value larger than 65536 bytes".into())),
            "cannot store a cached introspection answer (the state backend refused the operation), asking the endpoint"
        );
    }

    #[test]
    fn a_list_scope_goes_to_the_context_as_rfc_7662_writes_it() {
        let claims: Claims = airlock_sdk::serde_json::from_str(r#"{"scope": ["a", "b"], "sub": "alice", "client_id": 5}"#).unwrap();
        assert_eq!(context_text(&claims, "scope").as_deref(), Some("a b"));
        assert_eq!(context_text(&claims, "sub").as_deref(), Some("alice"));
        assert_eq!(context_text(&claims, "client_id"), None, "strings only");
    }

    #[test]
    fn claim_texts_with_controls_or_too_long_are_not_sent() {
        assert!(plain_text("alice"));
        assert!(!plain_text("a\r\nx-admin: true"));
        assert!(!plain_text(&"x".repeat(MAX_CLAIM_TEXT_BYTES + 1)));
    }
}
