//! Declarative header rules (remove, rename, set, add, append) for plugin configs, shared by the
//! built-in plugins that edit headers (`builtin:headers`, `builtin:transform`) so that both read
//! and apply them the same way.
//!
//! ```toml
//! remove = ["x-secret"]                     # remove every value
//! rename = { "x-old" = "x-new" }            # move every value to the new name (replacing it)
//! set = { "x-route" = "${param.id}" }       # replace every value with this one
//! add = { "x-default" = "v" }               # set only if the header is absent
//! append = { "x-multi" = "v" }              # add another value
//! ```
//!
//! Rules apply in the order remove, rename, set, add, append. Values are
//! [templates](crate::template). Names and values are validated while the config is
//! deserialized, so errors carry the key path (`` `request.set.bad name`: invalid header name``).
//!
//! ```
//! use airlock_sdk::header_rules::HeaderRules;
//!
//! let rules: HeaderRules = serde_json::from_str(r#"{"set": {"X-A": "${param.id}"}}"#).unwrap();
//! assert!(!rules.is_empty());
//! assert!(rules.validate("request").is_ok());
//! ```

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use crate::template::{Source, Template};
use crate::{FixedEdit, Request, RequestEdit, Response, ResponseEdit};

/// Whether `text` is an RFC 9110 token (5.6.2): what header names, cookie names and media type
/// parts are made of. Not empty.
pub fn is_token(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Checks an HTTP header name (an RFC 9110 token) and lower-cases it.
pub fn header_name(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("empty header name".to_owned());
    }
    if !is_token(name) {
        return Err(format!("invalid header name `{name}`: use letters, digits and !#$%&'*+-.^_`|~"));
    }
    Ok(name.to_ascii_lowercase())
}

/// Headers the gateway sets for each hop and ignores (with a warning) when a plugin sets them:
/// a message's framing and its connection's management. A value that disagreed with the body
/// would split the message on a kept-alive connection, and an `upgrade` would switch an
/// upstream connection the client never asked to switch.
pub const GATEWAY_MANAGED: [&str; 6] = ["connection", "content-length", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"];

/// Checks a header name a plugin's config sets or adds: valid ([`header_name`]), lower-cased,
/// and not one of [`GATEWAY_MANAGED`].
pub fn settable_header_name(name: &str) -> Result<String, String> {
    let name = header_name(name)?;
    if GATEWAY_MANAGED.contains(&name.as_str()) {
        return Err(format!("`{name}` is set by the gateway for each hop (message framing and connection), not by plugins"));
    }
    Ok(name)
}

/// A valid header name, lower-case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderName(pub String);

impl<'de> Deserialize<'de> for HeaderName {
    /// From a string, checked and lower-cased by [`header_name`].
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        header_name(&text).map(HeaderName).map_err(de::Error::custom)
    }
}

/// A header value template: a [`Template`] whose literal text is a valid header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderValue(pub Template);

impl<'de> Deserialize<'de> for HeaderValue {
    /// From a string, parsed with [`Template::parse_header_value`].
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Template::parse_header_value(&text).map(HeaderValue).map_err(de::Error::custom)
    }
}

/// A table of header name to `V`, in the order written; a header may appear once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMap<V>(pub Vec<(String, V)>);

impl<V> Default for HeaderMap<V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for HeaderMap<V> {
    /// From a table; a name written twice (in any case) is an error.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = HeaderMap<V>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a table of header names")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries: Vec<(String, V)> = Vec::new();
                while let Some(HeaderName(name)) = map.next_key()? {
                    let value = map.next_value()?;
                    if entries.iter().any(|(seen, _)| *seen == name) {
                        return Err(de::Error::custom(format!(
                            "header `{name}` appears twice (header names are case-insensitive)"
                        )));
                    }
                    entries.push((name, value));
                }
                Ok(HeaderMap(entries))
            }
        }

        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}

