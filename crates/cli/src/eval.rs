//! `vexilctl eval`: evaluate one flag of a local flagd file, exactly as the cluster and the
//! client library would (same crate, same code), and print the resolution.

use std::path::PathBuf;

use clap::Args;
use clap::builder::TypedValueParser;
use serde_json::{Map, Value};
use vexil_model::NamespaceDocument;
use vexil_model::eval::{CompiledNamespace, EvalContext, ValueType};
use vexil_proto::v1::FlagEvaluation;

use crate::{Failure, Output};

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The flagd file (a flag document: `flags`, `$evaluators`, `metadata`).
    #[arg(long, short = 'f', value_name = "FLAGD_JSON")]
    pub file: PathBuf,
    /// The key of the flag to evaluate.
    #[arg(long, value_name = "KEY")]
    pub flag: String,
    /// The evaluation context as a JSON object, e.g. '{"targetingKey":"user-1","email":"a@b.c"}'.
    #[arg(long, value_name = "JSON")]
    pub context: Option<String>,
    /// Read the value as this type (a different type is reported as TYPE_MISMATCH).
    #[arg(long = "type", value_parser = value_type_parser(), value_name = "TYPE")]
    pub value_type: Option<ValueType>,
}

/// `--type`: the model's value types by their short names (`bool`, `string`, `int`, `float`,
/// `object`).
pub fn value_type_parser() -> impl clap::builder::TypedValueParser<Value = ValueType> {
    clap::builder::PossibleValuesParser::new(ValueType::ALL.map(ValueType::short_name))
        .map(|name| ValueType::from_short_name(&name).expect("clap offers only the names ValueType::ALL gives"))
}

/// Evaluates and renders; `Err` only for unusable input or usage.
pub fn run(args: &EvalArgs, output: Output, now_unix_secs: i64) -> Result<String, Failure> {
    let context = parse_context(args.context.as_deref())?;
    let ns = load(&args.file)?;
    let resolution = evaluate(&ns, &args.flag, &context, args.value_type, now_unix_secs);
    Ok(match output {
        Output::Json => resolution.to_string(),
        Output::Table => table(&resolution),
    })
}

fn parse_context(text: Option<&str>) -> Result<Map<String, Value>, Failure> {
    let Some(text) = text else {
        return Ok(Map::new());
    };
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(Failure::Usage(format!("--context must be a JSON object, got {other}"))),
        Err(e) => Err(Failure::Usage(format!("--context is not valid JSON: {e}"))),
    }
}

/// Reads and validates the file. Targeting that does not compile is kept: evaluating that flag
/// reports PARSE_ERROR, as flagd would.
fn load(path: &std::path::Path) -> Result<CompiledNamespace, Failure> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Failure::Input(format!("cannot read {}: {e}", path.display())))?;
    let doc = NamespaceDocument::from_json(&text)
        .map_err(|e| Failure::Input(format!("{} is not a valid flag document: {e}", path.display())))?;
    Ok(CompiledNamespace::new(&doc))
}

/// The resolution as `{"key","value","variant","reason","errorCode","errorMessage","metadata"}`,
/// with the requested type applied by the model's rule (a wrong one is TYPE_MISMATCH).
pub fn evaluate(
    ns: &CompiledNamespace,
    key: &str,
    context: &Map<String, Value>,
    ty: Option<ValueType>,
    now: i64,
) -> Value {
    let ctx = EvalContext::from_json(context);
    FlagEvaluation::from_resolution(key, ns.evaluate(key, &ctx, now), ty).to_json()
}

/// The human rendering of a resolution (also used by `flag eval`, which evaluates on the cluster).
pub fn table(r: &Value) -> String {
    let show = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let error = match (&r["errorCode"], &r["errorMessage"]) {
        (Value::Null, _) => "-".to_string(),
        (code, Value::Null) => show(code),
        (code, msg) => format!("{}: {}", show(code), show(msg)),
    };
    let metadata = match &r["metadata"] {
        Value::Object(m) if m.is_empty() => "-".to_string(),
        other => other.to_string(),
    };
    let rows = [
        ("FLAG", show(&r["key"])),
        ("VALUE", show(&r["value"])),
        ("VARIANT", show(&r["variant"])),
        ("REASON", show(&r["reason"])),
        ("ERROR", error),
        ("METADATA", metadata),
    ];
    rows.iter().map(|(k, v)| format!("{k:<9} {v}")).collect::<Vec<_>>().join("\n")
}
