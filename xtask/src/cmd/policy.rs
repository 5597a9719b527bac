//! `rollback-locked`, `restore-shared` and `lint-docker`: the cache-mount policy of docker/.
//!
//! The files read: the paths given on the command line (a directory stands for the files named
//! `Dockerfile*` in it), else every `Dockerfile*` file under `<root>/docker/`; names ending in
//! `.dockerignore` are not Dockerfiles. Paths are printed relative to the workspace root.
//!
//! `rollback-locked` sets `sharing=locked` on every `--mount=type=cache` (of `RUN` and
//! `ONBUILD RUN`) and records, in `.<name>.xtask-rollback.json` beside each Dockerfile, every
//! `--mount=...` word it changed, before and after (a file whose author locked a mount gets a
//! record too, maybe empty). `restore-shared` puts back exactly the recorded words and removes
//! the record, so the round trip is byte-exact on any Dockerfile: a mount its author locked stays
//! locked, one without `sharing=` gets none, `sharing=private` comes back `private`. Without a
//! record it does not guess: a locked cache mount in a file without one is an error naming the
//! line (and `--check` fails on it); a recorded mount edited since the rollback is an error too.
//! `restore-shared --check` exits 1 when a record has something to put back.
//!
//! Every file is read, parsed and checked before any is written: a file that cannot be read, a
//! `--mount` that cannot be parsed, an unknown `sharing=` value, a read-only, immutable or
//! append-only file, or a read-only directory stops the command with `file:line` (or `file`) and
//! exit 1, and no file changes. A path given on the command line that does not exist, is not a
//! regular file or directory (a FIFO would block), or is a directory without `Dockerfile*`
//! files, is a usage error (exit 2); a file named twice (by name, through its directory or a
//! symlink) counts once. Writes are all-or-nothing across files: the originals are kept as hard
//! links, every new text staged in a temp file beside its file (its permissions and, on Unix,
//! owner kept) and fsynced, then renamed over; a failed rename undoes the renames already done,
//! and the error says which files are in which state. Temp files left by a killed run are removed
//! by the next one, which says so.
//!
//! `lint-docker` compares `RUST_VERSION` with the rust-version of the workspace that contains
//! each Dockerfile (the nearest Cargo.toml above it with a `[workspace]` table).
//!
//! Exit codes: `--check` exits 1 when a file is not in the requested mode; `lint-docker` exits 1
//! on any finding or a file it could not check (`--json` lists those under `errors`).
//!
//! Longer than 500 lines: three commands on one all-or-nothing write path (stage, check, rename,
//! undo), whose safety depends on the three sharing it; the rewrites and rules themselves live in
//! `dockerfile/`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::dockerfile::rewrite::RecordedMount;
use crate::dockerfile::{
    self, dockerfiles, lint::RULES, Finding, LintContext, Record, Rewrite, Sharing,
};
use crate::{flags, util::Status};

pub fn rollback_locked(root: &Path, args: flags::RewriteArgs) -> anyhow::Result<Status> {
    rewrite_command(root, args, Sharing::Locked)
}

pub fn restore_shared(root: &Path, args: flags::RewriteArgs) -> anyhow::Result<Status> {
    rewrite_command(root, args, Sharing::Shared)
}

