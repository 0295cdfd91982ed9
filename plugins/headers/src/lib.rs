//! `builtin:headers`: edits request and response headers.
//!
//! ```toml
//! [[routes.plugins]]
//! plugin = "builtin:headers"
//! [routes.plugins.config.request]           # every key is optional
//! remove = ["x-secret"]                     # remove every value
//! rename = { "x-old" = "x-new" }            # move every value to the new name (replacing it)
//! set = { "x-route" = "${param.id}" }       # replace every value with this one
//! add = { "x-default" = "v" }               # set only if the header is absent
//! append = { "x-multi" = "v" }              # add another value
//! [routes.plugins.config.response]          # the same five keys
//! set = { "x-served-by" = "airlock" }
//! ```
//!
//! Each direction applies its rules in the order remove, rename, set, add, append. Values of
//! `set`, `add` and `append` are templates (`airlock_sdk::template`): `${context.KEY}`,
//! `${param.NAME}`, `${header.NAME}` (always the request's header, also in response rules),
//! `${query.NAME}`, `${request_id}`, `${route}`, `${client_ip}`; `$${` is a literal `${`, and a variable without
//! a value expands to nothing. Templates are parsed once, at configure: a malformed template, an
//! unknown variable, an invalid header name or an unknown key rejects the config, naming the key.
//! The rules themselves are `airlock_sdk::header_rules`, shared with `builtin:transform`.
//!
//! The rules make the same changes on every request, each value a literal or a template read
//! where the change is made, and a request `add` or `rename` looking at the request's headers
//! there: the plugin declares them to the gateway once, at configure
//! (`Plugin::templated_fixed_edits`), turns both phases off, and the gateway makes them itself,
//! building each templated value from the request at the entry's place in the chain (on the way
//! back, where `on-response` would run), with no call into the plugin per request. Only rules
//! past what a gateway takes as fixed edits (more than 256 of them, 256 KiB of names and values,
//! or a value of more than 64 pieces) are made by the plugin's own phases: then
//! response rules whose templates read only what no later plugin can change (literals,
//! `${param.NAME}`, `${request_id}`, `${route}`, `${client_ip}`) are handed to the gateway from `on-request` as
//! response edits (`request.edit-response`), made where `on-response` would run: the same
//! response, without a second call into the plugin per request. Rules reading headers, the query
//! or the context stay in `on-response`, where they see what later plugins set.
//!
//! Response rules made by the gateway (fixed edits, or response edits from `on-request`) are
//! made on the gateway's own answers too (a 502 when the upstream is down, the 500 of a later
//! plugin failing closed), so a browser still reads them; rules left to `on-response` are not,
//! as no response phase is called for those answers.

// Natively (unit tests) the plugin is only reached through `airlock_sdk::configure`.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use airlock_sdk::header_rules::{self, HeaderRules, NO_RULES};
use airlock_sdk::{Action, Descriptor, FixedEdit, Plugin, Request, Response, export_plugin};
use serde::Deserialize;

/// The plugin's config.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    request: HeaderRules,
    response: HeaderRules,
}

/// The configured plugin.
#[derive(Debug)]
struct HeadersPlugin {
    request: HeaderRules,
    response: HeaderRules,
    /// The response rules are handed to the gateway from `on-request` (their templates read
    /// nothing a later plugin can change), so there is no `on-response` to call.
    response_from_request: bool,
    /// Every rule makes the same change on every request, its value literal or built by the
    /// gateway: declared to the gateway as fixed edits, made without a call.
    fixed: bool,
}

impl Plugin for HeadersPlugin {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        config.request.validate("request")?;
        config.response.validate("response")?;
        let response_from_request = !config.response.is_empty() && config.response.settled_at_request();
        let fixed = header_rules::templated_fixed_edits(&config.request, &config.response).is_some();
        Ok(Self { request: config.request, response: config.response, response_from_request, fixed })
    }

    /// Fixed rules are the gateway's to make.
    fn templated_fixed_edits(&self) -> Vec<FixedEdit<'_>> {
        if !self.fixed {
            return Vec::new();
        }
        header_rules::templated_fixed_edits(&self.request, &self.response).unwrap_or_default()
    }

    fn fixed_edit_keys(&self) -> Vec<String> {
        header_rules::fixed_edit_keys(&self.request, "request", &self.response, "response")
    }

    /// A phase with nothing to do is switched off, so the gateway skips that call entirely;
    /// response rules made in `on-request` need no `on-response`, and fixed rules no call at all.
    fn configured_descriptor(&self) -> Descriptor {
        if self.fixed {
            return Descriptor::default().with_on_request(false).with_on_response(false);
        }
        let response_phase = !self.response.is_empty() && !self.response_from_request;
        Descriptor::default()
            .with_on_request(!self.request.is_empty() || self.response_from_request)
            .with_on_response(response_phase)
    }

    /// Request rules that only write, and the response rules made from here, go to the
    /// gateway in one call.
    fn on_request(&self, req: &Request) -> Action {
        let response = if self.response_from_request { &self.response } else { &NO_RULES };
        if !self.request.is_empty() {
            self.request.apply_with_response(response, req);
        } else if !response.is_empty() {
            response.apply_to_response(req, req);
        }
        Action::Continue
    }

    fn on_response(&self, req: &Request, resp: &Response) {
        if !self.response_from_request {
            self.response.apply(resp, req);
        }
    }
}

