//! `airlock plugin new`: writes a new plugin crate that builds with
//! `cargo build --target wasm32-wasip2 --release` and loads in the gateway unchanged: Cargo.toml
//! (its own workspace, `cdylib`, a release profile tuned for size), `src/lib.rs` with a working
//! plugin and its unit test, a `.http` request for `airlock plugin test`, an `airlock.toml` that
//! runs it, a README and a `.gitignore`. The files come from `host/templates/plugin/`.

use std::path::{Path, PathBuf};

/// Why a plugin crate could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name is not a crate name the scaffold accepts.
    #[error("`{0}` is not a plugin name: use lower-case letters, digits and `-`, starting with a letter")]
    BadName(String),
    /// The name is one of the crates the plugin depends on: Cargo would take the two for one.
    #[error("`{0}` is the name of a crate the plugin depends on (`airlock-sdk`, `serde`, their own dependencies): choose another")]
    DependencyName(String),
    /// The target directory exists and is not empty.
    #[error("{0} already exists and is not empty; choose another --dir or name")]
    Exists(String),
    /// Writing failed.
    #[error("cannot write {path}: {reason}")]
    Write {
        /// The file.
        path: String,
        /// The I/O error.
        reason: String,
    },
}

/// Where the new crate takes `airlock-sdk` from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdkSource {
    /// A local checkout of `plugin-sdk/` (an absolute path).
    Path(PathBuf),
    /// A git repository holding the Airlock workspace.
    Git(String),
    /// The published crate, by version requirement.
    Registry(String),
}

impl SdkSource {
    /// The SDK beside the sources this binary was built from, if they are still there;
    /// otherwise the published crate of this binary's version.
    pub fn default_for_this_build() -> Self {
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk");
        match sdk.canonicalize() {
            Ok(path) if path.join("Cargo.toml").is_file() => SdkSource::Path(path),
            _ => SdkSource::Registry(env!("CARGO_PKG_VERSION").to_owned()),
        }
    }

    fn dependency_line(&self) -> String {
        match self {
            SdkSource::Path(p) => format!("airlock-sdk = {{ path = {:?} }}", p.display().to_string()),
            SdkSource::Git(url) => format!("airlock-sdk = {{ git = {url:?} }}"),
            SdkSource::Registry(v) => format!("airlock-sdk = {v:?}"),
        }
    }
}

/// The files of a new plugin crate, as (path relative to the crate, template).
const TEMPLATES: [(&str, &str); 6] = [
    ("Cargo.toml", include_str!("../templates/plugin/Cargo.toml.tmpl")),
    ("src/lib.rs", include_str!("../templates/plugin/lib.rs.tmpl")),
    ("airlock.toml", include_str!("../templates/plugin/airlock.toml.tmpl")),
    ("requests/hello.http", include_str!("../templates/plugin/hello.http.tmpl")),
    ("README.md", include_str!("../templates/plugin/README.md.tmpl")),
    (".gitignore", include_str!("../templates/plugin/gitignore.tmpl")),
];

/// Writes the crate for plugin `name` into `dir` (created; must not exist or be empty). Returns
/// the paths written.
pub fn new_plugin(name: &str, dir: &Path, sdk: &SdkSource) -> Result<Vec<PathBuf>, ScaffoldError> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && name.len() <= 64
        // Path keywords cannot name a crate, and `self` would make the plugin's type `Self`.
        && !matches!(name, "self" | "super" | "crate");
    if !valid {
        return Err(ScaffoldError::BadName(name.to_owned()));
    }
    // The crates the generated `Cargo.toml` names, and theirs a plugin links: a package of the
    // same name collides with one in the lockfile ("package collision"), and the build fails.
    if matches!(name, "airlock-sdk" | "serde" | "serde-derive" | "serde-json" | "wit-bindgen" | "wit-bindgen-rt" | "serde-path-to-error" | "sha2") {
        return Err(ScaffoldError::DependencyName(name.to_owned()));
    }
    if dir.read_dir().is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(ScaffoldError::Exists(dir.display().to_string()));
    }
    let type_name: String = name
        .split('-')
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut chars = w.chars();
            chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect();
    let crate_name = name.replace('-', "_");
    let sdk_line = sdk.dependency_line();
    let mut written = Vec::new();
    for (file, template) in TEMPLATES {
        let text = template
            .replace("{{name}}", name)
            .replace("{{crate}}", &crate_name)
            .replace("{{type_name}}", &type_name)
            .replace("{{sdk_dependency}}", &sdk_line);
        let path = dir.join(file);
        let write_err = |e: std::io::Error| ScaffoldError::Write { path: path.display().to_string(), reason: e.to_string() };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(write_err)?;
        }
        std::fs::write(&path, text).map_err(write_err)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_templates_filled() {
        let dir = tempfile::tempdir().unwrap();
        let sdk = SdkSource::Registry("0.1.0".into());
        for bad in ["", "Upper", "9lives", "with space", "trailing-", "under_score", "self", "super", "crate"] {
            assert!(matches!(new_plugin(bad, &dir.path().join("x"), &sdk), Err(ScaffoldError::BadName(_))), "{bad}");
        }
        for taken in ["airlock-sdk", "serde", "wit-bindgen"] {
            assert!(matches!(new_plugin(taken, &dir.path().join("x"), &sdk), Err(ScaffoldError::DependencyName(_))), "{taken}");
        }
        let target = dir.path().join("tag-requests");
        let written = new_plugin("tag-requests", &target, &sdk).unwrap();
        assert_eq!(written.len(), TEMPLATES.len());
        for path in &written {
            let text = std::fs::read_to_string(path).unwrap();
            assert!(!text.contains("{{"), "{} has an unfilled placeholder", path.display());
        }
        let lib = std::fs::read_to_string(target.join("src/lib.rs")).unwrap();
        assert!(lib.contains("export_plugin!(TagRequests);"));
        let manifest = std::fs::read_to_string(target.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("name = \"tag-requests\"") && manifest.contains("airlock-sdk = \"0.1.0\""));
        let config = std::fs::read_to_string(target.join("airlock.toml")).unwrap();
        assert!(config.contains("target/wasm32-wasip2/release/tag_requests.wasm"));
        assert!(matches!(new_plugin("tag-requests", &target, &sdk), Err(ScaffoldError::Exists(_))));
    }
}
