//! The compiled JsonLogic tree and its evaluator.
//!
//! [`compile`](super::compile) turns a targeting rule into a [`Node`] tree once, when the flag is
//! stored or loaded: operators are resolved to enum variants, `var` paths are split, literal
//! arrays are kept as borrowed constants, and constant `fractional` distributions are summed.
//! Evaluation then walks the tree with no parsing, no lookups by operator name, and no
//! allocation unless the rule itself builds strings or arrays.
//!
//! Evaluation never fails: like json-logic-js, every operator answers something for every
//! input (bad input gives `null`, `false` or `NaN`). Rules that cannot be evaluated at all are
//! refused by the compiler instead.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::context::EvalContext;
use super::fractional::{Distribution, FractionalAlgorithm};
use super::semver::{self, SemVerOp};
use super::value::{
    Val, flagd_object, js_compare, js_number_string, loose_eq, parse_float, strict_eq, to_js_string, to_number, truthy,
};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    /// A literal (a primitive, or an array/object with no operations inside).
    Const(Value),
    /// An array literal with operations inside: each element is evaluated.
    Array(Box<[Node]>),
    Var {
        path: VarPath,
        default: Option<Box<Node>>,
    },
    Missing(Box<[Node]>),
    MissingSome(Box<[Node; 2]>),
    If(Box<[Node]>),
    Eq(Box<[Node; 2]>),
    StrictEq(Box<[Node; 2]>),
    Ne(Box<[Node; 2]>),
    StrictNe(Box<[Node; 2]>),
    Not(Box<Node>),
    Truthy(Box<Node>),
    Or(Box<[Node]>),
    And(Box<[Node]>),
    /// `<`, `<=`, `>`, `>=`; `<` and `<=` also take three arguments ("between").
    Cmp(CmpOp, Box<[Node]>),
    Max(Box<[Node]>),
    Min(Box<[Node]>),
    Add(Box<[Node]>),
    Sub(Box<[Node]>),
    Mul(Box<[Node]>),
    Div(Box<[Node; 2]>),
    Mod(Box<[Node; 2]>),
    In(Box<[Node; 2]>),
    Cat(Box<[Node]>),
    Substr(Box<[Node]>),
    Merge(Box<[Node]>),
    Map(Box<[Node; 2]>),
    Filter(Box<[Node; 2]>),
    All(Box<[Node; 2]>),
    None(Box<[Node; 2]>),
    Some(Box<[Node; 2]>),
    Reduce(Box<[Node; 3]>),
    StartsWith(Box<[Node; 2]>),
    EndsWith(Box<[Node; 2]>),
    SemVer(Box<SemVerNode>),
    Fractional(Box<FractionalNode>),
    /// A binary test between a `var` and a literal (`{"==": [{"var": "country"}, "NL"]}`,
    /// `{"in": [{"var": "email"}, [...]]}`): the most common shape of targeting, evaluated
    /// without materialising intermediate values. Same semantics as the general nodes.
    VarTest(Box<VarTest>),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VarTest {
    pub(crate) path: Box<[Box<str>]>,
    pub(crate) op: TestOp,
    pub(crate) constant: Value,
    /// Whether the `var` is the first argument.
    pub(crate) var_first: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TestOp {
    Eq,
    Ne,
    StrictEq,
    StrictNe,
    Cmp(CmpOp),
    In,
    StartsWith,
    EndsWith,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Lt,
    Le,
    Gt,
    Ge,
}

/// A `var` path, split at compile time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum VarPath {
    /// `""`, `null` or `[]`: the whole data object.
    Whole,
    /// `$flagd.flagKey`.
    FlagKey,
    /// `$flagd.timestamp`.
    Timestamp,
    /// `$flagd` or `$flagd.<anything else>` (the injected object replaces the caller's).
    Flagd(Option<Box<[Box<str>]>>),
    Static(Box<[Box<str>]>),
    /// A path computed by an expression, split at evaluation.
    Dynamic(Box<Node>),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SemVerNode {
    pub(crate) left: Node,
    pub(crate) op: SemVerOperand,
    pub(crate) right: Node,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SemVerOperand {
    Fixed(SemVerOp),
    Dynamic(Node),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FractionalNode {
    /// The bucketing expression, when the rule gives one (otherwise `flagKey + targetingKey`).
    pub(crate) bucket_by: Option<Node>,
    pub(crate) buckets: Buckets,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Buckets {
    /// Every variant and weight is a literal: summed once at compile time.
    Fixed(Distribution),
    /// Some variant or weight is an expression: `(variant, weight)` pairs, weight `None` = 1.
    Dynamic(Box<[(Node, Option<Node>)]>),
}

/// What evaluation reads besides the rule: the context, the flag and the time.
pub(crate) struct Env<'a> {
    pub(crate) ctx: &'a EvalContext<'a>,
    pub(crate) flag_key: &'a str,
    pub(crate) now_unix_secs: i64,
    pub(crate) algorithm: FractionalAlgorithm,
}

/// The data `var` reads: the root context, or the element `map`/`filter`/... is visiting, or
/// `reduce`'s `{current, accumulator}`.
#[derive(Clone, Copy)]
enum Scope<'s, 'a> {
    Root,
    Item(&'s Val<'a>),
    Reduce { current: &'s Val<'a>, accumulator: &'s Val<'a> },
}

/// Evaluates a compiled rule against the root context.
pub(crate) fn eval<'a>(node: &'a Node, env: &Env<'a>) -> Val<'a> {
    ev(node, env, Scope::Root)
}

fn ev<'a>(node: &'a Node, env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    match node {
        Node::Var { path: VarPath::Static(segs), default } if matches!(scope, Scope::Root) => {
            // The hot path: a dotted path into the caller's context.
            match lookup_static_root(segs, env) {
                Some(v) => v,
                None => default.as_deref().map_or(Val::Null, |d| ev(d, env, scope)),
            }
        }
        Node::Const(v) => Val::from_json(v),
        Node::Var { path, default } => match lookup(path, env, scope) {
            Some(v) => v,
            None => default.as_deref().map_or(Val::Null, |d| ev(d, env, scope)),
        },
        Node::If(args) => {
            let mut i = 0;
            while i + 1 < args.len() {
                if truthy(&ev(&args[i], env, scope)) {
                    return ev(&args[i + 1], env, scope);
                }
                i += 2;
            }
            if i < args.len() { ev(&args[i], env, scope) } else { Val::Null }
        }
        Node::Eq(a) => Val::Bool(loose_eq(&ev(&a[0], env, scope), &ev(&a[1], env, scope))),
        Node::StrictEq(a) => Val::Bool(strict_eq(&ev(&a[0], env, scope), &ev(&a[1], env, scope))),
        Node::Ne(a) => Val::Bool(!loose_eq(&ev(&a[0], env, scope), &ev(&a[1], env, scope))),
        Node::StrictNe(a) => Val::Bool(!strict_eq(&ev(&a[0], env, scope), &ev(&a[1], env, scope))),
        Node::Not(a) => Val::Bool(!truthy(&ev(a, env, scope))),
        Node::Truthy(a) => Val::Bool(truthy(&ev(a, env, scope))),
        Node::Or(args) => {
            let mut last = Val::Null;
            for a in args.iter() {
                last = ev(a, env, scope);
                if truthy(&last) {
                    return last;
                }
            }
            last
        }
        Node::And(args) => {
            let mut last = Val::Null;
            for a in args.iter() {
                last = ev(a, env, scope);
                if !truthy(&last) {
                    return last;
                }
            }
            last
        }
        Node::Cmp(op, args) => {
            let a = ev(&args[0], env, scope);
            let b = ev(&args[1], env, scope);
            let holds = |x: &Val<'_>, y: &Val<'_>| compare_holds(*op, x, y);
            if args.len() == 3 {
                if !holds(&a, &b) {
                    return Val::Bool(false);
                }
                let c = ev(&args[2], env, scope);
                Val::Bool(holds(&b, &c))
            } else {
                Val::Bool(holds(&a, &b))
            }
        }
        Node::In(a) => {
            let needle = ev(&a[0], env, scope);
            let hay = ev(&a[1], env, scope);
            Val::Bool(contains(&hay, &needle))
        }
        Node::StartsWith(a) => string_test(&ev(&a[0], env, scope), &ev(&a[1], env, scope), |s, p| s.starts_with(p)),
        Node::EndsWith(a) => string_test(&ev(&a[0], env, scope), &ev(&a[1], env, scope), |s, p| s.ends_with(p)),
        Node::SemVer(sv) => sem_ver(sv, env, scope),
        Node::Fractional(f) => fractional(f, env, scope),
        Node::VarTest(t) => var_test(t, env, scope),
        _ => ev_cold(node, env, scope),
    }
}

/// Operators rarely used in flag targeting, kept out of [`ev`] so that its frame stays small.
#[inline(never)]
fn ev_cold<'a>(node: &'a Node, env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    match node {
        Node::Array(items) => Val::List(items.iter().map(|n| ev(n, env, scope)).collect()),
        Node::Missing(args) => missing(args, env, scope),
        Node::MissingSome(args) => {
            let need = to_number(&ev(&args[0], env, scope));
            let keys = ev(&args[1], env, scope);
            let total = keys.array_len().unwrap_or(0);
            let missing = missing_of(keys, env, scope);
            if (total - missing.len()) as f64 >= need { Val::List(Vec::new()) } else { Val::List(missing) }
        }
        Node::Max(args) => fold_numbers(args, env, scope, f64::NEG_INFINITY, f64::max),
        Node::Min(args) => fold_numbers(args, env, scope, f64::INFINITY, f64::min),
        Node::Add(args) => Val::Num(args.iter().map(|a| parse_float(&ev(a, env, scope))).sum()),
        Node::Mul(args) => {
            let mut it = args.iter().map(|a| parse_float(&ev(a, env, scope)));
            match it.next() {
                Some(first) => Val::Num(it.fold(first, |acc, x| acc * x)),
                None => Val::Null,
            }
        }
        Node::Sub(args) => match args.len() {
            1 => Val::Num(-to_number(&ev(&args[0], env, scope))),
            _ => Val::Num(to_number(&ev(&args[0], env, scope)) - to_number(&ev(&args[1], env, scope))),
        },
        Node::Div(a) => Val::Num(to_number(&ev(&a[0], env, scope)) / to_number(&ev(&a[1], env, scope))),
        Node::Mod(a) => Val::Num(to_number(&ev(&a[0], env, scope)) % to_number(&ev(&a[1], env, scope))),
        Node::Cat(args) => {
            // json-logic-js joins its arguments: `null` contributes nothing.
            let mut out = String::new();
            for a in args.iter() {
                let v = ev(a, env, scope);
                if !v.is_null() {
                    out.push_str(&to_js_string(&v));
                }
            }
            Val::Owned(out)
        }
        Node::Substr(args) => {
            let source = ev(&args[0], env, scope);
            let s = to_js_string(&source);
            let start = to_number(&ev(&args[1], env, scope));
            let len = args.get(2).map(|n| to_number(&ev(n, env, scope)));
            Val::Owned(substr(&s, start, len))
        }
        Node::Merge(args) => {
            let mut out = Vec::new();
            for a in args.iter() {
                let v = ev(a, env, scope);
                if let Some(items) = v.array_items() {
                    out.extend(items);
                    continue;
                }
                out.push(v);
            }
            Val::List(out)
        }
        Node::Map(a) => {
            let data = ev(&a[0], env, scope);
            let Some(items) = data.array_items() else {
                return Val::List(Vec::new());
            };
            Val::List(items.map(|item| ev(&a[1], env, Scope::Item(&item))).collect())
        }
        Node::Filter(a) => {
            let data = ev(&a[0], env, scope);
            let Some(items) = data.array_items() else {
                return Val::List(Vec::new());
            };
            Val::List(items.filter(|item| truthy(&ev(&a[1], env, Scope::Item(item)))).collect())
        }
        Node::All(a) => {
            let data = ev(&a[0], env, scope);
            match data.array_items() {
                Some(mut items) if data.array_len() != Some(0) => {
                    Val::Bool(items.all(|item| truthy(&ev(&a[1], env, Scope::Item(&item)))))
                }
                _ => Val::Bool(false),
            }
        }
        Node::None(a) => {
            let data = ev(&a[0], env, scope);
            let Some(mut items) = data.array_items() else {
                return Val::Bool(true);
            };
            Val::Bool(!items.any(|item| truthy(&ev(&a[1], env, Scope::Item(&item)))))
        }
        Node::Some(a) => {
            let data = ev(&a[0], env, scope);
            let Some(mut items) = data.array_items() else {
                return Val::Bool(false);
            };
            Val::Bool(items.any(|item| truthy(&ev(&a[1], env, Scope::Item(&item)))))
        }
        Node::Reduce(a) => {
            let data = ev(&a[0], env, scope);
            let mut acc = ev(&a[2], env, scope);
            let Some(items) = data.array_items() else {
                return acc;
            };
            for item in items {
                acc = ev(&a[1], env, Scope::Reduce { current: &item, accumulator: &acc });
            }
            acc
        }
        _ => ev(node, env, scope),
    }
}

#[inline(never)]
fn var_test<'a>(t: &'a VarTest, env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    // Fastest path: a top-level attribute that is a string or a number against a literal of
    // the same type. Everything here is what the general path below computes, without building
    // `Val`s in memory (moving them cost more than the comparisons).
    if let (Scope::Root, [head]) = (scope, &*t.path)
        && let Some(attr) = env.ctx.get(head)
        && let Some(b) = fast_test(attr, t)
    {
        return Val::Bool(b);
    }
    let var = match scope {
        Scope::Root => lookup_static_root(&t.path, env),
        _ => walk_scope(t.path.iter().map(|s| &**s), scope),
    }
    .unwrap_or(Val::Null);
    let constant = Val::from_json(&t.constant);
    let (a, b) = if t.var_first { (&var, &constant) } else { (&constant, &var) };
    match t.op {
        TestOp::Eq => Val::Bool(loose_eq(a, b)),
        TestOp::Ne => Val::Bool(!loose_eq(a, b)),
        TestOp::StrictEq => Val::Bool(strict_eq(a, b)),
        TestOp::StrictNe => Val::Bool(!strict_eq(a, b)),
        TestOp::Cmp(op) => Val::Bool(compare_holds(op, a, b)),
        TestOp::In => Val::Bool(contains(b, a)),
        TestOp::StartsWith => string_test(a, b, |s, p| s.starts_with(p)),
        TestOp::EndsWith => string_test(a, b, |s, p| s.ends_with(p)),
    }
}