export_plugin!(HeadersPlugin);

#[cfg(test)]
mod tests {
    use airlock_sdk::header_rules::HeaderName;

    use super::*;

    fn configure(json: &str) -> Result<HeadersPlugin, String> {
        airlock_sdk::configure::<HeadersPlugin>(json)
    }

    #[test]
    fn a_full_config_parses_in_order() {
        let p = configure(
            r#"{"request": {"remove": ["X-Secret"], "rename": {"x-old": "X-New"},
                "set": {"x-b": "${param.id}", "x-a": "1"}, "add": {"x-d": "d"}, "append": {"x-m": "m"}},
                "response": {"set": {"x-served-by": "airlock"}}}"#,
        )
        .unwrap();
        assert_eq!(p.request.remove, [HeaderName("x-secret".into())]);
        assert_eq!(p.request.rename.0, [("x-old".to_owned(), HeaderName("x-new".into()))]);
        let set: Vec<&str> = p.request.set.0.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(set, ["x-b", "x-a"], "written order is kept");
        assert!(!p.response.is_empty());
        assert!(configure("{}").unwrap().request.is_empty());
    }

    #[test]
    fn config_errors_name_the_key() {
        let err = |json: &str| configure(json).unwrap_err();
        assert_eq!(
            err(r#"{"request": {"set": {"x-a": 5}}}"#),
            "`request.set.x-a`: invalid type: integer `5`, expected a string"
        );
        assert!(
            err(r#"{"request": {"set": {"x-a": "${nope}"}}}"#)
                .starts_with("`request.set.x-a`: unknown variable `${nope}`"),
        );
        assert!(
            err(r#"{"response": {"append": {"x-a": "${param.id"}}}"#)
                .starts_with("`response.append.x-a`: unclosed `${`"),
        );
        assert!(
            err(r#"{"request": {"set": {"bad header": "x"}}}"#)
                .contains("invalid header name `bad header`: use letters, digits"),
        );
        assert!(err(r#"{"request": {"set": {"bad header": "x"}}}"#).starts_with("`request.set"));
        assert!(
            err(r#"{"request": {"remove": ["x", "a b"]}}"#).starts_with("`request.remove[1]`: invalid header name")
        );
        assert_eq!(
            err(r#"{"request": {"sett": {}}}"#),
            "`request.sett`: unknown field `sett`, expected one of `remove`, `rename`, `set`, `add`, `append`"
        );
        assert_eq!(
            err(r#"{"requests": {}}"#),
            "`requests`: unknown field `requests`, expected `request` or `response`"
        );
        assert_eq!(
            err(r#"{"request": {"set": {"X-A": "1", "x-a": "2"}}}"#),
            "`request.set`: header `x-a` appears twice (header names are case-insensitive)"
        );
        assert_eq!(err(r#"{"request": {"rename": {"x-a": "X-A"}}}"#), "`request.rename.x-a`: renames `x-a` to itself");
        assert_eq!(
            err(r#"{"response": {"set": {"Content-Length": "5"}}}"#),
            "`response.set.content-length`: `content-length` is set by the gateway for each hop (message framing and connection), not by plugins"
        );
        assert!(err(r#"{"request": {"append": {"connection": "x"}}}"#).starts_with("`request.append.connection`: `connection` is set by the gateway"));
        assert!(err(r#"{"request": {"rename": {"x-up": "Upgrade"}}}"#).starts_with("`request.rename.x-up`: `upgrade` is set by the gateway"));
        assert!(configure(r#"{"request": {"remove": ["connection"], "rename": {"upgrade": "x-up"}}}"#).is_ok(), "removing them is fine");
    }

    /// A request `set` whose value has more pieces than a gateway builds: the rules beside it are
    /// then made by the plugin's own phases.
    fn past_fixed_edits() -> String {
        let pieces = "${request_id}-".repeat(airlock_sdk::fixed_edits::MAX_VALUE_PARTS);
        format!(r#""set": {{"x-big": "{pieces}"}}"#)
    }

    #[test]
    fn response_rules_no_later_plugin_can_change_are_made_from_the_request_phase() {
        // Beside a request rule past what a gateway builds (so the plugin's phases make the
        // rules); alone, these would be fixed edits, made with no call at all.
        let big = past_fixed_edits();
        let settled = configure(&format!(
            r#"{{"request": {{{big}}}, "response": {{"remove": ["server"], "set": {{"x-served-by": "airlock", "x-at": "${{route}}/${{param.id}}"}}}}}}"#,
        ))
        .unwrap();
        let d = settled.configured_descriptor();
        assert!(settled.response_from_request && d.on_request && !d.on_response, "{d:?}");
        for template in ["${context.consumer}", "${header.x-user}", "${query.q}", "v-${header.x-user}"] {
            let json = format!(r#"{{"request": {{{big}}}, "response": {{"append": {{"x-b": "{template}"}}}}}}"#);
            let later = configure(&json).unwrap();
            let d = later.configured_descriptor();
            assert!(!later.response_from_request && d.on_request && d.on_response, "{template}: {d:?}");
        }
        let none = configure(r#"{"request": {"set": {"x-a": "${param.id}"}}}"#).unwrap();
        assert!(!none.response_from_request && !none.configured_descriptor().on_response);
    }

    #[test]
    fn rules_the_gateway_can_make_are_fixed_edits_and_no_phase_is_called() {
        use airlock_sdk::{RequestEdit, ResponseEdit};
        let fixed = configure(
            r#"{"request": {"remove": ["x-secret"], "set": {"x-a": "1", "x-user": "u-${param.id}"}}, "response": {"add": {"x-b": "2"}, "set": {"x-r": "${route}"}}}"#,
        )
        .unwrap();
        let d = fixed.configured_descriptor();
        assert!(!d.on_request && !d.on_response, "{d:?}");
        let edits = fixed.templated_fixed_edits();
        let template = |e: &FixedEdit| match *e {
            FixedEdit::SetHeader(_, t) | FixedEdit::ResponseSet(_, t) => Some(t.clone()),
            _ => None,
        };
        assert_eq!(edits.len(), 5);
        assert_eq!(edits[0], FixedEdit::Same(RequestEdit::RemoveHeader("x-secret")));
        assert_eq!(edits[1], FixedEdit::Same(RequestEdit::SetHeader("x-a", b"1")), "a literal is the same on every request");
        assert!(matches!(edits[2], FixedEdit::SetHeader("x-user", _)));
        assert_eq!(template(&edits[2]), Some(airlock_sdk::template::Template::parse("u-${param.id}").unwrap()));
        assert!(matches!(edits[3], FixedEdit::ResponseSet("x-r", _)), "response rules in their own order: set, then add");
        assert_eq!(edits[4], FixedEdit::Same(RequestEdit::Response(ResponseEdit::Add("x-b", b"2"))));
        // Values read from the request are built where the change is made.
        let reads = configure(r#"{"request": {"set": {"x-a": "${header.x-b}"}}, "response": {"set": {"x-b": "${context.consumer}"}}}"#).unwrap();
        assert!(matches!(reads.templated_fixed_edits()[..], [FixedEdit::SetHeader("x-a", _), FixedEdit::ResponseSet("x-b", _)]));
        assert!(!reads.configured_descriptor().on_request && !reads.configured_descriptor().on_response);
        // A request rule that looks at the request to decide what to write is made there too.
        let deciding = configure(r#"{"request": {"add": {"x-a": "${param.id}"}, "rename": {"x-b": "x-c"}}, "response": {"set": {"x-c": "1"}}}"#).unwrap();
        assert!(matches!(deciding.templated_fixed_edits()[..], [FixedEdit::RenameHeader("x-b", "x-c"), FixedEdit::AddHeader("x-a", _), FixedEdit::Same(_)]));
        assert!(!deciding.configured_descriptor().on_request && !deciding.configured_descriptor().on_response);
        // Past what a gateway takes as fixed edits, the plugin's phases make the rules.
        let called = configure(&format!(r#"{{"request": {{{}}}, "response": {{"set": {{"x-c": "1"}}}}}}"#, past_fixed_edits())).unwrap();
        assert!(called.templated_fixed_edits().is_empty());
        let d = called.configured_descriptor();
        assert!(d.on_request && !d.on_response, "{d:?}");
    }
}