pub fn lint_docker(root: &Path, args: flags::LintArgs) -> anyhow::Result<Status> {
    let files = dockerfiles(root, &args.paths)?;
    let mut workspaces = WorkspaceVersions::default();
    let mut report = Vec::new();
    let mut errors = Vec::new();
    for path in &files {
        let name = display(root, path);
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) => {
                errors.push(FileError {
                    file: name,
                    line: None,
                    message: format!("cannot read: {err}"),
                });
                continue;
            }
        };
        let ctx = match workspaces.of(path) {
            Ok(rust_version) => LintContext { rust_version },
            Err(err) => {
                errors.push(FileError {
                    file: name,
                    line: None,
                    message: format!("{err:#}"),
                });
                continue;
            }
        };
        match dockerfile::lint(&text, &ctx) {
            Ok(findings) => report.extend(findings.into_iter().map(|f| FileFinding::new(&name, f))),
            Err(err) => errors.push(FileError {
                file: name,
                line: Some(err.line),
                message: err.message,
            }),
        }
    }
    if !errors.is_empty() && !args.json {
        let lines: Vec<String> = errors.iter().map(FileError::to_string).collect();
        bail!("{}", lines.join("\n"));
    }
    if args.json {
        let json = JsonReport {
            files: files.iter().map(|p| display(root, p)).collect(),
            rules: RULES,
            findings: &report,
            errors: &errors,
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&json).context("cannot serialize the findings")?
        );
        return Ok(Status::from_ok(report.is_empty() && errors.is_empty()));
    }
    for f in &report {
        println!(
            "{}:{}: {}: {}\n  fix: {}",
            f.file, f.line, f.id, f.message, f.fix
        );
    }
    if report.is_empty() {
        println!(
            "lint-docker: {} Dockerfile(s) checked, no findings",
            files.len()
        );
        return Ok(Status::Ok);
    }
    let failing: std::collections::BTreeSet<&str> =
        report.iter().map(|f| f.file.as_str()).collect();
    println!(
        "lint-docker: {} finding(s) in {} of {} Dockerfile(s)",
        report.len(),
        failing.len(),
        files.len()
    );
    Ok(Status::Failed)
}

/// A finding with the file it is in, as `--json` prints it.
#[derive(Debug, Serialize)]
struct FileFinding {
    id: &'static str,
    file: String,
    line: usize,
    message: String,
    fix: String,
}

impl FileFinding {
    fn new(file: &str, f: Finding) -> FileFinding {
        FileFinding {
            id: f.id,
            file: file.to_string(),
            line: f.line,
            message: f.message,
            fix: f.fix,
        }
    }
}

#[derive(Serialize)]
struct JsonReport<'a> {
    files: Vec<String>,
    rules: &'static [&'static str],
    findings: &'a [FileFinding],
    /// Files that could not be read or parsed: nothing was checked in them.
    errors: &'a [FileError],
}

