//! A namespace's change-control policy: which writes need approval and from whom, what each
//! lifecycle stage requires of a flag, and whether `depends_on` is enforced.
//!
//! A namespace without a policy behaves as it always has. Setting one (admins only) turns
//! change control on for that namespace: the state machine then checks every write of its
//! flags against it, on every replica, in the entry that applies it. A policy never changes
//! how a flag evaluates: it is not part of the flagd document, the watch stream or the
//! evaluators' settings.

use serde_json::{Map, Value, json};

use crate::access::Role;
use crate::flag::{FlagSpec, FlagState, Lifecycle, ValidationError, type_name};

/// What one lifecycle stage requires of a flag in it. Checked on every write that leaves a
/// flag in the stage, except a disable (a kill switch is never held back by paperwork).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// A non-empty `owner`.
    Owner,
    /// A non-empty `description`.
    Description,
    /// An `expires_at` after the write's time.
    ExpiresAt,
    /// The flag is `DISABLED`.
    Disabled,
    /// No enabled flag of the namespace lists this one in `depends_on`.
    NoEnabledDependents,
}

impl Gate {
    const ALL: [Gate; 5] = [Gate::Owner, Gate::Description, Gate::ExpiresAt, Gate::Disabled, Gate::NoEnabledDependents];

    pub fn as_str(self) -> &'static str {
        match self {
            Gate::Owner => "owner",
            Gate::Description => "description",
            Gate::ExpiresAt => "expires_at",
            Gate::Disabled => "disabled",
            Gate::NoEnabledDependents => "no_enabled_dependents",
        }
    }

    fn parse(s: &str) -> Option<Gate> {
        Gate::ALL.into_iter().find(|g| g.as_str() == s)
    }

    /// Why `spec` does not meet this gate at `now_ms`, if it does not. [`Gate::NoEnabledDependents`]
    /// depends on the other flags and is checked by the state machine, so it passes here.
    pub fn unmet(self, spec: &FlagSpec, now_ms: i64) -> Option<String> {
        match self {
            Gate::Owner if spec.owner.trim().is_empty() => Some("the flag has no owner".into()),
            Gate::Description if spec.description.trim().is_empty() => Some("the flag has no description".into()),
            Gate::ExpiresAt => match spec.expires_at_unix() {
                None => Some("the flag has no expires_at".into()),
                Some(at) if at.saturating_mul(1000) <= now_ms => {
                    Some(format!("expires_at {} is not in the future", spec.expires_at.as_deref().unwrap_or("")))
                }
                Some(_) => None,
            },
            Gate::Disabled if spec.state != FlagState::Disabled => Some("the flag is not disabled".into()),
            _ => None,
        }
    }
}

/// Which flags' changes need approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Covers {
    /// Every flag of the namespace.
    Namespace,
    /// Flags carrying any of these tags (before or after the change).
    Tags(Vec<String>),
    /// Flags in any of these stages (before or after the change).
    Stages(Vec<Lifecycle>),
}

/// The approval a covered change needs before it applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRule {
    pub covers: Covers,
    /// Distinct approvers needed (at least 1).
    pub approvals: u32,
    /// The roles an approver must hold.
    pub approver_roles: Vec<Role>,
    /// Whether the author's own approval counts (never, by default).
    pub author_may_approve: bool,
    /// How long a request stays open, in hours.
    pub open_hours: u32,
    /// Whether a disable may bypass approval as break-glass (with a reason).
    pub break_glass: bool,
}

impl Default for ApprovalRule {
    fn default() -> Self {
        ApprovalRule {
            covers: Covers::Namespace,
            approvals: 1,
            approver_roles: vec![Role::Admin, Role::Editor],
            author_may_approve: false,
            open_hours: 72,
            break_glass: true,
        }
    }
}

impl ApprovalRule {
    /// Whether a change to a flag that is `spec` (before or after it) needs approval.
    pub fn covers(&self, spec: &FlagSpec) -> bool {
        match &self.covers {
            Covers::Namespace => true,
            Covers::Tags(tags) => spec.tags.iter().any(|t| tags.contains(t)),
            Covers::Stages(stages) => stages.contains(&spec.lifecycle),
        }
    }

