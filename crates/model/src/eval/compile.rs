//! Compiles a targeting rule (JsonLogic with flagd's operators) into a [`Node`] tree, once.
//!
//! Everything that can be decided without the context is decided here: `$ref`s are replaced by
//! their `$evaluators` (one level: an evaluator that itself contains a `$ref` is refused, as
//! flagd does not support nesting), operator names become enum variants, argument counts are
//! checked against flagd's targeting schema, `var` paths are split, literal arrays become
//! constants, `sem_ver` operators and literal versions are parsed, and `fractional`
//! distributions with literal weights are checked and summed.
//!
//! A rule that fails here is refused at write time (`INVALID_ARGUMENT` naming `targeting`); a
//! stored flag whose rule no longer compiles (its evaluator was removed) evaluates to
//! `ERROR`/`PARSE_ERROR`, as in flagd.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use super::fractional::{Distribution, checked_weight};
use super::logic::{Buckets, CmpOp, FractionalNode, Node, SemVerNode, SemVerOperand, TestOp, VarPath, VarTest};
use super::semver::{self, SemVerOp};
use crate::limits;

/// Why a rule does not compile, and where in the rule (`if[0].in[1]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    /// Location inside the rule, empty for the rule itself.
    pub at: String,
    pub problem: String,
    /// What the problem does to the rule.
    pub kind: ProblemKind,
}

/// What a problem in a rule does, by flagd's rules: flagd loads every document its JSON schema
/// accepts and decides at evaluation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// The rule cannot be evaluated (an unknown operator, a `$ref` to a missing evaluator, a
    /// standard operator with the wrong arguments): every evaluation is PARSE_ERROR.
    Invalid,
    /// One of flagd's operators (`fractional`, `sem_ver`, `starts_with`, `ends_with`) given
    /// arguments it cannot use: that operator evaluates to null, as in flagd (the rule then
    /// falls back to the default variant), and the rest of the rule works.
    NullOperator,
    /// Beyond one of Vexil's bounds (nesting depth): refused on write whatever the mode.
    Limit,
    /// An argument flagd adjusts and goes on (a negative `fractional` weight counts as 0).
    Adjusted,
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.at.is_empty() { f.write_str(&self.problem) } else { write!(f, "at {}: {}", self.at, self.problem) }
    }
}

impl std::error::Error for CompileError {}

/// Every operator the compiler accepts (standard JsonLogic plus flagd's), for error messages.
pub const OPERATORS: &[&str] = &[
    "var",
    "missing",
    "missing_some",
    "if",
    "?:",
    "==",
    "===",
    "!=",
    "!==",
    "!",
    "!!",
    "or",
    "and",
    "<",
    "<=",
    ">",
    ">=",
    "max",
    "min",
    "+",
    "-",
    "*",
    "/",
    "%",
    "in",
    "cat",
    "substr",
    "merge",
    "map",
    "filter",
    "reduce",
    "all",
    "none",
    "some",
    "starts_with",
    "ends_with",
    "sem_ver",
    "fractional",
    "$ref",
];

struct Compiler<'e> {
    evaluators: &'e BTreeMap<String, Value>,
    /// Breadcrumbs for error messages.
    path: Vec<String>,
    /// Inside an evaluator reached through `$ref` (a second `$ref` there is refused).
    in_ref: Option<String>,
    /// Problems that do not stop the rule: operators that evaluate to null, clamped weights.
    notes: Vec<CompileError>,
}

/// Compiles `rule` with the namespace's `$evaluators`.
/// A compiled rule, and the problems that make some of its operators evaluate to null.
#[derive(Debug)]
pub(crate) struct Compiled {
    pub node: Node,
    pub notes: Vec<CompileError>,
}

pub(crate) fn compile(rule: &Value, evaluators: &BTreeMap<String, Value>) -> Result<Compiled, CompileError> {
    let mut c = Compiler { evaluators, path: Vec::new(), in_ref: None, notes: Vec::new() };
    let node = c.node(rule, 0)?;
    Ok(Compiled { node, notes: c.notes })
}

/// Deepest tree after `$ref` expansion: a rule and an evaluator may each use the full depth.
const DEPTH_MAX: usize = 2 * limits::JSON_LOGIC_DEPTH_MAX + 2;