#[inline(always)]
fn fast_test(attr: super::context::Attr<'_>, t: &VarTest) -> Option<bool> {
    use super::context::Attr;
    let ord_holds = |op: CmpOp, o: Ordering| match op {
        CmpOp::Lt => o == Ordering::Less,
        CmpOp::Le => o != Ordering::Greater,
        CmpOp::Gt => o == Ordering::Greater,
        CmpOp::Ge => o != Ordering::Less,
    };
    let num = match attr {
        Attr::Int(i) => Some(i as f64),
        Attr::Float(f) => Some(f),
        _ => None,
    };
    match (attr, &t.constant, t.op) {
        (Attr::Str(s), Value::String(c), TestOp::Eq | TestOp::StrictEq) => Some(s == c),
        (Attr::Str(s), Value::String(c), TestOp::Ne | TestOp::StrictNe) => Some(s != c),
        (Attr::Str(s), Value::String(c), TestOp::StartsWith) if t.var_first => Some(s.starts_with(c.as_str())),
        (Attr::Str(s), Value::String(c), TestOp::EndsWith) if t.var_first => Some(s.ends_with(c.as_str())),
        (Attr::Str(s), Value::String(c), TestOp::In) => {
            Some(if t.var_first { c.contains(s) } else { s.contains(c.as_str()) })
        }
        (Attr::Str(s), Value::Array(items), TestOp::In) if t.var_first => {
            Some(items.iter().any(|i| i.as_str() == Some(s)))
        }
        (Attr::Str(s), Value::String(c), TestOp::Cmp(op)) if s.is_ascii() && c.is_ascii() => {
            Some(ord_holds(op, if t.var_first { s.cmp(c.as_str()) } else { c.as_str().cmp(s) }))
        }
        (_, Value::Number(c), op) if num.is_some() => {
            let (v, c) = (num.unwrap_or_default(), super::value::number_to_f64(c));
            let (a, b) = if t.var_first { (v, c) } else { (c, v) };
            match op {
                TestOp::Eq | TestOp::StrictEq => Some(a == b),
                TestOp::Ne | TestOp::StrictNe => Some(a != b),
                TestOp::Cmp(op) => Some(a.partial_cmp(&b).is_some_and(|o| ord_holds(op, o))),
                _ => None,
            }
        }
        (Attr::Bool(v), Value::Bool(c), TestOp::Eq | TestOp::StrictEq) => Some(v == *c),
        (Attr::Bool(v), Value::Bool(c), TestOp::Ne | TestOp::StrictNe) => Some(v != *c),
        _ => None,
    }
}

