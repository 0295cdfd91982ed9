//! The changes a configured plugin makes to every request, told to the gateway once
//! (`airlock:plugin/fixed-edits`) so that it makes them itself with no call into the plugin:
//! [`Plugin::fixed_edits`] (the same on every request) and [`Plugin::templated_fixed_edits`]
//! (with header values the gateway builds from each request, and request header rules it decides
//! there), declared by the export glue right after `new`.

use crate::bindings::airlock::plugin::fixed_edits as raw;
use crate::template::{Part, Template};
use crate::{Plugin, RequestEdit};

/// Most pieces (literal runs and variables) one built value may have: the gateway refuses a
/// declaration with more ([`FixedEdit`]).
pub const MAX_VALUE_PARTS: usize = 64;

/// One change to every request for [`Plugin::templated_fixed_edits`]: a change made the same on
/// each ([`FixedEdit::Same`]), a header write whose value the gateway builds from each request
/// out of a [`Template`], or a request header rule that looks at the request to decide what to
/// write ([`FixedEdit::AddHeader`], [`FixedEdit::RenameHeader`]), each made where the change is
/// made (the entry's place in the chain), reading what the plugin's own call would have read
/// there: the same value `on_request` (or, for a response change, `on_response`) would have
/// written with [`Template::expand`]. A built value that is not a valid header value (a
/// parameter holding a control character) is not written, and logged by the gateway.
///
/// More kinds may come with later gateways, so a `match` on one needs a `_` arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FixedEdit<'a> {
    /// A change made the same on every request, as [`Plugin::fixed_edits`] declares one.
    Same(RequestEdit<'a>),
    /// Replace every value of the request header with the built one.
    SetHeader(&'a str, &'a Template),
    /// Add the built value after the request header's existing ones.
    AppendHeader(&'a str, &'a Template),
    /// Set the request header to the built value only if the request has none of that name.
    AddHeader(&'a str, &'a Template),
    /// Move every value of the first request header, in order, to the second name, replacing
    /// what it had; nothing if the request has none of the first.
    RenameHeader(&'a str, &'a str),
    /// Replace every value of the response header with the built one.
    ResponseSet(&'a str, &'a Template),
    /// Set the response header to the built value only if the response does not have it.
    ResponseAdd(&'a str, &'a Template),
    /// Add the built value after the response header's existing ones.
    ResponseAppend(&'a str, &'a Template),
}

impl<'a> From<RequestEdit<'a>> for FixedEdit<'a> {
    fn from(edit: RequestEdit<'a>) -> Self {
        FixedEdit::Same(edit)
    }
}

impl<'a> FixedEdit<'a> {
    /// The header name and template of a built change; `None` for [`FixedEdit::Same`] and
    /// [`FixedEdit::RenameHeader`] (nothing to build).
    fn built(&self) -> Option<(&'a str, &'a Template)> {
        match *self {
            FixedEdit::Same(_) | FixedEdit::RenameHeader(..) => None,
            FixedEdit::SetHeader(name, template)
            | FixedEdit::AppendHeader(name, template)
            | FixedEdit::AddHeader(name, template)
            | FixedEdit::ResponseSet(name, template)
            | FixedEdit::ResponseAdd(name, template)
            | FixedEdit::ResponseAppend(name, template) => Some((name, template)),
        }
    }

    /// The bytes of the names, values, literal text and names read it holds, as the gateway
    /// counts them toward its limit ([`crate::header_rules::MAX_FIXED_BYTES`]).
    pub(crate) fn bytes(&self) -> usize {
        match self {
            FixedEdit::Same(edit) => return edit.bytes(),
            FixedEdit::RenameHeader(from, to) => return from.len() + to.len(),
            _ => {}
        }
        self.built().map_or(0, |(name, template)| name.len() + template.parts().iter().map(part_bytes).sum::<usize>())
    }

    /// Whether the gateway takes it: a built value has at most [`MAX_VALUE_PARTS`] pieces.
    pub fn gateway_buildable(&self) -> bool {
        self.built().is_none_or(|(_, template)| template.parts().len() <= MAX_VALUE_PARTS)
    }
}

/// The bytes a part adds to a declaration.
fn part_bytes(part: &Part) -> usize {
    match part {
        Part::Literal(text) => text.len(),
        Part::Param(name) | Part::Header(name) | Part::Query(name) | Part::Context(name) => name.len(),
        Part::RequestId | Part::Route | Part::ClientIp => 0,
    }
}

/// A template's pieces as the gateway takes them.
fn value_parts(template: &Template) -> Vec<raw::ValuePart<'_>> {
    template
        .parts()
        .iter()
        .map(|part| match part {
            Part::Literal(text) => raw::ValuePart::Literal(text),
            Part::Param(name) => raw::ValuePart::Param(name),
            Part::Header(name) => raw::ValuePart::Header(name),
            Part::Query(name) => raw::ValuePart::Query(name),
            Part::Context(key) => raw::ValuePart::Context(key),
            Part::RequestId => raw::ValuePart::RequestId,
            Part::Route => raw::ValuePart::RouteId,
            Part::ClientIp => raw::ValuePart::ClientIp,
        })
        .collect()
}

