//! `[upstreams.<name>]` turned into [`Upstream`]s: targets parsed, protocol and TLS settings
//! checked against each other, every problem reported with the file, line and key it is at.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use http::uri::{Authority, PathAndQuery};
use toml::Spanned;

use super::affinity::{self, HashCookie, HashOn};
use super::health_check::{HealthCheck, Probe};
use super::target_health::{DEFAULT_FAIL_TIMEOUT, DEFAULT_MAX_FAILS, HealthPolicy};
use super::tls::{ClientCert, TlsSettings};
use super::upstream::{DEFAULT_MAX_IDLE, Upstream, UpstreamSettings};
use crate::config::{
    Config, ConfigIssue, ConfigSource, DEFAULT_CHECK_TIMEOUT_MS, HashCookieConfig, HealthCheckConfig, UpstreamConfig, UpstreamProtocol,
    UpstreamTlsConfig,
};

/// The scheme a target was written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    /// `host:port`: the protocol decides.
    None,
    /// `http://host:port`.
    Http,
    /// `https://host:port`.
    Https,
}

/// Parses one target: `host:port`, `http://host:port` or `https://host:port`.
fn parse_target(target: &str) -> Result<(Scheme, Authority), String> {
    let (scheme, rest) = if let Some(rest) = target.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else if let Some(rest) = target.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else {
        (Scheme::None, target)
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('@') {
        // `http::uri::Authority` takes user info, which then went upstream as part of `Host` and
        // into the `target` label of `/metrics` and `/admin/config`: refused, and not quoted
        // (it holds a password).
        return Err("a target cannot hold user info (`user:password@`): it is not sent as credentials (it would reach the \
                    upstream inside `Host`, and show in metrics); give `host:port` alone, and set an `authorization` \
                    header with `builtin:headers`"
            .to_owned());
    }
    match rest.parse::<Authority>() {
        Ok(a) if a.port_u16() == Some(0) => Err(format!("target `{target}`: port 0 is no port to connect to")),
        Ok(a) if a.port_u16().is_some() && !a.host().is_empty() => Ok((scheme, a)),
        _ => Err(format!("target `{target}` is not `host:port`, `http://host:port` or `https://host:port`")),
    }
}

/// Builds every upstream of `config`; problems are added to `issues` and the upstream left out.
/// TLS upstreams read certificate files, which is done off the async workers.
///
/// On a reload, `previous` holds the running config's upstreams: one whose name, targets and
/// settings are unchanged is kept as it is ([`Upstream::built_as`]), so a reload that touches
/// routes or plugins does not drop every pooled upstream connection and its targets' health.
pub async fn build_upstreams(
    source: &ConfigSource,
    config: &Config,
    previous: &HashMap<String, Arc<Upstream>>,
    issues: &mut Vec<ConfigIssue>,
) -> HashMap<String, Arc<Upstream>> {
    let mut out = HashMap::new();
    for (name, up) in &config.upstreams {
        let Some((targets, settings)) = settings(source, config, name, up, issues) else { continue };
        if let Some(kept) = previous.get(name).filter(|kept| kept.built_as(&targets, &settings)) {
            tracing::debug!(upstream = name.as_str(), "upstream unchanged by the reload: its connections are kept");
            out.insert(name.clone(), kept.clone());
            continue;
        }
        let owned_name = name.clone();
        let built = tokio::task::spawn_blocking(move || Upstream::new(&owned_name, targets, settings)).await;
        match built {
            Ok(Ok(upstream)) => {
                if let Some(previous) = previous.get(name) {
                    upstream.inherit_health(previous);
                }
                out.insert(name.clone(), Arc::new(upstream));
            }
            Ok(Err(e)) => {
                // At the `tls` key the problem is in (`ca_file`, `cert`, `key`, `server_name`),
                // else at the targets.
                let at = |field: &str| {
                    let t = up.tls.as_ref()?;
                    match field {
                        "ca_file" => t.ca_file.as_ref(),
                        "cert" => t.cert.as_ref(),
                        "key" => t.key.as_ref(),
                        "server_name" => t.server_name.as_ref(),
                        _ => None,
                    }
                    .map(|v| (format!("upstreams.{name}.tls.{field}"), v.span()))
                };
                let (key, span) = e.field().and_then(at).unwrap_or_else(|| (format!("upstreams.{name}.tls"), up.targets.span()));
                issues.push(source.issue(Some(span), &key, e.to_string()));
            }
            Err(e) => issues.push(source.issue(None, &format!("upstreams.{name}"), format!("internal error: {e}"))),
        }
    }
    out
}

/// The targets and settings of one upstream, or `None` after reporting why not.
fn settings(
    source: &ConfigSource,
    config: &Config,
    name: &str,
    up: &UpstreamConfig,
    issues: &mut Vec<ConfigIssue>,
) -> Option<(Vec<Authority>, UpstreamSettings)> {
    // Routes name it, and it goes into log lines, metrics labels and the admin API.
    if let Some(problem) = crate::config::id_text_problem(name, "an upstream name", "", "it goes into log lines and metrics labels") {
        // The key as TOML writes it, quoted: `upstreams.""` rather than a bare `upstreams.`.
        issues.push(source.issue(Some(up.targets.span()), &format!("upstreams.{name:?}"), problem));
        return None;
    }
    let key = format!("upstreams.{name}.targets");
    let before = issues.len();
    let mut targets = Vec::new();
    let mut schemes = Vec::new();
    for (i, target) in up.targets.get_ref().iter().enumerate() {
        match parse_target(target.get_ref().address()) {
            Ok((scheme, authority)) => {
                schemes.push(scheme);
                targets.push(authority);
            }
            Err(message) => issues.push(source.issue(Some(target.span()), &format!("{key}[{i}]"), message)),
        }
    }
    // Only when every target parsed: `targets` then lines up with the entries.
    let listed_twice = (targets.len() == up.targets.get_ref().len()).then(|| (1..targets.len()).find(|&i| targets[..i].contains(&targets[i])));
    if let Some(i) = listed_twice.flatten() {
        let message = format!("target `{}` is listed twice: list it once, with a `weight` for a larger share", targets[i]);
        issues.push(source.issue(Some(up.targets.get_ref()[i].span()), &format!("{key}[{i}]"), message));
    }
    if up.targets.get_ref().is_empty() {
        issues.push(source.issue(Some(up.targets.span()), &key, "an upstream needs at least one target"));
    } else if up.targets.get_ref().iter().all(|t| t.get_ref().weight() == 0) {
        issues.push(source.issue(Some(up.targets.span()), &key, "every target has weight 0: none would get a request"));
    }
    let https = schemes.contains(&Scheme::Https);
    let http = schemes.contains(&Scheme::Http);
    if https && schemes.iter().any(|s| *s != Scheme::Https) {
        issues.push(source.issue(Some(up.targets.span()), &key, "targets mix `https://` and cleartext: give every target the same scheme"));
    }
    let protocol = *up.protocol.get_ref();
    // A scheme that contradicts the protocol: what is wrong, and what to write instead.
    let conflict = match protocol {
        UpstreamProtocol::H2c if https => Some(("`h2c` is cleartext HTTP/2 but the targets are `https://`", "protocol = \"h2\" for HTTP/2 over TLS")),
        UpstreamProtocol::H2 if http => Some(("`h2` is HTTP/2 over TLS but the targets are `http://`", "protocol = \"h2c\" for cleartext HTTP/2")),
        _ => None,
    };
    if let Some((what, instead)) = conflict {
        issues.push(source.issue(Some(up.protocol.span()), &format!("upstreams.{name}.protocol"), format!("{what}: use {instead}")));
    }
    let tls = match protocol {
        UpstreamProtocol::Http1 => https,
        UpstreamProtocol::H2c => false,
        UpstreamProtocol::H2 => true,
    };
    let tls_settings = match (&up.tls, tls) {
        (Some(t), true) => Some(TlsSettings {
            ca_file: t.ca_file.as_ref().map(|f| source.base_dir.join(f.get_ref())),
            server_name: t.server_name.as_ref().map(|n| n.get_ref().clone()),
            client_cert: client_cert(source, name, t, issues),
        }),
        (None, true) => Some(TlsSettings::default()),
        (Some(t), false) => {
            let span = [&t.ca_file, &t.server_name, &t.cert, &t.key].into_iter().find_map(|v| v.as_ref().map(|v| v.span()));
            issues.push(source.issue(
                span,
                &format!("upstreams.{name}.tls"),
                "TLS settings on a cleartext upstream: use `https://` targets or protocol = \"h2\"",
            ));
            None
        }
        (None, false) => None,
    };
    let health_check = up.health_check.as_ref().and_then(|c| health_check(source, name, c, protocol, issues));
    let hash_on = up.hash_on.as_ref().and_then(|on| match HashOn::parse(on.get_ref()) {
        Ok(hash_on) => Some(hash_on),
        Err(message) => {
            issues.push(source.issue(Some(on.span()), &format!("upstreams.{name}.hash_on"), message));
            None
        }
    });
    let hash_cookie = up.hash_cookie.as_ref().and_then(|table| hash_cookie(source, name, table, up, hash_on.as_ref(), issues));
    let balance = up.balance.as_ref().map_or_else(Default::default, |b| *b.get_ref());
    if let Some(b) = &up.balance
        && balance == crate::config::Balance::LeastRequests
        && up.hash_on.is_some()
    {
        let message = "`least_requests` cannot be combined with `hash_on`: both choose the target, one by load, the other by key; leave one out";
        issues.push(source.issue(Some(b.span()), &format!("upstreams.{name}.balance"), message));
    }
    if let Some(retry_on) = &up.retry_on
        && let Some(bad) = retry_on.get_ref().iter().find(|s| !(400..=599).contains(*s))
    {
        let message = format!("{bad} is not an error status: a request is sent to another target only after a 4xx or 5xx");
        issues.push(source.issue(Some(retry_on.span()), &format!("upstreams.{name}.retry_on"), message));
    }
    if issues.len() > before {
        return None;
    }
    // Retrying needs another target: with one, `retry_on`, `retry_on_reset` and `try_timeout_ms`
    // never act.
    let retry_keys: Vec<&str> = [
        ("retry_on", up.retry_on.as_ref().is_some_and(|r| !r.get_ref().is_empty())),
        ("retry_on_reset", up.retry_on_reset == Some(true)),
        ("try_timeout_ms", up.try_timeout_ms.is_some()),
    ]
    .into_iter()
    .filter_map(|(key, set)| set.then_some(key))
    .collect();
    let keys = match retry_keys.as_slice() {
        [] => None,
        [one] => Some((*one).to_owned()),
        [rest @ .., last] => Some(format!("{} and {last}", rest.join(", "))),
    };
    if let Some(keys) = keys.filter(|_| targets.len() == 1) {
        tracing::warn!(
            config = %source.name,
            "upstreams.{name}: {keys} cannot act: the upstream has one target, and a retry needs another (list more targets, or leave {keys} out)"
        );
    }
    let settings = UpstreamSettings {
        connect_timeout: Duration::from_millis(up.connect_timeout_ms.unwrap_or(config.timeouts.connect_ms)),
        request_timeout: Duration::from_millis(up.request_timeout_ms.unwrap_or(config.timeouts.request_ms)),
        idle_timeout: Duration::from_millis(up.idle_ms.unwrap_or(config.timeouts.idle_ms)),
        max_idle: up.max_idle_connections.unwrap_or(DEFAULT_MAX_IDLE),
        workers: config.runtime.worker_count(),
        host_header: up.host_header,
        protocol,
        tls: tls_settings,
        max_response_headers: config.limits.max_response_headers,
        max_response_header_bytes: config.limits.max_response_header_bytes,
        health: HealthPolicy {
            max_fails: up.max_fails.unwrap_or(DEFAULT_MAX_FAILS),
            fail_timeout: up.fail_timeout_ms.map_or(DEFAULT_FAIL_TIMEOUT, Duration::from_millis),
        },
        health_check,
        weights: up.targets.get_ref().iter().map(|t| t.get_ref().weight()).collect(),
        retry_on: up.retry_on.as_ref().map(|r| r.get_ref().clone()).unwrap_or_default(),
        retry_on_reset: up.retry_on_reset.unwrap_or(false),
        try_timeout: up.try_timeout_ms.map(Duration::from_millis),
        hash_on,
        hash_cookie,
        max_requests: up.max_requests,
        balance,
    };
    Some((targets, settings))
}

/// `tls.cert` and `tls.key` (paths resolved against the config's directory, as `ca_file` is), or
/// `None`: neither given, or after reporting the one given without the other.
fn client_cert(source: &ConfigSource, name: &str, t: &UpstreamTlsConfig, issues: &mut Vec<ConfigIssue>) -> Option<ClientCert> {
    match (&t.cert, &t.key) {
        (Some(cert), Some(key)) => Some(ClientCert { cert: source.base_dir.join(cert.get_ref()), key: source.base_dir.join(key.get_ref()) }),
        (Some(cert), None) => {
            let message = "`cert` without `key`: give the PEM file of the certificate's private key as `key` too (both or neither)";
            issues.push(source.issue(Some(cert.span()), &format!("upstreams.{name}.tls.cert"), message));
            None
        }
        (None, Some(key)) => {
            let message = "`key` without `cert`: give the PEM file of the client certificate as `cert` too (both or neither)";
            issues.push(source.issue(Some(key.span()), &format!("upstreams.{name}.tls.key"), message));
            None
        }
        (None, None) => None,
    }
}

/// `hash_cookie` of upstream `name` (`up`, whose `hash_on` parsed as `hash_on`), or `None` after
/// reporting why not: it sets the cookie requests are placed by, so it needs
/// `hash_on = "cookie:<name>"` with a name a `Set-Cookie` can carry, and a `path` from `/`.
fn hash_cookie(
    source: &ConfigSource,
    name: &str,
    table: &Spanned<HashCookieConfig>,
    up: &UpstreamConfig,
    hash_on: Option<&HashOn>,
    issues: &mut Vec<ConfigIssue>,
) -> Option<HashCookie> {
    let key = format!("upstreams.{name}.hash_cookie");
    let cookie = match (hash_on, &up.hash_on) {
        (Some(HashOn::Cookie(cookie)), _) => cookie,
        // A `hash_on` that did not parse is reported already.
        (None, Some(_)) => return None,
        (_, written) => {
            let instead = written.as_ref().map(|w| format!(", not hash_on = {:?}", w.get_ref())).unwrap_or_default();
            let message = format!(
                "`hash_cookie` sets the cookie requests are placed by: it needs hash_on = \"cookie:<name>\"{instead} (or leave `hash_cookie` out)"
            );
            issues.push(source.issue(Some(table.span()), &key, message));
            return None;
        }
    };
    let before = issues.len();
    if let Some(message) = affinity::cookie_name_problem(cookie) {
        let at = up.hash_on.as_ref().map(|on| on.span());
        issues.push(source.issue(at, &format!("upstreams.{name}.hash_on"), format!("{message} (`hash_cookie` would set it)")));
    }
    let c = table.get_ref();
    let path = c.path.as_ref().map_or("/", |p| p.get_ref().as_str());
    if let Some((message, at)) = affinity::cookie_path_problem(path).or_else(|| affinity::cookie_prefix_problem(cookie, path)).zip(c.path.as_ref()) {
        issues.push(source.issue(Some(at.span()), &format!("{key}.path"), message));
    }
    (issues.len() == before).then(|| HashCookie::new(cookie, path, c.max_age_s))
}

/// Whether a probe's path can go on a request line as it is: from `/`, visible ASCII, every `%`
/// followed by two hex digits, and no fragment (which is never sent).
fn probe_path_ok(path: &str) -> bool {
    let bytes = path.as_bytes();
    path.starts_with('/')
        && bytes.iter().all(|b| b.is_ascii_graphic() && *b != b'#')
        && bytes.iter().enumerate().all(|(i, b)| *b != b'%' || bytes.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)))
}