#[inline]
fn compare_holds(op: CmpOp, x: &Val<'_>, y: &Val<'_>) -> bool {
    match js_compare(x, y) {
        Some(o) => match op {
            CmpOp::Lt => o == Ordering::Less,
            CmpOp::Le => o != Ordering::Greater,
            CmpOp::Gt => o == Ordering::Greater,
            CmpOp::Ge => o != Ordering::Less,
        },
        None => false,
    }
}

fn fold_numbers<'a>(
    args: &'a [Node],
    env: &Env<'a>,
    scope: Scope<'_, 'a>,
    init: f64,
    f: fn(f64, f64) -> f64,
) -> Val<'a> {
    let mut acc = init;
    for a in args {
        let n = to_number(&ev(a, env, scope));
        if n.is_nan() {
            return Val::Num(f64::NAN);
        }
        acc = f(acc, n);
    }
    Val::Num(acc)
}

/// `in`: substring when the haystack is a string, strict membership when it is an array.
fn contains(hay: &Val<'_>, needle: &Val<'_>) -> bool {
    match hay {
        Val::Str(_) | Val::Owned(_) => {
            let h = hay.as_str().unwrap_or_default();
            match needle.as_str() {
                Some(n) => h.contains(n),
                None => h.contains(&*to_js_string(needle)),
            }
        }
        Val::Json(Value::Array(items)) => match needle {
            // The common case, `{"in": [{"var": "email"}, ["a@x", "b@x"]]}`, compares in place.
            Val::Str(_) | Val::Owned(_) => {
                let n = needle.as_str().unwrap_or_default();
                items.iter().any(|i| i.as_str() == Some(n))
            }
            _ => items.iter().any(|i| strict_eq(&Val::from_json(i), needle)),
        },
        other => match other.array_items() {
            Some(mut items) => items.any(|i| strict_eq(&i, needle)),
            None => false,
        },
    }
}

