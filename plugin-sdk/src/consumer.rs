//! The consumer a request runs as, named the one way every authentication plugin names it: the
//! context entries that `acl`, `rate-limit` plans, `proxy-cache`'s `vary_consumer` and the access
//! log read, and the headers that tell the upstream who called; and, when a verified credential
//! names no consumer, whose credential it was ([`credential`]).

use crate::{Action, Request, RequestEdit, ResponseInit};

/// The upstream headers naming the consumer. An authentication plugin removes a client's own
/// copies ([`remove_forged`]) before it decides, so none reaches the upstream forged.
pub const HEADERS: [&str; 3] = ["x-consumer-id", "x-consumer-groups", "x-anonymous-consumer"];

/// Removes the client's copies of [`HEADERS`]. Not once an authentication plugin earlier in
/// the chain has named a consumer (the context's `consumer`, its anonymous fallback included):
/// it removed the client's copies already, and those there now are its own, which must reach
/// the upstream with its consumer unless a later plugin names another ([`name`]). (Removing
/// them then let a plugin that verified a credential naming no consumer, a route-level key,
/// take them from the request of the consumer an earlier plugin named.)
pub fn remove_forged(req: &Request) {
    if req.context_get("consumer").is_some() {
        return;
    }
    req.edit(HEADERS.map(RequestEdit::RemoveHeader));
}

/// Names consumer `id`, with its comma-separated `groups` (empty: none), as the request's:
/// `consumer` and `consumer.groups` in the context, and `consumer.anonymous` set when it is the
/// `anonymous` fallback, else removed (a consumer named here overrules an earlier plugin's
/// anonymous fallback). With `upstream_headers`, `X-Consumer-Id`, `X-Consumer-Groups` (when it
/// has groups) and `X-Anonymous-Consumer: true` (the fallback) go upstream; without, none of
/// [`HEADERS`] does. One call into the gateway ([`Request::edit`] of [`naming`]).
pub fn name(req: &Request, id: &str, groups: &str, anonymous: bool, upstream_headers: bool) {
    req.edit(naming(id, groups, anonymous, upstream_headers));
}

/// The changes [`name`] makes, for a plugin that has more to make in the same
/// [`Request::edit`] (`builtin:key-auth` removes the presented key with them). Each of
/// [`HEADERS`] is set or removed, so whatever a client sent under those names never reaches the
/// upstream.
pub fn naming<'a>(id: &'a str, groups: &'a str, anonymous: bool, upstream_headers: bool) -> [RequestEdit<'a>; 6] {
    let set_or_remove = |name: &'a str, value: Option<&'a str>| match value {
        Some(value) if upstream_headers => RequestEdit::SetHeader(name, value.as_bytes()),
        _ => RequestEdit::RemoveHeader(name),
    };
    [
        RequestEdit::ContextSet("consumer", id),
        RequestEdit::ContextSet("consumer.groups", groups),
        if anonymous { RequestEdit::ContextSet("consumer.anonymous", "true") } else { RequestEdit::ContextRemove("consumer.anonymous") },
        set_or_remove("x-consumer-id", Some(id)),
        set_or_remove("x-consumer-groups", (!groups.is_empty()).then_some(groups)),
        set_or_remove("x-anonymous-consumer", anonymous.then_some("true")),
    ]
}

/// The context key recording whose credential a request was let through on when no consumer
/// was named for it ([`credential`]).
pub const CREDENTIAL: &str = "credential";

/// Records that an authentication plugin let `req` through on a credential it verified that
/// names no consumer (a route-level key, an identity provider's token, a session an auth service
/// accepted): [`CREDENTIAL`] in the context, `identity` a stable name for that credential that is
/// not the secret itself (a digest of the token, a key id). Without it such callers look alike to
/// what comes after: a cache keyed by consumer (`builtin:proxy-cache`'s `vary_consumer`) keys on
/// it too, so one caller's answer is never served to another. Call it whenever a verified
/// credential lets a request on without [`name`].
pub fn credential(req: &Request, identity: &str) {
    req.context_set(CREDENTIAL, identity);
}

