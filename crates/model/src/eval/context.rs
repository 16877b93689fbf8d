//! The evaluation context: who is asking (targeting key) and what we know about them.
//!
//! Building the context is on every caller's hot path, and an owned map of strings costs more
//! than evaluating most flags. So [`EvalContext`] borrows everything: attribute names and string
//! values are `&str`, up to [`INLINE_ATTRS`] attributes live inline (no allocation at all), and a
//! caller that already holds JSON (a gRPC `Struct` converted once, an OFREP body) can lend its
//! `serde_json::Map` instead of copying it. Reading an attribute is a short linear scan.
//!
//! `$flagd.flagKey` and `$flagd.timestamp` are not stored here: the evaluator answers them
//! itself, so a caller's `$flagd` attribute is always overridden, as flagd does.

use serde_json::{Map, Value};

/// Attributes kept inline before the context spills to a heap vector.
pub const INLINE_ATTRS: usize = 8;

/// The name flagd (and OpenFeature) gives the targeting key in a JSON context.
pub const TARGETING_KEY: &str = "targetingKey";

/// One attribute value, borrowed. (`repr(u64)` keeps payloads 8-byte aligned so copies of it
/// stay cheap; see `Val`.)
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(u64)]
pub enum Attr<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
    /// Any JSON value; objects and arrays can be read with dotted paths (`user.plan.tier`).
    Json(&'a Value),
}

impl<'a> From<&'a str> for Attr<'a> {
    fn from(s: &'a str) -> Self {
        Attr::Str(s)
    }
}
impl<'a> From<&'a String> for Attr<'a> {
    fn from(s: &'a String) -> Self {
        Attr::Str(s)
    }
}
impl From<bool> for Attr<'_> {
    fn from(b: bool) -> Self {
        Attr::Bool(b)
    }
}
impl From<i64> for Attr<'_> {
    fn from(i: i64) -> Self {
        Attr::Int(i)
    }
}
impl From<i32> for Attr<'_> {
    fn from(i: i32) -> Self {
        Attr::Int(i.into())
    }
}
impl From<f64> for Attr<'_> {
    fn from(f: f64) -> Self {
        Attr::Float(f)
    }
}
impl<'a> From<&'a Value> for Attr<'a> {
    fn from(v: &'a Value) -> Self {
        match v {
            Value::Null => Attr::Null,
            Value::Bool(b) => Attr::Bool(*b),
            Value::String(s) => Attr::Str(s),
            other => Attr::Json(other),
        }
    }
}

/// A borrowed evaluation context. Cheap to build (no allocation for up to [`INLINE_ATTRS`]
/// attributes) and cheap to read.
///
/// ```
/// use vexil_model::eval::EvalContext;
/// let ctx = EvalContext::with_targeting_key("user-42").with("email", "a@example.com").with("age", 37);
/// assert_eq!(ctx.targeting_key(), Some("user-42"));
/// ```
#[derive(Debug, Clone)]
pub struct EvalContext<'a> {
    targeting_key: Option<&'a str>,
    inline: [(&'a str, Attr<'a>); INLINE_ATTRS],
    inline_len: usize,
    spill: Vec<(&'a str, Attr<'a>)>,
    json: Option<&'a Map<String, Value>>,
}