/// JavaScript's `String.prototype.substr`, as json-logic-js applies it (a negative length
/// drops that many characters from the end). Counts Unicode scalar values.
fn substr(s: &str, start: f64, len: Option<f64>) -> String {
    let count = s.chars().count() as i64;
    let start = if start.is_nan() { 0 } else { start as i64 };
    let begin = if start < 0 { (count + start).max(0) } else { start.min(count) };
    let end = match len {
        None => count,
        Some(l) if l.is_nan() => begin,
        Some(l) if l < 0.0 => (count + l as i64).max(begin),
        Some(l) => (begin + l as i64).min(count),
    };
    s.chars().skip(begin as usize).take((end - begin).max(0) as usize).collect()
}

/// `starts_with` / `ends_with`: both arguments must be strings, otherwise `null` (as flagd).
fn string_test(a: &Val<'_>, b: &Val<'_>, f: fn(&str, &str) -> bool) -> Val<'static> {
    match (a.as_str(), b.as_str()) {
        (Some(s), Some(p)) => Val::Bool(f(s, p)),
        _ => Val::Null,
    }
}

#[inline(never)]
fn sem_ver<'a>(sv: &'a SemVerNode, env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    let left = ev(&sv.left, env, scope);
    let op = match &sv.op {
        SemVerOperand::Fixed(op) => *op,
        SemVerOperand::Dynamic(n) => match ev(n, env, scope).as_str().and_then(SemVerOp::parse) {
            Some(op) => op,
            None => return Val::Null,
        },
    };
    let right = ev(&sv.right, env, scope);
    let (Some(l), Some(r)) = (version_text(&left), version_text(&right)) else {
        return Val::Null;
    };
    match (semver::parse(&l), semver::parse(&r)) {
        (Some(a), Some(b)) => Val::Bool(op.holds(&a, &b)),
        _ => Val::Null,
    }
}

