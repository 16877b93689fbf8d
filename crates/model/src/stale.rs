//! The stale-flag report: which flags are due for clean-up, and why. A pure function of the
//! flags, their last-change times, the current time and a threshold.
//!
//! A flag is reported when any of these holds:
//! - it is past its `expires_at`;
//! - its lifecycle is `deprecated` or `retired` but it is still `ENABLED`;
//! - it has not changed for `unchanged_days` days and serves one outcome to everyone: it is
//!   disabled, or it has no targeting, or it declares a single variant (then targeting can only
//!   choose between that variant and the default, which are the same).

use crate::flag::{FlagSpec, FlagState, Lifecycle};

const MS_PER_DAY: i64 = 86_400_000;

/// One flag as the report needs it.
#[derive(Debug, Clone, Copy)]
pub struct FlagActivity<'a> {
    pub key: &'a str,
    pub spec: &'a FlagSpec,
    /// When the flag last changed (`updated_at`), in Unix milliseconds.
    pub last_change_unix_ms: i64,
}

/// What every user gets from a flag that serves one outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UniformOutcome {
    /// The flag is disabled: every caller gets its code default.
    Disabled,
    /// Every caller gets this variant.
    Variant(String),
    /// No default variant and no targeting: every caller gets its code default.
    CallerDefault,
}

/// Why a flag is reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StaleReason {
    /// Past `expires_at` (Unix seconds).
    Expired { expires_at_unix: i64 },
    /// `deprecated` but still enabled.
    DeprecatedButEnabled,
    /// `retired` but still enabled.
    RetiredButEnabled,
    /// Unchanged for `days` whole days while serving one outcome to everyone.
    Unchanged { days: i64, outcome: UniformOutcome },
}

impl StaleReason {
    /// A sentence for a report line.
    pub fn describe(&self) -> String {
        match self {
            StaleReason::Expired { expires_at_unix } => {
                format!("expired (expires_at is {expires_at_unix} s since the epoch)")
            }
            StaleReason::DeprecatedButEnabled => "deprecated but still ENABLED".into(),
            StaleReason::RetiredButEnabled => "retired but still ENABLED".into(),
            StaleReason::Unchanged { days, outcome } => match outcome {
                UniformOutcome::Disabled => {
                    format!("unchanged for {days} days and DISABLED for everyone")
                }
                UniformOutcome::Variant(v) => {
                    format!("unchanged for {days} days and serves variant {v:?} to everyone")
                }
                UniformOutcome::CallerDefault => {
                    format!("unchanged for {days} days and serves the caller's default to everyone")
                }
            },
        }
    }
}

/// A reported flag with every reason that applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleFlag {
    pub key: String,
    pub reasons: Vec<StaleReason>,
}

/// The outcome every user gets, if the flag gives everyone the same one.
pub fn uniform_outcome(spec: &FlagSpec) -> Option<UniformOutcome> {
    if spec.state == FlagState::Disabled {
        return Some(UniformOutcome::Disabled);
    }
    if spec.variants.len() == 1 {
        let only = spec.variants.keys().next().cloned().unwrap_or_default();
        // With targeting, a single-variant flag serves that variant or the default; without a
        // default variant the latter is the caller's default, so it is not uniform.
        if spec.targeting.is_none() || spec.default_variant.is_some() {
            return Some(UniformOutcome::Variant(only));
        }
        return None;
    }
    if spec.targeting.is_none() {
        return Some(match &spec.default_variant {
            Some(v) => UniformOutcome::Variant(v.clone()),
            None => UniformOutcome::CallerDefault,
        });
    }
    None
}