    pub fn open_ms(&self) -> i64 {
        i64::from(self.open_hours) * 3_600_000
    }
}

/// A namespace's policy. [`NamespacePolicy::default`] is what `{}` sets: no approval, the
/// default stage gates, dependencies enforced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespacePolicy {
    pub approval: Option<ApprovalRule>,
    /// The gates of each stage, in [`Lifecycle::ALL`] order.
    pub stages: Vec<(Lifecycle, Vec<Gate>)>,
    /// `depends_on` is enforced: an enabled flag's dependencies exist and are enabled, a flag
    /// enabled flags depend on is not disabled or deleted (unless the disable cascades), and
    /// dependencies form no cycle.
    pub dependencies: bool,
}

fn default_gates(stage: Lifecycle) -> Vec<Gate> {
    match stage {
        Lifecycle::Planned => vec![],
        Lifecycle::InFlight | Lifecycle::Tested | Lifecycle::Deprecated => vec![Gate::Owner],
        Lifecycle::Active => vec![Gate::Owner, Gate::Description, Gate::ExpiresAt],
        Lifecycle::Retired => vec![Gate::Disabled, Gate::NoEnabledDependents],
    }
}

impl Default for NamespacePolicy {
    fn default() -> Self {
        NamespacePolicy {
            approval: None,
            stages: Lifecycle::ALL.iter().map(|(_, l)| (*l, default_gates(*l))).collect(),
            dependencies: true,
        }
    }
}

fn invalid(field: &str, problem: impl Into<String>) -> ValidationError {
    ValidationError::new(field, problem)
}

fn object<'v>(v: &'v Value, field: &str) -> Result<&'v Map<String, Value>, ValidationError> {
    v.as_object().ok_or_else(|| invalid(field, format!("must be a JSON object, got {}", type_name(v))))
}

fn strings<'v>(v: &'v Value, field: &str) -> Result<Vec<&'v str>, ValidationError> {
    let items = v.as_array().ok_or_else(|| invalid(field, format!("must be an array, got {}", type_name(v))))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            item.as_str()
                .ok_or_else(|| invalid(&format!("{field}[{i}]"), format!("must be a string, got {}", type_name(item))))
        })
        .collect()
}

fn stage(s: &str, field: &str) -> Result<Lifecycle, ValidationError> {
    Lifecycle::parse(s).ok_or_else(|| {
        invalid(
            field,
            format!("unknown stage {s:?}; expected planned, in_flight, tested, active, deprecated or retired"),
        )
    })
}

fn bounded(v: &Value, field: &str, min: u64, max: u64) -> Result<u32, ValidationError> {
    match v.as_u64() {
        Some(n) if (min..=max).contains(&n) => Ok(n as u32),
        _ => Err(invalid(field, format!("must be a whole number from {min} to {max}, got {v}"))),
    }
}

impl NamespacePolicy {
    /// The longest a request may stay open: 90 days.
    pub const OPEN_HOURS_MAX: u64 = 90 * 24;
    /// The most approvals a rule may require.
    pub const APPROVALS_MAX: u64 = 10;

    /// The gates of `stage`.
    pub fn gates(&self, stage: Lifecycle) -> &[Gate] {
        self.stages.iter().find(|(l, _)| *l == stage).map(|(_, g)| g.as_slice()).unwrap_or(&[])
    }

