//! Rendering: plain aligned tables for people (no borders, like `kubectl get`, stable across
//! terminals: no colour, no wrapping), pretty JSON for scripts, UTC timestamps, short values;
//! and [`print_line`], the one way a command's output reaches stdout.

use std::io::{ErrorKind, Write};

use comfy_table::{CellAlignment, ColumnConstraint, Table, presets};
use serde_json::Value;

use crate::Failure;

/// Writes `text` and a newline to stdout, and flushes. Every byte `vexilctl` prints to stdout
/// goes through here (`println!` is denied in this crate).
///
/// A reader that stops early (`vexilctl export | head`) closes the pipe. Unix tools then die of
/// SIGPIPE without a word; a Rust program ignores SIGPIPE, so its write fails with `BrokenPipe`
/// instead and `println!` panics ("failed printing to stdout"). Restoring the signal's default
/// would take an `unsafe` libc call, which this workspace forbids; instead a broken pipe comes
/// back as [`Failure::OutputClosed`], which stops the command (`audit tail --follow` too) and
/// ends the process quietly with exit 0, as Rust tools such as ripgrep do (`crate::run`). Any
/// other write error (a full disk) is a failure like others.
pub fn print_line(text: &str) -> Result<(), Failure> {
    write_line(&mut std::io::stdout().lock(), text)
}

fn write_line(out: &mut impl Write, text: &str) -> Result<(), Failure> {
    writeln!(out, "{text}").and_then(|()| out.flush()).map_err(|e| match e.kind() {
        ErrorKind::BrokenPipe => Failure::OutputClosed,
        _ => Failure::Failed(format!("cannot write to stdout: {e}")),
    })
}

/// Prints the cluster's warnings about a write to stderr (`warning: ...`), so stdout stays the
/// command's result (and valid JSON with `--output json`, which also lists them).
pub fn warn(warnings: &[String]) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
}

/// Longest JSON value shown inline in a human table before it is cut with `…`.
pub const INLINE_VALUE_CHARS_MAX: usize = 60;

/// A table with a header row, columns two spaces apart, no trailing spaces.
pub fn table<S: AsRef<str>>(headers: &[&str], rows: impl IntoIterator<Item = Vec<S>>) -> String {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    t.set_header(headers.to_vec());
    for row in rows {
        t.add_row(row.iter().map(|c| c.as_ref().to_string()).collect::<Vec<_>>());
    }
    let n = headers.len();
    for (i, col) in t.column_iter_mut().enumerate() {
        col.set_padding((0, if i + 1 == n { 0 } else { 2 }));
        col.set_cell_alignment(CellAlignment::Left);
        col.set_constraint(ColumnConstraint::ContentWidth);
    }
    t.lines().map(|l| l.trim_end().to_string()).collect::<Vec<_>>().join("\n")
}

/// `label: value` lines with the values aligned.
pub fn fields(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter().map(|(k, v)| format!("{k:<width$}  {v}").trim_end().to_string()).collect::<Vec<_>>().join("\n")
}

/// Pretty JSON for `--output json`.
pub fn json(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// Parses stored JSON text, keeping unparsable text as a string (it is shown, not judged).
pub fn parse_json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_string()))
}

/// A JSON value on one line, cut to [`INLINE_VALUE_CHARS_MAX`] characters.
pub fn inline(v: &Value) -> String {
    short(&v.to_string(), INLINE_VALUE_CHARS_MAX)
}

pub fn short(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// `-` for an empty string.
pub fn or_dash(s: &str) -> String {
    if s.is_empty() { "-".to_string() } else { s.to_string() }
}

/// Unix milliseconds as an RFC 3339 UTC time (`2026-01-31T09:05:00Z`); `-` for 0 (entries the
/// cluster records without a proposer's clock, such as membership changes).
pub fn time_ms(ms: i64) -> String {
    if ms == 0 {
        return "-".into();
    }
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day) — the well-known
/// era-based conversion (eras of 400 years, 146,097 days).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_aligned_without_borders_or_trailing_spaces() {
        let t = table(&["ID", "ADDRESS", "ROLE"], [vec!["1", "127.0.0.1:7001", "leader"], vec!["10", "x", ""]]);
        assert_eq!(t, "ID  ADDRESS         ROLE\n1   127.0.0.1:7001  leader\n10  x");
    }

    #[test]
    fn times_are_utc_rfc3339() {
        assert_eq!(time_ms(0), "-");
        assert_eq!(time_ms(1_000), "1970-01-01T00:00:01Z");
        assert_eq!(time_ms(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(time_ms(1_767_225_600_000 + 3_723_000), "2026-01-01T01:02:03Z");
    }

    #[test]
    fn a_closed_pipe_is_a_quiet_stop_and_other_write_errors_fail() {
        struct Failing(ErrorKind);
        impl Write for Failing {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(self.0.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        assert_eq!(write_line(&mut Failing(ErrorKind::BrokenPipe), "x"), Err(Failure::OutputClosed));
        assert_eq!(Failure::OutputClosed.exit_code(), 0);
        let full = write_line(&mut Failing(ErrorKind::StorageFull), "x").unwrap_err();
        assert_eq!(full.exit_code(), 1);
        let mut buf = Vec::new();
        write_line(&mut buf, "a\nb").unwrap();
        assert_eq!(buf, b"a\nb\n");
    }

    #[test]
    fn long_values_are_cut() {
        assert_eq!(short("abcdef", 4), "abc…");
        assert_eq!(short("abc", 4), "abc");
    }
}
