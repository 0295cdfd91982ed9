//! What the auth service's answer (or its absence) decides: allow, deny, or the service failed.

use airlock_sdk::ResponseInit;
use airlock_sdk::http_client::{HttpError, Response};

use crate::config::Settings;

/// Headers of a refusal passed to the client with it: the challenge, a redirect's target, a
/// login flow's cookies, and what the body is.
pub const DENIAL_HEADERS: &[&str] = &["www-authenticate", "location", "set-cookie", "content-type"];

/// Longest consumer id taken from `consumer_header`, in bytes: it is a metrics label, an access
/// log field and a rate-limit key.
pub const MAX_CONSUMER_BYTES: usize = 256;

/// The decision for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A 2xx: the request goes on.
    Allow {
        /// The `response_headers` the answer carried (every value, in order), to set upstream.
        headers: Vec<(String, Vec<u8>)>,
        /// The consumer named by `consumer_header`: `Ok(None)` when not configured or absent,
        /// `Err` (the reason, logged) when the value is unusable.
        consumer: Result<Option<String>, String>,
        /// Its groups from `groups_header`, comma-separated and trimmed (empty: none).
        groups: String,
        /// The answer's `Set-Cookie` values for `response_cookies`, to pass to the client.
        cookies: Vec<Vec<u8>>,
    },
    /// A 3xx or 4xx: this answer goes to the client; the upstream is not called.
    Deny(ResponseInit),
    /// No usable answer (unreachable, timeout, 5xx, a 2xx naming the consumer twice...): the
    /// reason, for the log only.
    Fail(String),
}

/// Judges the auth call's outcome.
pub fn judge(settings: &Settings, outcome: Result<Response, HttpError>) -> Verdict {
    let answer = match outcome {
        Ok(answer) => answer,
        Err(e) => return Verdict::Fail(describe_error(&e)),
    };
    match answer.status {
        200..=299 => {
            if let Some(reason) = settings.consumer_header.as_deref().and_then(|name| ambiguous(&answer, name)) {
                return Verdict::Fail(reason);
            }
            allow(settings, &answer)
        }
        300..=499 => {
            let mut init = ResponseInit::new(answer.status);
            init.headers = values_of(&answer.headers, DENIAL_HEADERS);
            init.body = answer.body;
            Verdict::Deny(init)
        }
        status => Verdict::Fail(format!("the auth service answered {status}")),
    }
}

/// The verdict for an allowing answer whose consumer is not ambiguous.
fn allow(settings: &Settings, answer: &Response) -> Verdict {
    Verdict::Allow {
        headers: values_of(&answer.headers, &settings.response_headers),
        consumer: settings.consumer_header.as_deref().map_or(Ok(None), |name| consumer(answer, name)),
        groups: settings.groups_header.as_deref().map(|name| groups(answer, name)).unwrap_or_default(),
        cookies: cookies(answer, &settings.response_cookies),
    }
}

/// The `Set-Cookie` values of an allowing answer whose cookie is named in `names` (`*`: all).
fn cookies(answer: &Response, names: &[String]) -> Vec<Vec<u8>> {
    if names.is_empty() {
        return Vec::new();
    }
    let listed = |value: &[u8]| {
        let name = value.split(|b| *b == b'=').next().unwrap_or_default().trim_ascii();
        names.iter().any(|n| n == "*" || n.as_bytes() == name)
    };
    answer.headers.iter().filter(|(n, v)| n.eq_ignore_ascii_case("set-cookie") && listed(v)).map(|(_, v)| v.clone()).collect()
}

/// Why an allowing answer's identity is ambiguous, if it is: more than one field of the consumer
/// header (`X-User-Id: alice` and `X-User-Id: bob`), even two equal ones. Which one the service
/// meant cannot be known, so the answer counts as the service failing: no consumer is named and
/// neither value is copied upstream. (Several `groups_header` fields are one list, by design.)
fn ambiguous(answer: &Response, name: &str) -> Option<String> {
    let fields = answer.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).count();
    (fields > 1).then(|| format!("the auth service's answer names the consumer {fields} times (`{name}`): an ambiguous identity is not let through"))
}

/// Every value of each header in `names`, grouped by name in `names`' order.
fn values_of<S: AsRef<str>>(headers: &[(String, Vec<u8>)], names: &[S]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for name in names {
        let name = name.as_ref();
        out.extend(headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| (name.to_owned(), v.clone())));
    }
    out
}

/// Longest list of groups taken from `groups_header`, in bytes.
pub const MAX_GROUPS_BYTES: usize = 1024;

/// The groups in every field of header `name` of an allowing answer: comma-separated names,
/// trimmed, empty ones and ones with control characters dropped, up to [`MAX_GROUPS_BYTES`].
fn groups(answer: &Response, name: &str) -> String {
    let mut out = String::new();
    let fields = answer.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).filter_map(|(_, v)| std::str::from_utf8(v).ok());
    for group in fields.flat_map(|f| f.split(',')).map(str::trim).filter(|g| !g.is_empty() && !g.chars().any(char::is_control)) {
        if out.len() + group.len() + 1 > MAX_GROUPS_BYTES {
            break;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(group);
    }
    out
}

