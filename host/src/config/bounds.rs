//! Numbers the config refuses as they are read, so the error names the file, line and key.
//!
//! A zero here would not mean "off": a timeout of 0 ms fires at once, a CPU deadline of 0 ms stops
//! every call, `max_instances = 0` leaves no place for any plugin. Such values are refused with the
//! range that is accepted, through `#[serde(deserialize_with = ...)]` on the field.

use serde::{Deserialize, Deserializer};

/// Most plugin instances `runtime.max_instances` may ask for: the pooling allocator reserves
/// address space for every place's memories up front (~8 GiB each), and 16,000 places no longer
/// fit in a 47-bit address space.
pub const MAX_INSTANCES: u64 = 10_000;

/// Largest memory cap of one plugin instance, in MiB (`runtime::engine::MAX_PLUGIN_MEMORY`).
pub const MAX_MEMORY_MB: u64 = (crate::runtime::engine::MAX_PLUGIN_MEMORY / (1024 * 1024)) as u64;

/// Most header lines `limits.max_headers` and `limits.max_response_headers` may allow: well below
/// the 32,768 a header map can hold at all, so no count the config allows can overflow one.
pub const MAX_HEADER_LINES: u64 = 10_000;

/// Longest CPU deadline of one phase call, in milliseconds: a minute. A plugin call holds its
/// request (and an instance place) for up to its deadline; a typo such as `cpu_ms = 999999999`
/// would let one looping call hold them for days.
pub const MAX_CPU_MS: u64 = 60_000;

/// `runtime.cpu_ms`, `plugins.<name>.cpu_ms`: 1 to [`MAX_CPU_MS`].
pub fn cpu_ms<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    within(d, 1, MAX_CPU_MS)
}

/// [`cpu_ms`], for a field that may be left out.
pub fn cpu_ms_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Option::<u64>::deserialize(d)?.map(|v| check(v, 1, MAX_CPU_MS)).transpose()
}

/// `limits.max_headers`, `limits.max_response_headers`: 1 to [`MAX_HEADER_LINES`].
pub fn header_lines<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    within(d, 1, MAX_HEADER_LINES)
}

/// Most streams `limits.max_concurrent_streams` may allow one HTTP/2 client connection: each
/// may hold an upstream connection, and a few thousand of them already exceed common open-file
/// limits (1024), so more is a typo rather than a plan.
pub const MAX_CONCURRENT_STREAMS: u64 = 10_000;

/// `limits.max_concurrent_streams`: 1 to [`MAX_CONCURRENT_STREAMS`].
pub fn concurrent_streams<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    within(d, 1, MAX_CONCURRENT_STREAMS)
}

/// Most requests an upstream may have in flight (`upstreams.<name>.max_requests`).
pub const MAX_UPSTREAM_REQUESTS: u64 = 1_000_000;

/// `upstreams.<name>.max_requests`: 1 to [`MAX_UPSTREAM_REQUESTS`] when given.
pub fn max_requests<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    Option::<u32>::deserialize(d)?.map(|v| check(v, 1, MAX_UPSTREAM_REQUESTS)).transpose()
}

/// Longest `Max-Age` a cookie keeps in a browser, in seconds: 400 days (RFC 6265bis 5.6.2, which
/// Chrome and Firefox enforce). A longer `hash_cookie.max_age_s` would be cut short unseen.
pub const MAX_COOKIE_AGE_S: u64 = 400 * 24 * 3600;

/// `upstreams.<name>.hash_cookie.max_age_s`: 1 to [`MAX_COOKIE_AGE_S`] when given (0 would
/// delete the cookie at once; leave it out for a session cookie).
pub fn cookie_max_age<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<u64>::deserialize(d)? {
        Some(0) => Err(serde::de::Error::custom("0 would delete the cookie at once: leave `max_age_s` out for a session cookie")),
        Some(s) if s > MAX_COOKIE_AGE_S => Err(serde::de::Error::custom(format!(
            "must be at most {MAX_COOKIE_AGE_S} (400 days, where browsers cut a cookie's Max-Age short), not {s}"
        ))),
        other => Ok(other),
    }
}

/// A count or duration that must be at least 1.
pub fn at_least_one<'de, D: Deserializer<'de>, T: Deserialize<'de> + Copy + TryInto<u64>>(d: D) -> Result<T, D::Error> {
    within(d, 1, u64::MAX)
}