/// flagd formats non-string versions with Go's `%v` (numbers print as `1` or `1.2`).
fn version_text<'s>(v: &'s Val<'_>) -> Option<std::borrow::Cow<'s, str>> {
    match v {
        Val::Str(_) | Val::Owned(_) => v.as_str().map(std::borrow::Cow::Borrowed),
        Val::Num(n) => Some(std::borrow::Cow::Owned(js_number_string(*n))),
        _ => None,
    }
}

#[inline(never)]
fn fractional<'a>(f: &'a FractionalNode, env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    let algorithm = env.algorithm;
    let hash = if algorithm == FractionalAlgorithm::CborMurmur3 {
        cbor_bucket_hash(f, env, scope)
    } else {
        string_bucket_hash(f, env, scope)
    };
    let Some(hash) = hash else { return Val::Null };
    match &f.buckets {
        Buckets::Fixed(d) => d.pick(algorithm, hash).map_or(Val::Null, Val::from_json),
        Buckets::Dynamic(entries) => {
            let mut variants: Vec<(Val<'a>, u64)> = Vec::with_capacity(entries.len());
            for (variant, weight) in entries.iter() {
                let v = ev(variant, env, scope);
                if !matches!(v, Val::Null | Val::Bool(_) | Val::Num(_) | Val::Str(_) | Val::Owned(_)) {
                    return Val::Null;
                }
                let w = match weight {
                    None => 1.0,
                    Some(n) => match ev(n, env, scope) {
                        Val::Num(w) => w,
                        Val::Null => 1.0,
                        _ => return Val::Null,
                    },
                };
                let Some(w) = super::fractional::checked_weight(w) else {
                    return Val::Null;
                };
                variants.push((v, w));
            }
            match super::fractional::pick_index(algorithm, hash, variants.iter().map(|(_, w)| *w)) {
                Some(i) => variants.swap_remove(i).0,
                None => Val::Null,
            }
        }
    }
}

