//! The operator's config reference is checked against the config types: every field of every
//! config struct must appear (as `` `name` ``) in docs/operators.md, so the reference cannot fall
//! behind the code.

use std::path::Path;

#[test]
fn every_config_key_is_in_the_operator_reference() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let model = std::fs::read_to_string(root.join("host/src/config/model.rs")).unwrap();
    let reference = std::fs::read_to_string(root.join("docs/operators.md")).unwrap();
    let mut fields = Vec::new();
    let mut in_struct = false;
    for line in model.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("pub struct ") && trimmed.ends_with('{') {
            in_struct = true;
        } else if trimmed == "}" {
            in_struct = false;
        } else if in_struct
            && let Some(rest) = trimmed.strip_prefix("pub ")
            && let Some((name, _)) = rest.split_once(':')
        {
            fields.push(name.trim().to_owned());
        }
    }
    assert!(fields.len() > 30, "parsed only {} fields", fields.len());
    // A key is documented as `` `key` `` in a table, or as a section header (`[key]`, `[[key]]`,
    // `[key.<name>]`).
    let documented = |f: &str| {
        [format!("`{f}`"), format!("[{f}]"), format!("[[{f}]]"), format!("[{f}.")].iter().any(|s| reference.contains(s.as_str()))
    };
    let missing: Vec<&String> = fields.iter().filter(|f| !documented(f)).collect();
    assert!(missing.is_empty(), "config keys missing from docs/operators.md: {missing:?}");
}