/// [`at_least_one`], for a field that may be left out.
pub fn at_least_one_opt<'de, D: Deserializer<'de>, T: Deserialize<'de> + Copy + TryInto<u64>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    Option::<T>::deserialize(d)?.map(|v| check(v, 1, u64::MAX)).transpose()
}

/// [`at_least_one_opt`], keeping where the value was written, for a check against another field
/// that names its line.
pub fn at_least_one_spanned<'de, D: Deserializer<'de>>(d: D) -> Result<Option<toml::Spanned<u64>>, D::Error> {
    let Some(value) = Option::<toml::Spanned<u64>>::deserialize(d)? else { return Ok(None) };
    check::<D::Error, u64>(*value.get_ref(), 1, u64::MAX)?;
    Ok(Some(value))
}

/// `health_check.interval_ms`: 50 ms to an hour. Shorter floods the targets (and, with the
/// timeout it implies, flaps healthy ones); longer is a typo that turns checking off.
pub fn check_interval<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    within(d, 50, 3_600_000)
}

/// `compression.level`: 1 to 9, gzip's levels.
pub fn gzip_level<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    within(d, 1, 9)
}

/// A target's `weight`: 0 to [`super::MAX_TARGET_WEIGHT`] (a negative one is told so too, not
/// as a type error).
pub fn weight<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let max = super::MAX_TARGET_WEIGHT;
    let v = i64::deserialize(d)?;
    u32::try_from(v)
        .ok()
        .filter(|w| *w <= max)
        .ok_or_else(|| serde::de::Error::custom(format!("must be between 0 and {max}, not {v}")))
}

/// A route's `mirror.percent`: more than 0, at most 100; fractions allowed (0.5: one request in
/// 200). Not a number (`nan`) is refused too.
pub fn mirror_percent<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if v > 0.0 && v <= 100.0 {
        Ok(v)
    } else {
        Err(serde::de::Error::custom(format!("must be more than 0 and at most 100 (a share in percent; 0.5 is one request in 200), not {v}")))
    }
}

/// `runtime.max_instances`: 1 to [`MAX_INSTANCES`].
pub fn instances<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    within(d, 1, MAX_INSTANCES)
}

/// A memory cap in MiB: 1 to [`MAX_MEMORY_MB`].
pub fn memory_mb<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    within(d, 1, MAX_MEMORY_MB)
}

/// `runtime.plugin_memory_mb`, if given: 1 MiB to 16 TiB.
pub fn plugin_memory_mb<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Option::<u64>::deserialize(d)?.map(|v| check(v, 1, 16 * 1024 * 1024)).transpose()
}

/// [`memory_mb`], for a field that may be left out.
pub fn memory_mb_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    Option::<u32>::deserialize(d)?.map(|v| check(v, 1, MAX_MEMORY_MB)).transpose()
}

fn within<'de, D: Deserializer<'de>, T: Deserialize<'de> + Copy + TryInto<u64>>(
    d: D,
    min: u64,
    max: u64,
) -> Result<T, D::Error> {
    check(T::deserialize(d)?, min, max)
}

fn check<E: serde::de::Error, T: Copy + TryInto<u64>>(value: T, min: u64, max: u64) -> Result<T, E> {
    match value.try_into() {
        Ok(v) if (min..=max).contains(&v) => Ok(value),
        Ok(v) if max == u64::MAX => Err(E::custom(format!("must be at least {min}, not {v}"))),
        Ok(v) => Err(E::custom(format!("must be between {min} and {max}, not {v}"))),
        Err(_) => Err(E::custom(format!("must be between {min} and {max}"))),
    }
}

/// Why `id` cannot be `what` (`a route id`, `a consumer id`, `an upstream name`), which an
/// operator reads in log lines and labels: empty (`if_empty` says what to do), with control
/// characters (`goes_into` says where they would land), or with white space at an edge.
pub(crate) fn id_text_problem(id: &str, what: &str, if_empty: &str, goes_into: &str) -> Option<String> {
    if id.trim().is_empty() {
        Some(format!("{what} cannot be empty{if_empty}"))
    } else if id.chars().any(char::is_control) {
        Some(format!("{id:?}: {what} cannot hold control characters ({goes_into})"))
    } else if id.trim() != id {
        Some(format!("`{id}`: {what} cannot start or end with white space"))
    } else {
        None
    }
}

