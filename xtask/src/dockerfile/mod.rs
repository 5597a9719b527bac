//! A Dockerfile model built on a real tokenizer, and the pure passes over it.
//!
//! - [`lexer`]: physical lines -> logical instructions (parser directives, the escape character,
//!   line continuations, comment lines inside continuations, heredocs), each with a map from its
//!   logical text back to the source bytes.
//! - [`model`]: instructions -> stages, `--flag` options and `--mount` option lists with the byte
//!   span of every option, so that a rewrite touches only those bytes.
//! - [`rewrite`]: the cache-mount `sharing=` policy as pure text -> text functions, and the record
//!   of what a rollback changed that makes its undo exact.
//! - [`lint`]: the static cache-policy rules of `cargo xtask lint-docker`.
//!
//! Architecture invariant: the passes (lexer, model, rewrite, lint) neither read nor write files
//! nor print. The file I/O of this module is two helpers used by several commands: finding the
//! Dockerfiles of a directory ([`dockerfiles`]) and [`copy_with_sharing`]; `cmd/policy.rs` prints.

pub mod lexer;
pub mod lint;
pub mod model;
pub mod rewrite;

pub use lint::{lint, workspace_rust_version, Finding, LintContext};
pub use rewrite::{copy_with_sharing, locked_mounts, restore, rollback, Record, Rewrite, Sharing};

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};

use crate::util::UsageError;

/// A Dockerfile that cannot be parsed, or a mount that cannot be rewritten, at a 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl ParseError {
    pub fn new(line: usize, message: impl Into<String>) -> ParseError {
        ParseError {
            line,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// The Dockerfiles to work on: the given paths (a directory meaning its `Dockerfile*` files), or
/// every `Dockerfile*` file of `<root>/docker/`.
pub fn dockerfiles(root: &Path, paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    if paths.is_empty() {
        let dir = root.join("docker");
        let files = dockerfiles_in(&dir)?;
        if files.is_empty() {
            bail!("no Dockerfile* files in {}", dir.display());
        }
        return Ok(files);
    }
    let mut files = Vec::new();
    for path in paths {
        let meta = match fs::metadata(path) {
            Ok(meta) => meta,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(
                    UsageError(format!("{}: no such file or directory", path.display())).into(),
                )
            }
            Err(err) => bail!("{}: {err}", path.display()),
        };
        if meta.is_dir() {
            let found = dockerfiles_in(path)?;
            if found.is_empty() {
                return Err(UsageError(format!(
                    "{}: no Dockerfile* files in this directory, nothing to check",
                    path.display()
                ))
                .into());
            }
            files.extend(found);
        } else if meta.is_file() {
            files.push(path.clone());
        } else {
            return Err(UsageError(format!(
                "{}: not a regular file (a FIFO, socket or device?); name Dockerfiles or directories",
                path.display()
            ))
            .into());
        }
    }
    // the same file named twice, through a directory and by name, or through a symlink: once
    let mut seen = std::collections::HashSet::new();
    files.retain(|path| seen.insert(fs::canonicalize(path).unwrap_or_else(|_| path.clone())));
    Ok(files)
}

fn dockerfiles_in(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in
        fs::read_dir(dir).with_context(|| format!("cannot read the directory {}", dir.display()))?
    {
        let path = entry
            .with_context(|| format!("cannot read the directory {}", dir.display()))?
            .path();
        if path.is_file() && is_dockerfile_name(&path) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

pub fn is_dockerfile_name(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    name.starts_with("Dockerfile") && !name.ends_with(".dockerignore")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerfile_names() {
        assert!(is_dockerfile_name(Path::new("docker/Dockerfile.optimized")));
        assert!(is_dockerfile_name(Path::new("Dockerfile")));
        assert!(!is_dockerfile_name(Path::new(
            "docker/Dockerfile.optimized.dockerignore"
        )));
        assert!(!is_dockerfile_name(Path::new("docker/README.md")));
    }
}
