//! The cache key: a SHA-256 digest of the parts that select a response, each written with its
//! length so no two different sets of parts read the same, hex-encoded behind a version prefix.
//!
//! Always hashed, not only when long: the key has one fixed length (well under the state
//! backend's 128 bytes), whatever the path, query and header values a client sends; and the
//! values (a consumer id, a query parameter holding a token, a varied `authorization`) never sit
//! in the backend in plain text, where anyone reading Redis's key space would see them.

use sha2::{Digest, Sha256};

/// Starts every key: a change to what goes into the key changes this, so old entries are never
/// found under the new scheme (they expire on their own).
pub const KEY_PREFIX: &str = "k2:";

/// Fed into the digest first: keys of this plugin are told from any other SHA-256 use.
const DOMAIN: &[u8] = b"airlock proxy-cache key v1\0";

/// Builds one key from its parts, in the order they are given.
pub struct KeyBuilder(Sha256);

impl Default for KeyBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyBuilder {
    /// An empty key.
    pub fn new() -> Self {
        let mut hasher = Sha256::new();
        hasher.update(DOMAIN);
        Self(hasher)
    }

    /// A part that is there (even if empty).
    pub fn part(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update([1u8]);
        self.len(bytes.len());
        self.0.update(bytes);
        self
    }

    /// A part that may be missing (a header that is absent is not one that is empty).
    pub fn optional(&mut self, bytes: Option<&[u8]>) -> &mut Self {
        match bytes {
            Some(b) => self.part(b),
            None => {
                self.0.update([0u8]);
                self
            }
        }
    }

    /// A part made of several values (every line of one header), in order.
    pub fn values(&mut self, values: &[Vec<u8>]) -> &mut Self {
        self.0.update([2u8]);
        self.len(values.len());
        for v in values {
            self.part(v);
        }
        self
    }

    /// The query string, its parameters in a normalized order (see [`normalized_query`]).
    pub fn query(&mut self, query: Option<&str>) -> &mut Self {
        match query {
            Some(q) => self.part(normalized_query(q).as_bytes()),
            None => self.optional(None),
        }
    }

    fn len(&mut self, n: usize) {
        self.0.update((n as u64).to_be_bytes());
    }

    /// The key: [`KEY_PREFIX`] and the digest in lower-case hex (67 bytes in all).
    pub fn finish(&self) -> String {
        let digest = self.0.clone().finalize();
        let mut key = String::with_capacity(KEY_PREFIX.len() + 64);
        key.push_str(KEY_PREFIX);
        for b in digest {
            key.push(HEX[usize::from(b >> 4)] as char);
            key.push(HEX[usize::from(b & 0xf)] as char);
        }
        key
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The query with its parameters sorted by name (the raw bytes before `=`), values of a
/// repeated name kept in the order sent (`?a=2&a=1` is not `?a=1&a=2` to most servers), empty
/// pieces (`&&`) dropped. Nothing is decoded: `%41` and `A` are different keys, which costs at
/// most a miss, where merging two requests an upstream tells apart would serve a wrong answer.
pub fn normalized_query(query: &str) -> String {
    let mut pairs: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    // Stable: repeated names keep their order.
    pairs.sort_by(|a, b| name_of(a).cmp(name_of(b)));
    pairs.join("&")
}

fn name_of(pair: &str) -> &str {
    pair.split_once('=').map_or(pair, |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(f: impl FnOnce(&mut KeyBuilder)) -> String {
        let mut b = KeyBuilder::new();
        f(&mut b);
        b.finish()
    }

    #[test]
    fn keys_have_one_length_and_the_prefix() {
        let short = key(|b| {
            b.part(b"r");
        });
        let long = key(|b| {
            b.part("x".repeat(100_000).as_bytes());
        });
        assert_eq!(short.len(), 67);
        assert_eq!(long.len(), 67);
        assert!(short.starts_with(KEY_PREFIX) && short[3..].bytes().all(|c| HEX.contains(&c)), "{short}");
        assert_ne!(short, long);
    }

    #[test]
    fn same_parts_same_key_and_boundaries_count() {
        let a = key(|b| {
            b.part(b"route").part(b"/a").query(Some("x=1"));
        });
        let again = key(|b| {
            b.part(b"route").part(b"/a").query(Some("x=1"));
        });
        assert_eq!(a, again);
        // The same bytes split differently between parts.
        let ab_c = key(|b| {
            b.part(b"ab").part(b"c");
        });
        let a_bc = key(|b| {
            b.part(b"a").part(b"bc");
        });
        assert_ne!(ab_c, a_bc);
    }

    #[test]
    fn absent_empty_and_multi_valued_headers_differ() {
        let absent = key(|b| {
            b.optional(None);
        });
        let empty = key(|b| {
            b.optional(Some(b""));
        });
        assert_ne!(absent, empty);
        let one_line = key(|b| {
            b.values(&[b"a, b".to_vec()]);
        });
        let two_lines = key(|b| {
            b.values(&[b"a".to_vec(), b"b".to_vec()]);
        });
        let none = key(|b| {
            b.values(&[]);
        });
        assert_ne!(one_line, two_lines);
        assert_ne!(none, absent);
        // Non-UTF-8 values are distinct bytes, never merged as U+FFFD would merge them.
        let ff = key(|b| {
            b.values(&[vec![0xff]]);
        });
        let fe = key(|b| {
            b.values(&[vec![0xfe]]);
        });
        assert_ne!(ff, fe);
    }

    #[test]
    fn query_parameters_are_sorted_by_name_keeping_repeats_in_order() {
        assert_eq!(normalized_query("b=2&a=1"), "a=1&b=2");
        assert_eq!(normalized_query("a=2&b=0&a=1"), "a=2&a=1&b=0");
        assert_eq!(normalized_query("&c&&a="), "a=&c");
        assert_eq!(normalized_query("a=%41"), "a=%41");
        let one = key(|b| {
            b.query(Some("b=2&a=1"));
        });
        let other = key(|b| {
            b.query(Some("a=1&b=2"));
        });
        let no_query = key(|b| {
            b.query(None);
        });
        let empty_query = key(|b| {
            b.query(Some(""));
        });
        assert_eq!(one, other);
        assert_ne!(no_query, empty_query);
    }
}