/// A file `lint-docker` could not check.
#[derive(Debug, Serialize)]
struct FileError {
    file: String,
    line: Option<usize>,
    message: String,
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// The `workspace.package.rust-version` of the workspace that contains a Dockerfile: the
/// nearest directory above it whose Cargo.toml has a `[workspace]` table (None when there is
/// none, or it declares no rust-version: the rule is then skipped). Cached per manifest.
#[derive(Default)]
struct WorkspaceVersions(std::collections::HashMap<PathBuf, Option<String>>);

impl WorkspaceVersions {
    fn of(&mut self, dockerfile: &Path) -> anyhow::Result<Option<String>> {
        let canonical = fs::canonicalize(dockerfile)
            .with_context(|| format!("cannot resolve {}", dockerfile.display()))?;
        for dir in canonical.ancestors().skip(1) {
            let manifest = dir.join("Cargo.toml");
            if let Some(version) = self.0.get(&manifest) {
                return Ok(version.clone());
            }
            let text = match fs::read_to_string(&manifest) {
                Ok(text) => text,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => bail!("cannot read {}: {err}", manifest.display()),
            };
            let is_workspace = text.lines().any(|l| {
                let l = l.trim();
                l == "[workspace]" || l.starts_with("[workspace.")
            });
            if !is_workspace {
                continue;
            }
            let version = dockerfile::workspace_rust_version(&text);
            self.0.insert(manifest, version.clone());
            return Ok(version);
        }
        Ok(None)
    }
}

/// One file to rewrite: where it is, how it is named in messages, its text and what changes.
struct Planned {
    path: PathBuf,
    name: String,
    before: String,
    after: String,
    /// `rollback-locked`: every cache mount's sharing before the rewrite.
    rewrite: Option<Rewrite>,
    /// `restore-shared`: the recorded mounts put back, and how many were already as before.
    restored: Option<(Vec<RecordedMount>, usize)>,
    record_path: PathBuf,
    record_name: String,
    /// The record file after the command: Some(text) to write, None to remove (if present).
    record: Option<String>,
    record_existed: bool,
}

fn rewrite_command(root: &Path, args: flags::RewriteArgs, mode: Sharing) -> anyhow::Result<Status> {
    let files = dockerfiles(root, &args.paths)?;
    let mut planned = Vec::new();
    let mut errors = Vec::new();
    let mut refused = Vec::new();
    for path in files {
        let name = display(root, &path);
        match plan_file(root, &path, &name, mode) {
            Ok(Ok(p)) => planned.push(p),
            Ok(Err(refusal)) => refused.push(refusal),
            Err(err) => errors.push(format!("{err:#}")),
        }
    }
    if !errors.is_empty() {
        bail!("{}\nno file was changed", errors.join("\n"));
    }
    if args.check {
        for line in &refused {
            println!("{line}");
        }
        return Ok(Status::from_ok(check(&planned, mode) && refused.is_empty()));
    }
    if !refused.is_empty() {
        bail!("{}\nno file was changed", refused.join("\n"));
    }
    if args.dry_run {
        for p in &planned {
            print!("{}", unified_diff(&p.name, &p.before, &p.after));
        }
        for p in &planned {
            println!("{} (dry run, nothing written)", summary(p, mode));
        }
        return Ok(Status::Ok);
    }
    let mut ops = Vec::new();
    for p in &planned {
        if p.after != p.before {
            ops.push(Op {
                target: p.path.clone(),
                name: p.name.clone(),
                new: Some(p.after.clone()),
            });
        }
        if p.record.is_some() || p.record_existed {
            ops.push(Op {
                target: p.record_path.clone(),
                name: p.record_name.clone(),
                new: p.record.clone(),
            });
        }
    }
    ops.retain(|op| match &op.new {
        Some(text) => fs::read_to_string(&op.target).ok().as_ref() != Some(text),
        None => true,
    });
    write_all(&ops)?;
    for p in &planned {
        println!("{}", summary(p, mode));
    }
    Ok(Status::Ok)
}

/// Reads one Dockerfile (and its rollback record) and computes what the command does to it.
/// The inner Err is `restore-shared`'s refusal to guess (locked mounts and no record).
fn plan_file(
    root: &Path,
    path: &Path,
    name: &str,
    mode: Sharing,
) -> anyhow::Result<Result<Planned, String>> {
    let before =
        fs::read_to_string(path).map_err(|err| anyhow::anyhow!("{name}: cannot read: {err}"))?;
    let canonical = fs::canonicalize(path)
        .map_err(|err| anyhow::anyhow!("{name}: cannot resolve the path: {err}"))?;
    let record_path = record_path(&canonical);
    let record_name = display(root, &record_path);
    let record = match fs::read_to_string(&record_path) {
        Ok(text) => Some(serde_json::from_str::<Record>(&text).map_err(|err| {
            anyhow::anyhow!("{record_name}: not a rollback record ({err}); it belongs to {name}: fix or delete it")
        })?),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => bail!("{record_name}: cannot read: {err}"),
    };
    let at = |err: dockerfile::ParseError| anyhow::anyhow!("{name}:{}: {}", err.line, err.message);
    let record_existed = record.is_some();
    let mut planned = Planned {
        path: canonical,
        name: name.to_string(),
        after: before.clone(),
        before,
        rewrite: None,
        restored: None,
        record_path,
        record_name,
        record: None,
        record_existed,
    };
    if mode == Sharing::Locked {
        let (rewrite, new_record) =
            dockerfile::rollback(&planned.before, record.as_ref()).map_err(at)?;
        planned.after = rewrite.text.clone();
        // a record also for a file whose author locked mounts: restore-shared then knows that
        // rollback-locked saw them and left them, instead of refusing to guess
        let author_locked = rewrite
            .mounts
            .iter()
            .any(|m| m.before == Some(Sharing::Locked));
        planned.rewrite = Some(rewrite);
        if !new_record.mounts.is_empty() || author_locked {
            planned.record = Some(
                serde_json::to_string_pretty(&new_record).context("cannot serialize a record")?
                    + "\n",
            );
        }
        return Ok(Ok(planned));
    }
    let Some(record) = record else {
        let locked = dockerfile::locked_mounts(&planned.before).map_err(at)?;
        if let Some(m) = locked.first() {
            return Ok(Err(format!(
                "{name}:{}: cache mount {} is sharing=locked and no rollback record ({}) says rollback-locked set it: restore-shared does not guess; if rollback-locked set it, write its sharing= back by hand, and if the file's author locked it, leave it and this file out",
                m.line,
                m.target.as_deref().unwrap_or("(no target)"),
                planned.record_name
            )));
        }
        planned.restored = Some((Vec::new(), 0));
        return Ok(Ok(planned));
    };
    let restore = dockerfile::restore(&planned.before, &record).map_err(at)?;
    planned.after = restore.text;
    planned.restored = Some((restore.restored, restore.already));
    Ok(Ok(planned))
}

/// The rollback record of a Dockerfile: `.<name>.xtask-rollback.json` beside it.
fn record_path(dockerfile: &Path) -> PathBuf {
    let name = dockerfile
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dockerfile.with_file_name(format!(".{name}.xtask-rollback.json"))
}

/// `--check`: would the command change nothing? Prints what it would change.
fn check(planned: &[Planned], mode: Sharing) -> bool {
    let mut ok = true;
    for p in planned {
        if let Some((restored, _)) = &p.restored {
            if restored.is_empty() {
                println!("{}", summary(p, mode));
                continue;
            }
            ok = false;
            for m in restored {
                println!(
                    "{}:{}: cache mount {} is as rollback-locked left it ({}): restore-shared puts back `{}`",
                    p.name,
                    m.line,
                    m.target.as_deref().unwrap_or("(no target)"),
                    p.record_name,
                    m.before
                );
            }
            continue;
        }
        let Some(rewrite) = &p.rewrite else { continue };
        let off: Vec<_> = rewrite.mounts.iter().filter(|m| m.changed).collect();
        if off.is_empty() {
            println!("{}: {}", p.name, already(p, mode));
            continue;
        }
        ok = false;
        for m in off {
            let before = m
                .before
                .map_or("absent (shared by default)".to_string(), |s| s.to_string());
            println!(
                "{}:{}: cache mount {} has sharing={before}, not {mode}",
                p.name,
                m.line,
                m.target.as_deref().unwrap_or("(no target)")
            );
        }
    }
    if !ok {
        let fix = if mode == Sharing::Locked {
            "rollback-locked"
        } else {
            "restore-shared"
        };
        println!("run `cargo xtask {fix}` to fix");
    }
    ok
}

fn summary(p: &Planned, mode: Sharing) -> String {
    if let Some((restored, already)) = &p.restored {
        return match (restored.len(), p.record_existed) {
            (_, false) => format!("{}: nothing to restore (no rollback record, no locked cache mount)", p.name),
            (0, true) => format!(
                "{}: already as before rollback-locked ({already} recorded cache mount(s)); {} removed",
                p.name, p.record_name
            ),
            (1, true) => format!("{}: 1 cache mount restored as written before rollback-locked", p.name),
            (n, true) => format!("{}: {n} cache mounts restored as written before rollback-locked", p.name),
        };
    }
    let changed = p.rewrite.as_ref().map_or(0, |r| r.changed);
    match changed {
        0 => format!("{}: {}", p.name, already(p, mode)),
        1 => format!("{}: 1 cache mount -> {mode}", p.name),
        n => format!("{}: {n} cache mounts -> {mode}", p.name),
    }
}

fn already(p: &Planned, mode: Sharing) -> String {
    match p.rewrite.as_ref().map_or(0, |r| r.mounts.len()) {
        0 => "unchanged (no cache mounts)".to_string(),
        1 => format!("already {mode} (1 cache mount)"),
        n => format!("already {mode} ({n} cache mounts)"),
    }
}

/// One file of an all-or-nothing write: its new text, or None to remove it.
struct Op {
    target: PathBuf,
    name: String,
    new: Option<String>,
}

/// Writes every file or none.
///
/// 1. Leftover temp files of an interrupted run (whose pid is gone) are removed, and said so.
/// 2. Every existing file is checked: not read-only, can be opened for writing (an immutable
///    or append-only file cannot), and kept as a hard link `.<name>.xtask-<pid>.orig`.
/// 3. Every new text is staged in `.<name>.xtask-<pid>.tmp` beside its file (permissions and
///    owner of the original), fsynced.
/// 4. Only then the temp files are renamed over the originals (removals are renames too, to the
///    kept original). On a failure the changes already made are undone from the kept originals,
///    and the error says which files are in which state.
fn write_all(ops: &[Op]) -> anyhow::Result<()> {
    let pid = std::process::id();
    let dirs: std::collections::BTreeSet<PathBuf> = ops
        .iter()
        .filter_map(|op| op.target.parent().map(Path::to_path_buf))
        .collect();
    for dir in &dirs {
        remove_leftovers(dir, pid);
    }
    for op in ops {
        preflight(op)?;
    }
    let mut kept: Vec<Option<PathBuf>> = Vec::new();
    let mut staged: Vec<Option<PathBuf>> = Vec::new();
    let cleanup = |kept: &[Option<PathBuf>], staged: &[Option<PathBuf>]| {
        for path in kept.iter().chain(staged).flatten() {
            fs::remove_file(path).ok();
        }
    };
    for op in ops {
        let keep = match op.target.exists() {
            true => match keep_original(op, pid) {
                Ok(path) => Some(path),
                Err(err) => {
                    cleanup(&kept, &staged);
                    return Err(err.context("no file was changed"));
                }
            },
            false => None,
        };
        kept.push(keep);
        let stage = match &op.new {
            Some(text) => match stage(&op.target, &op.name, text, pid) {
                Ok(tmp) => Some(tmp),
                Err(err) => {
                    cleanup(&kept, &staged);
                    return Err(err.context("no file was changed"));
                }
            },
            None => None,
        };
        staged.push(stage);
    }
    let fail_at: Option<usize> = std::env::var("XTASK_TEST_FAIL_RENAME")
        .ok()
        .and_then(|n| n.parse().ok());
    for (i, op) in ops.iter().enumerate() {
        let result = if fail_at == Some(i + 1) {
            Err(std::io::Error::other(
                "failure injected by XTASK_TEST_FAIL_RENAME",
            ))
        } else {
            match &staged[i] {
                Some(tmp) => fs::rename(tmp, &op.target),
                None => fs::remove_file(&op.target),
            }
        };
        let Err(err) = result else { continue };
        bail!("{}", undo(ops, i, err, &kept, &staged));
    }
    for path in kept.iter().flatten() {
        fs::remove_file(path).ok();
    }
    for dir in &dirs {
        if let Ok(dir) = fs::File::open(dir) {
            dir.sync_all().ok();
        }
    }
    Ok(())
}

/// After the rename of `ops[i]` failed with `err`: puts the files already replaced back from
/// their kept originals, removes what was kept and staged, and says what happened, a line each.
fn undo(
    ops: &[Op],
    i: usize,
    err: std::io::Error,
    kept: &[Option<PathBuf>],
    staged: &[Option<PathBuf>],
) -> String {
    let op = &ops[i];
    let mut lines = vec![format!("{}: cannot replace it: {err}", op.name)];
    let mut put_back = Vec::new();
    for j in (0..i).rev() {
        let undo = match &kept[j] {
            Some(orig) => fs::rename(orig, &ops[j].target),
            None => fs::remove_file(&ops[j].target),
        };
        match undo {
            Ok(()) => put_back.push(ops[j].name.clone()),
            Err(undo_err) => {
                lines.push(format!(
                    "{}: CHANGED and could not be put back ({undo_err}); its original is kept at {}",
                    ops[j].name,
                    kept[j].as_deref().map_or("(none: it was new)".to_string(), |p| p.display().to_string())
                ));
            }
        }
    }
    for (j, path) in kept.iter().enumerate() {
        let undone = j >= i || put_back.contains(&ops[j].name);
        if let (true, Some(path)) = (undone, path) {
            fs::remove_file(path).ok();
        }
    }
    for path in staged.iter().skip(i).flatten() {
        fs::remove_file(path).ok();
    }
    if lines.len() == 1 {
        if put_back.is_empty() {
            lines.push("no file was changed".to_string());
        } else {
            put_back.reverse();
            lines.push(format!(
                "the files already replaced were put back ({}): no file was changed",
                put_back.join(", ")
            ));
        }
    }
    lines.join("\n")
}

/// Refuses a file that the write would fail on, before anything is written.
fn preflight(op: &Op) -> anyhow::Result<()> {
    let name = &op.name;
    let dir = op
        .target
        .parent()
        .context("a file has a parent directory")?;
    let dir_meta = fs::metadata(dir)
        .with_context(|| format!("{name}: cannot read its directory's metadata"))?;
    if dir_meta.permissions().readonly() {
        bail!(
            "{name}: its directory {} is read-only\nno file was changed",
            dir.display()
        );
    }
    let meta = match fs::metadata(&op.target) {
        Ok(meta) => meta,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => bail!("{name}: cannot read its metadata: {err}\nno file was changed"),
    };
    if meta.permissions().readonly() {
        bail!("{name}: the file is read-only\nno file was changed");
    }
    if let Err(err) = fs::OpenOptions::new().write(true).open(&op.target) {
        bail!(
            "{name}: cannot be opened for writing ({err}); an immutable or append-only file (lsattr shows i or a) must be released first (chattr -i)\nno file was changed"
        );
    }
    Ok(())
}

/// Keeps the original as a hard link beside it, so that a rename over it can be undone.
fn keep_original(op: &Op, pid: u32) -> anyhow::Result<PathBuf> {
    let path = sibling(&op.target, pid, "orig")?;
    fs::remove_file(&path).ok();
    fs::hard_link(&op.target, &path).with_context(|| {
        format!(
            "{}: cannot keep the original as {}",
            op.name,
            path.display()
        )
    })?;
    Ok(path)
}

/// `.<name>.xtask-<pid>.<ext>` beside `target`.
fn sibling(target: &Path, pid: u32, ext: &str) -> anyhow::Result<PathBuf> {
    let file_name = target
        .file_name()
        .context("a file has a name")?
        .to_string_lossy();
    Ok(target.with_file_name(format!(".{file_name}.xtask-{pid}.{ext}")))
}

/// Removes `.<name>.xtask-<pid>.tmp` files of runs that are no longer alive, and says so;
/// reports (and keeps) the originals such a run kept.
fn remove_leftovers(dir: &Path, own_pid: u32) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some((pid, ext)) = leftover(&file_name) else {
            continue;
        };
        if pid != own_pid && process_alive(pid) {
            continue;
        }
        let path = entry.path();
        if ext == "tmp" {
            if fs::remove_file(&path).is_ok() {
                println!(
                    "removed {}: a temp file left by an interrupted run (pid {pid}, no longer running)",
                    path.display()
                );
            }
        } else {
            println!(
                "{}: the original of a file an interrupted run (pid {pid}) was replacing, kept; compare it with that file, then delete it",
                path.display()
            );
        }
    }
}

