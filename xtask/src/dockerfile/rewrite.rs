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
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::model::parse;
use anyhow::Context;

use super::{is_dockerfile_name, ParseError};

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

/// Writes a copy of every Dockerfile of `src` into `dst` (created if needed) with every cache
/// mount set to `mode`, and copies the directory's other regular files unchanged; the source is
/// not touched. Returns the rewritten files' names and results. For `verify-parallel`'s
/// temporary locked copy of docker/.
pub fn copy_with_sharing(
    src: &Path,
    dst: &Path,
    mode: Sharing,
) -> anyhow::Result<Vec<(PathBuf, Rewrite)>> {
    let mut entries: Vec<PathBuf> = fs::read_dir(src)
        .with_context(|| format!("cannot read the directory {}", src.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot read the directory {}", src.display()))?;
    entries.sort();
    let mut planned = Vec::new();
    for path in entries.iter().filter(|p| p.is_file()) {
        let name = path
            .file_name()
            .expect("a directory entry has a name")
            .to_owned();
        let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        if !is_dockerfile_name(path) {
            planned.push((name, bytes, None));
            continue;
        }
        let text =
            String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8", path.display()))?;
        let rewrite = set_sharing(&text, mode)
            .map_err(|err| anyhow::anyhow!("{}:{}: {}", path.display(), err.line, err.message))?;
        planned.push((name, rewrite.text.clone().into_bytes(), Some(rewrite)));
    }
    fs::create_dir_all(dst).with_context(|| format!("cannot create {}", dst.display()))?;
    let mut out = Vec::new();
    for (name, bytes, rewrite) in planned {
        let target = dst.join(&name);
        fs::write(&target, bytes).with_context(|| format!("cannot write {}", target.display()))?;
        if let Some(rewrite) = rewrite {
            out.push((target, rewrite));
        }
    }
    Ok(out)
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

    #[test]
    fn copy_with_sharing_rewrites_a_copy_and_leaves_the_source() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path();
        let (src, dst) = (base.join("docker"), base.join("locked"));
        fs::create_dir_all(&src).unwrap();
        let text = "FROM a\nRUN --mount=type=cache,target=/c,sharing=shared true\n";
        fs::write(src.join("Dockerfile.x"), text).unwrap();
        fs::write(src.join("Dockerfile.x.dockerignore"), "target\n").unwrap();
        let out = copy_with_sharing(&src, &dst, Sharing::Locked).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].0.clone(), out[0].1.changed),
            (dst.join("Dockerfile.x"), 1)
        );
        assert_eq!(
            fs::read_to_string(dst.join("Dockerfile.x")).unwrap(),
            text.replace("shared", "locked")
        );
        assert_eq!(
            fs::read_to_string(dst.join("Dockerfile.x.dockerignore")).unwrap(),
            "target\n"
        );
        assert_eq!(fs::read_to_string(src.join("Dockerfile.x")).unwrap(), text);
    }
}
