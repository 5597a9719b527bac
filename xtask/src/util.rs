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
