//! `google.api.http` path templates (`/v1/users/{id}`, `/v1/{name=shelves/*/books/*}:get`):
//! parsed once at configure, matched against request paths, yielding the captured fields.

/// One piece of a template's pattern.
#[derive(Debug, Clone, PartialEq)]
enum Segment {
    /// A literal segment.
    Literal(String),
    /// `*`: exactly one segment.
    One,
    /// `**`: any number of segments (only last).
    Rest,
    /// `{field}` or `{field=pattern}`: the segments the pattern matches, captured for `field`.
    Variable { field: String, pattern: Vec<Segment> },
}

/// What one segment of a template matches, most specific first (see [`Template::precedence`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rank {
    /// A literal segment: that segment only.
    Literal,
    /// `*` or `{field}`: any one segment.
    One,
    /// `**`: any number of segments.
    Rest,
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    segments: Vec<Segment>,
    verb: Option<String>,
}

impl Template {
    /// Parses a template; the error says what is wrong with it, including what makes it match no
    /// request at all (a query, a fragment, an empty verb).
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!("path template `{text}` does not start with `/`"));
        };
        never_matches(rest).map_err(|why| format!("path template `{text}` never matches: {why}"))?;
        let (body, verb) = split_verb(rest);
        let segments = parse_segments(body, true).map_err(|e| format!("path template `{text}`: {e}"))?;
        Ok(Self { segments, verb: verb.map(str::to_owned) })
    }

    /// The fields captured from `path`, or `None` if it does not match, with this template's
    /// verb as the only one known (see [`Target::split`]); the gateway matches a request's
    /// [`Target`] split with every binding's verbs instead ([`Template::matches_target`]).
    pub fn matches(&self, path: &str) -> Option<Vec<(String, Vec<u8>)>> {
        let verbs = Verbs::of(std::iter::once(self));
        self.matches_target(&Target::split(path, &verbs)?)
    }

    /// The fields captured from a request's `target`, or `None` if it does not match. Values are
    /// percent-decoded as google/api/http.proto says: a single-segment variable (`{f}`, `{f=*}`)
    /// entirely, a multi-segment one (`{f=**}`, `{f=a/*/b/*}`) all but `%2F` / `%2f`, which stay
    /// as they are (an encoded slash is not a separator), whatever the value it matched. Either
    /// is bytes, UTF-8 or not: a value that is not is the client's mistake (a 400), not a path
    /// that does not match.
    pub fn matches_target(&self, target: &Target<'_>) -> Option<Vec<(String, Vec<u8>)>> {
        if target.verb != self.verb.as_deref() {
            return None;
        }
        let body = target.body;
        let parts: Vec<&str> = if body.is_empty() { Vec::new() } else { body.split('/').collect() };
        let mut captures = Vec::new();
        let used = match_segments(&self.segments, &parts, &mut captures)?;
        (used == parts.len()).then_some(captures)
    }

    /// Whether `other` matches exactly the paths this one does: the same segments and verb once
    /// variables are replaced by their patterns, whatever they are named or where they start
    /// (`/v1/x/{a}` and `/v1/x/{b}`, `/v1/users/{id}` and `/v1/{name=users/*}`).
    pub fn same_paths(&self, other: &Template) -> bool {
        fn shape<'a>(segments: &'a [Segment], out: &mut Vec<&'a Segment>) {
            for segment in segments {
                match segment {
                    Segment::Variable { pattern, .. } => shape(pattern, out),
                    other => out.push(other),
                }
            }
        }
        let (mut mine, mut theirs) = (Vec::new(), Vec::new());
        shape(&self.segments, &mut mine);
        shape(&other.segments, &mut theirs);
        self.verb == other.verb && mine == theirs
    }

    /// How specific the template is, to be compared with another's (smaller first): segment by
    /// segment, variables flattened into their patterns, a literal before a single-segment `*` or
    /// `{field}`, before `**`; a template that ends where another goes on (`/v1/files` and
    /// `/v1/files/**`) first. Bindings tried in this order pick, for a path, the binding Envoy's
    /// transcoder and grpc-gateway pick: `/v1/users/me` before `/v1/users/{id}`, `/v1/x/{id}`
    /// before `/v1/x/{path=**}`, whatever order they are listed in.
    pub fn precedence(&self) -> Vec<Rank> {
        fn flatten(segments: &[Segment], out: &mut Vec<Rank>) {
            for segment in segments {
                match segment {
                    Segment::Literal(_) => out.push(Rank::Literal),
                    Segment::One => out.push(Rank::One),
                    Segment::Rest => out.push(Rank::Rest),
                    Segment::Variable { pattern, .. } => flatten(pattern, out),
                }
            }
        }
        let mut ranks = Vec::with_capacity(self.segments.len());
        flatten(&self.segments, &mut ranks);
        ranks
    }

    /// The fields this template captures.
    pub fn fields(&self) -> Vec<&str> {
        self.segments
            .iter()
            .filter_map(|s| match s {
                Segment::Variable { field, .. } => Some(field.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// The verbs of a set of templates: in a request's path, a colon starts a verb only when what
/// follows it is one of them ([`Target::split`]).
#[derive(Debug, Clone, Default)]
pub struct Verbs(Vec<String>);

impl Verbs {
    /// The verbs `templates` use, each once.
    pub fn of<'a>(templates: impl IntoIterator<Item = &'a Template>) -> Self {
        let mut verbs: Vec<String> = templates.into_iter().filter_map(|t| t.verb.clone()).collect();
        verbs.sort_unstable();
        verbs.dedup();
        Self(verbs)
    }

    /// Whether a binding uses `verb`.
    fn contains(&self, verb: &str) -> bool {
        self.0.iter().any(|v| v == verb)
    }
}

/// A request path as the templates see it: the segments' text (without the leading `/`) and
/// its verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    body: &'a str,
    verb: Option<&'a str>,
}

impl<'a> Target<'a> {
    /// Splits a request's `path` (`None` when it does not start with `/`). The text after the
    /// last colon of the last segment is the verb when it is one of `verbs`, as Envoy's
    /// transcoder splits (and grpc-gateway, for each template's own verb): `/v2/things/a:b:run`
    /// has the verb `run` and the segment `a:b`; any other colon is part of its segment, so
    /// `/v1/echo/urn:isbn:123` reaches `/v1/echo/{text}` with `urn:isbn:123`. A value whose last
    /// segment ends in `:verb` for a bound verb writes that colon `%3A`.
    pub fn split(path: &'a str, verbs: &Verbs) -> Option<Self> {
        let rest = path.strip_prefix('/')?;
        let last = rest.rfind('/').map_or(0, |i| i + 1);
        let verb_at = rest[last..].rfind(':').map(|i| last + i).filter(|&at| verbs.contains(&rest[at + 1..]));
        Some(match verb_at {
            Some(at) => Self { body: &rest[..at], verb: Some(&rest[at + 1..]) },
            None => Self { body: rest, verb: None },
        })
    }
}

/// Why a template (after its leading `/`) can match no request, if it cannot: a request's path
/// holds no query or fragment, and a `:` ends in a verb.
fn never_matches(template: &str) -> Result<(), String> {
    if template.contains('?') {
        return Err("a binding matches the request's path, without the query that `?` starts (query parameters set the fields the path does not)".into());
    }
    if template.contains('#') {
        return Err("a fragment (`#`) is never sent in a request".into());
    }
    if split_verb(template).1 == Some("") {
        return Err("`:` with no verb after it (write `:verb`, or leave the `:` out)".into());
    }
    Ok(())
}

/// Splits a template's `a/b:verb` into `a/b` and `verb`: the last `:` after the last `/` and
/// outside braces (a verb holds no colon).
fn split_verb(path: &str) -> (&str, Option<&str>) {
    let last = path.rfind('/').map_or(0, |i| i + 1);
    let close = path.rfind('}').map_or(0, |i| i + 1);
    match path[last.max(close)..].rfind(':') {
        Some(i) => {
            let at = last.max(close) + i;
            (&path[..at], Some(&path[at + 1..]))
        }
        None => (path, None),
    }
}

fn parse_segments(text: &str, variables_allowed: bool) -> Result<Vec<Segment>, String> {
    let mut segments = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(inner) = rest.strip_prefix('{') {
            if !variables_allowed {
                return Err("a variable inside a variable".into());
            }
            let end = inner.find('}').ok_or("`{` without `}`")?;
            let (field, pattern) = match inner[..end].split_once('=') {
                Some((field, pattern)) => (field, parse_segments(pattern, false)?),
                None => (&inner[..end], vec![Segment::One]),
            };
            if field.is_empty() || !field.split('.').all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')) {
                return Err(format!("`{field}` is not a field path"));
            }
            segments.push(Segment::Variable { field: field.to_owned(), pattern });
            rest = &inner[end + 1..];
        } else {
            let end = rest.find('/').unwrap_or(rest.len());
            let part = &rest[..end];
            segments.push(match part {
                "*" => Segment::One,
                "**" => Segment::Rest,
                "" => return Err("an empty segment".into()),
                literal => Segment::Literal(literal.to_owned()),
            });
            rest = &rest[end..];
        }
        match rest.strip_prefix('/') {
            Some("") => return Err("a trailing `/`".into()),
            Some(after) => rest = after,
            None if rest.is_empty() => {}
            None => return Err(format!("unexpected `{rest}`")),
        }
    }
    if let Some(i) = segments.iter().position(|s| *s == Segment::Rest || matches!(s, Segment::Variable { pattern, .. } if pattern.contains(&Segment::Rest)))
        && i + 1 != segments.len() {
            return Err("`**` is only allowed at the end".into());
        }
    Ok(segments)
}