/// `.<name>.xtask-<pid>.tmp` / `.orig` -> (pid, "tmp" | "orig").
fn leftover(file_name: &str) -> Option<(u32, &str)> {
    let rest = file_name.strip_prefix('.')?;
    let (rest, ext) = rest.rsplit_once('.')?;
    if ext != "tmp" && ext != "orig" {
        return None;
    }
    let (_, pid) = rest.rsplit_once(".xtask-")?;
    Some((pid.parse().ok()?, ext))
}

fn process_alive(pid: u32) -> bool {
    crate::proc::alive(pid)
}

/// Writes `text` to a temp file beside `target` with `target`'s permissions (when it exists)
/// and fsyncs it.
fn stage(target: &Path, name: &str, text: &str, pid: u32) -> anyhow::Result<PathBuf> {
    let meta = fs::metadata(target).ok();
    let tmp = sibling(target, pid, "tmp")?;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .with_context(|| format!("{name}: cannot create a temp file {}", tmp.display()))?;
    let written = file.write_all(text.as_bytes()).and_then(|()| match &meta {
        Some(meta) => file
            .set_permissions(meta.permissions())
            .and_then(|()| keep_owner(&tmp, meta)),
        None => Ok(()),
    });
    let written = written.and_then(|()| file.sync_all());
    if let Err(err) = written {
        fs::remove_file(&tmp).ok();
        return Err(err).with_context(|| format!("{name}: cannot write {}", tmp.display()));
    }
    Ok(tmp)
}