/// Builds the report, in the order the flags are given. `unchanged_days` is the N of "no change
/// in N days".
pub fn stale_report<'a>(
    flags: impl IntoIterator<Item = FlagActivity<'a>>,
    now_unix_ms: i64,
    unchanged_days: u32,
) -> Vec<StaleFlag> {
    let now_unix_secs = now_unix_ms.div_euclid(1000);
    let mut out = Vec::new();
    for f in flags {
        let mut reasons = Vec::new();
        if let Some(expires_at_unix) = f.spec.expires_at_unix()
            && expires_at_unix <= now_unix_secs
        {
            reasons.push(StaleReason::Expired { expires_at_unix });
        }
        if f.spec.state == FlagState::Enabled {
            match f.spec.lifecycle {
                Lifecycle::Deprecated => reasons.push(StaleReason::DeprecatedButEnabled),
                Lifecycle::Retired => reasons.push(StaleReason::RetiredButEnabled),
                _ => {}
            }
        }
        let days = now_unix_ms.saturating_sub(f.last_change_unix_ms).div_euclid(MS_PER_DAY);
        if days >= i64::from(unchanged_days)
            && let Some(outcome) = uniform_outcome(f.spec)
        {
            reasons.push(StaleReason::Unchanged { days, outcome });
        }
        if !reasons.is_empty() {
            out.push(StaleFlag { key: f.key.to_string(), reasons });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> FlagSpec {
        FlagSpec::from_value("f", &v, "").expect("valid test flag")
    }

    const DAY: i64 = MS_PER_DAY;
    // 2027-01-31T00:00:00Z
    const NOW: i64 = 1_801_353_600_000;

    fn report(s: &FlagSpec, last_change: i64, n: u32) -> Vec<StaleReason> {
        stale_report([FlagActivity { key: "f", spec: s, last_change_unix_ms: last_change }], NOW, n)
            .into_iter()
            .flat_map(|f| f.reasons)
            .collect()
    }

    #[test]
    fn expired_flags_are_reported_from_their_expiry_on() {
        let s = spec(json!({"state": "ENABLED", "variants": {"a": 1, "b": 2}, "defaultVariant": "a",
            "targeting": {"if": [true, "b", null]}, "expires_at": "2027-01-31T00:00:00Z"}));
        assert_eq!(report(&s, NOW, 30), vec![StaleReason::Expired { expires_at_unix: NOW / 1000 }]);
        assert!(report(&s, NOW, 30).len() == 1);
        let later = spec(json!({"state": "ENABLED", "variants": {"a": 1, "b": 2}, "defaultVariant": "a",
            "targeting": {"if": [true, "b", null]}, "expires_at": "2027-01-31T00:00:01Z"}));
        assert!(report(&later, NOW, 30).is_empty());
    }

    #[test]
    fn deprecated_or_retired_but_enabled() {
        let dep = spec(json!({"state": "ENABLED", "variants": {"a": 1, "b": 2}, "defaultVariant": "a",
            "targeting": {"if": [true, "b", null]}, "lifecycle": "deprecated"}));
        assert_eq!(report(&dep, NOW, 30), vec![StaleReason::DeprecatedButEnabled]);
        let ret = spec(json!({"state": "ENABLED", "variants": {"a": 1, "b": 2}, "defaultVariant": "a",
            "targeting": {"if": [true, "b", null]}, "lifecycle": "retired"}));
        assert_eq!(report(&ret, NOW, 30), vec![StaleReason::RetiredButEnabled]);
        let off = spec(json!({"state": "DISABLED", "variants": {"a": 1}, "lifecycle": "retired"}));
        assert!(report(&off, NOW, 30).is_empty(), "disabled and recently changed: nothing to do");
    }

    #[test]
    fn unchanged_flags_serving_one_outcome() {
        let static_flag =
            spec(json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}));
        assert!(report(&static_flag, NOW - 29 * DAY, 30).is_empty());
        assert_eq!(
            report(&static_flag, NOW - 30 * DAY, 30),
            vec![StaleReason::Unchanged { days: 30, outcome: UniformOutcome::Variant("on".into()) }]
        );
        let single = spec(json!({"state": "ENABLED", "variants": {"only": "x"}, "defaultVariant": "only",
            "targeting": {"if": [{"var": "beta"}, "only", null]}}));
        assert_eq!(
            report(&single, NOW - 90 * DAY, 30),
            vec![StaleReason::Unchanged { days: 90, outcome: UniformOutcome::Variant("only".into()) }]
        );
        let targeted =
            spec(json!({"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
            "targeting": {"fractional": [["on", 50], ["off", 50]]}}));
        assert!(report(&targeted, NOW - 900 * DAY, 30).is_empty());
        let disabled = spec(json!({"state": "DISABLED", "variants": {"on": true, "off": false}}));
        assert_eq!(
            report(&disabled, NOW - 31 * DAY, 30),
            vec![StaleReason::Unchanged { days: 31, outcome: UniformOutcome::Disabled }]
        );
        let no_default = spec(json!({"state": "ENABLED", "variants": {"on": true, "off": false}}));
        assert_eq!(
            report(&no_default, NOW - 31 * DAY, 30),
            vec![StaleReason::Unchanged { days: 31, outcome: UniformOutcome::CallerDefault }]
        );
    }

    #[test]
    fn all_reasons_together_and_order_kept() {
        let s = spec(json!({"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on",
            "lifecycle": "deprecated", "expires_at": "2026-01-01T00:00:00Z"}));
        let other = spec(
            json!({"state": "ENABLED", "variants": {"a": 1, "b": 2}, "defaultVariant": "a", "targeting": {"if": [true, "b", null]}}),
        );
        let r = stale_report(
            [
                FlagActivity { key: "z", spec: &s, last_change_unix_ms: NOW - 400 * DAY },
                FlagActivity { key: "fine", spec: &other, last_change_unix_ms: 0 },
                FlagActivity { key: "a", spec: &s, last_change_unix_ms: NOW },
            ],
            NOW,
            30,
        );
        assert_eq!(r.iter().map(|f| f.key.as_str()).collect::<Vec<_>>(), ["z", "a"]);
        assert_eq!(r[0].reasons.len(), 3);
        assert_eq!(r[1].reasons.len(), 2);
        assert!(r[0].reasons[2].describe().contains("400 days"));
    }
}