/// v1 and v2's hash: of the explicit bucketing string, else of flagKey + targetingKey (hashed in
/// two pieces, without building the concatenation); `None` is flagd's null.
fn string_bucket_hash<'a>(f: &'a FractionalNode, env: &Env<'a>, scope: Scope<'_, 'a>) -> Option<u32> {
    let algorithm = env.algorithm;
    let explicit = match &f.bucket_by {
        Some(node) => match ev(node, env, scope) {
            Val::Null => None,
            v @ (Val::Str(_) | Val::Owned(_)) => Some(v),
            // flagd: a bucketing value that is neither a string nor null is an error (null).
            _ => return None,
        },
        None => None,
    };
    Some(match &explicit {
        Some(v) => algorithm.hash(&[v.as_str().unwrap_or_default().as_bytes()]),
        None => algorithm.hash(&[env.flag_key.as_bytes(), targeting_key(env)?.as_bytes()]),
    })
}

/// flagd: a missing, null, empty or non-string targeting key gives null.
fn targeting_key<'a>(env: &Env<'a>) -> Option<&'a str> {
    match lookup_root_head(super::context::TARGETING_KEY, env) {
        Some(Val::Str(s)) if !s.is_empty() => Some(s),
        _ => None,
    }
}

/// v3's hash: of the deterministic CBOR of the explicit bucketing value (any value but null or
/// an array), else of `[flagKey, targetingKey]`; `None` is flagd's null.
fn cbor_bucket_hash<'a>(f: &'a FractionalNode, env: &Env<'a>, scope: Scope<'_, 'a>) -> Option<u32> {
    let mut bytes = Vec::with_capacity(64);
    match &f.bucket_by {
        Some(node) => {
            let v = ev(node, env, scope);
            if matches!(v, Val::Null) || v.array_len().is_some() {
                return None;
            }
            super::cbor::encode(&v.to_json(), &mut bytes);
        }
        None => {
            let tk = targeting_key(env)?;
            bytes.push(super::cbor::PAIR);
            super::cbor::text(env.flag_key, &mut bytes);
            super::cbor::text(tk, &mut bytes);
        }
    }
    Some(FractionalAlgorithm::CborMurmur3.hash(&[&bytes]))
}