#[cfg(unix)]
fn keep_owner(path: &Path, meta: &fs::Metadata) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let tmp_meta = fs::metadata(path)?;
    if (tmp_meta.uid(), tmp_meta.gid()) == (meta.uid(), meta.gid()) {
        return Ok(());
    }
    std::os::unix::fs::chown(path, Some(meta.uid()), Some(meta.gid()))
}

#[cfg(not(unix))]
fn keep_owner(_path: &Path, _meta: &fs::Metadata) -> std::io::Result<()> {
    Ok(())
}

/// `path` relative to the workspace root when it is inside it, else as given.
fn display(root: &Path, path: &Path) -> String {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    };
    let canonical_root = fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let canonical = absolute
        .parent()
        .and_then(|dir| fs::canonicalize(dir).ok())
        .and_then(|dir| absolute.file_name().map(|n| dir.join(n)))
        .unwrap_or(absolute);
    match canonical.strip_prefix(&canonical_root) {
        Ok(relative) => relative.display().to_string(),
        Err(_) => path.display().to_string(),
    }
}

/// A unified diff of two texts whose lines correspond one to one (a sharing rewrite never adds
/// or removes a line); 3 lines of context.
fn unified_diff(name: &str, before: &str, after: &str) -> String {
    if before == after {
        return String::new();
    }
    let old: Vec<&str> = before.split_inclusive('\n').collect();
    let new: Vec<&str> = after.split_inclusive('\n').collect();
    let mut out = format!("--- a/{name}\n+++ b/{name}\n");
    if old.len() != new.len() {
        out.push_str(&format!("@@ -1,{} +1,{} @@\n", old.len(), new.len()));
        old.iter().for_each(|l| push_line(&mut out, '-', l));
        new.iter().for_each(|l| push_line(&mut out, '+', l));
        return out;
    }
    const CONTEXT: usize = 3;
    let changed: Vec<usize> = (0..old.len()).filter(|&i| old[i] != new[i]).collect();
    let mut hunks: Vec<(usize, usize)> = Vec::new();
    for &i in &changed {
        let start = i.saturating_sub(CONTEXT);
        let end = (i + CONTEXT + 1).min(old.len());
        match hunks.last_mut() {
            Some(last) if start <= last.1 => last.1 = end,
            _ => hunks.push((start, end)),
        }
    }
    for (start, end) in hunks {
        let len = end - start;
        out.push_str(&format!(
            "@@ -{},{len} +{},{len} @@\n",
            start + 1,
            start + 1
        ));
        let mut i = start;
        while i < end {
            if old[i] == new[i] {
                push_line(&mut out, ' ', old[i]);
                i += 1;
                continue;
            }
            let run_end = (i..end).find(|&j| old[j] == new[j]).unwrap_or(end);
            old[i..run_end]
                .iter()
                .for_each(|l| push_line(&mut out, '-', l));
            new[i..run_end]
                .iter()
                .for_each(|l| push_line(&mut out, '+', l));
            i = run_end;
        }
    }
    out
}

fn push_line(out: &mut String, sign: char, line: &str) {
    out.push(sign);
    out.push_str(line);
    if !line.ends_with('\n') {
        out.push_str("\n\\ No newline at end of file\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unified_diff_groups_changed_lines_into_hunks() {
        let before = "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\n";
        let after = before
            .replace("b\n", "B\n")
            .replace("c\n", "C\n")
            .replace("k\n", "K\n");
        let diff = unified_diff("x", before, &after);
        assert_eq!(
            diff,
            "--- a/x\n+++ b/x\n@@ -1,6 +1,6 @@\n a\n-b\n-c\n+B\n+C\n d\n e\n f\n@@ -8,4 +8,4 @@\n h\n i\n j\n-k\n+K\n"
        );
        assert_eq!(unified_diff("x", "a\n", "a\n"), "");
    }
}
