//! The shape of `airlock.toml`, as serde types. Unknown keys are errors everywhere.
//!
//! Only syntax and types are checked here; references between sections (a route naming an
//! upstream, a chain entry naming a plugin) are checked when the gateway is built from the config,
//! where every error can still point at the key's line through the `Spanned` fields.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::bounds;

/// The whole config file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the gateway accepts client connections.
    #[serde(default = "default_listeners")]
    pub listeners: Vec<ListenerConfig>,
    /// Size limits applied to every request unless a route overrides them.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Timeouts applied to every upstream unless an upstream or route overrides them.
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    /// The Wasm runtime: compile cache and sandbox sizing.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// Named plugin definitions: where the component comes from and what it may do.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginConfig>,
    /// Named upstreams: the backends routes send requests to.
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// Chain entries that run on every route, before the route's own.
    #[serde(default)]
    pub global: GlobalConfig,
    /// Routes, matched by host, method and path (see `router` for precedence).
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// API consumers: who may call, with their credentials, for auth plugins.
    #[serde(default)]
    pub consumers: Vec<ConsumerConfig>,
    /// Where the `state` capability keeps its counters (rate limits, quotas).
    #[serde(default)]
    pub state: StateConfig,
    /// The admin listener: health, readiness, metrics and the admin API.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Prometheus metrics served on the admin listener.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Correlation ids and W3C trace context.
    #[serde(default)]
    pub tracing: TracingConfig,
    /// The JSON access log.
    #[serde(default)]
    pub access_log: AccessLogConfig,
    /// OTLP span export.
    #[serde(default)]
    pub otlp: OtlpConfig,
    /// Which plugin signatures are trusted, and whether third-party plugins must be signed.
    #[serde(default)]
    pub trust: TrustConfig,
    /// Usage analytics and anomaly flags (`/admin/analytics`, the dashboard).
    #[serde(default)]
    pub analytics: AnalyticsConfig,
    /// gzip for responses to clients that accept it.
    #[serde(default)]
    pub compression: CompressionConfig,
}

/// `[compression]`: responses gzipped on their way to clients that accept it (nginx's `gzip`,
/// Envoy's compressor, AWS API Gateway's `minimumCompressionSize`). Off unless enabled; a route's
/// `compress` turns it on or off for that route.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompressionConfig {
    /// On for every route without a `compress` of its own.
    pub enabled: bool,
    /// A response whose `Content-Length` is below this stays as it is (a streamed one of unknown
    /// length is compressed).
    pub min_bytes: u64,
    /// gzip level, 1 (fastest) to 9 (smallest).
    #[serde(deserialize_with = "bounds::gzip_level")]
    pub level: u32,
    /// Media types compressed (`text/*` for every `text/` type), matched without the response's
    /// parameters; each checked by [`media_type_problem`] as it is read.
    #[serde(deserialize_with = "media_types")]
    pub types: Vec<String>,
}

/// `compression.types`: each entry a media type a response's `Content-Type` can be, else refused
/// at its line ([`media_type_problem`]).
fn media_types<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct MediaType(String);
    impl<'de> Deserialize<'de> for MediaType {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            // Refused from inside the entry's own reading, so the error is located at the entry.
            struct Entry;
            impl serde::de::Visitor<'_> for Entry {
                type Value = MediaType;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a media type, as \"application/json\" or \"text/*\"")
                }
                fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<MediaType, E> {
                    match media_type_problem(v) {
                        Some(problem) => Err(E::custom(problem)),
                        None => Ok(MediaType(v.to_owned())),
                    }
                }
            }
            d.deserialize_str(Entry)
        }
    }
    let types: Vec<String> = Vec::<MediaType>::deserialize(d)?.into_iter().map(|t| t.0).collect();
    if types.is_empty() {
        // Nothing would ever be compressed: a mistake, not a setting (`enabled = false` is one).
        return Err(serde::de::Error::custom("an empty list compresses nothing: list the media types, leave `types` out for the defaults, or set `enabled = false`"));
    }
    Ok(types)
}

/// Why `entry` of `compression.types` could never match a response (or would match what must not
/// be compressed), if so: it must be `type/subtype` or `type/*`, tokens without spaces or
/// parameters, as the part of a `Content-Type` before its `;` is compared (case-insensitively).
pub fn media_type_problem(entry: &str) -> Option<String> {
    let shown = super::route_rules::escaped(entry);
    if entry.contains(';') {
        let bare = super::route_rules::escaped(entry.split(';').next().unwrap_or_default().trim());
        return Some(format!(
            "`{shown}` has parameters: a response's `Content-Type` is matched without its own (`{bare}` takes `{bare}; charset=utf-8` too), so list `{bare}`"
        ));
    }
    if entry.chars().any(char::is_whitespace) {
        return Some(format!("`{shown}` has a space: a media type is `type/subtype` without spaces, as `text/plain`"));
    }
    let Some((kind, subtype)) = entry.split_once('/') else {
        return Some(format!("`{shown}` is not a media type: `type/subtype`, as `application/json`, or `type/*`, as `text/*`"));
    };
    if kind == "*" {
        return Some(format!(
            "`{shown}` would compress every type, images, video and archives (compressed already) included: list the types, or `type/*` (`text/*`)"
        ));
    }
    let token = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'+-.^_`|~".contains(&b));
    if entry.contains('*') && !(subtype == "*" && token(kind)) {
        return Some(format!("`{shown}`: a wildcard is a whole subtype, as `text/*`, and nothing else"));
    }
    if !token(kind) || !(subtype == "*" || token(subtype)) {
        return Some(format!("`{shown}` is not a media type: `type/subtype`, as `application/json`, or `type/*`, as `text/*`"));
    }
    None
}

impl Default for CompressionConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            min_bytes: 1024,
            level: 5,
            types: [
                "application/json",
                "application/problem+json",
                "application/javascript",
                "application/xml",
                "application/graphql-response+json",
                "image/svg+xml",
                "text/*",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// `[trust]`: plugin signing policy. With `require_signatures`, every third-party component must
/// carry a `<file>.sig` (from `airlock plugin sign`) by one of `keys`; built-ins are trusted with
/// the binary.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustConfig {
    /// Refuse third-party plugins that are unsigned, tampered with, or signed by an untrusted key.
    pub require_signatures: bool,
    /// Trusted public keys, `ed25519:<base64>` (from `airlock plugin keygen`).
    pub keys: Vec<Spanned<String>>,
}

