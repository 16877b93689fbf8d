//! Where the cluster is and how to reach it: the endpoints, the read consistency, the bearer
//! token and TLS. Each comes from its flag (or the flag's environment variable, which clap
//! folds into the same argument), else the config file, else a default: the three nodes
//! `scripts/local-cluster.sh` starts, in plaintext, without a token.
//!
//! The config file is TOML; every key is optional and an unknown key is an error naming it:
//!
//! ```toml
//! endpoints = ["10.0.0.1:7001", "10.0.0.2:7001", "10.0.0.3:7001"]
//! consistency = "lease"          # linearizable | lease | stale
//! token_file = "admin.token"     # or token = "vexil_..." (not both)
//! cacert = "tls/ca.pem"          # TLS: the CA that issued the nodes' certificates
//! cert = "tls/me.pem"            # mutual TLS: this client's certificate ...
//! key = "tls/me-key.pem"         # ... and its key
//! region = "eu"                  # prefer this region's nodes (or --region / VEXIL_REGION)
//!
//! [regions]                      # each region's nodes; without `endpoints`, all of them
//! us = ["10.0.0.1:7001", "10.0.0.2:7001", "10.0.0.3:7001"]
//! eu = ["10.1.0.1:7001"]
//! ```
//!
//! Relative paths in the file are relative to the file's directory. The file is
//! `--config`/`VEXILCTL_CONFIG` (which must exist), else `./vexilctl.toml`, else
//! `$XDG_CONFIG_HOME/vexil/vexilctl.toml` or `~/.config/vexil/vexilctl.toml` (each if present),
//! so a local cluster set up once needs no flags.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use vexil_client::{ConnectOptions, TlsOptions};

use crate::{ConsistencyArg, Failure};

/// What `scripts/local-cluster.sh` starts, so `vexilctl` works there with no setup.
pub const DEFAULT_ENDPOINTS: [&str; 3] = ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"];

/// The name of the config file in the current directory and in the user's config directory.
pub const CONFIG_FILE_NAME: &str = "vexilctl.toml";

/// What the command line said (each flag or its environment variable), before the config file.
#[derive(Debug, Clone, Copy, Default)]
pub struct Given<'a> {
    pub endpoints: Option<&'a [String]>,
    /// `--config`/`VEXILCTL_CONFIG`: must exist.
    pub config: Option<&'a Path>,
    pub token: Option<&'a str>,
    pub cacert: Option<&'a Path>,
    pub cert: Option<&'a Path>,
    pub key: Option<&'a Path>,
    pub region: Option<&'a str>,
}

/// Where to reach the cluster, resolved.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    pub endpoints: Vec<String>,
    pub consistency: Option<ConsistencyArg>,
    /// Where the endpoints came from, for error messages.
    pub source: String,
    /// The bearer token, and where it came from (never the secret itself).
    pub token: Option<(String, String)>,
    /// TLS: the CA certificate file, and for mutual TLS the client certificate and key files.
    pub cacert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The client's region and its nodes' endpoints (asked first).
    pub region: Option<(String, Vec<String>)>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("endpoints", &self.endpoints)
            .field("consistency", &self.consistency)
            .field("source", &self.source)
            .field("token_from", &self.token.as_ref().map(|(_, from)| from))
            .field("cacert", &self.cacert)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("region", &self.region)
            .finish()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    endpoints: Option<Vec<String>>,
    consistency: Option<ConsistencyArg>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    cacert: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    region: Option<String>,
    regions: Option<std::collections::BTreeMap<String, Vec<String>>>,
}

/// `./vexilctl.toml`, then `$XDG_CONFIG_HOME/vexil/vexilctl.toml` or else
/// `$HOME/.config/vexil/vexilctl.toml`: the files read, the first that exists, when
/// `--config` is not given.
pub fn default_config_paths() -> Vec<PathBuf> {
    let mut paths = vec![PathBuf::from(CONFIG_FILE_NAME)];
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(x) => Some(PathBuf::from(x)),
        None => std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".config")),
    };
    if let Some(base) = base {
        paths.push(base.join("vexil").join(CONFIG_FILE_NAME));
    }
    paths
}