/// `missing`: the keys (given as arguments, or as one array argument) that are absent, null or
/// the empty string.
fn missing<'a>(args: &'a [Node], env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    let first = args.first().map(|a| ev(a, env, scope));
    let keys = match first {
        Some(v) if v.array_len().is_some() => v,
        first => {
            let mut all: Vec<Val<'a>> = first.into_iter().collect();
            all.extend(args.iter().skip(1).map(|a| ev(a, env, scope)));
            Val::List(all)
        }
    };
    Val::List(missing_of(keys, env, scope))
}

fn missing_of<'a>(keys: Val<'a>, env: &Env<'a>, scope: Scope<'_, 'a>) -> Vec<Val<'a>> {
    let Some(items) = keys.array_items() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for key in items {
        let path = to_js_string(&key).into_owned();
        let found = lookup_dynamic(&path, env, scope);
        let absent = match &found {
            None | Some(Val::Null) => true,
            Some(v) => v.as_str() == Some(""),
        };
        if absent {
            out.push(key);
        }
    }
    out
}

fn lookup<'a>(path: &'a VarPath, env: &Env<'a>, scope: Scope<'_, 'a>) -> Option<Val<'a>> {
    match (path, scope) {
        (VarPath::Static(segs), Scope::Root) => lookup_static_root(segs, env),
        (VarPath::FlagKey, Scope::Root) => Some(Val::Str(env.flag_key)),
        (VarPath::Timestamp, Scope::Root) => Some(Val::Num(env.now_unix_secs as f64)),
        (VarPath::Dynamic(node), _) => {
            let p = ev(node, env, scope);
            if p.is_null() {
                return Some(whole(env, scope));
            }
            let p = to_js_string(&p).into_owned();
            lookup_dynamic(&p, env, scope)
        }
        (VarPath::Whole, _) => Some(whole(env, scope)),
        // Inside map/filter/reduce the `$flagd` names are ordinary paths into the element.
        (VarPath::Static(segs), _) => walk_scope(segs.iter().map(|s| &**s), scope),
        (VarPath::FlagKey, _) => walk_scope(["$flagd", "flagKey"].into_iter(), scope),
        (VarPath::Timestamp, _) => walk_scope(["$flagd", "timestamp"].into_iter(), scope),
        (VarPath::Flagd(rest), Scope::Root) => {
            let mut v = Val::OwnedJson(Box::new(flagd_object(env.flag_key, env.now_unix_secs)));
            for seg in rest.iter().flat_map(|r| r.iter()) {
                v = v.step(seg)?;
            }
            Some(v)
        }
        (VarPath::Flagd(rest), _) => {
            walk_scope(std::iter::once("$flagd").chain(rest.iter().flat_map(|r| r.iter().map(|s| &**s))), scope)
        }
    }
}