/// Which backend holds plugins' `state` (counters and keyed values with expiry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum StateBackend {
    /// In this process's memory: exact for one gateway, lost on restart.
    #[default]
    Memory,
    /// A shared Redis (standalone, or Redis Cluster through a cluster-aware proxy): limits hold
    /// across every gateway using it.
    Redis,
}

/// `[state]`: the backend of the `state` capability.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// `memory` (default) or `redis`.
    pub backend: StateBackend,
    /// Most keys the memory backend holds; past it, expired keys are evicted and, if none has
    /// expired, a new key takes the place of one nearest its expiry (a key stored without a TTL
    /// never gives way: with no such key sampled, the new key is refused).
    #[serde(deserialize_with = "bounds::at_least_one")]
    pub max_keys: usize,
    /// Most bytes of keys and stored values the memory backend holds: every key counts its
    /// bytes, a stored value its own too. At it, keys nearest their expiry make way as at
    /// `max_keys`; with only keys without a TTL left, a new key or value is refused (`full`).
    #[serde(deserialize_with = "bounds::at_least_one")]
    pub max_bytes: usize,
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS, required with
    /// `backend = "redis"`.
    pub redis_url: Option<Spanned<String>>,
    /// With `rediss://`: a PEM bundle of the CAs the server's certificate must chain to, instead
    /// of the built-in Mozilla roots (a managed Redis with its own CA, a private one).
    pub redis_ca_file: Option<Spanned<String>>,
    /// With `rediss://`: the client certificate chain (PEM, leaf first) presented to a Redis
    /// that asks for one (`tls-auth-clients yes`); needs `redis_key_file`.
    pub redis_cert_file: Option<Spanned<String>>,
    /// The private key of `redis_cert_file` (PEM: PKCS#8, PKCS#1 or SEC1).
    pub redis_key_file: Option<Spanned<String>>,
    /// The Redis password read from this file (a secret the orchestrator mounts), so that the
    /// config holds none; its trailing newline is dropped. Not with a password in `redis_url`.
    pub redis_password_file: Option<Spanned<String>>,
    /// What `redis_ca_file` and `redis_password_file` hold, read with the config.
    #[serde(skip)]
    pub(crate) redis_files: RedisFiles,
    /// Time to open a connection to Redis, in milliseconds.
    #[serde(deserialize_with = "bounds::at_least_one")]
    pub connect_timeout_ms: u64,
    /// Time one state operation may take, connection included, in milliseconds; past it the
    /// operation fails as `unavailable` and the plugin's policy applies.
    #[serde(deserialize_with = "bounds::at_least_one")]
    pub timeout_ms: u64,
    /// Whether `/ready` fails while the Redis backend does not serve the limiters. Off by default:
    /// every replica shares one Redis, so failing readiness on it takes the whole fleet out of
    /// rotation at once, even where the limiters fail open and traffic is served.
    pub required_for_ready: bool,
}

/// The contents of `[state] redis_ca_file`, `redis_cert_file`, `redis_key_file` and
/// `redis_password_file`, read when the config is parsed (as `[admin] token_file` is), so that
/// building the store reads no file.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RedisFiles {
    /// The CA bundle, PEM.
    pub(crate) ca_pem: Option<Vec<u8>>,
    /// The client certificate chain and its private key, PEM.
    pub(crate) client: Option<(Vec<u8>, Vec<u8>)>,
    /// The password.
    pub(crate) password: Option<String>,
}

impl std::fmt::Debug for RedisFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password or the key itself: a config is logged at debug.
        f.debug_struct("RedisFiles")
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .field("client", &self.client.as_ref().map(|_| "[redacted]"))
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl StateConfig {
    /// The keys that only the Redis backend reads.
    pub const REDIS_SETTINGS: [&'static str; 5] = ["redis_url", "redis_ca_file", "redis_cert_file", "redis_key_file", "redis_password_file"];

    /// The value of one of [`StateConfig::REDIS_SETTINGS`], if set.
    pub fn redis_setting(&self, key: &str) -> Option<&Spanned<String>> {
        match key {
            "redis_url" => self.redis_url.as_ref(),
            "redis_ca_file" => self.redis_ca_file.as_ref(),
            "redis_cert_file" => self.redis_cert_file.as_ref(),
            "redis_key_file" => self.redis_key_file.as_ref(),
            "redis_password_file" => self.redis_password_file.as_ref(),
            _ => None,
        }
    }
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            backend: StateBackend::Memory,
            max_keys: 1_000_000,
            max_bytes: crate::state::memory::DEFAULT_MAX_BYTES,
            redis_url: None,
            redis_ca_file: None,
            redis_cert_file: None,
            redis_key_file: None,
            redis_password_file: None,
            redis_files: RedisFiles::default(),
            connect_timeout_ms: 1_000,
            timeout_ms: 100,
            required_for_ready: false,
        }
    }
}

/// One API consumer. Auth plugins granted the `consumers` capability receive every consumer in
/// their config (under `consumers`); on success they set `consumer` and `consumer.groups` in the
/// request context.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerConfig {
    /// The consumer's id, unique (shown in logs, sent upstream as `X-Consumer-Id` when asked).
    pub id: Spanned<String>,
    /// Groups, for ACLs.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Credentials by kind, read by the auth plugin of that kind (e.g. `keys`, `basic`, `jwt`):
    /// see each plugin's documentation. Secrets may be given as hashes.
    #[serde(default)]
    pub credentials: toml::Table,
}

fn default_listeners() -> Vec<ListenerConfig> {
    vec![ListenerConfig {
        address: Spanned::new(0..0, "127.0.0.1:8080".to_owned()),
        tls: None,
        trusted_proxies: Vec::new(),
        proxy_protocol: false,
        proxy_protocol_from: Vec::new(),
    }]
}