impl Compiler<'_> {
    fn err(&self, problem: impl Into<String>) -> CompileError {
        let mut at = String::new();
        for p in &self.path {
            if !at.is_empty() && !p.starts_with('[') {
                at.push('.');
            }
            at.push_str(p);
        }
        CompileError { at, problem: problem.into(), kind: ProblemKind::Invalid }
    }

    /// A problem that makes one of flagd's operators evaluate to null.
    fn null_err(&self, problem: impl Into<String>) -> CompileError {
        CompileError { kind: ProblemKind::NullOperator, ..self.err(problem) }
    }

    /// One of flagd's operators: compiled by `f`, or, when its arguments are unusable, null
    /// (noted, as flagd evaluates it).
    fn flagd_operator(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<Node, CompileError>,
    ) -> Result<Node, CompileError> {
        match f(self) {
            Err(e) if e.kind == ProblemKind::NullOperator => {
                self.notes.push(e);
                Ok(Node::Const(Value::Null))
            }
            other => other,
        }
    }

    fn node(&mut self, v: &Value, depth: usize) -> Result<Node, CompileError> {
        if depth > DEPTH_MAX {
            return Err(CompileError {
                kind: ProblemKind::Limit,
                ..self.err(format!("nests deeper than {DEPTH_MAX} levels"))
            });
        }
        match v {
            Value::Object(obj) => self.operation(obj, depth),
            Value::Array(items) => {
                let nodes = self.each(items, depth)?;
                if nodes.iter().all(|n| matches!(n, Node::Const(_))) {
                    Ok(Node::Const(v.clone()))
                } else {
                    Ok(Node::Array(nodes.into_boxed_slice()))
                }
            }
            other => Ok(Node::Const(other.clone())),
        }
    }

    fn each(&mut self, items: &[Value], depth: usize) -> Result<Vec<Node>, CompileError> {
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            self.path.push(format!("[{i}]"));
            out.push(self.node(item, depth + 1)?);
            self.path.pop();
        }
        Ok(out)
    }

    fn operation(&mut self, obj: &Map<String, Value>, depth: usize) -> Result<Node, CompileError> {
        let mut it = obj.iter();
        let (op, raw) = match (it.next(), it.next()) {
            (Some(entry), None) => entry,
            (None, _) => return Err(self.err("an empty object is not a JsonLogic operation")),
            (Some(_), Some(_)) => {
                let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
                return Err(self.err(format!(
                    "a JsonLogic operation is an object with exactly one key (the operator); found {}",
                    keys.join(", ")
                )));
            }
        };
        self.path.push(op.clone());
        let node = self.operator(op, raw, depth)?;
        self.path.pop();
        Ok(specialise(node))
    }

    /// Arguments: an array is the argument list, anything else is a single argument.
    fn args(&mut self, raw: &Value, depth: usize) -> Result<Vec<Node>, CompileError> {
        match raw {
            Value::Array(items) => self.each(items, depth),
            single => Ok(vec![self.node(single, depth + 1)?]),
        }
    }

    fn arity(&self, op: &str, n: usize, min: usize, max: usize) -> Result<(), CompileError> {
        if n < min || n > max {
            let want = match (min, max) {
                (a, b) if a == b => format!("exactly {a}"),
                (a, usize::MAX) => format!("at least {a}"),
                (a, b) => format!("{a} to {b}"),
            };
            return Err(self.err(format!("`{op}` takes {want} argument(s), got {n}")));
        }
        Ok(())
    }

    fn fixed<const N: usize>(&self, op: &str, args: Vec<Node>) -> Result<Box<[Node; N]>, CompileError> {
        self.arity(op, args.len(), N, N)?;
        let boxed: Box<[Node]> = args.into_boxed_slice();
        boxed.try_into().map_err(|_| self.err(format!("`{op}` takes exactly {N} arguments")))
    }

    fn fixed_args<const N: usize>(
        &mut self,
        op: &str,
        raw: &Value,
        depth: usize,
    ) -> Result<Box<[Node; N]>, CompileError> {
        let args = self.args(raw, depth)?;
        self.fixed(op, args)
    }

    fn operator(&mut self, op: &str, raw: &Value, depth: usize) -> Result<Node, CompileError> {
        const ANY: usize = usize::MAX;
        Ok(match op {
            "$ref" => return self.reference(raw, depth),
            "var" => return self.var(raw, depth),
            "missing" => Node::Missing(self.args(raw, depth)?.into()),
            "missing_some" => Node::MissingSome(self.fixed_args(op, raw, depth)?),
            "if" | "?:" => {
                let a = self.args(raw, depth)?;
                Node::If(a.into())
            }
            "==" => Node::Eq(self.fixed_args(op, raw, depth)?),
            "===" => Node::StrictEq(self.fixed_args(op, raw, depth)?),
            "!=" => Node::Ne(self.fixed_args(op, raw, depth)?),
            "!==" => Node::StrictNe(self.fixed_args(op, raw, depth)?),
            "!" | "!!" => {
                let a = self.args(raw, depth)?;
                self.arity(op, a.len(), 1, 1)?;
                let inner = Box::new(a.into_iter().next().ok_or_else(|| self.err("missing argument"))?);
                if op == "!" { Node::Not(inner) } else { Node::Truthy(inner) }
            }
            "or" | "and" => {
                let a = self.args(raw, depth)?;
                self.arity(op, a.len(), 1, ANY)?;
                if op == "or" { Node::Or(a.into()) } else { Node::And(a.into()) }
            }
            "<" | "<=" | ">" | ">=" => {
                let a = self.args(raw, depth)?;
                let (cmp, max) = match op {
                    "<" => (CmpOp::Lt, 3),
                    "<=" => (CmpOp::Le, 3),
                    ">" => (CmpOp::Gt, 2),
                    _ => (CmpOp::Ge, 2),
                };
                self.arity(op, a.len(), 2, max)?;
                Node::Cmp(cmp, a.into())
            }
            "max" => Node::Max(self.args(raw, depth)?.into()),
            "min" => Node::Min(self.args(raw, depth)?.into()),
            "+" => Node::Add(self.args(raw, depth)?.into()),
            "*" => {
                let a = self.args(raw, depth)?;
                self.arity(op, a.len(), 1, ANY)?;
                Node::Mul(a.into())
            }
            "-" => {
                let a = self.args(raw, depth)?;
                self.arity(op, a.len(), 1, 2)?;
                Node::Sub(a.into())
            }
            "/" => Node::Div(self.fixed_args(op, raw, depth)?),
            "%" => Node::Mod(self.fixed_args(op, raw, depth)?),
            "in" => Node::In(self.fixed_args(op, raw, depth)?),
            "cat" => Node::Cat(self.args(raw, depth)?.into()),
            "substr" => {
                let a = self.args(raw, depth)?;
                self.arity(op, a.len(), 2, 3)?;
                Node::Substr(a.into())
            }
            "merge" => Node::Merge(self.args(raw, depth)?.into()),
            "map" => Node::Map(self.fixed_args(op, raw, depth)?),
            "filter" => Node::Filter(self.fixed_args(op, raw, depth)?),
            "all" => Node::All(self.fixed_args(op, raw, depth)?),
            "none" => Node::None(self.fixed_args(op, raw, depth)?),
            "some" => Node::Some(self.fixed_args(op, raw, depth)?),
            "reduce" => {
                let mut a = self.args(raw, depth)?;
                self.arity(op, a.len(), 2, 3)?;
                if a.len() == 2 {
                    a.push(Node::Const(Value::Null));
                }
                Node::Reduce(self.fixed(op, a)?)
            }
            "starts_with" | "ends_with" => {
                return self.flagd_operator(|c| {
                    let args = c.args(raw, depth)?;
                    if args.len() != 2 {
                        return Err(c.null_err(format!("`{op}` takes exactly 2 arguments, got {}", args.len())));
                    }
                    let args = c.fixed(op, args)?;
                    Ok(if op == "starts_with" { Node::StartsWith(args) } else { Node::EndsWith(args) })
                });
            }
            "sem_ver" => return self.flagd_operator(|c| c.sem_ver(raw, depth)),
            "fractional" => return self.flagd_operator(|c| c.fractional(raw, depth)),
            unknown => {
                return Err(
                    self.err(format!("unknown operator {unknown:?}; supported operators are {}", OPERATORS.join(" ")))
                );
            }
        })
    }

    fn reference(&mut self, raw: &Value, depth: usize) -> Result<Node, CompileError> {
        let Value::String(name) = raw else {
            return Err(self.err("`$ref` must name an evaluator (a string)"));
        };
        if let Some(outer) = &self.in_ref {
            return Err(
                self.err(format!("evaluator {outer:?} refers to evaluator {name:?}; nested `$ref`s are not supported"))
            );
        }
        let Some(rule) = self.evaluators.get(name) else {
            return Err(self.err(format!("`$ref` names evaluator {name:?}, which is not in `$evaluators`")));
        };
        self.in_ref = Some(name.clone());
        let node = self.node(rule, depth + 1);
        self.in_ref = None;
        node
    }

    fn var(&mut self, raw: &Value, depth: usize) -> Result<Node, CompileError> {
        let (path, default) = match raw {
            Value::Array(items) => {
                self.arity("var", items.len(), 0, 2)?;
                (items.first().unwrap_or(&Value::Null), items.get(1))
            }
            single => (single, None),
        };
        let path = match path {
            Value::Null => VarPath::Whole,
            Value::String(s) => static_path(s),
            Value::Number(n) => static_path(&super::value::js_number_string(super::value::number_to_f64(n))),
            Value::Object(_) => {
                self.path.push("[0]".into());
                let n = self.node(path, depth + 1)?;
                self.path.pop();
                VarPath::Dynamic(Box::new(n))
            }
            Value::Bool(_) | Value::Array(_) => {
                return Err(self.err("a `var` path must be a string, a number or an operation"));
            }
        };
        let default = match default {
            Some(d) => {
                self.path.push("[1]".into());
                let n = self.node(d, depth + 1)?;
                self.path.pop();
                Some(Box::new(n))
            }
            None => None,
        };
        Ok(Node::Var { path, default })
    }

    fn sem_ver(&mut self, raw: &Value, depth: usize) -> Result<Node, CompileError> {
        let Value::Array(items) = raw else {
            return Err(self.null_err("`sem_ver` takes [value, operator, version]"));
        };
        if items.len() != 3 {
            return Err(self.null_err(format!("`sem_ver` takes exactly 3 arguments, got {}", items.len())));
        }
        let left = self.with_index(0, |c| c.node(&items[0], depth + 1))?;
        let op = match &items[1] {
            Value::String(s) => SemVerOperand::Fixed(SemVerOp::parse(s).ok_or_else(|| {
                self.null_err(format!("unknown `sem_ver` operator {s:?}; expected one of = != < <= > >= ^ ~"))
            })?),
            Value::Object(_) => SemVerOperand::Dynamic(self.with_index(1, |c| c.node(&items[1], depth + 1))?),
            other => {
                return Err(self.null_err(format!("the `sem_ver` operator must be a string, got {other}")));
            }
        };
        if let Value::String(v) = &items[2]
            && semver::parse(v).is_none()
        {
            return Err(self.null_err(format!("{v:?} is not a semantic version (such as 1.2.3)")));
        }
        let right = self.with_index(2, |c| c.node(&items[2], depth + 1))?;
        Ok(Node::SemVer(Box::new(SemVerNode { left, op, right })))
    }

    fn with_index<T>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut Self) -> Result<T, CompileError>,
    ) -> Result<T, CompileError> {
        self.path.push(format!("[{i}]"));
        let r = f(self);
        self.path.pop();
        r
    }

    fn fractional(&mut self, raw: &Value, depth: usize) -> Result<Node, CompileError> {
        let Value::Array(items) = raw else {
            return Err(self.null_err(
                "`fractional` takes an optional bucketing expression followed by [variant, weight] entries",
            ));
        };
        // A first argument that is not an array is the bucketing expression.
        let (bucket_by, entries) = match items.split_first() {
            Some((first, rest)) if !first.is_array() => (Some(self.with_index(0, |c| c.node(first, depth + 1))?), rest),
            _ => (None, &items[..]),
        };
        if entries.is_empty() {
            return Err(self.null_err("`fractional` needs at least one [variant, weight] entry"));
        }
        let offset = usize::from(bucket_by.is_some());
        let mut dynamic: Vec<(Node, Option<Node>)> = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let pair = self.with_index(i + offset, |c| {
                let Value::Array(parts) = entry else {
                    return Err(c.null_err(format!("each `fractional` entry must be [variant, weight], got {entry}")));
                };
                if parts.is_empty() || parts.len() > 2 {
                    return Err(c.null_err("each `fractional` entry must be [variant] or [variant, weight]"));
                }
                let variant = c.with_index(0, |c| c.node(&parts[0], depth + 2))?;
                if let Node::Const(v) = &variant
                    && !matches!(v, Value::String(_) | Value::Bool(_) | Value::Number(_) | Value::Null)
                {
                    return Err(
                        c.null_err("a `fractional` variant must be a string, boolean, number, null or an operation")
                    );
                }
                let weight = match parts.get(1) {
                    None => None,
                    Some(w) => {
                        let node = c.with_index(1, |c| c.node(w, depth + 2))?;
                        if let Node::Const(v) = &node {
                            if v.as_f64().and_then(checked_weight).is_none() {
                                return Err(c.null_err(format!(
                                    "a `fractional` weight must be a whole number up to {}, got {v}",
                                    i32::MAX
                                )));
                            }
                            if v.as_f64().is_some_and(|w| w < 0.0) {
                                c.path.push("[1]".into());
                                let note = c.err(format!("the negative weight {v} counts as 0"));
                                c.path.pop();
                                c.notes.push(CompileError { kind: ProblemKind::Adjusted, ..note });
                            }
                        }
                        Some(node)
                    }
                };
                Ok((variant, weight))
            })?;
            dynamic.push(pair);
        }
        let all_const =
            dynamic.iter().all(|(v, w)| matches!(v, Node::Const(_)) && matches!(w, None | Some(Node::Const(_))));
        let buckets = if all_const {
            let mut variants = Vec::with_capacity(dynamic.len());
            let mut weights = Vec::with_capacity(dynamic.len());
            for (v, w) in dynamic {
                if let Node::Const(v) = v {
                    variants.push(v);
                    weights.push(match w {
                        Some(Node::Const(w)) => w.as_f64().and_then(checked_weight).unwrap_or(0),
                        _ => 1,
                    });
                }
            }
            let total: u64 = weights.iter().sum();
            if total == 0 {
                return Err(self.null_err("the `fractional` weights add up to 0"));
            }
            if total > super::fractional::TOTAL_WEIGHT_MAX {
                return Err(
                    self.null_err(format!("the `fractional` weights add up to {total}; the limit is {}", i32::MAX))
                );
            }
            Buckets::Fixed(Distribution { variants: variants.into(), weights: weights.into() })
        } else {
            Buckets::Dynamic(dynamic.into())
        };
        Ok(Node::Fractional(Box::new(FractionalNode { bucket_by, buckets })))
    }
}