/// Looks up a dotted path given as text at evaluation (dynamic `var`, `missing`).
fn lookup_dynamic<'a>(path: &str, env: &Env<'a>, scope: Scope<'_, 'a>) -> Option<Val<'a>> {
    if path.is_empty() {
        return Some(whole(env, scope));
    }
    match scope {
        Scope::Root => {
            let mut segs = path.split('.');
            let head = segs.next()?;
            let mut v = if head == "$flagd" {
                Val::OwnedJson(Box::new(flagd_object(env.flag_key, env.now_unix_secs)))
            } else {
                lookup_root_head(head, env)?
            };
            for seg in segs {
                if v.is_null() {
                    return None;
                }
                v = v.step(seg)?;
            }
            Some(v)
        }
        _ => walk_scope(path.split('.'), scope),
    }
}

fn walk_scope<'s, 'a>(mut segs: impl Iterator<Item = &'s str>, scope: Scope<'_, 'a>) -> Option<Val<'a>> {
    let mut v = match scope {
        Scope::Root => return None,
        Scope::Item(item) => item.clone(),
        Scope::Reduce { current, accumulator } => match segs.next()? {
            "current" => current.clone(),
            "accumulator" => accumulator.clone(),
            _ => return None,
        },
    };
    for seg in segs {
        if v.is_null() {
            return None;
        }
        v = v.step(seg)?;
    }
    Some(v)
}

#[inline(always)]
fn lookup_static_root<'a>(segs: &[Box<str>], env: &Env<'a>) -> Option<Val<'a>> {
    let (head, rest) = segs.split_first()?;
    let mut v = lookup_root_head(head, env)?;
    for seg in rest {
        if v.is_null() {
            return None;
        }
        v = v.step(seg)?;
    }
    Some(v)
}

#[inline(always)]
fn lookup_root_head<'a>(head: &str, env: &Env<'a>) -> Option<Val<'a>> {
    use super::context::Attr;
    Some(match env.ctx.get(head)? {
        Attr::Null => Val::Null,
        Attr::Bool(b) => Val::Bool(b),
        Attr::Int(i) => Val::Num(i as f64),
        Attr::Float(f) => Val::Num(f),
        Attr::Str(s) => Val::Str(s),
        Attr::Json(v) => Val::from_json(v),
    })
}

/// The whole data object (`{"var": ""}`): the context with `$flagd` injected, or the element.
fn whole<'a>(env: &Env<'a>, scope: Scope<'_, 'a>) -> Val<'a> {
    match scope {
        Scope::Root => {
            let mut m: Map<String, Value> = env.ctx.to_json();
            m.insert("$flagd".into(), flagd_object(env.flag_key, env.now_unix_secs));
            Val::OwnedJson(Box::new(Value::Object(m)))
        }
        Scope::Item(item) => item.clone(),
        Scope::Reduce { current, accumulator } => {
            let mut m = Map::new();
            m.insert("current".into(), current.to_json());
            m.insert("accumulator".into(), accumulator.to_json());
            Val::OwnedJson(Box::new(Value::Object(m)))
        }
    }
}