/// The header rules for one direction (request or response); every key is optional.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeaderRules {
    /// Headers whose every value is removed.
    pub remove: Vec<HeaderName>,
    /// Every value of the key moves to the value's name, replacing what was there.
    pub rename: HeaderMap<HeaderName>,
    /// Every value is replaced with this one.
    pub set: HeaderMap<HeaderValue>,
    /// Set only if the header is absent.
    pub add: HeaderMap<HeaderValue>,
    /// Another value is added.
    pub append: HeaderMap<HeaderValue>,
}

impl HeaderRules {
    /// True if there is no rule.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty()
            && self.rename.0.is_empty()
            && self.set.0.is_empty()
            && self.add.0.is_empty()
            && self.append.0.is_empty()
    }

    /// Checks what deserializing cannot: a rename to the same name, and a header the gateway
    /// manages ([`GATEWAY_MANAGED`]) set, added or renamed to. `key` is where the rules sit in
    /// the config (e.g. `request`), for the message.
    pub fn validate(&self, key: &str) -> Result<(), String> {
        if let Some((name, _)) = self.rename.0.iter().find(|(from, to)| *from == to.0) {
            return Err(format!("`{key}.rename.{name}`: renames `{name}` to itself"));
        }
        let written = [("set", &self.set), ("add", &self.add), ("append", &self.append)];
        let targets = written.iter().flat_map(|(rule, map)| map.0.iter().map(move |(name, _)| (*rule, name, name)));
        let renamed = self.rename.0.iter().map(|(from, HeaderName(to))| ("rename", from, to));
        for (rule, at, name) in targets.chain(renamed) {
            settable_header_name(name).map_err(|e| format!("`{key}.{rule}.{at}`: {e}"))?;
        }
        Ok(())
    }

    /// Applies the rules to `target`, expanding templates from `source` (the request).
    pub fn apply(&self, target: &impl Headers, source: &impl Source) {
        for HeaderName(name) in &self.remove {
            target.remove(name);
        }
        for (from, HeaderName(to)) in &self.rename.0 {
            let values = target.get_all(from);
            if values.is_empty() {
                continue;
            }
            target.remove(from);
            target.remove(to);
            for value in values {
                target.append(to, &value);
            }
        }
        for (name, HeaderValue(template)) in &self.set.0 {
            target.set(name, &template.expand_borrowed(source));
        }
        for (name, HeaderValue(template)) in &self.add.0 {
            if target.get(name).is_none() {
                target.set(name, &template.expand_borrowed(source));
            }
        }
        for (name, HeaderValue(template)) in &self.append.0 {
            target.append(name, &template.expand_borrowed(source));
        }
    }
}

impl HeaderRules {
    /// True if applying the rules to the response from the request phase
    /// ([`HeaderRules::apply_to_response`]) gives the same response as applying them in
    /// `on_response`: every template is [settled](Template::is_settled_at_request) when the
    /// request phase runs.
    pub fn settled_at_request(&self) -> bool {
        let templates = self.set.0.iter().chain(&self.add.0).chain(&self.append.0);
        templates.map(|(_, HeaderValue(t))| t).all(Template::is_settled_at_request)
    }

    /// Applies the rules to the response `req` will get, from its request phase: the same
    /// changes in the same order, recorded as response edits (all in one [`Request::edit`]) and
    /// made by the gateway where this plugin's `on_response` would run, without a call into it.
    /// Templates expand from `source` now, so use it only when
    /// [`HeaderRules::settled_at_request`].
    pub fn apply_to_response(&self, req: &Request, source: &impl Source) {
        if self.is_empty() {
            return;
        }
        let expanded = self.expand_variables(source);
        req.edit(edits(&NO_RULES, &[], self, &expanded));
    }

    /// True if the rules read nothing that applying them, or any plugin, changes: no `rename`
    /// or `add` (they read the headers they change), and every template
    /// [settled](Template::is_settled_at_request). Applied to a request they are then only
    /// writes, which [`HeaderRules::apply_with_response`] makes in one call.
    pub fn write_only(&self) -> bool {
        self.rename.0.is_empty() && self.add.0.is_empty() && self.settled_at_request()
    }

