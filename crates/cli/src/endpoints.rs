//! Where the cluster is: `--endpoints` (or `VEXIL_ENDPOINTS`, which clap folds into the same
//! argument), else the config file, else the three nodes `scripts/local-cluster.sh` starts.
//!
//! The config file is TOML with two optional keys:
//!
//! ```toml
//! endpoints = ["10.0.0.1:7001", "10.0.0.2:7001", "10.0.0.3:7001"]
//! consistency = "lease"   # linearizable | lease | stale
//! ```
//!
//! It is read from `--config`/`VEXILCTL_CONFIG` (which must exist), else from
//! `$XDG_CONFIG_HOME/vexil/vexilctl.toml` or `~/.config/vexil/vexilctl.toml` (if present).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{ConsistencyArg, Failure};

/// What `scripts/local-cluster.sh` starts, so `vexilctl` works there with no setup.
pub const DEFAULT_ENDPOINTS: [&str; 3] = ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub endpoints: Vec<String>,
    pub consistency: Option<ConsistencyArg>,
    /// Where the endpoints came from, for error messages.
    pub source: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    endpoints: Option<Vec<String>>,
    consistency: Option<ConsistencyArg>,
}

/// `$XDG_CONFIG_HOME/vexil/vexilctl.toml`, else `$HOME/.config/vexil/vexilctl.toml`.
pub fn default_config_path() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?).join(".config"),
    };
    Some(base.join("vexil").join("vexilctl.toml"))
}

/// Resolves the endpoints. `explicit` is `--endpoints`/`VEXIL_ENDPOINTS`; `config` is
/// `--config` (must exist); `default_config` is read only if it exists.
pub fn resolve(
    explicit: Option<&[String]>,
    config: Option<&Path>,
    default_config: Option<PathBuf>,
) -> Result<Settings, Failure> {
    let file = match (config, default_config) {
        (Some(path), _) => Some((path.to_path_buf(), read_config(path)?)),
        (None, Some(path)) if path.is_file() => Some((path.clone(), read_config(&path)?)),
        _ => None,
    };
    let consistency = file.as_ref().and_then(|(_, f)| f.consistency);
    let cleaned = |list: &[String]| -> Vec<String> {
        list.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
    };
    if let Some(list) = explicit {
        let endpoints = cleaned(list);
        if endpoints.is_empty() {
            return Err(Failure::Usage(
                "--endpoints (or VEXIL_ENDPOINTS) is empty; give node API addresses such as 127.0.0.1:7001".into(),
            ));
        }
        return Ok(Settings { endpoints, consistency, source: "--endpoints/VEXIL_ENDPOINTS".into() });
    }
    if let Some((path, f)) = &file
        && let Some(list) = &f.endpoints
    {
        let endpoints = cleaned(list);
        if endpoints.is_empty() {
            return Err(Failure::Usage(format!("`endpoints` in {} is empty", path.display())));
        }
        return Ok(Settings { endpoints, consistency, source: path.display().to_string() });
    }
    Ok(Settings {
        endpoints: DEFAULT_ENDPOINTS.iter().map(|s| s.to_string()).collect(),
        consistency,
        source: "the default local endpoints".into(),
    })
}

fn read_config(path: &Path) -> Result<FileConfig, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::Usage(format!("cannot read the config file {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| {
        Failure::Usage(format!(
            "config file {} is invalid: {}; expected `endpoints = [\"host:port\", ...]` and optionally `consistency = \"lease\"`",
            path.display(),
            e.message()
        ))
    })
}

/// `host:port` becomes `http://host:port`; URLs are kept.
pub fn normalise(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    if url.contains("://") { url.to_string() } else { format!("http://{url}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        use std::io::Write;
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(text.as_bytes()).expect("write");
        f
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let f = write("endpoints = [\"10.0.0.1:7001\", \"10.0.0.2:7001\"]\nconsistency = \"stale\"\n");
        let flag = vec!["a:1".to_string(), " b:2 ".to_string()];
        let s = resolve(Some(&flag), Some(f.path()), None).expect("resolves");
        assert_eq!(s.endpoints, ["a:1", "b:2"]);
        assert_eq!(s.consistency, Some(ConsistencyArg::Stale));
        let s = resolve(None, Some(f.path()), None).expect("resolves");
        assert_eq!(s.endpoints, ["10.0.0.1:7001", "10.0.0.2:7001"]);
        let s = resolve(None, None, Some(PathBuf::from("/nonexistent/vexilctl.toml"))).expect("resolves");
        assert_eq!(s.endpoints, DEFAULT_ENDPOINTS);
        let s = resolve(None, None, Some(f.path().to_path_buf())).expect("resolves");
        assert_eq!(s.endpoints.len(), 2);
    }

    #[test]
    fn bad_config_is_a_usage_error_naming_the_file() {
        let f = write("endpoint = [\"x:1\"]\n");
        let err = resolve(None, Some(f.path()), None).expect_err("unknown key");
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains(&f.path().display().to_string()), "{err}");
        let err = resolve(None, Some(Path::new("/nonexistent/x.toml")), None).expect_err("missing");
        assert_eq!(err.exit_code(), 2);
        assert!(resolve(Some(&[" ".to_string()]), None, None).is_err());
    }

    #[test]
    fn addresses_are_normalised() {
        assert_eq!(normalise("127.0.0.1:7001"), "http://127.0.0.1:7001");
        assert_eq!(normalise("https://n:1/"), "https://n:1");
    }
}
