//! Finds where a key path (`routes[0].plugins[1].config.limits[0].rate`) sits in a config
//! file's text, so an error found after parsing (a plugin rejecting its config) can point at
//! the line of the key at fault rather than at the entry around it.

use std::ops::Range;

use toml::de::{DeTable, DeValue};

/// The byte range of the value at `path` in `text`, or `None` if the text does not parse or
/// has no such key (a key the gateway filled in itself, a path that is not a key path).
///
/// `path` is dot-separated keys with `[n]` indices, as config errors print them; a key holding a
/// dot cannot be told apart from two keys, and is not found.
pub fn key_span(text: &str, path: &str) -> Option<Range<usize>> {
    if path.is_empty() {
        return None;
    }
    let root = DeTable::parse(text).ok()?;
    let mut span = root.span();
    let mut value = None::<&DeValue<'_>>;
    let mut table = Some(root.get_ref());
    for segment in path.split('.') {
        let (name, indices) = match segment.find('[') {
            Some(at) => (&segment[..at], &segment[at..]),
            None => (segment, ""),
        };
        if !name.is_empty() {
            let (_, found) = table?.iter().find(|(k, _)| k.get_ref() == name)?;
            span = found.span();
            value = Some(found.get_ref());
        }
        for index in indices.split('[').skip(1) {
            let index: usize = index.strip_suffix(']')?.parse().ok()?;
            let DeValue::Array(items) = value? else { return None };
            let item = items.get(index)?;
            span = item.span();
            value = Some(item.get_ref());
        }
        table = match value {
            Some(DeValue::Table(t)) => Some(t),
            _ => None,
        };
    }
    Some(span)
}

/// The key path a plugin's config error starts with: the SDK writes data errors as
/// "`limits[0].rate`: message", and plugins name the key they refuse the same way (a quoted
/// TOML key may hold spaces: `request.set.bad header`).
pub fn leading_key(message: &str) -> Option<&str> {
    let rest = message.strip_prefix('`')?;
    let key = &rest[..rest.find('`')?];
    let is_key_char = |c: char| c.is_ascii_alphanumeric() || "_-.[] ".contains(c);
    (!key.is_empty() && key.chars().all(is_key_char)).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
[[routes]]
path = "/a"
[[routes.plugins]]
plugin = "builtin:headers"
[[routes]]
path = "/b"
[[routes.plugins]]
plugin = "builtin:respond"
config = { status = 200, body = "x" }
[[routes.plugins]]
plugin = "builtin:rate-limit"
[routes.plugins.config]
limits = [
  { name = "a", rate = 1, per = "second" },
  { name = "b", rate = "ten", per = "minute" },
]
"#;

    fn line_of(path: &str) -> Option<(usize, &'static str)> {
        let span = key_span(TEXT, path)?;
        let line = TEXT[..span.start].matches('\n').count();
        Some((line, &TEXT[span]))
    }

    #[test]
    fn finds_keys_in_tables_arrays_and_inline_tables() {
        assert_eq!(line_of("routes[1].path"), Some((6, "\"/b\"")));
        assert_eq!(line_of("routes[1].plugins[0].config.body"), Some((9, "\"x\"")));
        assert_eq!(line_of("routes[1].plugins[1].config.limits[1].rate"), Some((15, "\"ten\"")));
        assert_eq!(line_of("routes[1].plugins[1].config.limits[0]").map(|(l, _)| l), Some(14));
    }

    #[test]
    fn missing_keys_and_bad_paths_are_not_found() {
        for path in ["routes[1].plugins[0].config.json", "routes[2]", "routes[x]", "routes[1].path.deeper", "routes.path", ""] {
            assert_eq!(key_span(TEXT, path), None, "{path}");
        }
        assert_eq!(key_span("not = [toml", "not"), None);
    }

    #[test]
    fn the_leading_key_of_a_message() {
        assert_eq!(leading_key("`limits[0].rate`: invalid type"), Some("limits[0].rate"));
        assert_eq!(leading_key("`body` and `json` are exclusive"), Some("body"));
        assert_eq!(leading_key("unknown field `x`"), None);
        assert_eq!(leading_key("`request.set.bad header`: invalid header name"), Some("request.set.bad header"));
        assert_eq!(leading_key("`a\tb`: no"), None);
        assert_eq!(leading_key("``: no"), None);
        assert_eq!(leading_key("`unclosed"), None);
    }
}