    /// Reads the JSON form ([`Self::to_json`]). Fields left out keep their defaults; a stage
    /// named in `lifecycle` gets exactly the gates listed (`[]`: none). Unknown fields and wrong
    /// types are refused, naming the field.
    pub fn from_json(v: &Value) -> Result<Self, ValidationError> {
        let mut policy = NamespacePolicy::default();
        for (field, value) in object(v, "policy")? {
            match field.as_str() {
                "approval" if value.is_null() => policy.approval = None,
                "approval" => policy.approval = Some(ApprovalRule::from_json(value)?),
                "lifecycle" => {
                    for (name, gates) in object(value, "lifecycle")? {
                        let path = format!("lifecycle.{name}");
                        let stage = stage(name, &path)?;
                        let mut parsed = Vec::new();
                        for (i, g) in strings(gates, &path)?.into_iter().enumerate() {
                            let gate = Gate::parse(g).ok_or_else(|| {
                                invalid(
                                    &format!("{path}[{i}]"),
                                    format!(
                                        "unknown gate {g:?}; expected owner, description, expires_at, disabled or \
                                         no_enabled_dependents"
                                    ),
                                )
                            })?;
                            if !parsed.contains(&gate) {
                                parsed.push(gate);
                            }
                        }
                        if let Some(slot) = policy.stages.iter_mut().find(|(l, _)| *l == stage) {
                            slot.1 = parsed;
                        }
                    }
                }
                "dependencies" => {
                    policy.dependencies = value
                        .as_bool()
                        .ok_or_else(|| invalid("dependencies", format!("must be true or false, got {value}")))?
                }
                other => {
                    return Err(invalid(other, "unknown policy field; expected approval, lifecycle or dependencies"));
                }
            }
        }
        Ok(policy)
    }

    /// The canonical JSON form: every field, in a fixed order (what is stored and audited).
    pub fn to_json(&self) -> Value {
        let stages: Map<String, Value> = self
            .stages
            .iter()
            .map(|(l, gates)| (l.as_str().to_string(), gates.iter().map(|g| g.as_str()).collect::<Vec<_>>().into()))
            .collect();
        json!({
            "approval": self.approval.as_ref().map(ApprovalRule::to_json),
            "lifecycle": stages,
            "dependencies": self.dependencies,
        })
    }
}

impl ApprovalRule {
    fn from_json(v: &Value) -> Result<Self, ValidationError> {
        let mut rule = ApprovalRule::default();
        for (field, value) in object(v, "approval")? {
            let path = format!("approval.{field}");
            match field.as_str() {
                "covers" => {
                    rule.covers = match value {
                        Value::String(s) if s == "namespace" => Covers::Namespace,
                        Value::Object(o) if o.len() == 1 && o.contains_key("tags") => {
                            let tags = strings(&o["tags"], "approval.covers.tags")?;
                            if tags.is_empty() {
                                return Err(invalid("approval.covers.tags", "must name at least one tag"));
                            }
                            Covers::Tags(tags.into_iter().map(String::from).collect())
                        }
                        Value::Object(o) if o.len() == 1 && o.contains_key("stages") => {
                            let names = strings(&o["stages"], "approval.covers.stages")?;
                            if names.is_empty() {
                                return Err(invalid("approval.covers.stages", "must name at least one stage"));
                            }
                            let stages = names
                                .iter()
                                .enumerate()
                                .map(|(i, s)| stage(s, &format!("approval.covers.stages[{i}]")))
                                .collect::<Result<Vec<_>, _>>()?;
                            Covers::Stages(stages)
                        }
                        _ => {
                            return Err(invalid(
                                &path,
                                format!(
                                    r#"must be "namespace", {{"tags": [...]}} or {{"stages": [...]}}, got {value}"#
                                ),
                            ));
                        }
                    }
                }
                "approvals" => rule.approvals = bounded(value, &path, 1, NamespacePolicy::APPROVALS_MAX)?,
                "approver_roles" => {
                    let names = strings(value, &path)?;
                    let mut roles = Vec::new();
                    for (i, name) in names.iter().enumerate() {
                        match Role::parse(name) {
                            Some(Role::Reader) | None => {
                                return Err(invalid(
                                    &format!("{path}[{i}]"),
                                    format!("{name:?} cannot approve; expected editor or admin"),
                                ));
                            }
                            Some(role) if !roles.contains(&role) => roles.push(role),
                            Some(_) => {}
                        }
                    }
                    if roles.is_empty() {
                        return Err(invalid(&path, "must name at least one role"));
                    }
                    roles.sort();
                    rule.approver_roles = roles;
                }
                "author_may_approve" | "break_glass" => {
                    let b =
                        value.as_bool().ok_or_else(|| invalid(&path, format!("must be true or false, got {value}")))?;
                    if field == "break_glass" {
                        rule.break_glass = b;
                    } else {
                        rule.author_may_approve = b;
                    }
                }
                "open_hours" => rule.open_hours = bounded(value, &path, 1, NamespacePolicy::OPEN_HOURS_MAX)?,
                _ => {
                    return Err(invalid(
                        &path,
                        "unknown approval field; expected covers, approvals, approver_roles, author_may_approve, \
                         open_hours or break_glass",
                    ));
                }
            }
        }
        Ok(rule)
    }

