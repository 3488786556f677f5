//! How [`super::list()`]'s rows are printed, in the conventions of util-linux
//! `lslocks`: named columns chosen with `-o` (case-insensitive, `+NAME`
//! adds to the defaults), a table aligned in columns or `--raw` (one space
//! between values, blanks escaped as `\x20`), headings unless
//! `--noheadings`, and `--json` with lower-case keys and `null` for what is
//! not known.
//!
//! The aligner is written here rather than taken from a table crate: the
//! format is lslocks' plain one (left-aligned text, right-aligned numbers,
//! one space between columns, no borders), a few lines, and a dependency
//! would bring its own idea of widths and borders for nothing more.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::list::LockInfo;

/// A column of `lock-doctor list`.
///
/// ```
/// use async_filelock::doctor::Column;
/// assert_eq!("pid".parse::<Column>().unwrap(), Column::Pid);
/// assert_eq!("Lock_File".parse::<Column>().unwrap(), Column::LockFile);
/// assert_eq!(Column::LockFile.header(), "LOCK FILE");
/// assert!("size".parse::<Column>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Column {
    /// `CATEGORY`: artifact, manifest, telemetry, sqlite or summary.
    Category,
    /// `TARGET`: the file the lock guards.
    Target,
    /// `MODE`: `WRITE`, `READ`, `-` (free), `STALE` (a stale soft lock).
    Mode,
    /// `PID`: the holder.
    Pid,
    /// `COMMAND`: the holder's command name.
    Command,
    /// `HELD`: for how long (soft locks; `-` where unknown).
    Held,
    /// `WAITERS`: processes blocked waiting, where the OS tells.
    Waiters,
    /// `BACKEND`: `os` or `soft`.
    Backend,
    /// `LOCK FILE`: the lock file's path.
    LockFile,
}

impl Column {
    /// Every column, in the default order.
    pub const ALL: [Column; 9] = [
        Column::Category,
        Column::Target,
        Column::Mode,
        Column::Pid,
        Column::Command,
        Column::Held,
        Column::Waiters,
        Column::Backend,
        Column::LockFile,
    ];

    /// The heading of the column in a table.
    pub fn header(self) -> &'static str {
        match self {
            Column::Category => "CATEGORY",
            Column::Target => "TARGET",
            Column::Mode => "MODE",
            Column::Pid => "PID",
            Column::Command => "COMMAND",
            Column::Held => "HELD",
            Column::Waiters => "WAITERS",
            Column::Backend => "BACKEND",
            Column::LockFile => "LOCK FILE",
        }
    }

    /// Its key in JSON output.
    pub fn json_key(self) -> &'static str {
        match self {
            Column::LockFile => "lock_file",
            Column::Category => "category",
            Column::Target => "target",
            Column::Mode => "mode",
            Column::Pid => "pid",
            Column::Command => "command",
            Column::Held => "held",
            Column::Waiters => "waiters",
            Column::Backend => "backend",
        }
    }

    /// Numbers are right-aligned, as lslocks aligns its PID column.
    fn right_aligned(self) -> bool {
        matches!(self, Column::Pid | Column::Held | Column::Waiters)
    }

    /// The value of this column in `row`; `None` where it is not known.
    fn text(self, row: &LockInfo) -> Option<String> {
        match self {
            Column::Category => Some(row.category.name().to_owned()),
            Column::Target => row.target.as_ref().map(|t| t.display().to_string()),
            Column::Mode => Some(row.state.to_string()),
            Column::Pid => row.pid.map(|p| p.to_string()),
            Column::Command => row.command.clone(),
            Column::Held => row.held.map(human_duration),
            Column::Waiters => row.waiters.map(|n| n.to_string()),
            Column::Backend => Some(row.backend.to_string()),
            Column::LockFile => Some(row.lock_file.display().to_string()),
        }
    }

    /// The value of this column in `row` as JSON.
    fn json(self, row: &LockInfo) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Column::Mode => match row.state {
                super::list::LockState::Unknown => Value::Null,
                state => Value::from(state.to_string()),
            },
            Column::Pid => row.pid.map_or(Value::Null, Value::from),
            Column::Held => row.held.map_or(Value::Null, |d| {
                // Seconds, to the millisecond.
                Value::from((d.as_millis() as f64) / 1000.0)
            }),
            Column::Waiters => row.waiters.map_or(Value::Null, Value::from),
            _ => self.text(row).map_or(Value::Null, Value::from),
        }
    }
}

