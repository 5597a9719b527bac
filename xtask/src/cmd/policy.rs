//! `rollback-locked`, `restore-shared` and `lint-docker`: the cache-mount policy of docker/.
//!
//! The files read: the paths given on the command line (a directory stands for the files named
//! `Dockerfile*` in it), else every `Dockerfile*` file under `<root>/docker/`; names ending in
//! `.dockerignore` are not Dockerfiles. Paths are printed relative to the workspace root.
//!
//! `rollback-locked` sets `sharing=locked` on every `--mount=type=cache`; `restore-shared` sets
//! `sharing=shared`. A value that differs is replaced in place and a mount without `sharing=`
//! gets `,sharing=<mode>` appended, so for a file in the optimized policy (every cache mount
//! explicitly `sharing=shared`, as the project's files are) rollback then restore gives the same
//! bytes back; see [`crate::dockerfile::rewrite`] for the exact rules.
//!
//! Every file is read, parsed and checked before any is written: a file that cannot be read, a
//! `--mount` that cannot be parsed, an unknown `sharing=` value, or a read-only file or directory
//! stops the command with `file:line` (or `file`) and exit 1, and no file changes. A path given
//! on the command line that does not exist is a usage error (exit 2). Writes are atomic: a temp
//! file in the same directory, fsync, rename over the original, the original's permissions (and,
//! on Unix, owner) kept.
//!
//! Exit codes: `--check` exits 1 when a file is not in the requested mode; `lint-docker` exits 1
//! on any finding.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::dockerfile::{self, dockerfiles, lint::RULES, Finding, LintContext, Rewrite, Sharing};
use crate::{flags, Status};

pub fn rollback_locked(root: &Path, args: flags::RewriteArgs) -> anyhow::Result<Status> {
    rewrite_command(root, args, Sharing::Locked)
}

pub fn restore_shared(root: &Path, args: flags::RewriteArgs) -> anyhow::Result<Status> {
    rewrite_command(root, args, Sharing::Shared)
}

pub fn lint_docker(root: &Path, args: flags::LintArgs) -> anyhow::Result<Status> {
    let files = dockerfiles(root, &args.paths)?;
    let ctx = LintContext {
        rust_version: Some(crate::workspace::rust_version(root)?),
    };
    let mut report = Vec::new();
    let mut errors = Vec::new();
    for path in &files {
        let name = display(root, path);
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) => {
                errors.push(format!("{name}: cannot read: {err}"));
                continue;
            }
        };
        match dockerfile::lint(&text, &ctx) {
            Ok(findings) => report.extend(findings.into_iter().map(|f| FileFinding::new(&name, f))),
            Err(err) => errors.push(format!("{name}:{}: {}", err.line, err.message)),
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    if args.json {
        let json = JsonReport {
            files: files.iter().map(|p| display(root, p)).collect(),
            rules: RULES,
            findings: &report,
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&json).context("cannot serialize the findings")?
        );
        return Ok(Status::from_ok(report.is_empty()));
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
}

/// One file to rewrite: where it is, how it is named in messages, its text and the rewrite.
struct Planned {
    path: PathBuf,
    name: String,
    before: String,
    rewrite: Rewrite,
}

fn rewrite_command(root: &Path, args: flags::RewriteArgs, mode: Sharing) -> anyhow::Result<Status> {
    let files = dockerfiles(root, &args.paths)?;
    let mut planned = Vec::new();
    let mut errors = Vec::new();
    for path in files {
        let name = display(root, &path);
        let before = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) => {
                errors.push(format!("{name}: cannot read: {err}"));
                continue;
            }
        };
        match dockerfile::set_sharing(&before, mode) {
            Ok(rewrite) => planned.push(Planned {
                path,
                name,
                before,
                rewrite,
            }),
            Err(err) => errors.push(format!("{name}:{}: {}", err.line, err.message)),
        }
    }
    if !errors.is_empty() {
        bail!("{}\nno file was changed", errors.join("\n"));
    }
    if args.check {
        return Ok(check(&planned, mode));
    }
    if args.dry_run {
        for p in &planned {
            print!("{}", unified_diff(&p.name, &p.before, &p.rewrite.text));
        }
        for p in &planned {
            println!("{} (dry run, nothing written)", summary(p, mode));
        }
        return Ok(Status::Ok);
    }
    let changed: Vec<&Planned> = planned
        .iter()
        .filter(|p| p.rewrite.text != p.before)
        .collect();
    write_all(&changed)?;
    for p in &planned {
        println!("{}", summary(p, mode));
    }
    Ok(Status::Ok)
}

/// `--check`: every cache mount already in `mode`?
fn check(planned: &[Planned], mode: Sharing) -> Status {
    let mut ok = true;
    for p in planned {
        let off: Vec<_> = p.rewrite.mounts.iter().filter(|m| m.changed).collect();
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
    Status::from_ok(ok)
}

fn summary(p: &Planned, mode: Sharing) -> String {
    match p.rewrite.changed {
        0 => format!("{}: {}", p.name, already(p, mode)),
        1 => format!("{}: 1 cache mount -> {mode}", p.name),
        n => format!("{}: {n} cache mounts -> {mode}", p.name),
    }
}

fn already(p: &Planned, mode: Sharing) -> String {
    match p.rewrite.mounts.len() {
        0 => "unchanged (no cache mounts)".to_string(),
        1 => format!("already {mode} (1 cache mount)"),
        n => format!("already {mode} ({n} cache mounts)"),
    }
}

/// Writes every file or none: each is checked for writability and staged in a temp file next to
/// it first; only then are the temp files renamed over the originals.
fn write_all(files: &[&Planned]) -> anyhow::Result<()> {
    let mut staged: Vec<(PathBuf, PathBuf)> = Vec::new();
    let result: anyhow::Result<()> = files.iter().try_for_each(|p| {
        let target = fs::canonicalize(&p.path)
            .with_context(|| format!("{}: cannot resolve the path", p.name))?;
        let tmp = stage(&target, &p.name, &p.rewrite.text)?;
        staged.push((tmp, target));
        Ok(())
    });
    if let Err(err) = result {
        for (tmp, _) in &staged {
            fs::remove_file(tmp).ok();
        }
        return Err(err.context("no file was changed"));
    }
    for (tmp, target) in &staged {
        fs::rename(tmp, target).with_context(|| {
            format!("cannot replace {} with {}", target.display(), tmp.display())
        })?;
        if let Some(dir) = target.parent() {
            if let Ok(dir) = fs::File::open(dir) {
                dir.sync_all().ok();
            }
        }
    }
    Ok(())
}

/// Writes `text` to a temp file beside `target` with `target`'s permissions and fsyncs it.
fn stage(target: &Path, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let meta = fs::metadata(target).with_context(|| format!("{name}: cannot read its metadata"))?;
    if meta.permissions().readonly() {
        bail!("{name}: the file is read-only");
    }
    let dir = target.parent().context("a file has a parent directory")?;
    let dir_meta = fs::metadata(dir)
        .with_context(|| format!("{name}: cannot read its directory's metadata"))?;
    if dir_meta.permissions().readonly() {
        bail!("{name}: its directory {} is read-only", dir.display());
    }
    let file_name = target
        .file_name()
        .context("a file has a name")?
        .to_string_lossy();
    let tmp = dir.join(format!(".{file_name}.xtask-{}.tmp", std::process::id()));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .with_context(|| format!("{name}: cannot create a temp file in {}", dir.display()))?;
    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| file.set_permissions(meta.permissions()))
        .and_then(|()| keep_owner(&tmp, &meta))
        .and_then(|()| file.sync_all());
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
