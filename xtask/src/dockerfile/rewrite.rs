//! The cache-mount `sharing=` policy as a pure text -> text function ([`set_sharing`],
//! [`rollback`], [`restore`]); [`copy_with_sharing`], at the end, is the one function here that
//! reads and writes files (a directory's rewritten copy, for verify-parallel).
//!
//! [`set_sharing`] sets `sharing=<mode>` on every `--mount=type=cache` of every `RUN` and changes
//! no other byte:
//! - a mount whose `sharing=` value differs gets that value replaced in place (the bytes of the
//!   value only; quotes around it are kept);
//! - a mount without a `sharing=` option gets `,sharing=<mode>` appended after its last option.
//!
//! [`rollback`] is `set_sharing(locked)` plus a [`Record`] of every `--mount=...` word it changed,
//! before and after; [`restore`] puts back exactly the recorded words, so `rollback-locked` then
//! `restore-shared` gives any file back byte for byte: a mount its author locked stays locked
//! (rollback did not change it), a mount without `sharing=` gets none back, `sharing=private`
//! comes back `private`. Without a record nothing is guessed: see `policy.rs`.
//!
//! `shared`, `private` and `locked` are the valid values (case-insensitive, as in BuildKit); any
//! other value is an error, as is `sharing=` on a mount that is not `type=cache`. Heredoc bodies
//! are not instructions: a `--mount` written inside one is left alone.

use std::fmt;
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

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
    let plans = plan(text, mode)?;
    let mut edits = Vec::new();
    let mut mounts = Vec::new();
    for p in plans {
        edits.extend(p.edits);
        mounts.push(p.sharing);
    }
    let out = apply_edits(text, edits);
    let changed = mounts.iter().filter(|m| m.changed).count();
    Ok(Rewrite {
        text: out,
        changed,
        mounts,
    })
}

/// What `rollback-locked` changed in one file: for each cache mount it rewrote, the mount's
/// `--mount=...` word before and after, so that `restore-shared` can put back exactly those
/// bytes (a `sharing=locked` its author wrote stays, a mount without `sharing=` gets none, a
/// `sharing=private` comes back `private`). Kept by `policy.rs` in a file beside the Dockerfile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub mounts: Vec<RecordedMount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedMount {
    /// 0-based position among the file's cache mounts, in file order.
    pub index: usize,
    /// 1-based line of the `--mount` flag when it was rewritten.
    pub line: usize,
    pub target: Option<String>,
    /// The source bytes of the `--mount=...` word before `rollback-locked`.
    pub before: String,
    /// The same bytes as `rollback-locked` wrote them.
    pub after: String,
}

/// `rollback-locked` on one file: every cache mount to `sharing=locked` (as [`set_sharing`]), and
/// the record of what changed, merged with the `previous` record of an earlier rollback (whose
/// mounts must still read as that rollback left them).
pub fn rollback(text: &str, previous: Option<&Record>) -> Result<(Rewrite, Record), ParseError> {
    let plans = plan(text, Sharing::Locked)?;
    let mut record = previous.cloned().unwrap_or_default();
    for recorded in &record.mounts {
        let current = plans.get(recorded.index).map(|p| &text[p.span.clone()]);
        if current != Some(recorded.after.as_str()) {
            return Err(stale(text, &plans, recorded));
        }
    }
    let mut edits = Vec::new();
    let mut mounts = Vec::new();
    for (index, p) in plans.into_iter().enumerate() {
        if p.sharing.changed {
            let word = &text[p.span.clone()];
            let local = p
                .edits
                .iter()
                .map(|(r, s)| (r.start - p.span.start..r.end - p.span.start, s.clone()))
                .collect();
            record.mounts.push(RecordedMount {
                index,
                line: p.sharing.line,
                target: p.sharing.target.clone(),
                before: word.to_string(),
                after: apply_edits(word, local),
            });
        }
        edits.extend(p.edits);
        mounts.push(p.sharing);
    }
    record.mounts.sort_by_key(|m| m.index);
    let changed = mounts.iter().filter(|m| m.changed).count();
    let rewrite = Rewrite {
        text: apply_edits(text, edits),
        changed,
        mounts,
    };
    Ok((rewrite, record))
}