/// `otlp.service_name`: the `service.name` a collector groups the gateway's spans by. Held to
/// the rules of the names an operator reads ([`id_text_problem`]): empty it names no service a
/// trace UI can show, and control characters would go into every exported resource.
pub fn service_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    use serde::de::Error;
    let name = String::deserialize(d)?;
    let if_empty = ": it is the `service.name` collectors group the gateway's spans by (leave it out for `airlock`)";
    match id_text_problem(&name, "the service name", if_empty, "it goes into every exported span's resource") {
        Some(problem) => Err(D::Error::custom(problem)),
        None => Ok(name),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::config::ConfigSource;

    /// The one issue parsing `text` reports, as (line, key, message).
    fn refused(text: &str) -> (Option<usize>, String, String) {
        let err = ConfigSource::inline("airlock.toml", text, PathBuf::from(".")).parse().unwrap_err();
        let issue = &err.issues()[0];
        (issue.line, issue.key.clone(), issue.message.clone())
    }

    #[test]
    fn an_otlp_service_name_is_held_to_the_rules_of_names_an_operator_reads() {
        let (line, key, message) = refused("[otlp]\nservice_name = \" gateway\"\n");
        assert_eq!((line, key.as_str()), (Some(2), "otlp.service_name"));
        assert_eq!(message, "` gateway`: the service name cannot start or end with white space");
        assert!(ConfigSource::inline("airlock.toml", "[otlp]\nservice_name = \"edge-gw\"\n", PathBuf::from(".")).parse().is_ok());
    }

    #[test]
    fn zero_timeouts_and_deadlines_are_refused_at_their_line() {
        for (text, key) in [
            ("[timeouts]\nconnect_ms = 100\nidle_ms = 0\n", "timeouts.idle_ms"),
            ("[timeouts]\nrequest_ms = 0\n", "timeouts.request_ms"),
            ("[timeouts]\ntunnel_idle_ms = 0\n", "timeouts.tunnel_idle_ms"),
            ("[timeouts]\nidle_ms = 100\nsend_ms = 0\n", "timeouts.send_ms"),
            ("[limits]\nmax_connections = 0\n", "limits.max_connections"),
            ("[limits]\nmax_connections = 10\nmax_connections_per_client = 0\n", "limits.max_connections_per_client"),
            ("[[routes]]\npath = \"/\"\ntunnel_idle_ms = 0\n", "routes[0].tunnel_idle_ms"),
            ("[upstreams.u]\ntargets = [\"127.0.0.1:1\"]\nconnect_timeout_ms = 0\n", "upstreams.u.connect_timeout_ms"),
            ("[upstreams.u]\ntargets = [\"127.0.0.1:1\"]\ntry_timeout_ms = 0\n", "upstreams.u.try_timeout_ms"),
        ] {
            let (line, got_key, message) = refused(text);
            assert_eq!((line, got_key.as_str()), (Some(text.lines().count()), key), "{text}");
            assert_eq!(message, "must be at least 1, not 0", "{text}");
        }
    }

    #[test]
    fn a_target_weight_outside_0_to_1000_is_refused_at_its_line_either_way() {
        for (weight, shown) in [("-1", "-1"), ("1001", "1001")] {
            let text = format!("[upstreams.u]\ntargets = [\n  {{ address = \"127.0.0.1:1\", weight = {weight} }},\n]\n");
            let (line, key, message) = refused(&text);
            assert_eq!((line, key.as_str()), (Some(3), "upstreams.u.targets[0].weight"));
            assert_eq!(message, format!("must be between 0 and 1000, not {shown}"));
        }
    }

    #[test]
    fn http2_concurrent_streams_are_refused_outside_1_to_10000_at_their_line() {
        for (value, shown) in [("0", "0"), ("10001", "10001")] {
            let (line, key, message) = refused(&format!("[limits]\nmax_headers = 50\nmax_concurrent_streams = {value}\n"));
            assert_eq!((line, key.as_str()), (Some(3), "limits.max_concurrent_streams"));
            assert_eq!(message, format!("must be between 1 and 10000, not {shown}"));
        }
        let parsed = ConfigSource::inline("airlock.toml", "[limits]\nmax_concurrent_streams = 8\n", PathBuf::from(".")).parse();
        assert_eq!(parsed.expect("valid").limits.max_concurrent_streams, 8);
    }

    #[test]
    fn sandbox_sizes_are_refused_outside_their_range() {
        let (line, key, message) = refused("[runtime]\nmax_instances = 0\n");
        assert_eq!((line, key.as_str(), message.as_str()), (Some(2), "runtime.max_instances", "must be between 1 and 10000, not 0"));
        let (_, _, message) = refused("[runtime]\nmax_instances = 20000\n");
        assert_eq!(message, "must be between 1 and 10000, not 20000");
        let (line, key, message) = refused("[runtime]\nmemory_mb = 4096\n");
        assert_eq!((line, key.as_str(), message.as_str()), (Some(2), "runtime.memory_mb", "must be between 1 and 1024, not 4096"));
        // 0 was taken as 1 without a word: one idle instance is always kept.
        let (line, key, message) = refused("[plugins.p]\nsource = \"p.wasm\"\npool_size = 0\n");
        assert_eq!((line, key.as_str(), message.as_str()), (Some(3), "plugins.p.pool_size", "must be at least 1, not 0"));
        let (line, key, _) = refused("[plugins.p]\nsource = \"p.wasm\"\nmemory_mb = 0\n");
        assert_eq!((line, key.as_str()), (Some(3), "plugins.p.memory_mb"));
        let (line, key, message) = refused("[limits]\nmax_headers = 50\nmax_response_headers = 40000\n");
        assert_eq!((line, key.as_str(), message.as_str()), (Some(3), "limits.max_response_headers", "must be between 1 and 10000, not 40000"));
        let (_, key, _) = refused("[limits]\nmax_response_header_bytes = 0\n");
        assert_eq!(key, "limits.max_response_header_bytes");
        let (line, key, message) = refused("[runtime]\ncompile_cache = true\ncpu_ms = 0\n");
        assert_eq!((line, key.as_str(), message.as_str()), (Some(3), "runtime.cpu_ms", "must be between 1 and 60000, not 0"));
        let (line, key, message) = refused("[plugins.p]\nsource = \"p.wasm\"\ncpu_ms = 999999999\n");
        assert_eq!((line, key.as_str(), message.as_str()), (Some(3), "plugins.p.cpu_ms", "must be between 1 and 60000, not 999999999"));
    }

    #[test]
    fn compression_types_that_never_match_are_refused_at_their_line() {
        for (entry, said) in [
            ("text/html; charset=utf-8", "list `text/html`"),
            ("text/ plain", "has a space"),
            (" text/plain", "has a space"),
            ("json", "not a media type"),
            ("*/*", "images"),
            ("*", "not a media type"),
            ("application/*+json", "a wildcard is a whole subtype"),
            ("text/", "not a media type"),
            ("", "not a media type"),
        ] {
            let text = format!("[compression]\nenabled = true\ntypes = [\n  \"application/json\",\n  \"{entry}\",\n]\n");
            let (line, key, message) = refused(&text);
            assert_eq!((line, key.as_str()), (Some(5), "compression.types[1]"), "{entry}: {message}");
            assert!(message.contains(said), "{entry}: {message}");
        }
        let text = "[compression]\ntypes = [\"text/*\", \"Application/JSON\", \"image/svg+xml\", \"application/vnd.api+json\"]\n";
        let config = ConfigSource::inline("airlock.toml", text, PathBuf::from(".")).parse().unwrap();
        assert_eq!(config.compression.types.len(), 4);
    }

    #[test]
    fn values_in_range_and_left_out_fields_are_taken() {
        let text = "[runtime]\nmax_instances = 10000\nmemory_mb = 1024\ncpu_ms = 1\n[timeouts]\ndrain_ms = 0\n\
                    [plugins.p]\nsource = \"p.wasm\"\n";
        let config = ConfigSource::inline("airlock.toml", text, PathBuf::from(".")).parse().unwrap();
        assert_eq!((config.runtime.max_instances, config.runtime.memory_mb, config.runtime.cpu_ms), (10_000, 1024, 1));
        assert_eq!(config.timeouts.drain_ms, 0, "no grace on shutdown is a choice, not a mistake");
        assert_eq!((config.plugins["p"].cpu_ms, config.plugins["p"].memory_mb), (None, None));
    }
}