    /// Applies these rules to `req` (as [`HeaderRules::apply`]) and `response` to the response
    /// it will get (as [`HeaderRules::apply_to_response`], so only when
    /// [`HeaderRules::settled_at_request`]): in one call into the gateway when these rules are
    /// [write-only](HeaderRules::write_only), the same changes in the same order.
    pub fn apply_with_response(&self, response: &HeaderRules, req: &Request) {
        if !self.write_only() {
            self.apply(req, req);
            return response.apply_to_response(req, req);
        }
        let (expanded, response_expanded) = (self.expand_variables(req), response.expand_variables(req));
        req.edit(edits(self, &expanded, response, &response_expanded));
    }

    /// True if every value is a literal (no template variable): the rules say the same on
    /// every request.
    pub fn literal(&self) -> bool {
        let templates = self.set.0.iter().chain(&self.add.0).chain(&self.append.0);
        templates.map(|(_, HeaderValue(t))| t).all(|t| t.as_literal().is_some())
    }

    /// The rules in the order they apply.
    fn in_order(&self) -> impl Iterator<Item = Rule<'_>> {
        let remove = self.remove.iter().map(|HeaderName(name)| Rule::Remove(name));
        let rename = self.rename.0.iter().map(|(from, HeaderName(to))| Rule::Rename(from, to));
        let set = self.set.0.iter().map(|(name, HeaderValue(value))| Rule::Set(name, value));
        let add = self.add.0.iter().map(|(name, HeaderValue(value))| Rule::Add(name, value));
        let append = self.append.0.iter().map(|(name, HeaderValue(value))| Rule::Append(name, value));
        remove.chain(rename).chain(set).chain(add).chain(append)
    }

    /// The values of the templates with variables, in rule order, expanded from `source`. The
    /// others are borrowed as they are ([`Template::as_literal`]): with none, nothing is
    /// allocated.
    fn expand_variables(&self, source: &impl Source) -> Vec<Vec<u8>> {
        // The rules with a template, in the order `in_order` gives them (removals and renames,
        // which come first there, have none), without walking those.
        let templates = self.set.0.iter().chain(&self.add.0).chain(&self.append.0).map(|(_, HeaderValue(t))| t);
        templates.filter(|t| t.as_literal().is_none()).map(|t| t.expand(source)).collect()
    }
}

/// One rule of a [`HeaderRules`].
#[derive(Debug, Clone, Copy)]
enum Rule<'a> {
    Remove(&'a str),
    Rename(&'a str, &'a str),
    Set(&'a str, &'a Template),
    Add(&'a str, &'a Template),
    Append(&'a str, &'a Template),
}

/// No rules, to lend where a set of rules is wanted by reference: a `HeaderRules::default()`
/// made for the purpose on each call costs its drop (~100 instructions in a plugin).
pub static NO_RULES: HeaderRules = HeaderRules {
    remove: Vec::new(),
    rename: HeaderMap(Vec::new()),
    set: HeaderMap(Vec::new()),
    add: HeaderMap(Vec::new()),
    append: HeaderMap(Vec::new()),
};

/// `request`'s rules and `response`'s as the changes they make to every request, in the order
/// they apply, for [`Plugin::fixed_edits`](crate::Plugin::fixed_edits): when they are the same
/// on each one, i.e. every value is [literal](HeaderRules::literal) and the request's rules are
/// [write-only](HeaderRules::write_only) (a request `rename` or `add` looks at the request's
/// headers to decide, which takes [`templated_fixed_edits`]; on the response the gateway makes
/// them too), and within what a gateway takes as fixed edits ([`MAX_FIXED_EDITS`],
/// [`MAX_FIXED_BYTES`]). `None` otherwise.
pub fn fixed_edits<'a>(request: &'a HeaderRules, response: &'a HeaderRules) -> Option<Vec<RequestEdit<'a>>> {
    // The templated form's, when no value is built per request.
    let same = |edit| match edit {
        FixedEdit::Same(edit) => Some(edit),
        _ => None,
    };
    templated_fixed_edits(request, response)?.into_iter().map(same).collect()
}

