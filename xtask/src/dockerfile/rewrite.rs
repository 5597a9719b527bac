//! The cache-mount `sharing=` policy as a pure text -> text function.
//!
//! [`set_sharing`] sets `sharing=<mode>` on every `--mount=type=cache` of every `RUN` and changes
//! no other byte:
//! - a mount whose `sharing=` value differs gets that value replaced in place (the bytes of the
//!   value only; quotes around it are kept);
//! - a mount without a `sharing=` option gets `,sharing=<mode>` appended after its last option.
//!
//! So for a file in the optimized policy (every cache mount explicitly `sharing=shared`, like the
//! project's docker/ files), `rollback-locked` (mode `locked`) then `restore-shared` (mode
//! `shared`) gives the file back byte for byte. A mount that had no `sharing=` comes back as
//! `,sharing=shared` (BuildKit's default, now explicit), and one that was `sharing=private`
//! comes back `shared`: those are not byte-identical round trips, which is why `lint-docker`
//! asks for an explicit `sharing=` on every cache mount.
//!
//! `shared`, `private` and `locked` are the valid values (case-insensitive, as in BuildKit); any
//! other value is an error, as is `sharing=` on a mount that is not `type=cache`. Heredoc bodies
//! are not instructions: a `--mount` written inside one is left alone.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use super::model::parse;
use super::ParseError;

/// BuildKit's cache-mount sharing modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sharing {
    Shared,
    Private,
    Locked,
}

/// The result of [`set_sharing`]: the new text, how many cache mounts changed, and every cache
/// mount's line and sharing before the rewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    pub text: String,
    pub changed: usize,
    pub mounts: Vec<MountSharing>,
}

/// One cache mount seen by [`set_sharing`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSharing {
    /// 1-based line of the `--mount` flag.
    pub line: usize,
    pub target: Option<String>,
    /// The effective `sharing=` before the rewrite; None when absent (BuildKit then uses shared).
    pub before: Option<Sharing>,
    pub changed: bool,
}

/// Sets `sharing=<mode>` on every cache mount of `text`; see the module docs for what changes.
pub fn set_sharing(text: &str, mode: Sharing) -> Result<Rewrite, ParseError> {
    let dockerfile = parse(text)?;
    let mut edits: Vec<(Range<usize>, String)> = Vec::new();
    let mut mounts = Vec::new();
    for ins in &dockerfile.instructions {
        for mount in &ins.mounts {
            if !mount.is_cache() {
                if let Some(option) = mount.sharing_options().next() {
                    return Err(ParseError::new(
                        option.line,
                        format!(
                            "sharing= is only valid on a type=cache mount, not type={}",
                            mount.kind()
                        ),
                    ));
                }
                continue;
            }
            let mut before = None;
            let mut changed = false;
            for option in mount.sharing_options() {
                let value = option.value.as_deref().unwrap_or("");
                let current: Sharing = value.parse().map_err(|_| {
                    ParseError::new(
                        option.line,
                        format!(
                            "unknown sharing value `{value}` (expected shared, private or locked)"
                        ),
                    )
                })?;
                before = Some(current);
                if current == mode {
                    continue;
                }
                let Some(span) = option.value_span.clone() else {
                    return Err(ParseError::new(
                        option.line,
                        format!(
                            "cannot rewrite `sharing={value}`: write the value as a plain word"
                        ),
                    ));
                };
                edits.push((span, mode.to_string()));
                changed = true;
            }
            if before.is_none() {
                edits.push((mount.end..mount.end, format!(",sharing={mode}")));
                changed = true;
            }
            mounts.push(MountSharing {
                line: mount.line,
                target: mount.target().map(str::to_string),
                before,
                changed,
            });
        }
    }
    let out = apply_edits(text, edits);
    let changed = mounts.iter().filter(|m| m.changed).count();
    Ok(Rewrite {
        text: out,
        changed,
        mounts,
    })
}

impl Sharing {
    pub fn as_str(self) -> &'static str {
        match self {
            Sharing::Shared => "shared",
            Sharing::Private => "private",
            Sharing::Locked => "locked",
        }
    }
}

impl fmt::Display for Sharing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Sharing {
    type Err = String;

    fn from_str(s: &str) -> Result<Sharing, String> {
        match s.to_ascii_lowercase().as_str() {
            "shared" => Ok(Sharing::Shared),
            "private" => Ok(Sharing::Private),
            "locked" => Ok(Sharing::Locked),
            _ => Err(format!("unknown sharing mode `{s}`")),
        }
    }
}

