//! `content_types`: the media types a body may come in, and how a request's `Content-Type` is
//! matched against them.

/// One accepted media type, as configured (lower case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaRange {
    /// `type/subtype`: exactly that type.
    Exact(String, String),
    /// `type/*` (or `*/*`, with `None`): any subtype of the type.
    AnySubtype(Option<String>),
    /// `type/*+suffix` (or `*/*+suffix`, with `None`): a structured syntax suffix, such as
    /// `application/*+json` for `application/merge-patch+json`.
    Suffix(Option<String>, String),
}

impl MediaRange {
    /// Parses a configured entry; the error says what is expected.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let lower = entry.trim().to_ascii_lowercase();
        let expected = "expected `type/subtype`, `type/*` or `type/*+suffix` (no parameters)";
        let Some((kind, subtype)) = lower.split_once('/') else {
            return Err(format!("`{entry}` is not a media type: {expected}"));
        };
        let kind = match kind {
            "*" => None,
            kind if is_token(kind) && !kind.contains('*') => Some(kind.to_owned()),
            _ => return Err(format!("`{entry}` is not a media type: {expected}")),
        };
        match (kind, subtype) {
            (kind, "*") => Ok(MediaRange::AnySubtype(kind)),
            (kind, subtype) if subtype.starts_with("*+") => {
                let suffix = &subtype[2..];
                if !is_token(suffix) || suffix.contains(['+', '*']) {
                    return Err(format!("`{entry}` is not a media type: {expected}"));
                }
                Ok(MediaRange::Suffix(kind, suffix.to_owned()))
            }
            (Some(kind), subtype) if is_token(subtype) && !subtype.contains('*') => Ok(MediaRange::Exact(kind, subtype.to_owned())),
            _ => Err(format!("`{entry}` is not a media type: {expected}")),
        }
    }

    /// Whether the media type `kind/subtype` (lower case) is in this range.
    fn matches(&self, kind: &str, subtype: &str) -> bool {
        match self {
            MediaRange::Exact(k, s) => k == kind && s == subtype,
            MediaRange::AnySubtype(k) => k.as_deref().is_none_or(|k| k == kind),
            MediaRange::Suffix(k, suffix) => {
                k.as_deref().is_none_or(|k| k == kind)
                    && subtype.rsplit_once('+').is_some_and(|(name, s)| !name.is_empty() && s == suffix)
            }
        }
    }
}

impl std::fmt::Display for MediaRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MediaRange::Exact(k, s) => write!(f, "{k}/{s}"),
            MediaRange::AnySubtype(k) => write!(f, "{}/*", k.as_deref().unwrap_or("*")),
            MediaRange::Suffix(k, suffix) => write!(f, "{}/*+{suffix}", k.as_deref().unwrap_or("*")),
        }
    }
}

/// The configured `content_types`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaTypes(Vec<MediaRange>);

impl MediaTypes {
    /// Parses the list; errors name the entry (`content_types[1]`).
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        if entries.is_empty() {
            return Err("`content_types`: empty: no body could pass; leave the key out to accept `application/json`".to_owned());
        }
        let ranges = entries
            .iter()
            .enumerate()
            .map(|(i, entry)| MediaRange::parse(entry).map_err(|e| format!("`content_types[{i}]`: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self(ranges))
    }

    /// Whether a `Content-Type` value is accepted: its media type (parameters such as `charset`
    /// ignored, any case) is in one of the ranges. A value that is no media type is not.
    pub fn accepts(&self, content_type: &str) -> bool {
        let Some((kind, subtype)) = media_type(content_type) else { return false };
        self.0.iter().any(|range| range.matches(&kind, &subtype))
    }

    /// The list as operators wrote it, for messages: `application/json, application/*+json`.
    pub fn list(&self) -> String {
        self.0.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    }
}

/// The type and subtype of a `Content-Type` value, in lower case, or `None` if it is not
/// `token/token` before its parameters.
pub fn media_type(content_type: &str) -> Option<(String, String)> {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let (kind, subtype) = essence.split_once('/')?;
    (is_token(kind) && is_token(subtype)).then(|| (kind.to_owned(), subtype.to_owned()))
}

/// An HTTP token (RFC 9110 5.6.2), not empty.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(entries: &[&str]) -> MediaTypes {
        MediaTypes::parse(&entries.iter().map(|e| (*e).to_owned()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn the_media_type_is_matched_without_parameters_in_any_case() {
        let json = types(&["application/json"]);
        assert!(json.accepts("application/json"));
        assert!(json.accepts("Application/JSON; charset=utf-8"));
        assert!(json.accepts("  application/json ;charset=\"UTF-8\""));
        assert!(!json.accepts("application/jsonx"));
        assert!(!json.accepts("text/json"));
        assert!(!json.accepts("application/merge-patch+json"));
        assert!(!json.accepts(""));
        assert!(!json.accepts("application"));
        assert!(!json.accepts("application/json/x"));
        assert!(!json.accepts("application/ json"));
    }

    #[test]
    fn wildcards_and_suffixes() {
        let any_app = types(&["application/*"]);
        assert!(any_app.accepts("application/json") && any_app.accepts("application/vnd.x+json"));
        assert!(!any_app.accepts("text/plain"));
        let suffix = types(&["application/*+json", "text/plain"]);
        assert!(suffix.accepts("application/merge-patch+json"));
        assert!(suffix.accepts("application/vnd.api+JSON; ext=x"));
        assert!(!suffix.accepts("application/json"), "no suffix: list application/json too");
        assert!(!suffix.accepts("application/+json"));
        assert!(!suffix.accepts("text/x+json"));
        assert!(suffix.accepts("text/plain"));
        let any_suffix = types(&["*/*+json"]);
        assert!(any_suffix.accepts("text/x+json"));
        assert!(types(&["*/*"]).accepts("image/png"));
        assert_eq!(suffix.list(), "application/*+json, text/plain");
    }

    #[test]
    fn bad_entries_are_named() {
        let err = |entries: &[&str]| MediaTypes::parse(&entries.iter().map(|e| (*e).to_owned()).collect::<Vec<_>>()).unwrap_err();
        assert!(err(&[]).starts_with("`content_types`: empty"));
        assert!(err(&["application/json", "json"]).starts_with("`content_types[1]`: `json` is not a media type"));
        assert!(err(&["application/json; charset=utf-8"]).starts_with("`content_types[0]`:"));
        assert!(err(&["*/json"]).starts_with("`content_types[0]`:"));
        assert!(err(&["app*/json"]).starts_with("`content_types[0]`:"));
        assert!(err(&["application/*+*"]).starts_with("`content_types[0]`:"));
        assert!(err(&["application/x*"]).starts_with("`content_types[0]`:"));
        assert!(err(&["application/*+"]).starts_with("`content_types[0]`:"));
        assert!(err(&["application/"]).starts_with("`content_types[0]`:"));
        assert_eq!(MediaRange::parse("APPLICATION/JSON"), Ok(MediaRange::Exact("application".into(), "json".into())));
    }
}