/// `[upstreams.<name>.health_check]` of an upstream speaking `protocol`, or `None` after
/// reporting what is wrong with it.
fn health_check(
    source: &ConfigSource,
    name: &str,
    table: &Spanned<HealthCheckConfig>,
    protocol: UpstreamProtocol,
    issues: &mut Vec<ConfigIssue>,
) -> Option<HealthCheck> {
    let before = issues.len();
    let c = table.get_ref();
    let key = |field: &str| format!("upstreams.{name}.health_check.{field}");
    let probe = match (&c.path, &c.grpc_service) {
        (Some(path), None) => match PathAndQuery::try_from(path.get_ref().as_str()) {
            Ok(parsed) if probe_path_ok(path.get_ref()) => Some(Probe::Http { path: parsed, statuses: None }),
            _ => {
                let message = format!(
                    "{:?} is not a path and query starting with `/` (visible ASCII, `%` escapes of two hex digits, no `#`)",
                    path.get_ref()
                );
                issues.push(source.issue(Some(path.span()), &key("path"), message));
                None
            }
        },
        (None, Some(service)) if protocol == UpstreamProtocol::Http1 => {
            let message = "the gRPC health check needs an HTTP/2 upstream: protocol = \"h2c\" or \"h2\"";
            issues.push(source.issue(Some(service.span()), &key("grpc_service"), message));
            None
        }
        (None, Some(service)) => Some(Probe::Grpc { service: service.get_ref().clone() }),
        (Some(_), Some(service)) => {
            let message = "`path` (a GET probe) and `grpc_service` (a gRPC health check) are exclusive: keep one";
            issues.push(source.issue(Some(service.span()), &key("grpc_service"), message));
            None
        }
        (None, None) => {
            let message = "a health check needs `path` (the path a GET probes) or `grpc_service` (a gRPC health check; \"\" for the whole server)";
            issues.push(source.issue(Some(table.span()), &format!("upstreams.{name}.health_check"), message));
            None
        }
    };
    let host = c.host.as_ref().and_then(|host| match host.get_ref().parse::<Authority>() {
        Ok(a) if !host.get_ref().contains('@') && (a.port().is_none() || a.port_u16().is_some()) => HeaderValue::from_str(host.get_ref()).ok(),
        _ => {
            issues.push(source.issue(Some(host.span()), &key("host"), format!("{:?} is not a host name (with an optional port)", host.get_ref())));
            None
        }
    });
    let timeout_ms = c.timeout_ms.as_ref().map_or(DEFAULT_CHECK_TIMEOUT_MS.min(c.interval_ms), |t| *t.get_ref());
    if timeout_ms > c.interval_ms {
        let message = format!("a probe's timeout ({timeout_ms} ms) must not be longer than the interval between probes ({} ms)", c.interval_ms);
        issues.push(source.issue(c.timeout_ms.as_ref().map(|t| t.span()), &key("timeout_ms"), message));
    }
    if let Some(statuses) = &c.statuses {
        if c.grpc_service.is_some() {
            let message = "a gRPC health check passes on SERVING only: leave `statuses` out";
            issues.push(source.issue(Some(statuses.span()), &key("statuses"), message));
        } else if let Some(bad) = statuses.get_ref().iter().find(|s| !(200..=599).contains(*s)) {
            let message = format!("{bad} is not a final HTTP status a probe can end with (200-599)");
            issues.push(source.issue(Some(statuses.span()), &key("statuses"), message));
        } else if statuses.get_ref().is_empty() {
            issues.push(source.issue(Some(statuses.span()), &key("statuses"), "no status would pass: leave `statuses` out for any 2xx or 3xx"));
        }
    }
    if issues.len() > before {
        return None;
    }
    let probe = match probe? {
        Probe::Http { path, .. } => Probe::Http { path, statuses: c.statuses.as_ref().map(|s| s.get_ref().clone()) },
        grpc => grpc,
    };
    Some(HealthCheck {
        probe,
        host,
        interval: Duration::from_millis(c.interval_ms),
        timeout: Duration::from_millis(timeout_ms),
        unhealthy_threshold: c.unhealthy_threshold,
        healthy_threshold: c.healthy_threshold,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_take_an_optional_scheme() {
        assert_eq!(parse_target("a.example:80").map(|(s, a)| (s, a.to_string())), Ok((Scheme::None, "a.example:80".into())));
        assert_eq!(parse_target("https://a.example:443/").map(|(s, _)| s), Ok(Scheme::Https));
        assert_eq!(parse_target("http://10.0.0.1:8080").map(|(s, _)| s), Ok(Scheme::Http));
        assert!(parse_target("https://a.example").is_err());
        assert!(parse_target("a.example:80/x").is_err());
        // Nothing to connect to: no host, or port 0.
        for target in [":8080", "http://:8080"] {
            assert!(parse_target(target).unwrap_err().contains("is not `host:port`"), "{target}");
        }
        for target in ["127.0.0.1:0", "a.example:0"] {
            assert!(parse_target(target).unwrap_err().contains("port 0 is no port"), "{target}");
        }
        // User info is refused, without quoting it back.
        for target in ["http://admin:hunter2@10.0.0.1:8080", "admin:hunter2@a.example:80", "https://token@a.example:443"] {
            let message = parse_target(target).unwrap_err();
            assert!(message.contains("cannot hold user info") && !message.contains("hunter2") && !message.contains("token@"), "{message}");
        }
    }
}