impl fmt::Display for Column {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.header())
    }
}

/// A column name that is none of [`Column::ALL`].
///
/// ```
/// let err = "SIZE".parse::<async_filelock::doctor::Column>().unwrap_err();
/// assert!(err.to_string().contains("SIZE"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown column {0:?}; the columns are CATEGORY, TARGET, MODE, PID, COMMAND, HELD, WAITERS, BACKEND, LOCK_FILE"
)]
pub struct UnknownColumn(pub String);

impl FromStr for Column {
    type Err = UnknownColumn;

    /// Case-insensitive; `LOCK FILE` may be written `LOCK_FILE`,
    /// `LOCK-FILE` or `LOCKFILE`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted: String = s
            .trim()
            .chars()
            .filter(|c| !matches!(c, ' ' | '_' | '-'))
            .collect();
        Column::ALL
            .into_iter()
            .find(|c| {
                let name: String = c.header().chars().filter(|c| *c != ' ').collect();
                name.eq_ignore_ascii_case(&wanted)
            })
            .ok_or_else(|| UnknownColumn(s.trim().to_owned()))
    }
}

/// The columns `-o` names: comma-separated, case-insensitive; a list that
/// starts with `+` adds its columns to the defaults, as lslocks does.
///
/// # Errors
///
/// [`UnknownColumn`] naming the first name that is no column.
///
/// ```
/// use async_filelock::doctor::{parse_columns, Column};
/// assert_eq!(parse_columns("pid,Command")?, [Column::Pid, Column::Command]);
/// assert_eq!(parse_columns("+pid")?.len(), Column::ALL.len() + 1);
/// # Ok::<(), async_filelock::doctor::UnknownColumn>(())
/// ```
pub fn parse_columns(spec: &str) -> Result<Vec<Column>, UnknownColumn> {
    let (mut columns, spec) = match spec.trim().strip_prefix('+') {
        Some(rest) => (Column::ALL.to_vec(), rest),
        None => (Vec::new(), spec),
    };
    for name in spec.split(',').filter(|n| !n.trim().is_empty()) {
        columns.push(name.parse()?);
    }
    if columns.is_empty() {
        return Err(UnknownColumn(spec.to_owned()));
    }
    Ok(columns)
}

/// How a table is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Layout {
    /// Columns aligned with spaces (the default).
    #[default]
    Aligned,
    /// One space between values, no alignment; blanks and backslashes in
    /// values escaped (`\x20`, `\x5c`) so every line splits on spaces, and
    /// headings written with `_` for blanks (`LOCK_FILE`).
    Raw,
}