/// One listening socket (plain HTTP/1.1 and HTTP/2 prior knowledge on the same port).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// `ip:port` to bind, e.g. `"0.0.0.0:8080"`. Port 0 picks a free port.
    pub address: Spanned<String>,
    /// Serve HTTPS on this listener (otherwise plain HTTP/1.1 and h2c).
    pub tls: Option<ListenerTlsConfig>,
    /// Load balancers in front of this listener (CIDRs or addresses) whose `X-Forwarded-For`
    /// names the client: the request's client IP is then the rightmost address in it that is not
    /// one of them. Empty: the client is the TCP peer.
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
    /// Every connection starts with a PROXY protocol header (v1 or v2, as an L4 balancer writes
    /// it), read before TLS and HTTP: the client it announces is the connection's peer
    /// ([`crate::proxy_protocol`]). A connection without a valid one is closed.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// With `proxy_protocol`: the balancers (CIDRs or addresses) allowed to send the header.
    /// A connection from any other peer is closed before a byte of it is read, so a client that
    /// reaches the listener past the balancer cannot announce an address. Empty: any peer.
    #[serde(default)]
    pub proxy_protocol_from: Vec<Spanned<String>>,
}

/// `[listeners.tls]`: certificates (chosen by SNI), and optional client certificate
/// authentication (mTLS).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsConfig {
    /// Certificate chains with their keys; the first is served to clients whose SNI names no
    /// other (or who send none).
    pub certificates: Vec<CertificatePair>,
    /// PEM bundle of the CAs client certificates must chain to; enables mTLS.
    pub client_ca: Option<Spanned<String>>,
    /// With `client_ca`: `required` (default) refuses clients without a valid certificate,
    /// `optional` lets them in without an identity. Without `client_ca`, a config error: no
    /// client certificate would be asked for.
    pub client_auth: Option<Spanned<ClientAuth>>,
}

/// One certificate chain and its private key, PEM files relative to the config file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CertificatePair {
    /// The chain, leaf first.
    pub cert: Spanned<String>,
    /// The leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Spanned<String>,
}

/// Whether a TLS listener with `client_ca` requires a client certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAuth {
    /// A valid client certificate is required to connect.
    #[default]
    Required,
    /// A client certificate is verified if presented; clients without one get no identity.
    Optional,
}

/// Request and response size limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request line plus headers accepted, in bytes (431 beyond it); also the most bytes
    /// of header lines a plugin's changes may make of them.
    #[serde(deserialize_with = "bounds::at_least_one")]
    pub max_header_bytes: usize,
    /// Largest number of request headers accepted (431 beyond it); also the most a plugin's
    /// changes may make of them.
    #[serde(deserialize_with = "bounds::header_lines")]
    pub max_headers: usize,
    /// Largest request body accepted, and largest body buffered for a plugin, in bytes (413 beyond it).
    pub max_body_bytes: u64,
    /// Most response header lines: an upstream response with more is answered 502, and a
    /// plugin's header changes past it are ignored (and logged), so clients never see more.
    #[serde(deserialize_with = "bounds::header_lines")]
    pub max_response_headers: usize,
    /// Most bytes of response header lines (each line counted as name, value and four bytes):
    /// an upstream response with more is answered 502 (Envoy's default is 60 KiB), and a
    /// plugin's changes past it are ignored (and logged).
    #[serde(deserialize_with = "bounds::at_least_one")]
    pub max_response_header_bytes: usize,
    /// What becomes of a client's request header whose name has an underscore.
    pub headers_with_underscores: UnderscoreHeaders,
    /// What becomes of a request path holding an encoded slash or backslash (`%2F`, `%5C`).
    pub encoded_slashes: EncodedSlashes,
    /// Most client connections served at once, over all listeners (the admin listener apart);
    /// at the cap the listeners stop accepting until one closes (`workers::ConnectionBalancer`).
    /// Left out: derived from the open-file limit (`connections::connection_limit`).
    #[serde(default, deserialize_with = "bounds::at_least_one_opt", skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Most connections one client address may hold open at once ([`crate::client_limit`]);
    /// one over it is closed as it is accepted. Left out: no limit.
    #[serde(default, deserialize_with = "bounds::at_least_one_opt", skip_serializing_if = "Option::is_none")]
    pub max_connections_per_client: Option<usize>,
    /// Most requests (streams) one HTTP/2 client connection may have open at once, announced
    /// in its `SETTINGS_MAX_CONCURRENT_STREAMS`: each may hold an upstream connection, so this
    /// bounds what one client connection costs in descriptors ([`crate::connections`]).
    #[serde(deserialize_with = "bounds::concurrent_streams")]
    pub max_concurrent_streams: u32,
}

/// A client's request header named with `_` (`x_consumer_id`): CGI-style upstreams (PHP, Rack,
/// WSGI) read it as the `x-consumer-id` an auth plugin vouches for, so a client could slip an
/// identity past the plugin that strips the dashed name (the CVE-2024-45614 class). nginx drops
/// such headers by default; Envoy's `headers_with_underscores_action` offers the same three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum UnderscoreHeaders {
    /// Removed before routing: plugins and the upstream never see them.
    #[default]
    Drop,
    /// The request is answered 400.
    Reject,
    /// Kept, as any other header.
    Allow,
}

/// A request path holding `%2F` (or `%5C`, a backslash some servers read as `/`) inside a
/// segment: the gateway routes `/reports%2F7` as one segment, but every PEP 3333 (WSGI) server
/// (gunicorn, uWSGI, Werkzeug: Flask, Django) decodes `PATH_INFO`, so the upstream serves
/// `/reports/7` past that route's plugins; Tomcat and Spring do the same when told to. Envoy's
/// `path_with_escaped_slashes_action` offers the same choice. Kept by default: APIs put encoded
/// slashes in ids (GitLab's `projects/group%2Fproject`), and an upstream that keeps them whole
/// is not fooled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum EncodedSlashes {
    /// Left as they are: data inside a segment, for the route and the upstream alike.
    #[default]
    Keep,
    /// The request is answered 400.
    Reject,
    /// Decoded to `/` before the path is normalized and routed, so the route, the plugins and
    /// the upstream all see the segments an upstream that decodes them would.
    Decode,
}