/// The result of [`restore`]: the new text, the recorded mounts put back, and how many recorded
/// mounts already read as they did before the rollback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restore {
    pub text: String,
    pub restored: Vec<RecordedMount>,
    pub already: usize,
}

/// `restore-shared` on one file: puts back the `--mount=...` words `record` says
/// `rollback-locked` rewrote, and nothing else. A recorded mount that reads neither as the
/// rollback left it nor as it was before is an error at its line.
pub fn restore(text: &str, record: &Record) -> Result<Restore, ParseError> {
    let plans = plan(text, Sharing::Shared)?;
    let mut edits = Vec::new();
    let mut restored = Vec::new();
    let mut already = 0;
    for recorded in &record.mounts {
        let Some(p) = plans.get(recorded.index) else {
            return Err(stale(text, &plans, recorded));
        };
        let current = &text[p.span.clone()];
        if current == recorded.before {
            already += 1;
        } else if current == recorded.after {
            edits.push((p.span.clone(), recorded.before.clone()));
            restored.push(RecordedMount {
                line: p.sharing.line,
                ..recorded.clone()
            });
        } else {
            return Err(stale(text, &plans, recorded));
        }
    }
    Ok(Restore {
        text: apply_edits(text, edits),
        restored,
        already,
    })
}

/// Every cache mount of `text` whose `sharing=` is `locked`.
pub fn locked_mounts(text: &str) -> Result<Vec<MountSharing>, ParseError> {
    Ok(plan(text, Sharing::Shared)?
        .into_iter()
        .map(|p| p.sharing)
        .filter(|m| m.before == Some(Sharing::Locked))
        .collect())
}

fn stale(text: &str, plans: &[MountPlan], recorded: &RecordedMount) -> ParseError {
    let target = recorded.target.as_deref().unwrap_or("(no target)");
    match plans.get(recorded.index) {
        Some(p) => ParseError::new(
            p.sharing.line,
            format!(
                "cache mount #{} ({target}) changed since rollback-locked: it reads `{}`, the rollback left `{}`; write it as you want it, with `{}` as it was before the rollback, and delete the rollback record",
                recorded.index + 1,
                &text[p.span.clone()],
                recorded.after,
                recorded.before
            ),
        ),
        None => ParseError::new(
            recorded.line,
            format!(
                "the rollback record names cache mount #{} ({target}) but the file now has {} cache mount(s); put back `{}` by hand and delete the rollback record",
                recorded.index + 1,
                plans.len(),
                recorded.before
            ),
        ),
    }
}

/// One cache mount and the edits that set its sharing to a mode.
struct MountPlan {
    sharing: MountSharing,
    /// Source bytes of the whole `--mount=...` word.
    span: Range<usize>,
    edits: Vec<(Range<usize>, String)>,
}

/// Every cache mount of `text` in file order (`RUN` and `ONBUILD RUN`), with the edits that set
/// its `sharing=` to `mode`.
fn plan(text: &str, mode: Sharing) -> Result<Vec<MountPlan>, ParseError> {
    let dockerfile = parse(text)?;
    let mut plans = Vec::new();
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
            let mut edits = Vec::new();
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
            }
            if before.is_none() {
                edits.push((mount.end..mount.end, format!(",sharing={mode}")));
            }
            plans.push(MountPlan {
                sharing: MountSharing {
                    line: mount.line,
                    target: mount.target().map(str::to_string),
                    before,
                    changed: !edits.is_empty(),
                },
                span: mount.span.clone(),
                edits,
            });
        }
    }
    Ok(plans)
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
