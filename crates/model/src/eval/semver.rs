//! Semantic-version comparison for flagd's `sem_ver` operator.
//!
//! flagd (Go) compares versions with `golang.org/x/mod/semver`, so this module follows that
//! grammar rather than Cargo's: a leading `v` is added when missing (`V` becomes `v`), `v1` and
//! `v1.2` are shorthands for `v1.0.0` and `v1.2.0` (and then take no pre-release or build),
//! numbers have no leading zeros, build metadata is ignored when comparing, and `^` / `~` mean
//! "same major" / "same major and minor" (not npm's ranges).

use std::cmp::Ordering;

/// The comparison a `sem_ver` rule asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SemVerOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `^`: same major version.
    SameMajor,
    /// `~`: same major and minor version.
    SameMinor,
}

impl SemVerOp {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "=" => SemVerOp::Eq,
            "!=" => SemVerOp::Ne,
            "<" => SemVerOp::Lt,
            "<=" => SemVerOp::Le,
            ">" => SemVerOp::Gt,
            ">=" => SemVerOp::Ge,
            "^" => SemVerOp::SameMajor,
            "~" => SemVerOp::SameMinor,
            _ => return None,
        })
    }

    pub fn holds(self, a: &Version<'_>, b: &Version<'_>) -> bool {
        match self {
            SemVerOp::Eq => a.cmp_precedence(b) == Ordering::Equal,
            SemVerOp::Ne => a.cmp_precedence(b) != Ordering::Equal,
            SemVerOp::Lt => a.cmp_precedence(b) == Ordering::Less,
            SemVerOp::Le => a.cmp_precedence(b) != Ordering::Greater,
            SemVerOp::Gt => a.cmp_precedence(b) == Ordering::Greater,
            SemVerOp::Ge => a.cmp_precedence(b) != Ordering::Less,
            SemVerOp::SameMajor => cmp_num(a.major, b.major) == Ordering::Equal,
            SemVerOp::SameMinor => {
                cmp_num(a.major, b.major) == Ordering::Equal && cmp_num(a.minor, b.minor) == Ordering::Equal
            }
        }
    }
}

/// A parsed version, borrowing its text. Numeric parts are kept as digit strings (any size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version<'s> {
    major: &'s str,
    minor: &'s str,
    patch: &'s str,
    /// Pre-release identifiers without the leading `-`; empty when there are none.
    prerelease: &'s str,
}

/// Parses `text` the way flagd does: an optional `v` (or `V`) then x/mod/semver's grammar.
pub fn parse(text: &str) -> Option<Version<'_>> {
    let rest = text.strip_prefix('v').or_else(|| text.strip_prefix('V')).unwrap_or(text);
    let (major, rest) = parse_num(rest)?;
    if rest.is_empty() {
        return Some(Version { major, minor: "0", patch: "0", prerelease: "" });
    }
    let (minor, rest) = parse_num(rest.strip_prefix('.')?)?;
    if rest.is_empty() {
        return Some(Version { major, minor, patch: "0", prerelease: "" });
    }
    let (patch, mut rest) = parse_num(rest.strip_prefix('.')?)?;
    let mut prerelease = "";
    if let Some(pre) = rest.strip_prefix('-') {
        let end = pre.find('+').unwrap_or(pre.len());
        prerelease = &pre[..end];
        if !valid_identifiers(prerelease, true) {
            return None;
        }
        rest = &pre[end..];
    }
    if let Some(build) = rest.strip_prefix('+') {
        if !valid_identifiers(build, false) {
            return None;
        }
        rest = "";
    }
    rest.is_empty().then_some(Version { major, minor, patch, prerelease })
}

fn parse_num(s: &str) -> Option<(&str, &str)> {
    let end = s.bytes().position(|b| !b.is_ascii_digit()).unwrap_or(s.len());
    let (num, rest) = s.split_at(end);
    if num.is_empty() || (num.len() > 1 && num.starts_with('0')) {
        return None;
    }
    Some((num, rest))
}