/// Default `limits.max_concurrent_streams`: the least RFC 9113 (6.5.2) recommends, so clients
/// keep their parallelism, and the value Envoy's edge guidance sets (nginx: 128); hyper's own
/// default of 200 let one client connection hold 200 upstream connections.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 100;

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            max_body_bytes: 10 * 1024 * 1024,
            max_response_headers: 100,
            max_response_header_bytes: 64 * 1024,
            headers_with_underscores: UnderscoreHeaders::Drop,
            encoded_slashes: EncodedSlashes::Keep,
            max_connections: None,
            max_connections_per_client: None,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
        }
    }
}

impl LimitsConfig {
    /// The bounds plugins' header changes are held to: the same as the gateway's own.
    pub fn header_limits(&self) -> crate::exchange::HeaderLimits {
        use crate::exchange::{HeaderBound, HeaderLimits};
        HeaderLimits {
            request: HeaderBound { count: self.max_headers, bytes: self.max_header_bytes },
            response: HeaderBound { count: self.max_response_headers, bytes: self.max_response_header_bytes },
        }
    }
}

/// Timeouts, in milliseconds.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsConfig {
    /// Time to open a TCP connection to an upstream target (504 beyond it).
    #[serde(deserialize_with = "bounds::at_least_one")]
    pub connect_ms: u64,
    /// Time from sending the request upstream to receiving the response headers (504 beyond it).
    #[serde(deserialize_with = "bounds::at_least_one")]
    pub request_ms: u64,
    /// How long an idle keep-alive connection (client side or upstream side) is kept open; an idle
    /// HTTP/2 client connection gets a GOAWAY (`keepalive::serve_until_idle`).
    #[serde(deserialize_with = "bounds::at_least_one")]
    pub idle_ms: u64,
    /// How long a switched connection (a WebSocket after its `101`) is kept with no byte passing
    /// either way; then both sides are closed (`proxy::upgrade::tunnel`).
    #[serde(deserialize_with = "bounds::at_least_one")]
    pub tunnel_idle_ms: u64,
    /// Longest wait for the next piece of an upstream's streamed response body; past it the
    /// response is cut off (`proxy::body::IdleWatch`), so a stalled upstream cannot hold a
    /// client connection for good. Long enough by default for quiet event streams.
    #[serde(deserialize_with = "bounds::at_least_one")]
    pub body_idle_ms: u64,
    /// On shutdown, how long in-flight requests get to finish before connections are closed.
    pub drain_ms: u64,
    /// On shutdown, how long the gateway goes on accepting and serving, with `/ready` failing,
    /// before it stops accepting and drains: the time a load balancer or Kubernetes takes to stop
    /// sending it new connections (0: stop accepting at once).
    pub shutdown_delay_ms: u64,
    /// Longest an HTTP/1.1 client may take no byte of its response (nginx's `send_timeout`), or
    /// an HTTP/2 client make no room for a response's next piece: past it the connection, and the
    /// upstream exchanges feeding it, are closed (`keepalive::serve`,
    /// `keepalive::serve_until_idle`), so a client that stops reading cannot hold them for good.
    #[serde(deserialize_with = "bounds::at_least_one")]
    pub send_ms: u64,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        Self {
            connect_ms: 5_000,
            request_ms: 30_000,
            idle_ms: 60_000,
            tunnel_idle_ms: 300_000,
            body_idle_ms: 300_000,
            drain_ms: 10_000,
            shutdown_delay_ms: 0,
            send_ms: 60_000,
        }
    }
}

/// The Wasm sandbox and its compile cache.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Where compiled components are cached (default: `$XDG_CACHE_HOME/airlock` or `~/.cache/airlock`).
    pub cache_dir: Option<PathBuf>,
    /// Set to false to compile every component at every start.
    pub compile_cache: bool,
    /// Most plugin instances alive at once, over all plugins (sizes the pooling allocator); a call
    /// finding them all taken waits for a place, then is answered 503 (`runtime::budget`).
    #[serde(deserialize_with = "bounds::instances")]
    pub max_instances: u32,
    /// Default memory cap of one plugin instance, in MiB.
    #[serde(deserialize_with = "bounds::memory_mb")]
    pub memory_mb: u32,
    /// Most linear memory every plugin instance may hold together, in MiB (default: half the
    /// machine's memory, where the system says; else no bound beyond the instances').
    #[serde(deserialize_with = "bounds::plugin_memory_mb")]
    pub plugin_memory_mb: Option<u64>,
    /// Default CPU deadline of one phase call, in milliseconds (at most a minute).
    #[serde(deserialize_with = "bounds::cpu_ms")]
    pub cpu_ms: u64,
    /// Request worker threads, each serving its connections start to finish (default: one per
    /// core).
    pub worker_threads: Option<std::num::NonZeroUsize>,
}

impl RuntimeConfig {
    /// The plugins' memory budget in bytes: `plugin_memory_mb`, or half of `machine_mib`, or
    /// none (`usize::MAX`) when neither is known.
    pub fn plugin_memory_bytes(&self, machine_mib: Option<u64>) -> usize {
        let mib = self.plugin_memory_mb.or(machine_mib.map(|m| (m / 2).max(1)));
        mib.and_then(|m| usize::try_from(m.saturating_mul(1024 * 1024)).ok()).unwrap_or(usize::MAX)
    }

    /// The number of request worker threads: `worker_threads`, or one per core.
    pub fn worker_count(&self) -> usize {
        self.worker_threads.or_else(|| std::thread::available_parallelism().ok()).map_or(1, std::num::NonZeroUsize::get)
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self { cache_dir: None, compile_cache: true, max_instances: 512, memory_mb: 64, plugin_memory_mb: None, cpu_ms: 100, worker_threads: None }
    }
}

/// How a plugin's instances are shared between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// A pool of warm, configured instances; one request at a time per instance.
    #[default]
    Pool,
    /// A fresh instance for every phase call: no instance ever sees two requests.
    Request,
}

/// What the gateway does when a plugin traps, overruns its deadline or its memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// Answer 500 with a request id (the safe default for auth and policy plugins).
    #[default]
    Closed,
    /// Skip the failed plugin and go on as if it had returned `continue`.
    Open,
}