    fn to_json(&self) -> Value {
        let covers = match &self.covers {
            Covers::Namespace => json!("namespace"),
            Covers::Tags(tags) => json!({ "tags": tags }),
            Covers::Stages(stages) => json!({ "stages": stages.iter().map(|s| s.as_str()).collect::<Vec<_>>() }),
        };
        json!({
            "covers": covers,
            "approvals": self.approvals,
            "approver_roles": self.approver_roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
            "author_may_approve": self.author_may_approve,
            "open_hours": self.open_hours,
            "break_glass": self.break_glass,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_form_round_trips_and_defaults_fill_what_is_left_out() {
        let p = NamespacePolicy::from_json(&json!({})).expect("empty policy");
        assert_eq!(p, NamespacePolicy::default());
        assert_eq!(p.gates(Lifecycle::Retired), [Gate::Disabled, Gate::NoEnabledDependents]);
        let v = json!({
            "approval": {"covers": {"tags": ["critical"]}, "approvals": 2, "approver_roles": ["editor"]},
            "lifecycle": {"active": ["owner"], "planned": []},
            "dependencies": false
        });
        let p = NamespacePolicy::from_json(&v).expect("valid");
        let rule = p.approval.clone().expect("approval");
        assert_eq!(
            (rule.approvals, rule.approver_roles.as_slice(), rule.author_may_approve),
            (2, &[Role::Editor][..], false)
        );
        assert_eq!(p.gates(Lifecycle::Active), [Gate::Owner]);
        assert!(!p.dependencies);
        assert_eq!(NamespacePolicy::from_json(&p.to_json()).expect("canonical form reads back"), p);
    }

    #[test]
    fn bad_policies_name_the_field() {
        for (v, field) in [
            (json!([]), "policy"),
            (json!({"approvals": 1}), "approvals"),
            (json!({"approval": {"approvals": 0}}), "approval.approvals"),
            (json!({"approval": {"approver_roles": ["reader"]}}), "approval.approver_roles[0]"),
            (json!({"approval": {"covers": "everything"}}), "approval.covers"),
            (json!({"approval": {"covers": {"stages": ["done"]}}}), "approval.covers.stages[0]"),
            (json!({"lifecycle": {"live": []}}), "lifecycle.live"),
            (json!({"lifecycle": {"active": ["signed"]}}), "lifecycle.active[0]"),
            (json!({"approval": {"open_hours": 100000}}), "approval.open_hours"),
        ] {
            let e = NamespacePolicy::from_json(&v).expect_err("refused");
            assert_eq!(e.field, field, "{v}: {e}");
        }
    }

    #[test]
    fn gates_judge_a_definition() {
        let spec = |extra: Value| {
            let mut v = json!({"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"});
            v.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
            FlagSpec::from_value("f", &v, "").expect("valid")
        };
        let now = 1_800_000_000_000;
        assert!(Gate::Owner.unmet(&spec(json!({})), now).is_some());
        assert!(Gate::Owner.unmet(&spec(json!({"owner": "team"})), now).is_none());
        assert!(Gate::ExpiresAt.unmet(&spec(json!({"expires_at": "2020-01-01T00:00:00Z"})), now).is_some());
        assert!(Gate::ExpiresAt.unmet(&spec(json!({"expires_at": "2099-01-01T00:00:00Z"})), now).is_none());
        assert!(Gate::Disabled.unmet(&spec(json!({})), now).is_some());
        let rule = ApprovalRule { covers: Covers::Tags(vec!["critical".into()]), ..ApprovalRule::default() };
        assert!(rule.covers(&spec(json!({"tags": ["critical"]}))) && !rule.covers(&spec(json!({}))));
    }
}