/// `request`'s rules and `response`'s as the changes they make to every request, for
/// [`Plugin::templated_fixed_edits`](crate::Plugin::templated_fixed_edits): a literal value's
/// as [`FixedEdit::Same`], a template's as a change whose value the gateway builds where it is
/// made, from what [`HeaderRules::apply`] would have read there (each rule's value just before
/// it is written, a response rule's where the response phase runs); a request `add` or `rename`
/// looks at the request's headers there to decide, as `apply` does. `None` past what a gateway
/// takes as fixed edits ([`MAX_FIXED_EDITS`], [`MAX_FIXED_BYTES`],
/// [`crate::fixed_edits::MAX_VALUE_PARTS`]): the rules are then made per request.
pub fn templated_fixed_edits<'a>(request: &'a HeaderRules, response: &'a HeaderRules) -> Option<Vec<FixedEdit<'a>>> {
    let same = |edit: RequestEdit<'a>| FixedEdit::Same(edit);
    let request_edits = request.in_order().map(move |rule| match rule {
        Rule::Remove(name) => same(RequestEdit::RemoveHeader(name)),
        Rule::Rename(from, to) => FixedEdit::RenameHeader(from, to),
        Rule::Set(name, t) => t.as_literal().map_or(FixedEdit::SetHeader(name, t), |v| same(RequestEdit::SetHeader(name, v))),
        Rule::Add(name, t) => FixedEdit::AddHeader(name, t),
        Rule::Append(name, t) => t.as_literal().map_or(FixedEdit::AppendHeader(name, t), |v| same(RequestEdit::AppendHeader(name, v))),
    });
    let response_edits = response.in_order().map(move |rule| {
        let literal = |t: &'a Template, edit: fn(&'a str, &'a [u8]) -> ResponseEdit<'a>, name| t.as_literal().map(|v| same(RequestEdit::Response(edit(name, v))));
        match rule {
            Rule::Remove(name) => same(RequestEdit::Response(ResponseEdit::Remove(name))),
            Rule::Rename(from, to) => same(RequestEdit::Response(ResponseEdit::Rename(from, to))),
            Rule::Set(name, t) => literal(t, ResponseEdit::Set, name).unwrap_or(FixedEdit::ResponseSet(name, t)),
            Rule::Add(name, t) => literal(t, ResponseEdit::Add, name).unwrap_or(FixedEdit::ResponseAdd(name, t)),
            Rule::Append(name, t) => literal(t, ResponseEdit::Append, name).unwrap_or(FixedEdit::ResponseAppend(name, t)),
        }
    });
    let fixed: Vec<FixedEdit<'a>> = request_edits.chain(response_edits).collect();
    let within = fixed.len() <= MAX_FIXED_EDITS
        && fixed.iter().map(FixedEdit::bytes).sum::<usize>() <= MAX_FIXED_BYTES
        && fixed.iter().all(FixedEdit::gateway_buildable);
    within.then_some(fixed)
}

/// Where each change of [`templated_fixed_edits`] (or [`fixed_edits`]) comes from in the config,
/// in the same order: `request_key.set.x-a` for `request`'s `set` of `x-a` when `request_key` is
/// `request`; `request_key.remove` for a removal. For [`Plugin::fixed_edit_keys`](crate::Plugin::fixed_edit_keys),
/// so a change the gateway refuses is named by the operator's key, at its line.
pub fn fixed_edit_keys(request: &HeaderRules, request_key: &str, response: &HeaderRules, response_key: &str) -> Vec<String> {
    let keys = |rules: &HeaderRules, key: &str| -> Vec<String> {
        rules
            .in_order()
            .map(|rule| match rule {
                Rule::Remove(_) => format!("{key}.remove"),
                Rule::Rename(from, _) => format!("{key}.rename.{from}"),
                Rule::Set(name, _) => format!("{key}.set.{name}"),
                Rule::Add(name, _) => format!("{key}.add.{name}"),
                Rule::Append(name, _) => format!("{key}.append.{name}"),
            })
            .collect()
    };
    let mut all = keys(request, request_key);
    all.extend(keys(response, response_key));
    all
}