/// A named plugin definition.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// `builtin:<name>` or a path to a `.wasm` component (relative to the config file).
    pub source: Spanned<String>,
    /// Host capabilities granted beyond the baseline (`log`, `crypto`, the harmless WASI part):
    /// `state`, `http-client`, `files`, `consumers`.
    #[serde(default)]
    pub capabilities: Vec<Spanned<String>>,
    /// What the `http-client` capability allows: required with it, refused without it.
    pub http_client: Option<HttpClientGrantConfig>,
    /// What the `files` capability allows: required with it, refused without it.
    pub files: Option<FilesGrantConfig>,
    /// Memory cap of one instance, in MiB (default: `runtime.memory_mb`).
    #[serde(default, deserialize_with = "bounds::memory_mb_opt")]
    pub memory_mb: Option<u32>,
    /// CPU deadline of one phase call, in milliseconds (default: `runtime.cpu_ms`; at most a
    /// minute).
    #[serde(default, deserialize_with = "bounds::cpu_ms_opt")]
    pub cpu_ms: Option<u64>,
    /// Instance sharing (default `pool`).
    #[serde(default)]
    pub isolation: Isolation,
    /// Failure policy for chain entries that do not set their own (default `closed`).
    #[serde(default)]
    pub failure: FailurePolicy,
    /// Most warm instances kept idle per chain entry, at least 1 (one is always kept).
    #[serde(default, deserialize_with = "bounds::at_least_one_opt")]
    pub pool_size: Option<usize>,
    /// Uses after which a warm instance is retired and replaced.
    #[serde(default, deserialize_with = "bounds::at_least_one_opt")]
    pub max_uses: Option<u64>,
}

/// `[plugins.<name>.http_client]`: where a plugin granted `http-client` may call.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpClientGrantConfig {
    /// Origins (`scheme://host[:port]`, http or https) calls may go to; nothing else is reachable.
    pub allow: Vec<Spanned<String>>,
    /// Longest one call may take, in milliseconds (default 5000).
    #[serde(default = "default_http_timeout_ms")]
    pub timeout_ms: u64,
    /// Largest response body the plugin receives, in bytes (default 1 MiB).
    #[serde(default = "default_http_max_response_bytes")]
    pub max_response_bytes: u64,
}

fn default_http_timeout_ms() -> u64 {
    crate::runtime::host::http_client::DEFAULT_TIMEOUT_MS
}

fn default_http_max_response_bytes() -> u64 {
    crate::runtime::host::http_client::DEFAULT_MAX_RESPONSE_BYTES
}

/// `[plugins.<name>.files]`: the directory a plugin granted `files` may read.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FilesGrantConfig {
    /// The directory (relative to the config file), read-only; the plugin sees it as `/`.
    pub dir: Spanned<String>,
}

/// Where `Host` sent upstream comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum HostHeader {
    /// The upstream target's `host:port` (like nginx's default and Kong's `preserve_host = false`).
    #[default]
    Upstream,
    /// The `Host` the client sent.
    Preserve,
}

/// The protocol an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1, cleartext or (with `https://` targets) TLS.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge over cleartext TCP (gRPC servers without TLS).
    H2c,
    /// HTTP/2 over TLS, negotiated by ALPN.
    H2,
}

/// How an upstream chooses the target of a request (`balance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Smooth weighted round-robin (nginx's default).
    #[default]
    RoundRobin,
    /// The target with the fewest requests in flight for its weight (nginx's `least_conn`,
    /// Envoy's `LEAST_REQUEST`).
    LeastRequests,
}

/// `[upstreams.<name>.tls]`: how TLS upstreams are verified, and the client certificate the
/// gateway presents to them (mutual TLS).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// PEM file of the CAs trusted for this upstream (relative to the config file), instead of
    /// the system's root certificates.
    pub ca_file: Option<Spanned<String>>,
    /// Name sent as SNI and checked against the certificate (default: the target's host).
    pub server_name: Option<Spanned<String>>,
    /// PEM file of the client certificate chain (leaf first) presented to the upstream, relative
    /// to the config file; needs `key`.
    pub cert: Option<Spanned<String>>,
    /// PEM file of `cert`'s private key (PKCS#8, PKCS#1 or SEC1), relative to the config file;
    /// needs `cert`. Shown as `[redacted]` by `/admin/config`.
    pub key: Option<Spanned<String>>,
}

/// Most `weight` a target may have: a weighted upstream's round is made once, as long as the
/// weights' sum (divided by their greatest common divisor).
pub const MAX_TARGET_WEIGHT: u32 = 1_000;

/// One entry of an upstream's `targets`: an address (weight 1), or an address with its weight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum TargetConfig {
    /// `"host:port"`, `"http://host:port"` or `"https://host:port"`, weight 1.
    Address(String),
    /// `{ address = "host:port", weight = 3 }`.
    Weighted(WeightedTarget),
}

/// A target with its weight.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedTarget {
    /// As a plain entry's address.
    pub address: String,
    /// Its share of the requests against the other targets' weights, 0 to
    /// [`MAX_TARGET_WEIGHT`]: 0 takes it out of rotation (draining it). Default 1.
    #[serde(default = "default_weight", deserialize_with = "bounds::weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

impl TargetConfig {
    /// The target's address as written.
    pub fn address(&self) -> &str {
        match self {
            TargetConfig::Address(address) | TargetConfig::Weighted(WeightedTarget { address, .. }) => address,
        }
    }

    /// Its weight (1 unless given).
    pub fn weight(&self) -> u32 {
        match self {
            TargetConfig::Address(_) => 1,
            TargetConfig::Weighted(w) => w.weight,
        }
    }
}