/// Matches `segments` against the start of `parts`; returns how many parts they used.
fn match_segments(segments: &[Segment], parts: &[&str], captures: &mut Vec<(String, Vec<u8>)>) -> Option<usize> {
    let mut at = 0;
    for segment in segments {
        match segment {
            Segment::Literal(literal) => {
                if parts.get(at).map(|p| decode_bytes(p)).as_deref() != Some(literal.as_bytes()) {
                    return None;
                }
                at += 1;
            }
            Segment::One => {
                parts.get(at).filter(|p| !p.is_empty())?;
                at += 1;
            }
            Segment::Rest => at = parts.len(),
            Segment::Variable { field, pattern } => {
                let mut inner = Vec::new();
                let used = match_segments(pattern, &parts[at..], &mut inner)?;
                if used == 0 {
                    return None;
                }
                let value = if single_segment(pattern) {
                    decode_bytes(parts[at])
                } else {
                    let decoded: Vec<Vec<u8>> = parts[at..at + used].iter().map(|p| decode_keeping_slashes(p)).collect();
                    decoded.join(&b'/')
                };
                captures.push((field.clone(), value));
                at += used;
            }
        }
    }
    Some(at)
}

/// Whether a variable's pattern is one segment (`{f}`, `{f=*}`, `{f=literal}`): its value is
/// decoded entirely; any other pattern (`**`, `a/*`) is multi-segment.
fn single_segment(pattern: &[Segment]) -> bool {
    matches!(pattern, [Segment::One | Segment::Literal(_)])
}