/// The consumer id in header `name` of an allowing answer.
fn consumer(answer: &Response, name: &str) -> Result<Option<String>, String> {
    let Some(raw) = answer.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v) else {
        return Ok(None);
    };
    let text = std::str::from_utf8(raw).map_err(|_| format!("`{name}` of the auth answer is not UTF-8"))?.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if text.len() > MAX_CONSUMER_BYTES {
        return Err(format!("`{name}` of the auth answer is longer than {MAX_CONSUMER_BYTES} bytes"));
    }
    if text.chars().any(char::is_control) {
        return Err(format!("`{name}` of the auth answer holds control characters"));
    }
    Ok(Some(text.to_owned()))
}

/// A failed call, in words for the log.
fn describe_error(e: &HttpError) -> String {
    match e {
        HttpError::Denied(m) => format!("the call was refused by the gateway: {m}"),
        HttpError::Invalid(m) => format!("the call was invalid: {m}"),
        HttpError::Connect(m) => format!("the auth service could not be reached: {m}"),
        HttpError::Timeout => "the auth service did not answer within the timeout".to_owned(),
        HttpError::TooLarge => "the auth service's answer was larger than the grant's `max_response_bytes`".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Settings};

    fn settings() -> Settings {
        let c: Config = airlock_sdk::serde_json::from_str(
            r#"{"url": "http://a", "response_headers": ["x-user-id", "x-user-roles"], "consumer_header": "x-user-id"}"#,
        )
        .unwrap();
        Settings::from_config(c).unwrap()
    }

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Result<Response, HttpError> {
        Ok(Response {
            status,
            headers: headers.iter().map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec())).collect(),
            body: body.as_bytes().to_vec(),
        })
    }

    fn h(name: &str, value: &str) -> (String, Vec<u8>) {
        (name.to_owned(), value.as_bytes().to_vec())
    }

    #[test]
    fn a_2xx_allows_with_the_listed_headers_only() {
        let v = judge(
            &settings(),
            answer(204, &[("x-user-roles", "a"), ("x-user-id", "alice"), ("x-other", "no"), ("x-user-roles", "b")], ""),
        );
        assert_eq!(
            v,
            Verdict::Allow {
                headers: vec![h("x-user-id", "alice"), h("x-user-roles", "a"), h("x-user-roles", "b")],
                consumer: Ok(Some("alice".into())),
                groups: String::new(),
                cookies: vec![],
            }
        );
    }

    #[test]
    fn an_allow_without_the_consumer_header_names_none() {
        let v = judge(&settings(), answer(200, &[], "ok"));
        assert_eq!(v, Verdict::Allow { headers: vec![], consumer: Ok(None), groups: String::new(), cookies: vec![] });
    }

    #[test]
    fn only_the_listed_cookies_of_an_allow_are_passed_on() {
        let with = |cookies: &str| {
            let c: Config = airlock_sdk::serde_json::from_str(&format!(r#"{{"url": "http://a", "response_cookies": {cookies}}}"#)).unwrap();
            Settings::from_config(c).unwrap()
        };
        let fields = [("set-cookie", "_oauth2_proxy=new; Path=/; HttpOnly"), ("Set-Cookie", "tracker=1"), ("set-cookie", "_oauth2_proxy_csrf=x")];
        let Verdict::Allow { cookies, .. } = judge(&with(r#"["_oauth2_proxy"]"#), answer(200, &fields, "")) else { panic!() };
        assert_eq!(cookies, [b"_oauth2_proxy=new; Path=/; HttpOnly".to_vec()], "by exact name, not prefix");
        let Verdict::Allow { cookies, .. } = judge(&with(r#"["*"]"#), answer(200, &fields, "")) else { panic!() };
        assert_eq!(cookies.len(), 3);
        let Verdict::Allow { cookies, .. } = judge(&settings(), answer(200, &fields, "")) else { panic!() };
        assert!(cookies.is_empty(), "none unless listed");
        let c: Config = airlock_sdk::serde_json::from_str(r#"{"url": "http://a", "response_cookies": ["a b"]}"#).unwrap();
        assert!(Settings::from_config(c).unwrap_err().starts_with("`response_cookies[0]`: `a b` is not a cookie name"));
    }

    #[test]
    fn groups_are_read_from_every_field_trimmed_and_bounded() {
        let c: Config = airlock_sdk::serde_json::from_str(
            r#"{"url": "http://a", "consumer_header": "x-user-id", "groups_header": "X-User-Groups"}"#,
        )
        .unwrap();
        let s = Settings::from_config(c).unwrap();
        let fields = [("x-user-id", "alice"), ("x-user-groups", " admin, ops ,,"), ("X-User-Groups", "bad\u{7}one, dev")];
        let Verdict::Allow { groups, .. } = judge(&s, answer(200, &fields, "")) else { panic!() };
        assert_eq!(groups, "admin,ops,dev");
        let many = "g".repeat(100) + ",";
        let Verdict::Allow { groups, .. } = judge(&s, answer(200, &[("x-user-groups", &many.repeat(20))], "")) else { panic!() };
        assert!(groups.len() <= MAX_GROUPS_BYTES && groups.split(',').all(|g| g.len() == 100), "{}", groups.len());
        let c: Config = airlock_sdk::serde_json::from_str(r#"{"url": "http://a", "groups_header": "x-g"}"#).unwrap();
        assert_eq!(Settings::from_config(c).unwrap_err(), "`groups_header` needs `consumer_header`: groups belong to a named consumer");
    }

    #[test]
    fn unusable_consumer_ids_are_reported() {
        let long = "x".repeat(MAX_CONSUMER_BYTES + 1);
        for value in [long.as_str(), "a\u{7}b"] {
            let Verdict::Allow { consumer, .. } = judge(&settings(), answer(200, &[("x-user-id", value)], "")) else { panic!() };
            assert!(consumer.is_err(), "{value:?}");
        }
        let Verdict::Allow { consumer, .. } = judge(&settings(), answer(200, &[("x-user-id", "  bob ")], "")) else { panic!() };
        assert_eq!(consumer, Ok(Some("bob".into())));
    }

    #[test]
    fn a_consumer_named_twice_is_a_failure_not_an_allow() {
        for fields in [[("x-user-id", "alice"), ("X-User-Id", "bob")], [("x-user-id", "alice"), ("x-user-id", "alice")]] {
            let v = judge(&settings(), answer(200, &fields, ""));
            let Verdict::Fail(reason) = v else { panic!("{fields:?}: {v:?}") };
            assert!(reason.contains("names the consumer 2 times (`x-user-id`)"), "{reason}");
        }
        // Without `consumer_header` the header is only copied: every value, as documented.
        let c: Config = airlock_sdk::serde_json::from_str(r#"{"url": "http://a", "response_headers": ["x-user-id"]}"#).unwrap();
        let s = Settings::from_config(c).unwrap();
        let Verdict::Allow { headers, .. } = judge(&s, answer(200, &[("x-user-id", "a"), ("x-user-id", "b")], "")) else { panic!() };
        assert_eq!(headers, [h("x-user-id", "a"), h("x-user-id", "b")]);
        // Groups in several fields are one list, not an ambiguity.
        let c: Config = airlock_sdk::serde_json::from_str(
            r#"{"url": "http://a", "consumer_header": "x-user-id", "groups_header": "x-user-groups"}"#,
        )
        .unwrap();
        let s = Settings::from_config(c).unwrap();
        let fields = [("x-user-id", "carol"), ("x-user-groups", "a"), ("x-user-groups", "b")];
        let Verdict::Allow { consumer, groups, .. } = judge(&s, answer(200, &fields, "")) else { panic!() };
        assert_eq!((consumer, groups.as_str()), (Ok(Some("carol".to_owned())), "a,b"));
    }

    #[test]
    fn refusals_and_redirects_pass_with_their_selected_headers_and_body() {
        let v = judge(
            &settings(),
            answer(
                401,
                &[("www-authenticate", "Bearer realm=\"x\""), ("x-internal", "secret"), ("content-type", "application/json")],
                "{\"error\":\"no\"}",
            ),
        );
        let Verdict::Deny(init) = v else { panic!("{v:?}") };
        assert_eq!(init.status, 401);
        assert_eq!(init.headers, [h("www-authenticate", "Bearer realm=\"x\""), h("content-type", "application/json")]);
        assert_eq!(init.body, b"{\"error\":\"no\"}");

        let v = judge(&settings(), answer(302, &[("location", "https://login/?rd=x"), ("set-cookie", "a=1"), ("set-cookie", "b=2")], ""));
        let Verdict::Deny(init) = v else { panic!("{v:?}") };
        assert_eq!(init.status, 302);
        assert_eq!(init.headers, [h("location", "https://login/?rd=x"), h("set-cookie", "a=1"), h("set-cookie", "b=2")]);
        for status in [400, 403, 404, 429] {
            assert!(matches!(judge(&settings(), answer(status, &[], "")), Verdict::Deny(i) if i.status == status));
        }
    }

    #[test]
    fn server_errors_and_failed_calls_are_failures() {
        for status in [500, 502, 503, 504] {
            assert_eq!(judge(&settings(), answer(status, &[], "stack trace")), Verdict::Fail(format!("the auth service answered {status}")));
        }
        assert!(matches!(judge(&settings(), Err(HttpError::Timeout)), Verdict::Fail(m) if m.contains("timeout")));
        assert!(matches!(judge(&settings(), Err(HttpError::Connect("refused".into()))), Verdict::Fail(m) if m.contains("refused")));
        assert!(matches!(judge(&settings(), Err(HttpError::TooLarge)), Verdict::Fail(_)));
        assert!(matches!(judge(&settings(), Err(HttpError::Denied("x".into()))), Verdict::Fail(_)));
    }
}
