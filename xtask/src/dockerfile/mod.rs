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
//! Architecture invariant: nothing in this module reads or writes files or prints; `policy.rs`
//! does the I/O.

pub mod lexer;
pub mod lint;
pub mod model;
pub mod rewrite;

pub use lint::{lint, workspace_rust_version, Finding, LintContext};
pub use rewrite::{locked_mounts, restore, rollback, set_sharing, Record, Rewrite, Sharing};

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