/// Whether context key `key` says who the caller is: `consumer` and every `consumer.*` entry
/// ([`name`]), and [`CREDENTIAL`]. What `acl`, `quota`, rate-limit plans, the metrics and the
/// access log decide on, so only an authentication plugin's own verdict may write them: a
/// plugin copying values it does not vouch for into the context (a token's claims, which its
/// holder chooses) refuses these keys at configure.
pub fn is_identity_key(key: &str) -> bool {
    key == "consumer" || key.starts_with("consumer.") || key == CREDENTIAL
}

/// Whether `name` can be a group name: `consumer.groups` carries a consumer's groups as one
/// comma-separated list, trimmed, so a name with a `,`, a control character or white space at
/// either end (or none at all) could never be matched. For a config naming groups (a plan, a
/// rule) to refuse at load, and an auth plugin to refuse in a credential's claims.
pub fn is_group_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(',') && name.trim() == name && !name.chars().any(char::is_control)
}

/// Whether `text` can be a `WWW-Authenticate` challenge an operator configures for a 401 (RFC
/// 9110 15.5.2: every 401 carries one): one non-blank line of printable ASCII.
pub fn valid_challenge(text: &str) -> bool {
    !text.trim().is_empty() && text.trim() == text && text.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

/// The 401 an authentication plugin answers `req` with: what to present under `header`
/// (`www-authenticate`: RFC 9110 15.5.2 has every 401 carry a challenge; a scheme with more to
/// say adds a header of its own beside it, as HTTP message signatures add `Accept-Signature`) and the gateway's own
/// error shape ([`crate::error_json`]: `status`, `error` `unauthorized`, `request_id`), whose
/// message says only what the client can fix.
pub fn unauthorized(req: &Request, header: &str, challenge: &str, message: &str) -> Action {
    ResponseInit::error(401, "unauthorized", message, &req.request_id()).header(header, challenge).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_name_is_one_a_comma_separated_list_can_carry() {
        assert!(is_group_name("gold") && is_group_name("plan b") && is_group_name("ops:eu"));
        for bad in ["", "a,b", " gold", "gold ", "a\u{7}b"] {
            assert!(!is_group_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_challenge_is_one_non_blank_line_of_printable_ascii() {
        for good in ["Bearer realm=\"api\"", "Key realm=\"a\",\tcharset=\"UTF-8\""] {
            assert!(valid_challenge(good), "{good}");
        }
        for bad in ["", "  ", "Bearer\nrealm", "Bearer realm=\"caf\u{e9}\"", " Bearer", "Bearer realm=\"a\" "] {
            assert!(!valid_challenge(bad), "{bad:?}");
        }
    }

    #[test]
    fn naming_sets_the_context_and_sets_or_removes_every_consumer_header() {
        use RequestEdit::*;
        assert_eq!(
            naming("alice", "admin,ops", false, true),
            [
                ContextSet("consumer", "alice"),
                ContextSet("consumer.groups", "admin,ops"),
                ContextRemove("consumer.anonymous"),
                SetHeader("x-consumer-id", b"alice"),
                SetHeader("x-consumer-groups", b"admin,ops"),
                RemoveHeader("x-anonymous-consumer"),
            ]
        );
        assert_eq!(
            naming("guest", "", true, true),
            [
                ContextSet("consumer", "guest"),
                ContextSet("consumer.groups", ""),
                ContextSet("consumer.anonymous", "true"),
                SetHeader("x-consumer-id", b"guest"),
                RemoveHeader("x-consumer-groups"),
                SetHeader("x-anonymous-consumer", b"true"),
            ]
        );
        let hidden = naming("alice", "admin", true, false);
        assert_eq!(&hidden[3..], [RemoveHeader("x-consumer-id"), RemoveHeader("x-consumer-groups"), RemoveHeader("x-anonymous-consumer")]);
    }
}
