//! Runs the built `vexilctl eval` on real files: success, evaluation errors (exit 0), a missing
//! file and malformed JSON (exit 1), and bad usage (exit 2).

use std::io::Write;
use std::process::{Command, Output};

use serde_json::{Value, json};

const FLAGS: &str = r##"{
  "flags": {
    "new-checkout": {
      "state": "ENABLED",
      "variants": {"on": true, "off": false},
      "defaultVariant": "off",
      "targeting": {"if": [{"$ref": "beta"}, "on", null]},
      "metadata": {"team": "checkout"}
    },
    "color": {"state": "ENABLED", "variants": {"red": "#f00"}, "defaultVariant": "red"},
    "broken": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a", "targeting": {"if": [{"$ref": "gone"}, "a", null]}}
  },
  "$evaluators": {"beta": {"ends_with": [{"var": "email"}, "@beta.example"]}},
  "metadata": {"flagSetId": "shop"}
}"##;

fn flags_file(content: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(content.as_bytes()).expect("write temp file");
    f
}

fn vexilctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vexilctl")).args(args).output().expect("run vexilctl")
}

fn json_out(out: &Output) -> Value {
    assert!(out.status.success(), "exit {:?}, stderr {}", out.status, String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

#[test]
fn evaluates_a_targeted_flag() {
    let f = flags_file(FLAGS);
    let path = f.path().to_str().expect("utf-8 path");
    let out = vexilctl(&[
        "eval",
        "--file",
        path,
        "--flag",
        "new-checkout",
        "--context",
        r#"{"targetingKey":"u1","email":"ann@beta.example"}"#,
        "--output",
        "json",
    ]);
    assert_eq!(
        json_out(&out),
        json!({"key": "new-checkout", "value": true, "variant": "on", "reason": "TARGETING_MATCH", "errorCode": null,
               "errorMessage": null, "metadata": {"team": "checkout", "flagSetId": "shop"}})
    );
    let out = vexilctl(&["eval", "--file", path, "--flag", "new-checkout", "--type", "bool", "--output", "json"]);
    let v = json_out(&out);
    assert_eq!((&v["value"], &v["reason"]), (&json!(false), &json!("DEFAULT")));
    let out = vexilctl(&["eval", "--file", path, "--flag", "color"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(table.contains("VALUE") && table.contains("#f00") && table.contains("STATIC"), "{table}");
}

#[test]
fn evaluation_errors_exit_zero_with_the_error_code() {
    let f = flags_file(FLAGS);
    let path = f.path().to_str().expect("utf-8 path");
    let v = json_out(&vexilctl(&["eval", "--file", path, "--flag", "nope", "--output", "json"]));
    assert_eq!((&v["reason"], &v["errorCode"], &v["value"]), (&json!("ERROR"), &json!("FLAG_NOT_FOUND"), &Value::Null));
    let v = json_out(&vexilctl(&["eval", "--file", path, "--flag", "color", "--type", "int", "--output", "json"]));
    assert_eq!(
        (&v["reason"], &v["errorCode"], &v["variant"]),
        (&json!("ERROR"), &json!("TYPE_MISMATCH"), &json!("red"))
    );
    let v = json_out(&vexilctl(&["eval", "--file", path, "--flag", "broken", "--output", "json"]));
    assert_eq!(v["errorCode"], json!("PARSE_ERROR"));
    assert!(v["errorMessage"].as_str().expect("message").contains("gone"));
}

#[test]
fn a_missing_file_exits_one_naming_the_file() {
    let out = vexilctl(&["eval", "--file", "/definitely/not/here.json", "--flag", "x"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/definitely/not/here.json"), "{err}");
}

#[test]
fn malformed_json_exits_one_naming_the_file_and_problem() {
    let f = flags_file("{\"flags\": {");
    let path = f.path().to_str().expect("utf-8 path");
    let out = vexilctl(&["eval", "--file", path, "--flag", "x", "--output", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(path) && err.contains("malformed JSON"), "{err}");
    let f = flags_file(r#"{"flags": {"x": {"state": "ON", "variants": {"a": 1}}}}"#);
    let out = vexilctl(&["eval", "--file", f.path().to_str().expect("utf-8 path"), "--flag", "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("flags.x.state"));
}

#[test]
fn bad_usage_exits_two() {
    let f = flags_file(FLAGS);
    let path = f.path().to_str().expect("utf-8 path");
    assert_eq!(vexilctl(&["eval", "--file", path, "--flag", "color", "--context", "[1]"]).status.code(), Some(2));
    assert_eq!(vexilctl(&["eval", "--file", path, "--flag", "color", "--context", "{oops"]).status.code(), Some(2));
    assert_eq!(vexilctl(&["eval", "--file", path]).status.code(), Some(2));
    assert_eq!(vexilctl(&["eval", "--file", path, "--flag", "color", "--type", "date"]).status.code(), Some(2));
}