/// Percent-decodes one segment of a multi-segment variable: everything but `%2F` / `%2f`, kept
/// as they are so that the value still tells an encoded slash from a separator.
fn decode_keeping_slashes(segment: &str) -> Vec<u8> {
    percent_decode(segment, true)
}

/// Percent-decodes a path segment or query component as text; `None` when the bytes it stands for
/// are not UTF-8 (`%E9` alone), which no request field can take (see [`decode_bytes`]).
pub fn decode(text: &str) -> Option<String> {
    String::from_utf8(decode_bytes(text)).ok()
}

/// Percent-decodes a text the gateway only passes on to the client (`grpc-message`): bytes that
/// are not UTF-8 become U+FFFD.
pub fn decode_lossy(text: &str) -> String {
    String::from_utf8_lossy(&decode_bytes(text)).into_owned()
}

/// Percent-decodes a path segment or query component into the bytes it stands for (`+` is kept:
/// paths do not use it for spaces).
pub fn decode_bytes(text: &str) -> Vec<u8> {
    percent_decode(text, false)
}

/// Percent-decodes `text`; with `keep_slashes`, `%2F` / `%2f` are left encoded.
fn percent_decode(text: &str, keep_slashes: bool) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
            && !(keep_slashes && h * 16 + l == b'/') {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(t: &str, path: &str) -> Option<Vec<(String, String)>> {
        let captures = Template::parse(t).map_err(|e| panic!("{e}")).ok()?.matches(path)?;
        Some(captures.into_iter().map(|(field, value)| (field, String::from_utf8(value).unwrap_or_else(|e| panic!("{e}")))).collect())
    }

    #[test]
    fn simple_variables_match_one_segment() {
        assert_eq!(caps("/v1/users/{id}", "/v1/users/42"), Some(vec![("id".into(), "42".into())]));
        assert_eq!(caps("/v1/users/{id}", "/v1/users/a%20b"), Some(vec![("id".into(), "a b".into())]));
        assert_eq!(caps("/v1/users/{id}", "/v1/users/42/x"), None);
        assert_eq!(caps("/v1/users/{id}", "/v1/users"), None);
        assert_eq!(caps("/v1/users/{user.id}/posts", "/v1/users/7/posts"), Some(vec![("user.id".into(), "7".into())]));
    }

    #[test]
    fn patterns_and_verbs() {
        assert_eq!(
            caps("/v1/{name=shelves/*/books/*}", "/v1/shelves/1/books/2"),
            Some(vec![("name".into(), "shelves/1/books/2".into())])
        );
        assert_eq!(caps("/v1/{name=shelves/*}", "/v1/shelf/1"), None);
        assert_eq!(caps("/v1/files/{path=**}", "/v1/files/a/b/c"), Some(vec![("path".into(), "a/b/c".into())]));
        assert_eq!(caps("/v1/users/{id}:undelete", "/v1/users/3:undelete"), Some(vec![("id".into(), "3".into())]));
        assert_eq!(caps("/v1/users/{id}:undelete", "/v1/users/3"), None);
    }

    #[test]
    fn multi_segment_variables_decode_all_but_encoded_slashes_whatever_the_value() {
        let files = "/v1/files/{path=**}";
        assert_eq!(caps(files, "/v1/files/a%20b/%C3%A9"), Some(vec![("path".into(), "a b/\u{e9}".into())]));
        assert_eq!(caps(files, "/v1/files/a%20b"), Some(vec![("path".into(), "a b".into())]));
        assert_eq!(caps(files, "/v1/files/a%2Fb"), Some(vec![("path".into(), "a%2Fb".into())]), "one segment, still multi-segment");
        assert_eq!(caps(files, "/v1/files/a%2fb/c"), Some(vec![("path".into(), "a%2fb/c".into())]), "kept as spelled");
        assert_eq!(
            caps("/v1/{name=shelves/*/books/*}", "/v1/shelves/a%20b/books/c%2Fd"),
            Some(vec![("name".into(), "shelves/a b/books/c%2Fd".into())])
        );
        // Single-segment variables decode everything, `%2F` included.
        assert_eq!(caps("/v1/users/{id}", "/v1/users/a%2Fb"), Some(vec![("id".into(), "a/b".into())]));
        assert_eq!(caps("/v1/users/{id=*}", "/v1/users/a%2F%20b"), Some(vec![("id".into(), "a/ b".into())]));
        // Bytes that are not UTF-8 are captured as they are, for the caller's 400.
        assert_eq!(Template::parse(files).unwrap().matches("/v1/files/a/%E9"), Some(vec![("path".into(), b"a/\xE9".to_vec())]));
    }

    #[test]
    fn values_that_are_not_utf8_are_captured_as_bytes_and_refused_as_text() {
        let template = Template::parse("/v1/things/{id}").unwrap();
        assert_eq!(template.matches("/v1/things/%E9"), Some(vec![("id".into(), vec![0xE9])]), "matches: the 400 is the caller's");
        assert_eq!(template.matches("/v1/th%C3%AFngs/x"), None);
        assert_eq!(Template::parse("/v1/th\u{ef}ngs/{id}").unwrap().matches("/v1/th%C3%AFngs/x"), Some(vec![("id".into(), b"x".to_vec())]));
        assert_eq!(Template::parse("/v1/thin/{id}").unwrap().matches("/v1/thi%6E/x").map(|c| c.len()), Some(1), "literals compare decoded");
        assert_eq!(decode("%C3%A9t%C3%A9"), Some("\u{e9}t\u{e9}".into()));
        assert_eq!(decode("%E9"), None);
        assert_eq!(decode("a%FFb"), None);
        assert_eq!(decode("100%"), Some("100%".into()), "a `%` without two hex digits is kept");
        assert_eq!(decode_lossy("a%E9"), "a\u{FFFD}");
    }

    /// Sorted by precedence, the first template matching a path is the most specific one.
    #[test]
    fn literals_come_before_variables_and_variables_before_wildcards() {
        let listed = ["/v1/{path=**}", "/v1/users/{id}", "/v1/{name=groups/*}/posts", "/v1/users/{id}/posts", "/v1/users/me", "/v1/users/me/posts", "/v1/users"];
        let mut sorted: Vec<Template> = listed.iter().map(|t| Template::parse(t).unwrap()).collect();
        sorted.sort_by_cached_key(Template::precedence);
        let first = |path: &str| {
            let found = sorted.iter().find(|t| t.matches(path).is_some()).unwrap_or_else(|| panic!("{path}"));
            listed.iter().find(|l| Template::parse(l).unwrap() == *found).copied().unwrap_or_default()
        };
        assert_eq!(first("/v1/users/me"), "/v1/users/me");
        assert_eq!(first("/v1/users/42"), "/v1/users/{id}");
        assert_eq!(first("/v1/users/me/posts"), "/v1/users/me/posts");
        assert_eq!(first("/v1/users/42/posts"), "/v1/users/{id}/posts");
        assert_eq!(first("/v1/groups/42/posts"), "/v1/{name=groups/*}/posts", "as specific, other paths");
        assert_eq!(first("/v1/users"), "/v1/users", "a path that ends before `**` does");
        assert_eq!(first("/v1/other/x"), "/v1/{path=**}");
        let rank = |t: &str| Template::parse(t).unwrap().precedence();
        assert_eq!(rank("/v1/{name=shelves/*}/{b=**}:get"), [Rank::Literal, Rank::Literal, Rank::One, Rank::Rest]);
        assert!(rank("/v1/users/me") < rank("/v1/users/{id}"));
        assert!(rank("/v1/users/{id}") < rank("/v1/users/**"));
        assert!(rank("/v1/users") < rank("/v1/users/{id=**}"));
    }

    #[test]
    fn templates_matching_the_same_paths_are_told_whatever_their_variables() {
        let same = |a: &str, b: &str| Template::parse(a).unwrap().same_paths(&Template::parse(b).unwrap());
        assert!(same("/v1/x/{a}", "/v1/x/{b}"));
        assert!(same("/v1/x/{a}", "/v1/x/*"));
        assert!(same("/v1/users/{id}/posts", "/v1/{name=users/*}/posts"));
        assert!(same("/v1/{a=**}", "/v1/**"));
        assert!(!same("/v1/x/{a}", "/v1/y/{a}"));
        assert!(!same("/v1/x/{a}", "/v1/x/{a}:get"));
        assert!(!same("/v1/x/{a}", "/v1/x/{a=**}"));
    }

    #[test]
    fn bad_templates_are_refused() {
        for bad in ["v1/x", "/v1//x", "/v1/{", "/v1/{a b}", "/v1/**/x", "/v1/x/"] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }

    /// Templates no request can match: before, they loaded and every request was a 404.
    #[test]
    fn templates_that_never_match_are_refused_saying_why() {
        let why = |t: &str| Template::parse(t).map(|_| ()).unwrap_err();
        assert!(why("/v1/x?a=b").starts_with("path template `/v1/x?a=b` never matches: a binding matches the request's path, without the query"), "{}", why("/v1/x?a=b"));
        assert_eq!(why("/v1/x#f"), "path template `/v1/x#f` never matches: a fragment (`#`) is never sent in a request");
        assert_eq!(why("/v1/x:"), "path template `/v1/x:` never matches: `:` with no verb after it (write `:verb`, or leave the `:` out)");
        assert!(why("/v1/{id}:").contains("`:` with no verb"));
        assert!(Template::parse("/v1/{id}:get").is_ok());
    }

    /// The verb is what follows the last colon, when it is a bound verb (Envoy's transcoder,
    /// grpc-gateway): before, the first colon of the last segment started it, so
    /// `/v2/things/a:b:run` had the verb `b:run` and matched nothing.
    #[test]
    fn the_verb_follows_the_last_colon_and_other_colons_are_data() {
        assert_eq!(caps("/v2/things/{text}:run", "/v2/things/a:b:run"), Some(vec![("text".into(), "a:b".into())]));
        assert_eq!(caps("/v2/things/{text}:run", "/v2/things/:run"), None, "an empty segment before the verb");
        assert_eq!(caps("/v1/{name=shelves/*}:get", "/v1/shelves/a:b:get"), Some(vec![("name".into(), "shelves/a:b".into())]));
        let echo = Template::parse("/v1/echo/{text}").unwrap();
        let run = Template::parse("/v2/things/{text}:run").unwrap();
        let verbs = Verbs::of([&echo, &run]);
        let text = |t: &Template, path: &str| {
            let captures = t.matches_target(&Target::split(path, &verbs)?)?;
            captures.into_iter().next().map(|(_, v)| String::from_utf8(v).unwrap_or_default())
        };
        assert_eq!(text(&echo, "/v1/echo/urn:isbn:123"), Some("urn:isbn:123".into()), "`123` is no bound verb");
        assert_eq!(text(&echo, "/v1/echo/12:00"), Some("12:00".into()));
        assert_eq!(text(&echo, "/v1/echo/a:run"), None, "`run` is a bound verb");
        assert_eq!(text(&run, "/v1/echo/a:run"), None);
        assert_eq!(text(&echo, "/v1/echo/a%3Arun"), Some("a:run".into()), "an encoded colon is data");
        assert_eq!(text(&run, "/v2/things/a:b:run"), Some("a:b".into()));
        assert_eq!(caps("/v1/echo/{text}", "/v1/echo/x:y"), Some(vec![("text".into(), "x:y".into())]));
    }
}