/// Replaces each byte range of `text` with its replacement (ranges must not overlap); every other
/// byte stays as it was.
pub fn apply_edits(text: &str, mut edits: Vec<(std::ops::Range<usize>, String)>) -> String {
    edits.sort_by_key(|(range, _)| range.start);
    let mut out = String::with_capacity(text.len() + edits.len() * 24);
    let mut at = 0;
    for (range, replacement) in &edits {
        out.push_str(&text[at..range.start]);
        out.push_str(replacement);
        at = range.end;
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIMIZED: &str = "\
FROM rust AS builder
RUN --mount=type=cache,target=/cargo-home,id=cargo-home,sharing=shared \\
    --mount=type=cache,target=/build/target,id=target-builder-${SERVICE},sharing=shared \\
    CARGO_HOME=/cargo-home cargo build
";

    #[test]
    fn rollback_flips_in_place_and_restore_gives_the_bytes_back() {
        let locked = set_sharing(OPTIMIZED, Sharing::Locked).unwrap();
        assert_eq!(locked.changed, 2);
        assert_eq!(
            locked.text,
            OPTIMIZED.replace("sharing=shared", "sharing=locked")
        );
        let again = set_sharing(&locked.text, Sharing::Locked).unwrap();
        assert_eq!(
            (again.changed, again.text.as_str()),
            (0, locked.text.as_str())
        );
        let shared = set_sharing(&locked.text, Sharing::Shared).unwrap();
        assert_eq!((shared.changed, shared.text.as_str()), (2, OPTIMIZED));
        assert_eq!(shared.mounts[0].before, Some(Sharing::Locked));
        assert_eq!(shared.mounts[1].line, 3);
    }

    #[test]
    fn absent_sharing_is_appended_after_the_last_option() {
        let src = "FROM a\nRUN --mount=type=cache,target=/x \\\n  --mount=type=bind,source=a,target=/b true\n";
        let out = set_sharing(src, Sharing::Locked).unwrap();
        assert_eq!(out.changed, 1);
        assert_eq!(
            out.text,
            src.replace("target=/x", "target=/x,sharing=locked")
        );
        let back = set_sharing(&out.text, Sharing::Shared).unwrap();
        assert_eq!(
            back.text,
            src.replace("target=/x", "target=/x,sharing=shared")
        );
    }

    #[test]
    fn quoted_values_keep_their_quotes() {
        let src = "FROM a\nRUN --mount=type=cache,target=/x,sharing=\"shared\" --mount='type=cache,target=/y' true\n";
        let out = set_sharing(src, Sharing::Locked).unwrap();
        assert_eq!(
            out.text,
            "FROM a\nRUN --mount=type=cache,target=/x,sharing=\"locked\" --mount='type=cache,target=/y',sharing=locked true\n"
        );
    }

    #[test]
    fn heredoc_bodies_and_other_instructions_are_left_alone() {
        let src = "FROM a\nRUN <<EOF\nRUN --mount=type=cache,target=/x,sharing=shared true\nEOF\nCOPY --mount=type=cache,target=/x a b\n";
        let out = set_sharing(src, Sharing::Locked).unwrap();
        assert_eq!((out.changed, out.text.as_str()), (0, src));
    }

    #[test]
    fn unknown_sharing_values_are_errors_with_their_line() {
        let err = set_sharing(
            "FROM a\nRUN --mount=type=cache,target=/x \\\n  ,sharing=exclusive true\n",
            Sharing::Shared,
        );
        // the continuation splits the flag word: `,sharing=exclusive` is the command here
        assert!(err.is_ok());
        let err = set_sharing(
            "FROM a\n\nRUN --mount=type=cache,target=/x,sharing=exclusive true\n",
            Sharing::Shared,
        )
        .unwrap_err();
        assert_eq!(err.line, 3);
        assert!(
            err.message.contains("unknown sharing value `exclusive`"),
            "{err}"
        );
        let err = set_sharing(
            "FROM a\nRUN --mount=type=bind,target=/x,sharing=locked true\n",
            Sharing::Shared,
        )
        .unwrap_err();
        assert_eq!(err.line, 2);
    }

    #[test]
    fn private_counts_as_valid_and_is_rewritten() {
        let src = "FROM a\nRUN --mount=type=cache,target=/x,sharing=private true\n";
        let out = set_sharing(src, Sharing::Private).unwrap();
        assert_eq!(out.changed, 0);
        let out = set_sharing(src, Sharing::Locked).unwrap();
        assert_eq!(out.text, src.replace("private", "locked"));
    }

    #[test]
    fn backtick_escape_continuations() {
        let src = "# escape=`\nFROM a\nRUN --mount=type=cache,target=C:\\cache,sharing=shared `\n    # comment `\n    --mount=type=cache,target=C:\\t `\n    build.exe\n";
        let out = set_sharing(src, Sharing::Locked).unwrap();
        assert_eq!(out.changed, 2);
        assert_eq!(
            out.text,
            "# escape=`\nFROM a\nRUN --mount=type=cache,target=C:\\cache,sharing=locked `\n    # comment `\n    --mount=type=cache,target=C:\\t,sharing=locked `\n    build.exe\n"
        );
    }
}