/// Resolves the settings: each from `given`, else the config file (`given.config`, else the
/// first of `default_configs` that exists), else the default.
pub fn resolve(given: &Given<'_>, default_configs: &[PathBuf]) -> Result<Settings, Failure> {
    let file = match given.config {
        Some(path) => Some((path.to_path_buf(), read_config(path)?)),
        None => match default_configs.iter().find(|p| p.is_file()) {
            Some(path) => Some((path.clone(), read_config(path)?)),
            None => None,
        },
    };
    let (file_path, f) = match file {
        Some((path, f)) => (Some(path), f),
        None => (None, FileConfig::default()),
    };
    let shown = file_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    // A path in the file is relative to the file.
    let in_file = |p: &Path| -> PathBuf {
        match file_path.as_ref().and_then(|f| f.parent()) {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_path_buf(),
        }
    };

    let cleaned = |list: &[String]| -> Vec<String> {
        list.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
    };
    let (endpoints, source) = if let Some(list) = given.endpoints {
        let endpoints = cleaned(list);
        if endpoints.is_empty() {
            return Err(Failure::Usage(
                "--endpoints (or VEXIL_ENDPOINTS) is empty; give node API addresses such as 127.0.0.1:7001".into(),
            ));
        }
        (endpoints, "--endpoints/VEXIL_ENDPOINTS".to_string())
    } else if let (None, Some(regions)) = (&f.endpoints, &f.regions) {
        let endpoints = cleaned(&regions.values().flatten().cloned().collect::<Vec<_>>());
        if endpoints.is_empty() {
            return Err(Failure::Usage(format!("`regions` in {shown} lists no endpoints")));
        }
        (endpoints, shown.clone())
    } else if let Some(list) = &f.endpoints {
        let endpoints = cleaned(list);
        if endpoints.is_empty() {
            return Err(Failure::Usage(format!("`endpoints` in {shown} is empty")));
        }
        (endpoints, shown.clone())
    } else {
        (DEFAULT_ENDPOINTS.iter().map(|s| s.to_string()).collect(), "the default local endpoints".to_string())
    };

    let token = match (given.token, &f.token, &f.token_file) {
        (Some(t), _, _) => {
            if t.trim().is_empty() {
                return Err(Failure::Usage("--token (or VEXIL_TOKEN) is empty".into()));
            }
            Some((t.trim().to_string(), "--token/VEXIL_TOKEN".to_string()))
        }
        (None, Some(_), Some(_)) => {
            return Err(Failure::Usage(format!(
                "{shown} sets both `token` and `token_file`; keep one (token_file keeps the secret out of the config)"
            )));
        }
        (None, Some(t), None) => {
            if t.trim().is_empty() {
                return Err(Failure::Usage(format!("`token` in {shown} is empty")));
            }
            Some((t.trim().to_string(), format!("`token` in {shown}")))
        }
        (None, None, Some(path)) => {
            let path = in_file(path);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                Failure::Input(format!("cannot read the token file {} (`token_file` in {shown}): {e}", path.display()))
            })?;
            let secret = text.trim();
            if secret.is_empty() {
                return Err(Failure::Input(format!(
                    "the token file {} (`token_file` in {shown}) is empty",
                    path.display()
                )));
            }
            Some((secret.to_string(), format!("the token file {}", path.display())))
        }
        (None, None, None) => None,
    };

    let pick = |flag: Option<&Path>, from_file: &Option<PathBuf>| -> Option<PathBuf> {
        flag.map(Path::to_path_buf).or_else(|| from_file.as_deref().map(in_file))
    };
    let cacert = pick(given.cacert, &f.cacert);
    let cert = pick(given.cert, &f.cert);
    let key = pick(given.key, &f.key);
    match (&cert, &key) {
        (Some(_), None) => {
            return Err(Failure::Usage(
                "a client certificate (--cert/VEXIL_CERT or `cert`) needs its private key: give --key/VEXIL_KEY or `key`"
                    .into(),
            ));
        }
        (None, Some(_)) => {
            return Err(Failure::Usage(
                "a client key (--key/VEXIL_KEY or `key`) needs its certificate: give --cert/VEXIL_CERT or `cert`"
                    .into(),
            ));
        }
        _ => {}
    }
    if cert.is_some() && cacert.is_none() {
        return Err(Failure::Usage(
            "a client certificate is for mutual TLS, which needs --cacert/VEXIL_CACERT (or `cacert`): the CA that issued the nodes' certificates".into(),
        ));
    }
    let region = match (given.region.map(str::trim), f.region.as_deref().map(str::trim)) {
        (Some(""), _) => return Err(Failure::Usage("--region (or VEXIL_REGION) is empty".into())),
        (Some(name), _) | (None, Some(name)) => {
            let listed = f.regions.as_ref().and_then(|r| r.get(name)).map(|l| cleaned(l)).unwrap_or_default();
            if listed.is_empty() {
                let known: Vec<&str> = f.regions.iter().flat_map(|r| r.keys()).map(String::as_str).collect();
                return Err(Failure::Usage(format!(
                    "region {name:?} has no endpoints: list them under [regions] in the config file{}",
                    if known.is_empty() { String::new() } else { format!(" (it lists {})", known.join(", ")) }
                )));
            }
            Some((name.to_string(), listed))
        }
        (None, None) => None,
    };
    Ok(Settings { endpoints, consistency: f.consistency, source, token, cacert, cert, key, region })
}