/// Most changes a gateway takes as one chain entry's fixed edits (`fixed-edits.declare`).
pub const MAX_FIXED_EDITS: usize = 256;
/// Most bytes of names and values a gateway takes in one chain entry's fixed edits.
pub const MAX_FIXED_BYTES: usize = 256 * 1024;

/// `request`'s rules as changes to the request (write-only ones, [`HeaderRules::write_only`]:
/// a `rename` or `add` there is skipped) then `response`'s as response edits, in the order the
/// rules apply; each value borrowed from its literal template or, in turn, from `expanded`
/// ([`HeaderRules::expand_variables`]).
fn edits<'a>(
    request: &'a HeaderRules,
    expanded: &'a [Vec<u8>],
    response: &'a HeaderRules,
    response_expanded: &'a [Vec<u8>],
) -> impl Iterator<Item = RequestEdit<'a>> {
    let value = |expanded: &mut std::slice::Iter<'a, Vec<u8>>, template: &'a Template| {
        template.as_literal().unwrap_or_else(|| expanded.next().map_or(&[][..], Vec::as_slice))
    };
    let mut expanded = expanded.iter();
    let request_edits = request.in_order().filter_map(move |rule| match rule {
        Rule::Remove(name) => Some(RequestEdit::RemoveHeader(name)),
        Rule::Set(name, t) => Some(RequestEdit::SetHeader(name, value(&mut expanded, t))),
        Rule::Append(name, t) => Some(RequestEdit::AppendHeader(name, value(&mut expanded, t))),
        // Not in write-only rules; an `add`'s value is passed over all the same.
        Rule::Add(_, t) => {
            value(&mut expanded, t);
            None
        }
        Rule::Rename(..) => None,
    });
    let mut expanded = response_expanded.iter();
    let response_edits = response.in_order().map(move |rule| {
        RequestEdit::Response(match rule {
            Rule::Remove(name) => ResponseEdit::Remove(name),
            Rule::Rename(from, to) => ResponseEdit::Rename(from, to),
            Rule::Set(name, t) => ResponseEdit::Set(name, value(&mut expanded, t)),
            Rule::Add(name, t) => ResponseEdit::Add(name, value(&mut expanded, t)),
            Rule::Append(name, t) => ResponseEdit::Append(name, value(&mut expanded, t)),
        })
    });
    request_edits.chain(response_edits)
}

/// The header operations [`HeaderRules::apply`] needs, on a [`Request`] or a [`Response`].
pub trait Headers {
    /// The first value of `name`.
    fn get(&self, name: &str) -> Option<Vec<u8>>;
    /// Every value of `name`.
    fn get_all(&self, name: &str) -> Vec<Vec<u8>>;
    /// Replaces every value of `name` with `value`.
    fn set(&self, name: &str, value: &[u8]);
    /// Adds a value to `name`.
    fn append(&self, name: &str, value: &[u8]);
    /// Removes every value of `name`.
    fn remove(&self, name: &str);
}

/// Implements [`Headers`] for a type with the SDK's header methods.
macro_rules! impl_headers {
    ($ty:ty) => {
        impl Headers for $ty {
            fn get(&self, name: &str) -> Option<Vec<u8>> {
                self.header(name)
            }
            fn get_all(&self, name: &str) -> Vec<Vec<u8>> {
                self.header_all(name)
            }
            fn set(&self, name: &str, value: &[u8]) {
                self.set_header(name, value)
            }
            fn append(&self, name: &str, value: &[u8]) {
                self.append_header(name, value)
            }
            fn remove(&self, name: &str) {
                self.remove_header(name)
            }
        }
    };
}

