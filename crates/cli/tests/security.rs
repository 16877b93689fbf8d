//! `vexilctl tls` (a CA and certificates on disk), the security settings (flags, variables,
//! `vexilctl.toml`), and what reaches a node: without a cluster. The "node" is a real tonic
//! TLS server on loopback that records each request's `authorization` header
//! (`vexil_testkit::HeaderRecorder`); Vexil calls reach it (and are recorded) and come back
//! UNIMPLEMENTED, which is enough to show that the connection was TLS with the right
//! certificates and carried the right token.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::{Out, ctl, ctl_command_in, run};
use vexil_testkit::{HeaderRecorder, RecorderTls};

/// A token shaped like the cluster's secrets.
const TOKEN: &str = "vexil_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// A recorder: plaintext, or TLS with the certificate `NAME.pem`/`NAME-key.pem` in `dir`
/// (demanding client certificates of the CA in `dir` when `mutual`).
async fn recorder(tls: Option<(&Path, &str, bool)>) -> HeaderRecorder {
    let tls = tls.map(|(dir, name, mutual)| {
        let read = |f: String| std::fs::read_to_string(dir.join(f)).unwrap();
        RecorderTls {
            cert_pem: read(format!("{name}.pem")),
            key_pem: read(format!("{name}-key.pem")),
            client_ca_pem: mutual.then(|| read("ca.pem".into())),
        }
    });
    HeaderRecorder::start(tls).await
}

fn bearer(token: &str) -> Option<String> {
    Some(format!("Bearer {token}"))
}