impl<'de> Deserialize<'de> for TargetConfig {
    // By hand, not `untagged`: a mistake in a table names its key ("unknown field `wieght`")
    // instead of "did not match any variant".
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entry;
        impl<'de> serde::de::Visitor<'de> for Entry {
            type Value = TargetConfig;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a target: \"host:port\" or { address = \"host:port\", weight = N }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TargetConfig, E> {
                Ok(TargetConfig::Address(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<TargetConfig, A::Error> {
                WeightedTarget::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(TargetConfig::Weighted)
            }
        }
        d.deserialize_any(Entry)
    }
}

/// The values a route's header condition accepts: one string or a list of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeaderValues(pub Vec<String>);

impl<'de> Deserialize<'de> for HeaderValues {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Values;
        impl<'de> serde::de::Visitor<'de> for Values {
            type Value = HeaderValues;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a header value or a list of them")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HeaderValues, E> {
                Ok(HeaderValues(vec![v.to_owned()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<HeaderValues, A::Error> {
                let mut values = Vec::new();
                while let Some(value) = seq.next_element::<String>()? {
                    values.push(value);
                }
                Ok(HeaderValues(values))
            }
        }
        d.deserialize_any(Values)
    }
}

/// A named upstream: one or more targets, balanced round-robin (by weight, when given).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `host:port`, `http://host:port` or `https://host:port` of each target (one scheme for all),
    /// or `{ address = "...", weight = N }` for a target's share of the requests.
    pub targets: Spanned<Vec<Spanned<TargetConfig>>>,
    /// `http1` (default), `h2c` or `h2` (TLS; targets need no `https://`).
    #[serde(default = "default_protocol")]
    pub protocol: Spanned<UpstreamProtocol>,
    /// TLS verification settings, for `https://` targets or protocol `h2`.
    pub tls: Option<UpstreamTlsConfig>,
    /// `Host` header policy (default `upstream`).
    #[serde(default)]
    pub host_header: HostHeader,
    /// Overrides `timeouts.connect_ms`.
    #[serde(default, deserialize_with = "bounds::at_least_one_opt")]
    pub connect_timeout_ms: Option<u64>,
    /// Overrides `timeouts.request_ms`.
    #[serde(default, deserialize_with = "bounds::at_least_one_opt")]
    pub request_timeout_ms: Option<u64>,
    /// Most idle keep-alive connections kept per target.
    pub max_idle_connections: Option<usize>,
    /// Idle keep-alive timeout of this upstream's pooled connections; overrides
    /// `timeouts.idle_ms` for them (set it below the backend's own keep-alive timeout).
    #[serde(default, deserialize_with = "bounds::at_least_one_opt")]
    pub idle_ms: Option<u64>,
    /// Failures in a row (a failed connect, a broken exchange, an answer that is not HTTP, no
    /// response within the timeout) that mark a target down (skipped for `fail_timeout_ms`);
    /// 0 never marks one. Default 3.
    pub max_fails: Option<u32>,
    /// How long a target marked down is skipped before it is tried again. Default 10000.
    #[serde(default, deserialize_with = "bounds::at_least_one_opt")]
    pub fail_timeout_ms: Option<u64>,
    /// Active health checks: each target probed on its own schedule, traffic or not.
    pub health_check: Option<Spanned<HealthCheckConfig>>,
    /// Statuses (4xx/5xx) on which an idempotent request with a whole body is sent to the next
    /// target instead of being answered (nginx's `proxy_next_upstream http_502 ...`).
    pub retry_on: Option<Spanned<Vec<u16>>>,
    /// Whether an idempotent request with a whole body whose connection a target closed or
    /// reset before any response head (the target crashed or was stopped mid-request) is sent
    /// to the next target (nginx's `proxy_next_upstream error`, Envoy's `retry_on: reset`).
    /// Default false.
    pub retry_on_reset: Option<bool>,
    /// How long one target has to send the response head of an idempotent request with a whole
    /// body before the request goes to the next target (nginx's `proxy_next_upstream timeout`,
    /// Envoy's `per_try_timeout`); unset, a request waits for one target until the timeout.
    #[serde(default, deserialize_with = "bounds::at_least_one_opt")]
    pub try_timeout_ms: Option<u64>,
    /// Session affinity: what a request's target is chosen by (`ip`, `consumer`, `path`,
    /// `header:<name>`, `cookie:<name>`, `query:<name>`) instead of round-robin.
    pub hash_on: Option<Spanned<String>>,
    /// With `hash_on = "cookie:<name>"`: the gateway makes that cookie for a client that sent
    /// none, so sticky sessions do not depend on the application setting one (Kong's
    /// `hash_on = "cookie"`, nginx's `sticky cookie`). Opt-in: a `hash_on` on the application's
    /// own session cookie must never see the gateway invent it.
    pub hash_cookie: Option<Spanned<HashCookieConfig>>,
    /// `round_robin` (default) or `least_requests`: the target with the fewest requests in
    /// flight for its weight. Not with `hash_on`.
    pub balance: Option<Spanned<Balance>>,
    /// Most requests in flight to the upstream at once (sent, and not yet answered in full),
    /// per gateway process; one more is answered 503 `upstream_overloaded` without being sent
    /// (Envoy's circuit breaker `max_requests`). None: no limit.
    #[serde(default, deserialize_with = "bounds::max_requests")]
    pub max_requests: Option<u32>,
}

/// `[upstreams.<name>] hash_cookie`: the attributes of the `hash_on` cookie the gateway sets on a
/// response to a client that came without it (checked in `proxy::upstream_config`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HashCookieConfig {
    /// The cookie's `Path`: the paths the browser sends it back on. Default `/`.
    pub path: Option<Spanned<String>>,
    /// Its `Max-Age`, in seconds; left out, a session cookie (gone when the browser closes).
    #[serde(default, deserialize_with = "bounds::cookie_max_age")]
    pub max_age_s: Option<u64>,
}

/// `[upstreams.<name>.health_check]`: a `GET` (or a gRPC health check) sent to every target
/// every `interval_ms`, so a target that is down is taken out of rotation before a client's
/// request finds it, and one that recovers is put back once it passes again.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// The path (and query) probed, from `/`; exclusive with `grpc_service`.
    pub path: Option<Spanned<String>>,
    /// Probe with the gRPC health checking protocol instead (`grpc.health.v1.Health/Check`,
    /// h2c and h2 upstreams): the service asked about, `""` for the whole server. A gRPC server
    /// answers a plain `GET` with HTTP 200 whatever its state, so a `path` check cannot tell.
    pub grpc_service: Option<Spanned<String>>,
    /// The `Host` header of a probe (default: the target's `host:port`).
    pub host: Option<Spanned<String>>,
    /// Time between two probes of a target. Default 5000.
    #[serde(default = "default_check_interval", deserialize_with = "bounds::check_interval")]
    pub interval_ms: u64,
    /// Time a probe may take (connect and response head), at most `interval_ms`. Default 2000
    /// (or `interval_ms`, if shorter).
    #[serde(default, deserialize_with = "bounds::at_least_one_spanned")]
    pub timeout_ms: Option<Spanned<u64>>,
    /// Failed probes in a row that take a target out of rotation. Default 3.
    #[serde(default = "default_unhealthy_threshold", deserialize_with = "bounds::at_least_one")]
    pub unhealthy_threshold: u32,
    /// Passed probes in a row that put it back. Default 2.
    #[serde(default = "default_healthy_threshold", deserialize_with = "bounds::at_least_one")]
    pub healthy_threshold: u32,
    /// Statuses a healthy target answers (default: any 2xx or 3xx).
    pub statuses: Option<Spanned<Vec<u16>>>,
}

