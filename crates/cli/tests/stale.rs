//! `vexilctl flag stale` reports expired flags and deprecated flags that are still on, and
//! leaves healthy flags out.

mod common;

use std::time::Duration;

use common::ctl;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stale_report_names_expired_and_deprecated_but_enabled_flags() {
    let c = common::start(3, &[]).await;
    c.wait_leader(Duration::from_secs(30)).await;
    let ep = c.endpoints(&[1, 2, 3]);
    let base = r#""state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off""#;
    for (key, extra) in [
        ("expired", r#","expires_at":"2020-01-01T00:00:00Z""#),
        ("old-news", r#","lifecycle":"deprecated""#),
        ("healthy", r#","targeting":{"if":[{"==":[{"var":"plan"},"pro"]},"on",null]}"#),
    ] {
        let spec = format!("{{{base}{extra}}}");
        ctl(&["flag", "create", "ns", key, "--spec", &spec, "--endpoints", &ep]).await.ok();
    }
    let report = ctl(&["flag", "stale", "ns", "--output", "json", "--endpoints", &ep]).await.json();
    let keys: Vec<&str> =
        report["stale"].as_array().expect("stale").iter().map(|f| f["key"].as_str().expect("key")).collect();
    assert_eq!(keys, ["expired", "old-news"], "{report}");
    let why = report["stale"][0]["reasons"][0].as_str().expect("reason");
    assert!(why.contains("expire"), "{why}");
    let table = ctl(&["flag", "stale", "ns", "--endpoints", &ep]).await;
    assert!(table.ok().contains("old-news"), "{}", table.stdout);
}