/// `vexilctl ARGS` run in `cwd`, with extra environment variables.
async fn ctl_in(cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> Out {
    let mut cmd = ctl_command_in(cwd, args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(cmd, args).await
}

/// A CA in `dir` and certificates `node` (for 127.0.0.1) and `me` (a client), via vexilctl.
async fn pki(dir: &Path) {
    let d = dir.to_str().unwrap();
    ctl(&["tls", "create-ca", "--out-dir", d, "--name", "test CA"]).await.ok();
    ctl(&["tls", "issue", "--ca-dir", d, "--name", "node", "--san", "127.0.0.1", "--san", "localhost", "--out-dir", d])
        .await
        .ok();
    ctl(&["tls", "issue", "--ca-dir", d, "--name", "me", "--san", "vexilctl", "--out-dir", d]).await.ok();
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn tls_commands_write_a_ca_and_certificates_and_never_overwrite_silently() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("pki");
    let ds = d.to_str().unwrap();

    let v = ctl(&["tls", "create-ca", "--out-dir", ds, "--output", "json"]).await.json();
    assert_eq!(v["cert"], d.join("ca.pem").to_str().unwrap());
    let ca_pem = std::fs::read_to_string(d.join("ca.pem")).unwrap();
    let ca_key = std::fs::read_to_string(d.join("ca-key.pem")).unwrap();
    assert!(ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(ca_key.contains("PRIVATE KEY"));
    #[cfg(unix)]
    assert_eq!(mode(&d.join("ca-key.pem")), 0o600, "the CA key is its owner's only");
    // The files are a CA that vexil-pki reads back.
    vexil_pki::Ca::from_pem(&ca_pem, &ca_key).expect("a CA");

    // Again: refused, naming the file, and nothing changed.
    let out = ctl(&["tls", "create-ca", "--out-dir", ds]).await;
    let err = out.fails(1);
    assert!(err.contains(d.join("ca.pem").to_str().unwrap()) && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read_to_string(d.join("ca-key.pem")).unwrap(), ca_key);
    // With --force: a new CA, the key still 0600.
    ctl(&["tls", "create-ca", "--out-dir", ds, "--force"]).await.ok();
    assert_ne!(std::fs::read_to_string(d.join("ca-key.pem")).unwrap(), ca_key);
    #[cfg(unix)]
    assert_eq!(mode(&d.join("ca-key.pem")), 0o600);

    let out = ctl(&[
        "tls",
        "issue",
        "--ca-dir",
        ds,
        "--name",
        "node-1",
        "--san",
        "127.0.0.1",
        "--san",
        "node-1.internal",
        "--out-dir",
        ds,
    ])
    .await;
    let text = out.ok();
    assert!(text.contains("127.0.0.1, node-1.internal"), "{text}");
    assert!(std::fs::read_to_string(d.join("node-1.pem")).unwrap().starts_with("-----BEGIN CERTIFICATE-----"));
    #[cfg(unix)]
    assert_eq!(mode(&d.join("node-1-key.pem")), 0o600);
    let out = ctl(&["tls", "issue", "--ca-dir", ds, "--name", "node-1", "--san", "127.0.0.1", "--out-dir", ds]).await;
    assert!(out.fails(1).contains("node-1.pem"), "{}", out.stderr);

    // Bad inputs name what is wrong.
    let out = ctl(&["tls", "issue", "--ca-dir", ds, "--name", "n2", "--san", "not a name", "--out-dir", ds]).await;
    assert!(out.fails(2).contains("SAN \"not a name\""), "{}", out.stderr);
    assert!(!d.join("n2.pem").exists(), "nothing is written for a refused certificate");
    let out =
        ctl(&["tls", "issue", "--ca-dir", "/nonexistent/ca", "--name", "n2", "--san", "x", "--out-dir", ds]).await;
    assert!(out.fails(1).contains("/nonexistent/ca/ca.pem"), "{}", out.stderr);
    let out = ctl(&["tls", "issue", "--ca-dir", ds, "--name", "../evil", "--san", "x", "--out-dir", ds]).await;
    out.fails(2);
    // --san is required.
    ctl(&["tls", "issue", "--ca-dir", ds, "--name", "n3", "--out-dir", ds]).await.fails(2);
}

#[tokio::test]
async fn a_config_file_in_the_current_directory_sets_up_mutual_tls_and_the_token() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path()).await;
    let node = recorder(Some((dir.path(), "node", true))).await;
    std::fs::write(dir.path().join("admin.token"), format!("{TOKEN}\n")).unwrap();
    std::fs::write(
        dir.path().join("vexilctl.toml"),
        format!(
            "endpoints = [\"{}\"]\ntoken_file = \"admin.token\"\ncacert = \"ca.pem\"\ncert = \"me.pem\"\nkey = \"me-key.pem\"\n",
            node.addr()
        ),
    )
    .unwrap();

    // No flags at all: an admin call (the client library's AdminClient) ...
    let out = ctl_in(dir.path(), &[], &["flag", "list", "shop"]).await;
    assert!(out.fails(1).contains("Unimplemented"), "it reached the node: {}", out.stderr);
    assert_eq!(node.seen(), vec![bearer(TOKEN)]);
    // ... and a raw per-node call (status probes, membership changes) carry both.
    let out = ctl_in(dir.path(), &[], &["cluster", "status"]).await;
    out.fails(1);
    assert_eq!(node.seen(), vec![bearer(TOKEN), bearer(TOKEN)], "{}", out.stderr);

    // The flag beats the variable beats the file.
    ctl_in(dir.path(), &[("VEXIL_TOKEN", "vexil_from_env")], &["flag", "list", "shop"]).await.fails(1);
    assert_eq!(node.seen().last().cloned().flatten(), bearer("vexil_from_env"));
    ctl_in(dir.path(), &[("VEXIL_TOKEN", "vexil_from_env")], &["flag", "list", "shop", "--token", "vexil_from_flag"])
        .await
        .fails(1);
    assert_eq!(node.seen().last().cloned().flatten(), bearer("vexil_from_flag"));

    // Without the client certificate the node refuses the connection: nothing is recorded.
    let before = node.seen().len();
    let other = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let out = ctl_in(other.path(), &[], &list_shop(&node.addr().to_string(), ca.to_str().unwrap(), Some(TOKEN))).await;
    let err = out.fails(1);
    assert!(err.contains("cannot reach the cluster"), "{err}");
    assert_eq!(node.seen().len(), before, "a client without a certificate got through");
}

/// `vexilctl flag list shop` against `addr`, trusting `ca`, with `token` if given.
fn list_shop<'a>(addr: &'a str, ca: &'a str, token: Option<&'a str>) -> Vec<&'a str> {
    let mut args = vec!["flag", "list", "shop", "--endpoints", addr, "--cacert", ca];
    if let Some(t) = token {
        args.extend(["--token", t]);
    }
    args
}