fn default_check_interval() -> u64 {
    5_000
}

/// `health_check.timeout_ms` left out.
pub const DEFAULT_CHECK_TIMEOUT_MS: u64 = 2_000;

fn default_unhealthy_threshold() -> u32 {
    3
}

fn default_healthy_threshold() -> u32 {
    2
}

fn default_protocol() -> Spanned<UpstreamProtocol> {
    Spanned::new(0..0, UpstreamProtocol::Http1)
}

/// Chain entries shared by every route.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GlobalConfig {
    /// Entries that run before each route's own, in this order.
    #[serde(default)]
    pub plugins: Vec<ChainEntryConfig>,
}

/// One entry of a plugin chain: a plugin plus this entry's config.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChainEntryConfig {
    /// The name of a `[plugins.<name>]` definition, or a source directly (`builtin:headers`,
    /// `./plugins/x.wasm`) with default limits and no extra capabilities.
    pub plugin: Spanned<String>,
    /// This entry's config, handed to the plugin's `configure` as JSON.
    #[serde(default)]
    pub config: toml::Table,
    /// Overrides the plugin definition's failure policy for this entry.
    pub failure: Option<FailurePolicy>,
}

/// One route.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Name used in logs, metrics and plugins (`route-id`); default `route-<index>`. Unique:
    /// rate-limit keys, metrics and the admin API tell routes apart by it.
    pub id: Option<Spanned<String>>,
    /// Hosts this route answers for: exact (`api.example.com`) or one leading wildcard
    /// (`*.example.com`). Empty: any host.
    #[serde(default)]
    pub hosts: Vec<Spanned<String>>,
    /// Methods this route answers for. Empty: any method.
    #[serde(default)]
    pub methods: Vec<Spanned<String>>,
    /// Exact path pattern, with `{name}` segments captured as params (e.g. `/users/{id}`).
    pub path: Option<Spanned<String>>,
    /// Path prefix on segment boundaries: `/api` matches `/api`, `/api/` and `/api/x`, not `/apix`.
    pub path_prefix: Option<Spanned<String>>,
    /// Headers a request must carry for this route: name = value, or name = \[values\] (any of
    /// them, exactly). A route with headers beats one without at the same host, path and method.
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<HeaderValues>>,
    /// The upstream requests go to. Optional when the chain always answers itself.
    pub upstream: Option<Spanned<String>>,
    /// Removed from the start of the path before it goes upstream.
    pub strip_prefix: Option<Spanned<String>>,
    /// Replaces the upstream path; may use `${param.name}` (e.g. `/v2/users/${param.id}`).
    pub rewrite: Option<Spanned<String>>,
    /// Swapped for the matched `path_prefix`, the rest of the path kept (Envoy's
    /// `prefix_rewrite`): `/v1` to `/v2` sends `/v1/items` as `/v2/items`.
    pub prefix_rewrite: Option<Spanned<String>>,
    /// Overrides the upstream's `host_header`.
    pub host_header: Option<HostHeader>,
    /// Overrides `limits.max_body_bytes`.
    pub max_body_bytes: Option<u64>,
    /// Overrides the upstream's request timeout.
    #[serde(default, deserialize_with = "bounds::at_least_one_opt")]
    pub timeout_ms: Option<u64>,
    /// Turns `[compression]` on (`true`) or off (`false`) for this route.
    pub compress: Option<bool>,
    /// Overrides `timeouts.tunnel_idle_ms` for this route's WebSockets.
    #[serde(default, deserialize_with = "bounds::at_least_one_opt")]
    pub tunnel_idle_ms: Option<u64>,
    /// Whether `[global]` plugins run on this route (default true).
    #[serde(default = "yes")]
    pub global_plugins: bool,
    /// This route's chain, after the global entries.
    #[serde(default)]
    pub plugins: Vec<ChainEntryConfig>,
    /// A copy of a share of the requests it sends upstream, sent to another upstream too
    /// (shadow traffic), whose answers are discarded.
    pub mirror: Option<MirrorConfig>,
}

impl Config {
    /// How many of route `route_id`'s chain entries come first from `[[global.plugins]]`: all of
    /// them, or none for a route with `global_plugins = false` (or no such route). A built chain
    /// holds the same entries either way; only the config says which are global.
    pub fn global_entries(&self, route_id: &str) -> usize {
        let route = self.routes.iter().enumerate().find(|(i, r)| r.id_at(*i) == route_id);
        match route {
            Some((_, r)) if r.global_plugins => self.global.plugins.len(),
            _ => 0,
        }
    }
}

impl RouteConfig {
    /// The route's id as logs, metrics, rate-limit keys and the admin API know it: its `id`, or
    /// `route-<index>` for the route at `index` (0-based) in the config.
    pub fn id_at(&self, index: usize) -> String {
        self.id.as_ref().map_or_else(|| format!("route-{index}"), |id| id.get_ref().clone())
    }
}

fn yes() -> bool {
    true
}

/// A route's `mirror`: where copies of its upstream requests go, and for what share of them
/// (Envoy's `request_mirror_policies`, nginx's `mirror`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// The `[upstreams.<name>]` the copies are sent to.
    pub upstream: Spanned<String>,
    /// The share of the route's upstream requests mirrored, in percent: more than 0, at most 100.
    #[serde(default = "all_percent", deserialize_with = "bounds::mirror_percent")]
    pub percent: f64,
}

fn all_percent() -> f64 {
    100.0
}