impl_headers!(Request);
impl_headers!(Response);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::MapSource;

    fn rules(json: &str) -> HeaderRules {
        serde_json::from_str(json).expect("rules")
    }

    #[test]
    fn write_only_rules_read_nothing_they_or_a_plugin_change() {
        assert!(rules(r#"{"remove": ["x-a"], "set": {"x-b": "${param.id}"}, "append": {"x-c": "${route}"}}"#).write_only());
        assert!(!rules(r#"{"rename": {"x-a": "x-b"}}"#).write_only(), "a rename reads the values it moves");
        assert!(!rules(r#"{"add": {"x-a": "1"}}"#).write_only(), "an add reads whether the header is there");
        assert!(!rules(r#"{"set": {"x-a": "${header.x-b}"}}"#).write_only(), "a header template reads what a set may change");
        assert!(!rules(r#"{"set": {"x-a": "${context.consumer}"}}"#).write_only());
    }

    #[test]
    fn rules_with_literal_values_and_no_request_read_are_fixed_edits() {
        let request = rules(r#"{"remove": ["x-gone"], "set": {"x-a": "1"}, "append": {"x-m": "m"}}"#);
        let response = rules(r#"{"rename": {"x-old": "x-new"}, "add": {"x-d": "d"}}"#);
        use RequestEdit::*;
        assert_eq!(
            fixed_edits(&request, &response),
            Some(vec![
                RemoveHeader("x-gone"),
                SetHeader("x-a", b"1"),
                AppendHeader("x-m", b"m"),
                Response(ResponseEdit::Rename("x-old", "x-new")),
                Response(ResponseEdit::Add("x-d", b"d")),
            ])
        );
        assert_eq!(fixed_edits(&NO_RULES, &NO_RULES), Some(vec![]));
        let templated = rules(r#"{"set": {"x-a": "${param.id}"}}"#);
        assert_eq!(fixed_edits(&templated, &NO_RULES), None, "a request value with a variable differs per request");
        assert_eq!(fixed_edits(&NO_RULES, &templated), None, "and so does a response one");
        assert_eq!(fixed_edits(&rules(r#"{"add": {"x-a": "1"}}"#), &NO_RULES), None, "a request add looks at the headers");
        assert_eq!(fixed_edits(&rules(r#"{"rename": {"x-a": "x-b"}}"#), &NO_RULES), None, "so does a rename");
        assert!(rules(r#"{"set": {"x-a": "$${literal}"}, "append": {"x-b": ""}}"#).literal(), "an escaped `$${{` is literal text");
        // More than a gateway takes as fixed edits: made per request instead.
        let many = |n: usize, value: &str| {
            let set: Vec<String> = (0..n).map(|i| format!(r#""x-{i}": "{value}""#)).collect();
            rules(&format!(r#"{{"set": {{{}}}}}"#, set.join(",")))
        };
        assert_eq!(fixed_edits(&many(MAX_FIXED_EDITS, "v"), &NO_RULES).map(|f| f.len()), Some(MAX_FIXED_EDITS));
        assert_eq!(fixed_edits(&many(MAX_FIXED_EDITS + 1, "v"), &NO_RULES), None);
        assert_eq!(fixed_edits(&many(5, &"v".repeat(MAX_FIXED_BYTES / 5)), &NO_RULES), None, "too many bytes");
    }

    #[test]
    fn every_rule_is_a_templated_fixed_edit() {
        let request = rules(r#"{"remove": ["x-gone"], "set": {"x-a": "1", "x-u": "u-${param.id}"}, "append": {"x-ip": "${client_ip}"}}"#);
        let response = rules(r#"{"rename": {"x-old": "x-new"}, "set": {"x-r": "${route}"}, "add": {"x-d": "d"}, "append": {"x-id": "${request_id}"}}"#);
        let t = |text: &str| Template::parse(text).unwrap();
        let (u, ip, r, id) = (t("u-${param.id}"), t("${client_ip}"), t("${route}"), t("${request_id}"));
        use RequestEdit::*;
        assert_eq!(
            templated_fixed_edits(&request, &response),
            Some(vec![
                FixedEdit::Same(RemoveHeader("x-gone")),
                FixedEdit::Same(SetHeader("x-a", b"1")),
                FixedEdit::SetHeader("x-u", &u),
                FixedEdit::AppendHeader("x-ip", &ip),
                FixedEdit::Same(Response(ResponseEdit::Rename("x-old", "x-new"))),
                FixedEdit::ResponseSet("x-r", &r),
                FixedEdit::Same(Response(ResponseEdit::Add("x-d", b"d"))),
                FixedEdit::ResponseAppend("x-id", &id),
            ])
        );
        // Values read from the request where they are made, too.
        let reads = rules(r#"{"set": {"x-a": "${header.x-b}", "x-q": "${query.q}"}}"#);
        let consumer = rules(r#"{"add": {"x-c": "${context.consumer}"}}"#);
        let (b, q, c) = (t("${header.x-b}"), t("${query.q}"), t("${context.consumer}"));
        assert_eq!(
            templated_fixed_edits(&reads, &consumer),
            Some(vec![FixedEdit::SetHeader("x-a", &b), FixedEdit::SetHeader("x-q", &q), FixedEdit::ResponseAdd("x-c", &c)])
        );
        // A request rule that looks at the request to decide what to write, in the rules' order.
        let deciding = rules(r#"{"append": {"x-m": "m"}, "add": {"x-a": "${param.id}", "x-l": "1"}, "rename": {"x-old": "x-new"}}"#);
        let (a, l) = (t("${param.id}"), t("1"));
        assert_eq!(
            templated_fixed_edits(&deciding, &NO_RULES),
            Some(vec![
                FixedEdit::RenameHeader("x-old", "x-new"),
                FixedEdit::AddHeader("x-a", &a),
                FixedEdit::AddHeader("x-l", &l),
                FixedEdit::Same(AppendHeader("x-m", b"m")),
            ])
        );
        // Past what a gateway builds: more pieces in one value than it takes.
        let pieces = "${request_id}-".repeat(crate::fixed_edits::MAX_VALUE_PARTS / 2);
        assert!(templated_fixed_edits(&rules(&format!(r#"{{"set": {{"x-a": "{pieces}"}}}}"#)), &NO_RULES).is_some());
        let pieces = format!("{pieces}x${{route}}");
        assert_eq!(templated_fixed_edits(&rules(&format!(r#"{{"set": {{"x-a": "{pieces}"}}}}"#)), &NO_RULES), None);
    }

    #[test]
    fn edits_are_the_rules_changes_in_the_order_they_apply() {
        let request = rules(r#"{"remove": ["x-gone"], "set": {"x-b": "${param.id}", "x-a": "1"}, "append": {"x-m": "m"}}"#);
        let response =
            rules(r#"{"remove": ["server"], "rename": {"x-old": "x-new"}, "set": {"x-s": "s"}, "add": {"x-d": "${route}"}, "append": {"x-v": "v"}}"#);
        let source = MapSource::default().param("id", "42").route("users");
        let (expanded, response_expanded) = (request.expand_variables(&source), response.expand_variables(&source));
        assert_eq!(expanded, [b"42".to_vec()], "only the template with a variable is expanded");
        use RequestEdit::*;
        assert_eq!(
            edits(&request, &expanded, &response, &response_expanded).collect::<Vec<_>>(),
            [
                RemoveHeader("x-gone"),
                SetHeader("x-b", b"42"),
                SetHeader("x-a", b"1"),
                AppendHeader("x-m", b"m"),
                Response(ResponseEdit::Remove("server")),
                Response(ResponseEdit::Rename("x-old", "x-new")),
                Response(ResponseEdit::Set("x-s", b"s")),
                Response(ResponseEdit::Add("x-d", b"users")),
                Response(ResponseEdit::Append("x-v", b"v")),
            ]
        );
        assert_eq!(edits(&NO_RULES, &[], &response, &response_expanded).count(), 5, "response edits alone");
        assert!(rules(r#"{"set": {"x-a": "1"}, "append": {"x-b": ""}}"#).expand_variables(&source).is_empty());
    }
}