/// Rewrites a binary test between a plain `var` (no default) and a literal into
/// [`Node::VarTest`], which evaluates the same way without intermediate values.
fn specialise(node: Node) -> Node {
    /// (var path, literal, whether the var comes first)
    type Split = (Box<[Box<str>]>, Value, bool);
    fn split(args: &[Node; 2]) -> Option<Split> {
        match args {
            [Node::Var { path: VarPath::Static(p), default: None }, Node::Const(c)] => {
                Some((p.clone(), c.clone(), true))
            }
            [Node::Const(c), Node::Var { path: VarPath::Static(p), default: None }] => {
                Some((p.clone(), c.clone(), false))
            }
            _ => None,
        }
    }
    let (args, op): (&[Node; 2], TestOp) = match &node {
        Node::Eq(a) => (a, TestOp::Eq),
        Node::Ne(a) => (a, TestOp::Ne),
        Node::StrictEq(a) => (a, TestOp::StrictEq),
        Node::StrictNe(a) => (a, TestOp::StrictNe),
        Node::In(a) => (a, TestOp::In),
        Node::StartsWith(a) => (a, TestOp::StartsWith),
        Node::EndsWith(a) => (a, TestOp::EndsWith),
        Node::Cmp(cmp, a) if a.len() == 2 => match &**a {
            [x, y] => {
                return match split(&[x.clone(), y.clone()]) {
                    Some((path, constant, var_first)) => {
                        Node::VarTest(Box::new(VarTest { path, op: TestOp::Cmp(*cmp), constant, var_first }))
                    }
                    None => node,
                };
            }
            _ => return node,
        },
        _ => return node,
    };
    match split(args) {
        Some((path, constant, var_first)) => Node::VarTest(Box::new(VarTest { path, op, constant, var_first })),
        None => node,
    }
}

fn static_path(s: &str) -> VarPath {
    if s.is_empty() {
        return VarPath::Whole;
    }
    match s {
        "$flagd.flagKey" => return VarPath::FlagKey,
        "$flagd.timestamp" => return VarPath::Timestamp,
        "$flagd" => return VarPath::Flagd(None),
        _ => {}
    }
    if let Some(rest) = s.strip_prefix("$flagd.") {
        return VarPath::Flagd(Some(rest.split('.').map(Box::from).collect()));
    }
    VarPath::Static(s.split('.').map(Box::from).collect())
}

/// Compiles an evaluator on its own (as if reached through `$ref`, so a `$ref` inside it is
/// refused): catches a broken evaluator when the document is written, not when a flag uses it.
pub(crate) fn compile_evaluator(
    name: &str,
    rule: &Value,
    evaluators: &BTreeMap<String, Value>,
) -> Result<Compiled, CompileError> {
    let mut c = Compiler { evaluators, path: Vec::new(), in_ref: Some(name.to_string()), notes: Vec::new() };
    let node = c.node(rule, 0)?;
    Ok(Compiled { node, notes: c.notes })
}