/// `rows` as a table of `columns`, one line per row (and a heading line if
/// `headings`), each line ending in a newline. Unknown values are `-`.
///
/// ```
/// use async_filelock::doctor::{self, Column, Layout};
/// let dir = tempfile::tempdir().unwrap();
/// let rows = doctor::list(dir.path())?;
/// let text = doctor::table(&rows, &[Column::Category, Column::Pid], Layout::Aligned, true);
/// assert_eq!(text, "CATEGORY PID\n");
/// # Ok::<(), async_filelock::LockError>(())
/// ```
pub fn table(rows: &[LockInfo], columns: &[Column], layout: Layout, headings: bool) -> String {
    let mut lines: Vec<Vec<String>> = Vec::with_capacity(rows.len() + 1);
    if headings {
        lines.push(
            columns
                .iter()
                .map(|c| match layout {
                    Layout::Aligned => c.header().to_owned(),
                    Layout::Raw => c.header().replace(' ', "_"),
                })
                .collect(),
        );
    }
    for row in rows {
        lines.push(
            columns
                .iter()
                .map(|c| {
                    let text = c.text(row).unwrap_or_else(|| "-".to_owned());
                    match layout {
                        Layout::Aligned => text,
                        Layout::Raw => escape_raw(&text),
                    }
                })
                .collect(),
        );
    }
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| {
            lines
                .iter()
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in &lines {
        let mut text = String::new();
        for (i, (value, column)) in line.iter().zip(columns).enumerate() {
            if i > 0 {
                text.push(' ');
            }
            let pad = widths[i] - value.chars().count();
            let last = i + 1 == columns.len();
            match layout {
                Layout::Raw => text.push_str(value),
                Layout::Aligned if column.right_aligned() => {
                    text.extend(std::iter::repeat_n(' ', pad));
                    text.push_str(value);
                }
                Layout::Aligned => {
                    text.push_str(value);
                    if !last {
                        text.extend(std::iter::repeat_n(' ', pad));
                    }
                }
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

/// `{"locks":[{…}]}`: one object per row with the keys of `columns`
/// ([`Column::json_key`]), `null` where a value is not known, `held` in
/// seconds.
///
/// ```
/// use async_filelock::doctor::{self, Column};
/// let dir = tempfile::tempdir().unwrap();
/// let rows = doctor::list(dir.path())?;
/// assert_eq!(doctor::json(&rows, &Column::ALL), r#"{"locks":[]}"#);
/// # Ok::<(), async_filelock::LockError>(())
/// ```
pub fn json(rows: &[LockInfo], columns: &[Column]) -> String {
    // Written by hand around serde_json's values so that the keys keep the
    // columns' order (a `serde_json::Map` sorts them).
    let mut out = String::from(r#"{"locks":["#);
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('{');
        for (j, column) in columns.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push_str(&serde_json::Value::from(column.json_key()).to_string());
            out.push(':');
            out.push_str(&column.json(row).to_string());
        }
        out.push('}');
    }
    out.push_str("]}");
    out
}

/// lslocks' raw escaping: blanks, backslashes and control characters as
/// `\xHH`, so that a value never splits a line or a field.
fn escape_raw(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '\\' || c.is_whitespace() || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        } else {
            out.push(c);
        }
    }
    if out.is_empty() { "-".to_owned() } else { out }
}

/// `850ms`, `12s`, `3m04s`, `2h05m`, `3d04h`: short, as a column wants.
pub(crate) fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0 => format!("{}ms", d.as_millis()),
        1..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..86400 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{:02}h", secs / 86400, secs % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::category::Category;
    use crate::doctor::list::{LockBackend, LockState};
    use std::path::PathBuf;

    fn row(pid: Option<u32>, target: &str) -> LockInfo {
        LockInfo {
            category: Category::Manifest,
            target: Some(PathBuf::from(target)),
            state: if pid.is_some() {
                LockState::Write
            } else {
                LockState::Free
            },
            pid,
            command: pid.map(|_| "my app".to_owned()),
            held: pid.map(|_| Duration::from_secs(75)),
            waiters: Some(0),
            backend: LockBackend::Os,
            lock_file: PathBuf::from("/l/manifest.x.lock"),
        }
    }

    #[test]
    fn aligned_tables_pad_text_left_and_numbers_right() {
        let rows = [row(Some(4121), "/d/a b.jsonl"), row(None, "/d/c")];
        let cols = [Column::Target, Column::Pid, Column::Held, Column::Command];
        let text = table(&rows, &cols, Layout::Aligned, true);
        assert_eq!(
            text,
            "TARGET        PID  HELD COMMAND\n\
             /d/a b.jsonl 4121 1m15s my app\n\
             /d/c            -     - -\n"
        );
        let raw = table(&rows, &cols, Layout::Raw, false);
        assert_eq!(raw, "/d/a\\x20b.jsonl 4121 1m15s my\\x20app\n/d/c - - -\n");
        let lock_file = table(&rows[..1], &[Column::LockFile], Layout::Raw, true);
        assert!(lock_file.starts_with("LOCK_FILE\n"), "{lock_file}");
    }

    #[test]
    fn json_has_lower_case_keys_and_null_for_the_unknown() {
        let text = json(&[row(None, "/d/c")], &Column::ALL);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let lock = &v["locks"][0];
        assert_eq!(lock["pid"], serde_json::Value::Null);
        assert_eq!(lock["mode"], "-");
        assert_eq!(lock["lock_file"], "/l/manifest.x.lock");
        assert_eq!(lock["waiters"], 0);
        let held = json(&[row(Some(1), "/d/c")], &[Column::Held, Column::Backend]);
        assert_eq!(held, r#"{"locks":[{"held":75.0,"backend":"os"}]}"#);
    }

    #[test]
    fn columns_parse_as_lslocks_names_them() {
        assert_eq!(
            parse_columns("MODE,lock file").unwrap(),
            [Column::Mode, Column::LockFile]
        );
        assert!(parse_columns("").is_err());
        assert!(parse_columns("pid,size").is_err());
        assert_eq!(human_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(human_duration(Duration::from_secs(7530)), "2h05m");
        assert_eq!(human_duration(Duration::from_secs(273_600)), "3d04h");
    }
}
