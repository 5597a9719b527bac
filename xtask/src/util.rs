//! Small shared pieces: exit statuses, usage errors, the workspace root.

use std::path::PathBuf;

use anyhow::{bail, Context};

/// What a command reports besides errors: `Failed` means "ran, and found a failure" (exit 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Status {
    Ok,
    Failed,
    /// Stopped by Ctrl-C or SIGTERM (exit 130).
    Interrupted,
}

impl Status {
    pub fn from_ok(ok: bool) -> Status {
        if ok {
            Status::Ok
        } else {
            Status::Failed
        }
    }
}

/// An error in how the command was called (exit 2), as opposed to a failure while running (exit 1).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The workspace root: found from `CARGO_MANIFEST_DIR` when run through cargo, else by walking
/// up from the current directory to the `Cargo.toml` that declares `[workspace]`.
pub fn workspace_root() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR") {
        let dir = PathBuf::from(dir);
        if let Some(parent) = dir.parent() {
            if parent.join("Cargo.toml").is_file() && parent.join("xtask").is_dir() {
                return Ok(parent.to_path_buf());
            }
        }
    }
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    for dir in cwd.ancestors() {
        let manifest = dir.join("Cargo.toml");
        if manifest.is_file() {
            let text = std::fs::read_to_string(&manifest)
                .with_context(|| format!("cannot read {}", manifest.display()))?;
            if text.contains("[workspace]") && dir.join("xtask").is_dir() {
                return Ok(dir.to_path_buf());
            }
        }
    }
    bail!(
        "not inside the attune workspace (no Cargo.toml with [workspace] and xtask/ above {}); run `cargo xtask` from the repository",
        cwd.display()
    )
}

/// `2026-11-29T12:37:00Z` for seconds since the Unix epoch.
pub fn utc_date(unix: f64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix.floor() as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{unix} s since the epoch"))
}

/// Lower-case hex of `bytes` (a digest's text).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc_date(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_date(1_795_955_820.5), "2026-11-29T12:37:00Z");
    }
}

/// Rows (the first is the header) as a Markdown table, or as text with aligned columns; pure.
pub fn table(rows: &[Vec<String>], markdown: bool) -> String {
    let mut out = String::new();
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    if markdown {
        for (k, row) in rows.iter().enumerate() {
            out.push_str(&format!("| {} |\n", row.join(" | ")));
            if k == 0 {
                out.push_str(&format!("|{}\n", "---|".repeat(columns)));
            }
        }
        return out;
    }
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let cells: Vec<String> = (row.iter().enumerate())
            .map(|(c, s)| format!("{s:<w$}", w = widths[c]))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod table_tests {
    #[test]
    fn a_table_as_markdown_or_aligned_text() {
        let rows = vec![
            vec!["a".to_string(), "bb".into()],
            vec!["ccc".to_string(), "d".into()],
        ];
        assert_eq!(super::table(&rows, false), "a    bb\nccc  d\n");
        assert_eq!(
            super::table(&rows, true),
            "| a | bb |\n|---|---|\n| ccc | d |\n"
        );
    }
}