impl Settings {
    /// The client library's connection options: the token, and TLS from the PEM files
    /// (read here; a file that cannot be read is an input error naming it and its option).
    pub fn connect_options(&self) -> Result<ConnectOptions, Failure> {
        let read = |path: &Path, what: &str| {
            std::fs::read_to_string(path)
                .map_err(|e| Failure::Input(format!("cannot read {what} {}: {e}", path.display())))
        };
        let mut options = ConnectOptions::new();
        if let Some((name, endpoints)) = &self.region {
            options = options.region(name.clone(), endpoints.clone());
        }
        if let Some((secret, _)) = &self.token {
            options = options.token(secret.clone());
        }
        if let Some(ca) = &self.cacert {
            let mut tls = TlsOptions::new(read(ca, "the CA certificate (--cacert)")?);
            if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
                tls =
                    tls.identity(read(cert, "the client certificate (--cert)")?, read(key, "the client key (--key)")?);
            }
            options = options.tls(tls);
        }
        Ok(options)
    }
}

fn read_config(path: &Path) -> Result<FileConfig, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::Usage(format!("cannot read the config file {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| {
        Failure::Usage(format!(
            "config file {} is invalid: {}; the keys are endpoints, consistency, token or token_file, cacert, cert and key",
            path.display(),
            e.message()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let dir = tempfile::tempdir().expect("temp dir");
        let f = write(
            dir.path(),
            "c.toml",
            "endpoints = [\"10.0.0.1:7001\", \"10.0.0.2:7001\"]\nconsistency = \"stale\"\n",
        );
        let flag = vec!["a:1".to_string(), " b:2 ".to_string()];
        let s =
            resolve(&Given { endpoints: Some(&flag), config: Some(&f), ..Given::default() }, &[]).expect("resolves");
        assert_eq!(s.endpoints, ["a:1", "b:2"]);
        assert_eq!(s.consistency, Some(ConsistencyArg::Stale));
        let s = resolve(&Given { config: Some(&f), ..Given::default() }, &[]).expect("resolves");
        assert_eq!(s.endpoints, ["10.0.0.1:7001", "10.0.0.2:7001"]);
        let s = resolve(&Given::default(), &[PathBuf::from("/nonexistent/vexilctl.toml")]).expect("resolves");
        assert_eq!(s.endpoints, DEFAULT_ENDPOINTS);
        assert_eq!((s.token, s.cacert), (None, None));
        // The first default that exists is read.
        let s = resolve(&Given::default(), &[dir.path().join("absent.toml"), f.clone()]).expect("resolves");
        assert_eq!(s.endpoints.len(), 2);
    }

    #[test]
    fn a_region_picks_its_nodes_from_the_regions_table() {
        let dir = tempfile::tempdir().expect("temp dir");
        let f = dir.path().join("vexilctl.toml");
        let regions = "[regions]\nus = [\"u1:7001\", \"u2:7001\"]\neu = [\" e1:7001 \"]\n";
        std::fs::write(&f, format!("region = \"eu\"\n{regions}")).expect("write");
        let s = resolve(&Given { config: Some(&f), ..Given::default() }, &[]).expect("resolves");
        assert_eq!(s.region, Some(("eu".to_string(), vec!["e1:7001".to_string()])));
        assert_eq!(s.endpoints, ["e1:7001", "u1:7001", "u2:7001"], "without `endpoints`, every region's nodes");
        let flag = Given { config: Some(&f), region: Some("us"), ..Given::default() };
        assert_eq!(
            resolve(&flag, &[]).expect("resolves").region.map(|r| r.1),
            Some(vec!["u1:7001".into(), "u2:7001".into()])
        );

        let unknown = Given { config: Some(&f), region: Some("ap"), ..Given::default() };
        let Err(Failure::Usage(m)) = resolve(&unknown, &[]) else { panic!("an unknown region resolved") };
        assert!(m.contains("region \"ap\" has no endpoints") && m.contains("eu, us"), "{m}");
        let Err(Failure::Usage(m)) = resolve(&Given { region: Some("eu"), ..Given::default() }, &[]) else {
            panic!("a region without a [regions] table resolved")
        };
        assert!(m.contains("[regions]"), "{m}");
    }

    #[test]
    fn security_settings_come_from_flags_else_the_file_relative_to_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        write(dir.path(), "admin.token", "vexil_fromfile\n");
        let f = write(
            dir.path(),
            "vexilctl.toml",
            "token_file = \"admin.token\"\ncacert = \"tls/ca.pem\"\ncert = \"/abs/me.pem\"\nkey = \"me-key.pem\"\n",
        );
        let s = resolve(&Given { config: Some(&f), ..Given::default() }, &[]).expect("resolves");
        assert_eq!(s.token.as_ref().map(|t| t.0.as_str()), Some("vexil_fromfile"), "trimmed");
        assert!(s.token.as_ref().is_some_and(|t| t.1.contains("admin.token")));
        assert_eq!(s.cacert, Some(dir.path().join("tls/ca.pem")));
        assert_eq!(s.cert, Some(PathBuf::from("/abs/me.pem")));
        assert_eq!(s.key, Some(dir.path().join("me-key.pem")));
        assert!(!format!("{s:?}").contains("vexil_fromfile"), "Debug must not show the secret");

        let given = Given {
            config: Some(&f),
            token: Some("vexil_flag"),
            cacert: Some(Path::new("other-ca.pem")),
            ..Given::default()
        };
        let s = resolve(&given, &[]).expect("resolves");
        assert_eq!(s.token.map(|t| t.0), Some("vexil_flag".to_string()));
        assert_eq!(s.cacert, Some(PathBuf::from("other-ca.pem")), "a flag's path is the caller's, as given");
    }

    #[test]
    fn contradictions_and_unknown_keys_are_usage_errors_naming_the_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let f = write(dir.path(), "a.toml", "endpoint = [\"x:1\"]\n");
        let err = resolve(&Given { config: Some(&f), ..Given::default() }, &[]).expect_err("unknown key");
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains(&f.display().to_string()), "{err}");
        assert!(err.to_string().contains("unknown field `endpoint`"), "{err}");
        let err = resolve(&Given { config: Some(Path::new("/nonexistent/x.toml")), ..Given::default() }, &[])
            .expect_err("missing");
        assert_eq!(err.exit_code(), 2);
        assert!(resolve(&Given { endpoints: Some(&[" ".to_string()]), ..Given::default() }, &[]).is_err());

        let both = write(dir.path(), "b.toml", "token = \"vexil_a\"\ntoken_file = \"t\"\n");
        let err = resolve(&Given { config: Some(&both), ..Given::default() }, &[]).expect_err("both");
        assert!(err.to_string().contains("both `token` and `token_file`"), "{err}");
        let missing = write(dir.path(), "c.toml", "token_file = \"nope.token\"\n");
        let err = resolve(&Given { config: Some(&missing), ..Given::default() }, &[]).expect_err("no token file");
        assert_eq!(err.exit_code(), 1);
        assert!(err.to_string().contains("nope.token"), "{err}");

        let cert = Given { cert: Some(Path::new("me.pem")), cacert: Some(Path::new("ca.pem")), ..Given::default() };
        assert!(resolve(&cert, &[]).expect_err("no key").to_string().contains("--key"));
        let no_ca = Given { cert: Some(Path::new("me.pem")), key: Some(Path::new("k.pem")), ..Given::default() };
        assert!(resolve(&no_ca, &[]).expect_err("no CA").to_string().contains("--cacert"));
        assert!(resolve(&Given { token: Some(" "), ..Given::default() }, &[]).is_err());
    }

    #[test]
    fn unreadable_pem_files_are_input_errors_naming_them() {
        let s = resolve(&Given { cacert: Some(Path::new("/nonexistent/ca.pem")), ..Given::default() }, &[])
            .expect("resolves: files are read when connecting");
        let err = s.connect_options().expect_err("missing CA file");
        assert_eq!(err.exit_code(), 1);
        assert!(err.to_string().contains("/nonexistent/ca.pem") && err.to_string().contains("--cacert"), "{err}");
    }
}
