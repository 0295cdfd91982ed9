//! A schema's regexes (`pattern`, `patternProperties` keys) are ECMA-262 regexes, run by the
//! `regex` crate once boon has translated them. Boon's translation of `\s` lists only some of
//! ECMA-262's white space (not U+1680, U+2000 to U+200A, U+2028, U+202F, U+205F, U+3000), and
//! it leaves `\b` Unicode-aware where ECMA-262's is ASCII. So the plugin translates the class
//! escapes itself before boon sees the pattern: what boon gets has none left to translate.

/// ECMA-262's `\s`: WhiteSpace (tab, VT, FF, space, NBSP, ZWNBSP and every Zs character) and
/// LineTerminator (LF, CR, LS, PS), as items of a character class.
const SPACE: &str = r"\t\n\v\f\r \u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\uFEFF";

/// ECMA-262's `\d` (without the `u` flag's case folding, which JSON Schema does not use).
const DIGIT: &str = "0-9";

/// ECMA-262's `\w`.
const WORD: &str = "0-9A-Za-z_";

/// `pattern` with its class escapes (`\s`, `\S`, `\d`, `\D`, `\w`, `\W`) and word boundaries
/// (`\b`, `\B`) written as the `regex` crate reads them with ECMA-262's meaning; `None` when
/// there is none. Everything else is kept as it is, for boon to read (and refuse).
pub fn ecma(pattern: &str) -> Option<String> {
    if !pattern.contains('\\') {
        return None;
    }
    let mut out = String::with_capacity(pattern.len() + 32);
    let mut changed = false;
    // How deep in character classes (the `regex` crate nests them: `[a[^b]]`).
    let mut depth = 0usize;
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let Some(next) = chars.next() else {
                    out.push('\\');
                    break;
                };
                let set = match next {
                    's' | 'S' => Some(SPACE),
                    'd' | 'D' => Some(DIGIT),
                    'w' | 'W' => Some(WORD),
                    _ => None,
                };
                match (set, next.is_ascii_uppercase(), depth > 0, next) {
                    (Some(set), false, false, _) => out.push_str(&format!("[{set}]")),
                    (Some(set), false, true, _) => out.push_str(set),
                    (Some(set), true, _, _) => out.push_str(&format!("[^{set}]")),
                    (None, _, false, 'b') => out.push_str(r"(?-u:\b)"),
                    (None, _, false, 'B') => out.push_str(r"(?-u:\B)"),
                    // In a class, ECMA-262's `\b` is a backspace.
                    (None, _, true, 'b') => out.push_str(r"\x08"),
                    _ => {
                        out.push('\\');
                        out.push(next);
                        continue;
                    }
                }
                changed = true;
            }
            '[' => {
                out.push('[');
                depth += 1;
                // `[^` and a `]` right after the opening are part of the class, not its end.
                if chars.peek() == Some(&'^') {
                    out.push('^');
                    chars.next();
                }
                if chars.peek() == Some(&']') {
                    out.push(']');
                    chars.next();
                }
            }
            ']' if depth > 0 => {
                out.push(']');
                depth -= 1;
            }
            other => out.push(other),
        }
    }
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_escapes_are_rewritten_and_others_kept() {
        assert_eq!(ecma("^[a-z]+$"), None);
        assert_eq!(ecma(r"^\p{L}\.\u0041$"), None);
        assert_eq!(ecma(r"^\d+$").as_deref(), Some("^[0-9]+$"));
        assert_eq!(ecma(r"\W").as_deref(), Some("[^0-9A-Za-z_]"));
        assert_eq!(ecma(r"[\d_]").as_deref(), Some("[0-9_]"));
        assert_eq!(ecma(r"[^\S]").as_deref(), Some(format!("[^[^{SPACE}]]").as_str()));
        assert_eq!(ecma(r"\\s").as_deref(), None, "an escaped backslash, then `s`");
        assert_eq!(ecma(r"\bx\b").as_deref(), Some(r"(?-u:\b)x(?-u:\b)"));
        assert_eq!(ecma(r"[\b]").as_deref(), Some(r"[\x08]"));
        assert_eq!(ecma(r"[]\s]").as_deref(), Some(format!("[]{SPACE}]").as_str()));
        assert_eq!(ecma("\\"), None);
    }
}