impl Default for EvalContext<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> EvalContext<'a> {
    /// An empty context (no targeting key, no attributes).
    #[inline]
    pub fn new() -> Self {
        EvalContext {
            targeting_key: None,
            inline: [("", Attr::Null); INLINE_ATTRS],
            inline_len: 0,
            spill: Vec::new(),
            json: None,
        }
    }

    /// A context holding only a targeting key.
    #[inline]
    pub fn with_targeting_key(targeting_key: &'a str) -> Self {
        let mut ctx = Self::new();
        ctx.targeting_key = Some(targeting_key);
        ctx
    }

    /// A context that reads a JSON object: its `targetingKey` (when a string) is the targeting
    /// key and every other member is an attribute. Nothing is copied.
    #[inline]
    pub fn from_json(map: &'a Map<String, Value>) -> Self {
        let mut ctx = Self::new();
        ctx.targeting_key = map.get(TARGETING_KEY).and_then(Value::as_str);
        ctx.json = Some(map);
        ctx
    }

    /// Sets an attribute, replacing one of the same name. Setting `targetingKey` to a string
    /// sets the targeting key.
    #[inline]
    pub fn set(&mut self, name: &'a str, value: impl Into<Attr<'a>>) -> &mut Self {
        let value = value.into();
        if name == TARGETING_KEY {
            if let Attr::Str(s) = value {
                self.targeting_key = Some(s);
                return self;
            }
            self.targeting_key = None;
        }
        if let Some(slot) =
            self.inline[..self.inline_len].iter_mut().chain(self.spill.iter_mut()).find(|(n, _)| *n == name)
        {
            slot.1 = value;
        } else if self.inline_len < INLINE_ATTRS {
            self.inline[self.inline_len] = (name, value);
            self.inline_len += 1;
        } else {
            self.spill.push((name, value));
        }
        self
    }

    /// Builder form of [`EvalContext::set`].
    #[inline]
    pub fn with(mut self, name: &'a str, value: impl Into<Attr<'a>>) -> Self {
        self.set(name, value);
        self
    }

    /// Sets the targeting key.
    #[inline]
    pub fn set_targeting_key(&mut self, targeting_key: &'a str) -> &mut Self {
        self.targeting_key = Some(targeting_key);
        self
    }

    #[inline]
    pub fn targeting_key(&self) -> Option<&'a str> {
        self.targeting_key
    }

    /// Looks an attribute up by its (top-level) name: attributes set with [`EvalContext::set`]
    /// first, then the lent JSON object. `targetingKey` answers the targeting key.
    #[inline]
    pub fn get(&self, name: &str) -> Option<Attr<'a>> {
        if name == TARGETING_KEY
            && let Some(tk) = self.targeting_key
        {
            return Some(Attr::Str(tk));
        }
        for (n, v) in &self.inline[..self.inline_len] {
            if *n == name {
                return Some(*v);
            }
        }
        for (n, v) in &self.spill {
            if *n == name {
                return Some(*v);
            }
        }
        self.json.and_then(|m| m.get(name)).map(Attr::from)
    }

    /// Every attribute as owned JSON (for `{"var": ""}`, which asks for the whole context, and
    /// for diagnostics). Allocates; never on the hot path.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut out = self.json.cloned().unwrap_or_default();
        for (n, v) in self.inline[..self.inline_len].iter().chain(self.spill.iter()) {
            out.insert((*n).to_string(), attr_to_json(*v));
        }
        if let Some(tk) = self.targeting_key {
            out.insert(TARGETING_KEY.to_string(), Value::String(tk.to_string()));
        }
        out
    }
}

pub(crate) fn attr_to_json(a: Attr<'_>) -> Value {
    match a {
        Attr::Null => Value::Null,
        Attr::Bool(b) => Value::Bool(b),
        Attr::Int(i) => Value::from(i),
        Attr::Float(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        Attr::Str(s) => Value::String(s.to_string()),
        Attr::Json(v) => v.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn attributes_inline_then_spill_and_replace() {
        let names: Vec<String> = (0..12).map(|i| format!("a{i}")).collect();
        let mut ctx = EvalContext::new();
        for (i, n) in names.iter().enumerate() {
            ctx.set(n, i as i64);
        }
        ctx.set("a3", "replaced").set("a11", true);
        assert_eq!(ctx.get("a0"), Some(Attr::Int(0)));
        assert_eq!(ctx.get("a3"), Some(Attr::Str("replaced")));
        assert_eq!(ctx.get("a10"), Some(Attr::Int(10)));
        assert_eq!(ctx.get("a11"), Some(Attr::Bool(true)));
        assert_eq!(ctx.get("missing"), None);
    }

    #[test]
    fn targeting_key_from_setter_or_json() {
        let ctx = EvalContext::new().with("targetingKey", "u1");
        assert_eq!(ctx.targeting_key(), Some("u1"));
        assert_eq!(ctx.get("targetingKey"), Some(Attr::Str("u1")));
        let v = json!({"targetingKey": "u2", "plan": {"tier": "gold"}});
        let map = v.as_object().expect("object");
        let ctx = EvalContext::from_json(map).with("extra", 1);
        assert_eq!(ctx.targeting_key(), Some("u2"));
        assert_eq!(ctx.get("plan"), Some(Attr::Json(&v["plan"])));
        assert_eq!(ctx.to_json()["extra"], json!(1));
    }
}