#[tokio::test]
async fn a_node_certificate_from_another_ca_is_refused() {
    let ours = tempfile::tempdir().unwrap();
    let theirs = tempfile::tempdir().unwrap();
    pki(ours.path()).await;
    pki(theirs.path()).await;
    let impostor = recorder(Some((theirs.path(), "node", false))).await;
    let ca = ours.path().join("ca.pem");
    let out = ctl(&list_shop(&impostor.addr().to_string(), ca.to_str().unwrap(), Some(TOKEN))).await;
    let err = out.fails(1);
    assert!(err.contains("--cacert"), "the advice names the CA option: {err}");
    assert!(impostor.seen().is_empty(), "the token was sent to a server of another CA");
    // The same server with its own CA: reached.
    let theirs_ca = theirs.path().join("ca.pem");
    ctl(&list_shop(&impostor.addr().to_string(), theirs_ca.to_str().unwrap(), None)).await.fails(1);
    assert_eq!(impostor.seen(), vec![None]);
}

#[tokio::test]
async fn a_plaintext_node_gets_the_token_too() {
    let node = recorder(None).await;
    ctl(&["flag", "list", "shop", "--endpoints", &node.addr().to_string(), "--token", TOKEN]).await.fails(1);
    ctl(&["flag", "list", "shop", "--endpoints", &node.addr().to_string()]).await.fails(1);
    assert_eq!(node.seen(), vec![bearer(TOKEN), None]);
}

#[tokio::test]
async fn contradictory_or_unknown_settings_are_refused_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path()).await;
    let ca = dir.path().join("ca.pem");
    let ca = ca.to_str().unwrap();

    // TLS with an http:// endpoint: never a silent plaintext connection.
    let out = ctl(&["flag", "list", "shop", "--endpoints", "http://127.0.0.1:7001", "--cacert", ca]).await;
    let err = out.fails(2);
    assert!(err.contains("\"http://127.0.0.1:7001\"") && err.contains("plaintext"), "{err}");
    let out =
        ctl_in(dir.path(), &[("VEXIL_CACERT", ca)], &["flag", "list", "shop", "--endpoints", "http://127.0.0.1:7001"])
            .await;
    out.fails(2);

    // Unknown keys, both token and token_file, half a client identity.
    std::fs::write(dir.path().join("vexilctl.toml"), "endpoints = [\"127.0.0.1:1\"]\ncacrt = \"ca.pem\"\n").unwrap();
    let out = ctl_in(dir.path(), &[], &["flag", "list", "shop"]).await;
    let err = out.fails(2);
    assert!(err.contains("cacrt") && err.contains("vexilctl.toml"), "{err}");
    std::fs::write(dir.path().join("vexilctl.toml"), "token = \"vexil_a\"\ntoken_file = \"t\"\n").unwrap();
    assert!(ctl_in(dir.path(), &[], &["flag", "list", "shop"]).await.fails(2).contains("token_file"));
    std::fs::write(dir.path().join("vexilctl.toml"), "cacert = \"ca.pem\"\ncert = \"me.pem\"\n").unwrap();
    assert!(ctl_in(dir.path(), &[], &["flag", "list", "shop"]).await.fails(2).contains("--key"));

    // --config names another file, which must exist; it wins over ./vexilctl.toml.
    let elsewhere = dir.path().join("elsewhere.toml");
    std::fs::write(&elsewhere, "token_file = \"missing.token\"\n").unwrap();
    let out = ctl_in(dir.path(), &[], &["flag", "list", "shop", "--config", elsewhere.to_str().unwrap()]).await;
    assert!(out.fails(1).contains("missing.token"), "{}", out.stderr);
    let out = ctl_in(dir.path(), &[("VEXILCTL_CONFIG", "/nonexistent/vexilctl.toml")], &["flag", "list", "shop"]).await;
    assert!(out.fails(2).contains("/nonexistent/vexilctl.toml"), "{}", out.stderr);

    // A CA file that is not PEM.
    std::fs::remove_file(dir.path().join("vexilctl.toml")).unwrap();
    let me = dir.path().join("me-key.pem");
    let out = ctl(&["flag", "list", "shop", "--cacert", me.to_str().unwrap()]).await;
    assert!(out.fails(2).contains("CA certificate"), "{}", out.stderr);
}