fn valid_identifiers(s: &str, no_leading_zero_numbers: bool) -> bool {
    !s.is_empty()
        && s.split('.').all(|id| {
            !id.is_empty()
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !(no_leading_zero_numbers && is_num(id) && id.len() > 1 && id.starts_with('0'))
        })
}

fn is_num(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Compares digit strings without leading zeros: longer is larger, then lexicographic.
fn cmp_num(a: &str, b: &str) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

impl Version<'_> {
    /// Semantic-versioning precedence (build metadata ignored).
    pub fn cmp_precedence(&self, other: &Version<'_>) -> Ordering {
        cmp_num(self.major, other.major)
            .then_with(|| cmp_num(self.minor, other.minor))
            .then_with(|| cmp_num(self.patch, other.patch))
            .then_with(|| cmp_prerelease(self.prerelease, other.prerelease))
    }
}

fn cmp_prerelease(a: &str, b: &str) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        (false, false) => {}
    }
    let mut xs = a.split('.');
    let mut ys = b.split('.');
    loop {
        match (xs.next(), ys.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let ord = match (is_num(x), is_num(y)) {
                    (true, true) => cmp_num(x, y),
                    (true, false) => Ordering::Less,
                    (false, true) => Ordering::Greater,
                    (false, false) => x.cmp(y),
                };
                if ord != Ordering::Equal {
                    return ord;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holds(a: &str, op: &str, b: &str) -> bool {
        let op = SemVerOp::parse(op).expect("known operator");
        op.holds(&parse(a).expect("valid a"), &parse(b).expect("valid b"))
    }

    #[test]
    fn grammar_follows_x_mod_semver() {
        for ok in [
            "1.2.3",
            "v1.2.3",
            "V1.2.3",
            "1",
            "1.2",
            "1.0.0-alpha.1",
            "1.0.0+build.5",
            "1.0.0-rc.1+b",
            "0.0.0",
            "10.20.30",
        ] {
            assert!(parse(ok).is_some(), "{ok} should parse");
        }
        for bad in [
            "",
            "v",
            "1.2.3.4",
            "01.2.3",
            "1.02.3",
            "1.2-pre",
            "1-pre",
            "1.2.3-",
            "1.2.3-01",
            "1.2.3+",
            "1.2.3-a..b",
            "a.b.c",
            "1.2.3 ",
            "vv1.2.3",
            "1.2.3-ä",
        ] {
            assert!(parse(bad).is_none(), "{bad} should not parse");
        }
    }

    #[test]
    fn comparisons() {
        assert!(holds("1.2.3", "=", "v1.2.3"));
        assert!(holds("1.2", "=", "1.2.0"));
        assert!(holds("1.0.0+a", "=", "1.0.0+b"));
        assert!(holds("1.2.3", "!=", "1.2.4"));
        assert!(holds("1.2.3", "<", "1.10.0"));
        assert!(holds("1.0.0-alpha", "<", "1.0.0"));
        assert!(holds("1.0.0-alpha", "<", "1.0.0-alpha.1"));
        assert!(holds("1.0.0-alpha.1", "<", "1.0.0-alpha.beta"));
        assert!(holds("1.0.0-beta.2", "<", "1.0.0-beta.11"));
        assert!(holds("1.0.0-rc.1", "<", "1.0.0"));
        assert!(holds("2.0.0", ">", "1.99.99"));
        assert!(holds("2.0.0", ">=", "2.0.0"));
        assert!(holds("2.0.0", "<=", "2.0.0"));
        assert!(holds("99999999999999999999.0.0", ">", "9999999999999999999.0.0"));
        assert!(holds("1.5.0", "^", "1.0.0"));
        assert!(!holds("2.0.0", "^", "1.0.0"));
        assert!(holds("1.2.9", "~", "1.2.0"));
        assert!(!holds("1.3.0", "~", "1.2.0"));
    }
}