/// Which upstream responses a plugin reads the body of, for [`Plugin::response_bodies`]: the
/// others stream to the client unbuffered, and the plugin's `Response::body` is `None` for
/// them. Its response phase still runs on their head.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseBodies {
    /// Status ranges, both ends included (`200..=299` for the 2xx class); empty: any status.
    pub statuses: Vec<std::ops::RangeInclusive<u16>>,
    /// Media types, `type/subtype`, `type/*` or `*/*+suffix` (`*/*+json`), matched without
    /// regard to case or parameters; empty: any. A response without `content-type` is read.
    pub media_types: Vec<String>,
}

/// Tells the gateway which responses `plugin` reads the body of, if it narrows them
/// ([`Plugin::response_bodies`]; `fixed-edits.declare-response-bodies`, 0.2.9).
pub(crate) fn declare_response_bodies<P: Plugin>(plugin: &P) -> Result<(), String> {
    let Some(bodies) = plugin.response_bodies() else { return Ok(()) };
    let statuses: Vec<raw::StatusRange> = bodies.statuses.iter().map(|r| raw::StatusRange { first: *r.start(), last: *r.end() }).collect();
    let media_types: Vec<&str> = bodies.media_types.iter().map(String::as_str).collect();
    raw::declare_response_bodies(&statuses, &media_types).map_err(|e| format!("the responses whose body this plugin reads: {e}"))
}

/// Tells the gateway the changes `plugin` makes to every request: its
/// [`Plugin::templated_fixed_edits`] if it has any (`declare-rules`), else its
/// [`Plugin::fixed_edits`] (`declare`). In a release build of a plugin that declares none the
/// calls are optimized away with the default methods' empty lists, and the component does not
/// import `fixed-edits` at all, so it still loads on gateways older than 0.2.6 (a debug build
/// keeps the import); one that declares only [`Plugin::fixed_edits`] loads on 0.2.6 gateways.
pub(crate) fn declare<P: Plugin>(plugin: &P) -> Result<(), String> {
    let templated = plugin.templated_fixed_edits();
    if templated.is_empty() {
        let edits = plugin.fixed_edits();
        if edits.is_empty() {
            return Ok(());
        }
        let raw: Vec<_> = edits.into_iter().map(RequestEdit::to_raw).collect();
        return raw::declare(&raw).map_err(|e| named_by_key(e, &plugin.fixed_edit_keys()));
    }
    // Each built value's pieces first, then the changes lending them.
    let pieces: Vec<Vec<raw::ValuePart<'_>>> = templated.iter().map(|edit| edit.built().map_or_else(Vec::new, |(_, t)| value_parts(t))).collect();
    let raw: Vec<raw::FixedRule<'_>> = templated
        .iter()
        .zip(&pieces)
        .map(|(edit, value)| {
            let header = |name| raw::TemplatedHeader { name, value };
            let edit = match *edit {
                FixedEdit::Same(edit) => raw::FixedEdit::Same(edit.to_raw()),
                FixedEdit::SetHeader(name, _) => raw::FixedEdit::SetHeader(header(name)),
                FixedEdit::AppendHeader(name, _) => raw::FixedEdit::AppendHeader(header(name)),
                FixedEdit::ResponseSet(name, _) => raw::FixedEdit::ResponseSet(header(name)),
                FixedEdit::ResponseAdd(name, _) => raw::FixedEdit::ResponseAdd(header(name)),
                FixedEdit::ResponseAppend(name, _) => raw::FixedEdit::ResponseAppend(header(name)),
                FixedEdit::AddHeader(name, _) => return raw::FixedRule::AddHeader(header(name)),
                FixedEdit::RenameHeader(old_name, new_name) => return raw::FixedRule::RenameHeader(raw::HeaderRename { old_name, new_name }),
            };
            raw::FixedRule::Edit(edit)
        })
        .collect();
    raw::declare_rules(&raw).map_err(|e| named_by_key(e, &plugin.fixed_edit_keys()))
}

/// The gateway's refusal of a declared change, "fixed edit N (`kind`): why", as "`key`: why"
/// when [`Plugin::fixed_edit_keys`] names the N-th change; else as it came.
fn named_by_key(refusal: String, keys: &[String]) -> String {
    let Some(rest) = refusal.strip_prefix("fixed edit ") else { return refusal };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let key = rest[..digits].parse::<usize>().ok().and_then(|n| n.checked_sub(1)).and_then(|i| keys.get(i));
    match (key, rest[digits..].split_once("): ")) {
        (Some(key), Some((_, why))) => format!("`{key}`: {why}"),
        _ => refusal,
    }
}

#[cfg(test)]
mod tests {
    use super::named_by_key;

    #[test]
    fn a_refused_change_is_named_by_its_key() {
        let keys = ["request.set.x-a".to_owned(), "request.set.host".to_owned()];
        let refusal = "fixed edit 2 (`set-header`): a `host` must be host[:port], not `a@b`".to_owned();
        assert_eq!(named_by_key(refusal, &keys), "`request.set.host`: a `host` must be host[:port], not `a@b`");
        // Past the keys given, or not a change's refusal: as it came.
        for refusal in ["fixed edit 3 (`set-header`): no", "300 fixed edits declared: at most 256"] {
            assert_eq!(named_by_key(refusal.to_owned(), &keys), refusal);
        }
    }
}
