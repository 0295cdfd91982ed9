//! Which responses a chain entry reads the body of (`fixed-edits.declare-response-bodies`): by
//! status and media type, decided on the response's head before its body is read, so a plugin
//! rewriting 2xx JSON does not have a download or an error page buffered for it.

use http::HeaderMap;

/// Most status ranges, and most media types, one declaration may name.
pub const MAX_ENTRIES: usize = 64;

/// The responses an entry reads the body of, as its `configure` declared them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseBodies {
    /// Status ranges, both ends included; empty: every status.
    statuses: Vec<(u16, u16)>,
    /// Media types; empty: every one.
    media: Vec<MediaRange>,
}

/// One media type of a declaration, lower-case.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MediaRange {
    /// `type/subtype`.
    Exact(String),
    /// `type/*`: the type, with its `/`.
    Type(String),
    /// `*/*+suffix`: the suffix, with its `+`.
    Suffix(String),
}

impl ResponseBodies {
    /// The declaration of `statuses` and `media` types, checked: an `Err` says what is wrong.
    pub fn checked(statuses: Vec<(u16, u16)>, media: Vec<String>) -> Result<Self, String> {
        if statuses.len() > MAX_ENTRIES || media.len() > MAX_ENTRIES {
            return Err(format!("at most {MAX_ENTRIES} status ranges and {MAX_ENTRIES} media types"));
        }
        if let Some((first, last)) = statuses.iter().find(|(first, last)| first > last || *first < 100 || *last > 599) {
            return Err(format!("status range {first}-{last}: both ends within 100-599, the first not past the last"));
        }
        let media = media.iter().map(|m| MediaRange::parse(m)).collect::<Result<_, _>>()?;
        Ok(Self { statuses, media })
    }

    /// Whether the entry reads the body of a response with `status` and `headers`.
    pub fn reads(&self, status: u16, headers: &HeaderMap) -> bool {
        if !self.statuses.is_empty() && !self.statuses.iter().any(|&(first, last)| (first..=last).contains(&status)) {
            return false;
        }
        if self.media.is_empty() {
            return true;
        }
        let Some(content_type) = headers.get(http::header::CONTENT_TYPE) else { return true };
        let essence = content_type.as_bytes().split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
        // An empty one says no more than none (a plugin reading "JSON or untyped" reads it).
        essence.is_empty() || self.media.iter().any(|range| range.matches(essence))
    }
}

impl MediaRange {
    /// `type/subtype`, `type/*` or `*/*+suffix`, any case.
    fn parse(text: &str) -> Result<Self, String> {
        let lower = text.trim().to_ascii_lowercase();
        let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b));
        let refused = || Err(format!("media type `{text}`: write `type/subtype`, `type/*` or `*/*+suffix`"));
        let Some((kind, subtype)) = lower.split_once('/') else { return refused() };
        match (kind, subtype) {
            ("*", rest) => match rest.strip_prefix("*+") {
                Some(suffix) if token(suffix) => Ok(Self::Suffix(format!("+{suffix}"))),
                _ => refused(),
            },
            (kind, "*") if token(kind) => Ok(Self::Type(format!("{kind}/"))),
            (kind, subtype) if token(kind) && token(subtype) => Ok(Self::Exact(lower.clone())),
            _ => refused(),
        }
    }

    /// Whether `essence` (a `type/subtype`, any case) is of this range: compared in place,
    /// without a lower-cased copy per response.
    fn matches(&self, essence: &[u8]) -> bool {
        let starts = |prefix: &str| essence.get(..prefix.len()).is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()));
        let ends = |suffix: &str| {
            essence.len() >= suffix.len() && essence[essence.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
        };
        match self {
            Self::Exact(exact) => essence.eq_ignore_ascii_case(exact.as_bytes()),
            Self::Type(kind) => starts(kind),
            Self::Suffix(suffix) => essence.contains(&b'/') && ends(suffix),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(content_type: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = content_type {
            headers.insert(http::header::CONTENT_TYPE, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn a_response_is_read_when_its_status_and_media_type_are_declared() {
        let json_2xx = ResponseBodies::checked(vec![(200, 299)], vec!["application/json".into(), "*/*+json".into()]).unwrap();
        assert!(json_2xx.reads(200, &typed(Some("application/json; charset=utf-8"))));
        assert!(json_2xx.reads(201, &typed(Some("Application/Problem+JSON"))));
        assert!(json_2xx.reads(204, &typed(None)), "no content-type: read");
        assert!(json_2xx.reads(200, &typed(Some(" ; charset=utf-8"))), "an empty one: read");
        assert!(!json_2xx.reads(404, &typed(Some("application/json"))));
        assert!(!json_2xx.reads(200, &typed(Some("application/octet-stream"))));
        assert!(!json_2xx.reads(200, &typed(Some("+json"))));
        let text = ResponseBodies::checked(Vec::new(), vec!["TEXT/*".into()]).unwrap();
        assert!(text.reads(500, &typed(Some("text/html"))));
        assert!(!text.reads(500, &typed(Some("textual/html"))));
        let any = ResponseBodies::checked(vec![(404, 404)], Vec::new()).unwrap();
        assert!(any.reads(404, &typed(Some("image/png"))) && !any.reads(200, &typed(None)));
    }

    #[test]
    fn a_declaration_past_its_bounds_is_refused() {
        for (statuses, media) in [
            (vec![(300, 200)], vec![]),
            (vec![(99, 200)], vec![]),
            (vec![(200, 600)], vec![]),
            (vec![], vec!["json".to_owned()]),
            (vec![], vec!["*/json".to_owned()]),
            (vec![], vec!["*/*+".to_owned()]),
            (vec![], vec!["text/ html".to_owned()]),
            (vec![(200, 200); 65], vec![]),
        ] {
            assert!(ResponseBodies::checked(statuses.clone(), media.clone()).is_err(), "{statuses:?} {media:?}");
        }
    }
}