/// `[admin]`: the admin listener (health, readiness, `/metrics`, `/admin/*`). On by default, on
/// loopback only.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Set to false to run without an admin listener.
    pub enabled: bool,
    /// `ip:port` to bind (default `127.0.0.1:9901`; port 0 picks a free port).
    pub address: Spanned<String>,
    /// When set, `/metrics` and `/admin/*` require `Authorization: Bearer <token>`.
    pub token: Option<Spanned<String>>,
    /// A file holding the token (its trailing newline dropped), relative to the config's
    /// directory: a secret an orchestrator mounts, kept out of the config text. Read when the
    /// config is parsed, into `token`; not with `token`.
    pub token_file: Option<Spanned<String>>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self { enabled: true, address: Spanned::new(0..0, "127.0.0.1:9901".to_owned()), token: None, token_file: None }
    }
}

/// `[metrics]`: label cardinality of the Prometheus metrics.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// How many distinct consumers get their own `consumer` label; consumers seen after that are
    /// counted as `other`.
    pub consumer_labels: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { consumer_labels: 20 }
    }
}

/// `[tracing]`: W3C trace context.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// Share of new traces marked sampled, 0.0 to 1.0 (a client's `traceparent` keeps its own flag).
    pub sample_ratio: Spanned<f64>,
    /// When set, the trace id is returned to the client in this response header.
    pub response_header: Option<Spanned<String>>,
    /// Whose `traceparent`, `tracestate` and `X-Request-Id` the gateway continues.
    pub trust_incoming: TrustIncoming,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self { sample_ratio: Spanned::new(0..0, 1.0), response_header: None, trust_incoming: TrustIncoming::All }
    }
}

/// `[tracing] trust_incoming`: whose trace context and request id a request's own headers may
/// set. A public listener's clients could otherwise choose to be traced (every request exported,
/// past `sample_ratio`, crowding out the spans operators need), join another trace, or give
/// their requests an id already in the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustIncoming {
    /// Every client's (what a gateway between services wants).
    All,
    /// Only those of requests that came through the listener's `trusted_proxies`.
    TrustedProxies,
    /// No one's: every request starts a trace (sampled at `sample_ratio`) and gets a new id.
    None,
}

/// `[access_log]`: one JSON line per request.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLogConfig {
    /// Set to true to write the access log.
    pub enabled: bool,
    /// File to append to (relative to the config file); absent: standard output. Reopened on SIGUSR1.
    pub path: Option<Spanned<PathBuf>>,
    /// Lines waiting to be written; past it, new lines are dropped and counted.
    pub queue_lines: Spanned<usize>,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        Self { enabled: false, path: None, queue_lines: Spanned::new(0..0, 8192) }
    }
}

/// `[otlp]`: export a span per sampled request to an OpenTelemetry collector (OTLP/HTTP, protobuf).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// The collector's traces URL, `http://host:port/v1/traces`; absent: no export.
    pub endpoint: Option<Spanned<String>>,
    /// `service.name` of the exported resource.
    #[serde(deserialize_with = "bounds::service_name")]
    pub service_name: String,
    /// Most spans sent in one request to the collector (a request's spans are not split: one
    /// with more goes alone).
    #[serde(deserialize_with = "bounds::at_least_one")]
    pub batch_spans: usize,
    /// Spans waiting to be sent; past it, new spans are dropped and counted.
    pub queue_spans: Spanned<usize>,
    /// Longest a span waits for its batch to fill, in milliseconds.
    #[serde(deserialize_with = "bounds::at_least_one")]
    pub flush_ms: u64,
    /// Time one export request may take, in milliseconds; past it the batch is dropped and counted.
    #[serde(deserialize_with = "bounds::at_least_one")]
    pub timeout_ms: u64,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            service_name: "airlock".to_owned(),
            batch_spans: 512,
            queue_spans: Spanned::new(0..0, 4096),
            flush_ms: 1_000,
            timeout_ms: 2_000,
        }
    }
}

/// `[analytics]`: usage analytics per route and consumer (1 min and 1 h windows) and the anomaly
/// flags raised from the same traffic. Checked in `telemetry::analytics::AnalyticsSettings`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsConfig {
    /// Set to false to keep no analytics (and raise no anomaly flags).
    pub enabled: bool,
    /// How many consumers and endpoints the top lists show.
    pub top: Spanned<usize>,
    /// Distinct consumers tracked with their own figures; later ones are counted as `other`.
    pub max_consumers: Spanned<usize>,
    /// Distinct client IPs tracked for authentication failures; past it, new IPs are not tracked.
    pub max_clients: Spanned<usize>,
    /// Length of one interval of the per-consumer request-rate baseline, in milliseconds.
    pub rate_interval_ms: Spanned<u64>,
    /// Weight of the newest interval in the rate baseline (EWMA), above 0 and at most 1.
    pub rate_alpha: Spanned<f64>,
    /// A consumer is flagged when an interval departs from its baseline by more than this many
    /// standard deviations.
    pub rate_threshold: Spanned<f64>,
    /// Intervals a consumer must have been seen before its rate can be flagged.
    pub rate_warmup_intervals: u32,
    /// Smallest departure, in requests per interval, that can be flagged (small numbers are noise).
    pub rate_min_delta: u64,
    /// Window in which 401/403 answers to one client IP are counted, in milliseconds.
    pub auth_failure_window_ms: Spanned<u64>,
    /// 401/403 answers to one client IP within the window that flag credential stuffing.
    pub auth_failure_threshold: Spanned<usize>,
    /// Requests a route must have answered in the last one or two intervals before its 5xx share is judged.
    pub error_min_requests: u64,
    /// Rise of a route's 5xx share over its baseline (0 to 1) that flags it.
    pub error_rate_rise: Spanned<f64>,
    /// Most anomaly flags kept for `/admin/analytics` (the oldest go first).
    pub max_anomalies: Spanned<usize>,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            top: Spanned::new(0..0, 10),
            max_consumers: Spanned::new(0..0, 100),
            max_clients: Spanned::new(0..0, 10_000),
            rate_interval_ms: Spanned::new(0..0, 10_000),
            rate_alpha: Spanned::new(0..0, 0.3),
            rate_threshold: Spanned::new(0..0, 4.0),
            rate_warmup_intervals: 6,
            rate_min_delta: 10,
            auth_failure_window_ms: Spanned::new(0..0, 60_000),
            auth_failure_threshold: Spanned::new(0..0, 20),
            error_min_requests: 20,
            error_rate_rise: Spanned::new(0..0, 0.5),
            max_anomalies: Spanned::new(0..0, 100),
        }
    }
}
