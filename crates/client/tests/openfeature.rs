//! The OpenFeature provider resolves flags of a live cluster through the `open-feature` SDK.
#![cfg(feature = "openfeature")]

use std::time::Duration;

use open_feature::{EvaluationContext, EvaluationErrorCode, EvaluationReason, OpenFeature};
use serde_json::json;
use vexil_client::openfeature::VexilProvider;
use vexil_client::{Client, WriteOpts};
use vexil_testkit::{Cluster, bool_spec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_resolves_flags_through_the_sdk() -> anyhow::Result<()> {
    let cluster = Cluster::start(3).await;
    let admin = vexil_client::AdminClient::new(cluster.api_addrs())?;
    admin.create_flag("of", "enabled", &bool_spec("on", "t"), WriteOpts::default()).await?;
    let limits = json!({"state": "ENABLED", "variants": {"low": 10, "high": 1000}, "defaultVariant": "low",
                        "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "high", null]},
                        "metadata": {"owner": "team-a"}});
    admin.create_flag("of", "limit", &limits.to_string(), WriteOpts::default()).await?;
    let cfg = json!({"state": "ENABLED", "variants": {"v": {"color": "blue", "size": 3}}, "defaultVariant": "v"});
    admin.create_flag("of", "config", &cfg.to_string(), WriteOpts::default()).await?;
    let w = admin.create_flag("of", "off", &bool_spec("on", "t"), WriteOpts::default()).await?;
    let w = admin.set_flag_state("of", "off", false, Some(w.version), WriteOpts::default()).await?;

    let client = Client::builder(cluster.api_addrs()).namespace("of").connect().await?;
    assert!(client.wait_for_revision(w.revision, Duration::from_secs(5)).await);

    let mut api = OpenFeature::singleton_mut().await;
    api.set_provider(VexilProvider::new(client.clone())).await;
    let of = api.create_client();
    drop(api);

    assert!(of.get_bool_value("enabled", None, None).await.unwrap());
    let pro = EvaluationContext::default().with_targeting_key("u1").with_custom_field("plan", "pro");
    let d = of.get_int_details("limit", Some(&pro), None).await.unwrap();
    assert_eq!((d.value, d.variant.as_deref(), d.reason), (1000, Some("high"), Some(EvaluationReason::TargetingMatch)));
    assert_eq!(d.flag_metadata.values.get("owner"), Some(&open_feature::FlagMetadataValue::String("team-a".into())));
    let free = EvaluationContext::default().with_targeting_key("u2").with_custom_field("plan", "free");
    assert_eq!(of.get_int_value("limit", Some(&free), None).await.unwrap(), 10);
    let d = of.get_struct_details::<open_feature::StructValue>("config", None, None).await.unwrap();
    assert_eq!(d.value.fields["color"], open_feature::Value::String("blue".into()));

    let e = of.get_bool_value("missing", None, None).await.unwrap_err();
    assert_eq!(e.code, EvaluationErrorCode::FlagNotFound);
    let e = of.get_string_value("enabled", None, None).await.unwrap_err();
    assert_eq!(e.code, EvaluationErrorCode::TypeMismatch);
    // A disabled flag yields the caller's default through the SDK's error path.
    assert!(of.get_bool_value("off", None, None).await.unwrap_or(true));
    Ok(())
}
