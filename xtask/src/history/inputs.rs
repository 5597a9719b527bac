//! What an image's build reads, as content digests: the build context's files (filtered by
//! `.dockerignore`, hashed in parallel), the COPY/ADD sources and bind mounts of the stages the
//! target needs, the Dockerfile, the build arguments, the base images' ids and the options that
//! change the build. Reading the Dockerfile into [`Reads`] is pure; hashing reads files.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

use anyhow::Context as _;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::{
    dockerfile::{lexer, model},
    util::hex,
};

/// Everything one image's build reads, as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Inputs {
    pub dockerfile: String,
    pub dockerfile_digest: String,
    pub target: String,
    /// The context sources the build copies or mounts, in Dockerfile order (`""` is the whole
    /// context).
    pub sources: Vec<Source>,
    pub build_args: BTreeMap<String, String>,
    /// Base image reference -> its id on the engine (`None`: not present).
    pub base_images: BTreeMap<String, Option<String>>,
    /// Digest of the other options of the build command (tag, platforms, cache import/export...).
    pub options_digest: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Source {
    pub path: String,
    pub digest: String,
    pub files: usize,
}

/// What a Dockerfile target reads, before hashing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reads {
    /// Normalized context paths (`""` for the whole context), first use first.
    pub sources: Vec<String>,
    /// Base image references, variables substituted; `scratch` excluded.
    pub base_images: Vec<String>,
}

/// The stages `target` needs (its ancestry, and every stage it copies or mounts from) and what
/// they read from the context. `build_args` are `KEY=VALUE`.
pub fn reads(text: &str, target: &str, build_args: &[String]) -> anyhow::Result<Reads> {
    Ok(reads_beside(text, target, build_args, None)?.0)
}

/// [`reads`] without following the stage `cut`: what the target reads beside it, and the paths
/// it takes from it (`COPY --from=cut SRC`, `--mount=from=cut,source=SRC`; as [`normalize`]d
/// paths in that stage's filesystem, `""` for all of it, which a stage based on `cut` takes).
pub fn reads_beside(
    text: &str,
    target: &str,
    build_args: &[String],
    cut: Option<&str>,
) -> anyhow::Result<(Reads, Vec<String>)> {
    let file = model::parse(text).map_err(|e| anyhow::anyhow!("{e}"))?;
    let overrides: BTreeMap<&str, &str> = build_args
        .iter()
        .filter_map(|a| a.split_once('='))
        .collect();
    let vars = global_vars(&file, &overrides);
    // inside stages, every build argument is visible (a superset of what ARG declares)
    let mut stage_vars = vars.clone();
    for (k, v) in &overrides {
        stage_vars.insert(k.to_string(), v.to_string());
    }
    let start = if target.is_empty() {
        file.stages.last()
    } else {
        file.stage(target)
    }
    .with_context(|| format!("no stage `{target}`"))?;
    let mut todo = vec![start.index];
    let mut seen = BTreeSet::new();
    let mut sources = Vec::new();
    let mut bases = Vec::new();
    let mut taken = Vec::new();
    let is_cut = |reference: &str| cut.is_some_and(|c| reference.eq_ignore_ascii_case(c));
    let push = |list: &mut Vec<String>, item: String| {
        if !list.contains(&item) {
            list.push(item);
        }
    };
    while let Some(index) = todo.pop() {
        if !seen.insert(index) {
            continue;
        }
        let stage = &file.stages[index];
        let refer = |reference: &str, todo: &mut Vec<usize>, bases: &mut Vec<String>| match file
            .stage(reference)
            .filter(|s| s.index != index)
        {
            Some(s) => todo.push(s.index),
            None => {
                let image = substitute(reference, &vars).unwrap_or_else(|| reference.into());
                if image != "scratch" {
                    push(bases, image);
                }
            }
        };
        match is_cut(&stage.base) {
            true => push(&mut taken, String::new()),
            false => refer(&stage.base, &mut todo, &mut bases),
        }
        // what it takes from `cut`: with only the ARGs it declares, as BuildKit expands them
        let declared = stage_args(&file, stage, &overrides, &vars);
        for ins in file.stage_instructions(stage) {
            for mount in &ins.mounts {
                match mount.get("from") {
                    Some(from) if is_cut(from) => {
                        let src = mount.get("source").or(mount.get("src")).unwrap_or("/");
                        push(&mut taken, normalize(src, &declared));
                    }
                    Some(from) => refer(from, &mut todo, &mut bases),
                    None if mount.kind() == "bind" => {
                        let src = mount.get("source").or(mount.get("src")).unwrap_or(".");
                        push(&mut sources, normalize(src, &stage_vars));
                    }
                    None => {}
                }
            }
            if ins.keyword != "COPY" && ins.keyword != "ADD" {
                continue;
            }
            if let Some(from) = ins.flag("from").and_then(|f| f.value.as_deref()) {
                match is_cut(from) {
                    true => (copy_sources(&ins.args).iter())
                        .for_each(|src| push(&mut taken, normalize(src, &declared))),
                    false => refer(from, &mut todo, &mut bases),
                }
                continue;
            }
            for src in context_sources(&ins.args, &stage_vars) {
                push(&mut sources, src);
            }
        }
    }
    let base_images = bases;
    Ok((
        Reads {
            sources,
            base_images,
        },
        taken,
    ))
}

/// The values of the `ARG`s `stage` declares: a build argument, else the declared default, else
/// (`ARG NAME` alone) the global one.
fn stage_args(
    file: &model::Dockerfile,
    stage: &model::Stage,
    overrides: &BTreeMap<&str, &str>,
    globals: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let args = file.stage_instructions(stage);
    declared(args, overrides, Some(globals))
}

/// The global `ARG`s' values (before the first stage): a build argument overrides a default.
fn global_vars(
    file: &model::Dockerfile,
    overrides: &BTreeMap<&str, &str>,
) -> BTreeMap<String, String> {
    let args = file.global.iter().map(|&i| &file.instructions[i]);
    declared(args, overrides, None)
}

/// The values the `ARG` instructions among `instructions` declare, in order: a build argument,
/// else the declared default (earlier ones substituted), else the `inherited` value.
fn declared<'a>(
    instructions: impl Iterator<Item = &'a model::Instruction>,
    overrides: &BTreeMap<&str, &str>,
    inherited: Option<&BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for ins in instructions.filter(|i| i.keyword == "ARG") {
        for word in lexer::shell_words(&ins.args) {
            let (name, default) = match word.split_once('=') {
                Some((n, v)) => (n, Some(unquote(v))),
                None => (word, None),
            };
            let value = match (overrides.get(name), default) {
                (Some(v), _) => Some(v.to_string()),
                (None, Some(d)) => substitute(&d, &out),
                (None, None) => inherited.and_then(|g| g.get(name).cloned()),
            };
            if let Some(value) = value {
                out.insert(name.to_string(), value);
            }
        }
    }
    out
}

/// The context paths a `COPY`/`ADD` without `--from` reads (`url:` for a URL; heredocs none).
fn context_sources(args: &str, vars: &BTreeMap<String, String>) -> Vec<String> {
    (copy_sources(args).into_iter())
        .filter(|src| !src.starts_with("<<"))
        .map(|src| match src.contains("://") {
            true => format!("url:{src}"),
            false => normalize(&src, vars),
        })
        .collect()
}

/// The sources of `COPY a b dest` or `COPY ["a", "b", "dest"]`, quotes removed.
fn copy_sources(args: &str) -> Vec<String> {
    let args = args.trim();
    let words: Vec<String> = if args.starts_with('[') {
        serde_json::from_str(args).unwrap_or_default()
    } else {
        lexer::shell_words(args).into_iter().map(unquote).collect()
    };
    match words.split_last() {
        Some((_, sources)) => sources.to_vec(),
        None => Vec::new(),
    }
}

fn unquote(word: &str) -> String {
    let w = word.trim();
    if w.len() >= 2
        && ((w.starts_with('"') && w.ends_with('"')) || (w.starts_with('\'') && w.ends_with('\'')))
    {
        w[1..w.len() - 1].to_string()
    } else {
        w.to_string()
    }
}

/// `$NAME`, `${NAME}`, `${NAME:-default}` substituted; `None` when a variable is unknown.
fn substitute(text: &str, vars: &BTreeMap<String, String>) -> Option<String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let (expr, tail) = if let Some(inner) = after.strip_prefix('{') {
            let end = inner.find('}')?;
            (&inner[..end], &inner[end + 1..])
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        let (name, default) = match expr.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (expr, None),
        };
        match (vars.get(name), default) {
            (Some(v), _) if !v.is_empty() || default.is_none() => out.push_str(v),
            (_, Some(d)) => out.push_str(d),
            _ => return None,
        }
        rest = tail;
    }
    out.push_str(rest);
    Some(out)
}

/// A context path as recorded: no `./`, no leading or trailing `/`, `""` for the whole context.
/// Wildcards and unknown variables widen it to the whole context (never miss a change).
fn normalize(src: &str, vars: &BTreeMap<String, String>) -> String {
    let Some(path) = substitute(src, vars) else {
        return String::new();
    };
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p if p.contains(['*', '?', '[']) => break,
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// One `.dockerignore` rule: its pattern as a glob where `*` and `?` stop at `/` and `**` spans
/// directories (Go's `filepath.Match` per segment, as Docker reads it; `globset` matches).
#[derive(Debug, Clone)]
pub struct Rule {
    pub exclude: bool,
    pub glob: globset::GlobMatcher,
}

/// The rules of a `.dockerignore` (comments and blank lines skipped; `!` re-includes); a
/// pattern that is no glob (an unclosed `[`) matches nothing.
pub fn dockerignore(text: &str) -> Vec<Rule> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (exclude, pattern) = match l.strip_prefix('!') {
                Some(p) => (false, p.trim()),
                None => (true, l),
            };
            let clean: Vec<&str> = (pattern.split('/'))
                .filter(|s| !s.is_empty() && *s != ".")
                .collect();
            let glob = globset::GlobBuilder::new(&clean.join("/"))
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .ok()?;
            (!clean.is_empty()).then(|| Rule {
                exclude,
                glob: glob.compile_matcher(),
            })
        })
        .collect()
}

/// Whether `.dockerignore` excludes `path` (relative, `/`-separated): the last rule matching it
/// or one of its parent directories decides.
pub fn ignored(rules: &[Rule], path: &str) -> bool {
    let mut excluded = false;
    for rule in rules {
        let mut prefix = path.match_indices('/').map(|(i, _)| &path[..i]);
        if prefix.any(|p| rule.glob.is_match(p)) || rule.glob.is_match(path) {
            excluded = rule.exclude;
        }
    }
    excluded
}

/// `path -> digest` for every file of the build context under `root` that `.dockerignore` keeps,
/// hashed in parallel. A symlink is hashed by its target's name, as BuildKit copies it.
pub fn hash_context(root: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let rules = match fs::read_to_string(root.join(".dockerignore")) {
        Ok(text) => dockerignore(&text),
        Err(_) => Vec::new(),
    };
    let can_prune = rules.iter().all(|r| r.exclude);
    let mut files = Vec::new();
    let mut dirs = vec![String::new()];
    while let Some(dir) = dirs.pop() {
        let abs = root.join(&dir);
        let entries =
            fs::read_dir(&abs).with_context(|| format!("cannot read {}", abs.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot read {}", abs.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if dir.is_empty() {
                name
            } else {
                format!("{dir}/{name}")
            };
            let kind = entry.file_type()?;
            let skip = ignored(&rules, &rel);
            if kind.is_dir() {
                if !(skip && can_prune) {
                    dirs.push(rel);
                }
            } else if !skip {
                files.push((rel, kind.is_symlink()));
            }
        }
    }
    files
        .into_par_iter()
        .map(|(rel, link)| {
            let abs = root.join(&rel);
            let digest = if link {
                let target = fs::read_link(&abs)
                    .with_context(|| format!("cannot read link {}", abs.display()))?;
                hex(&Sha256::digest(target.to_string_lossy().as_bytes()))
            } else {
                let bytes =
                    fs::read(&abs).with_context(|| format!("cannot read {}", abs.display()))?;
                hex(&Sha256::digest(&bytes))
            };
            Ok((rel, digest[..32].to_string()))
        })
        .collect()
}

/// The digest of a context source over `files`: every file at or under `path`.
pub fn source(path: &str, files: &BTreeMap<String, String>) -> Source {
    let mut hasher = Sha256::new();
    let mut count = 0;
    for (file, digest) in under(path, files) {
        hasher.update(file.as_bytes());
        hasher.update([0]);
        hasher.update(digest.as_bytes());
        hasher.update([b'\n']);
        count += 1;
    }
    Source {
        path: path.to_string(),
        digest: hex(&hasher.finalize())[..32].to_string(),
        files: count,
    }
}

/// The files at or under `path` (`""`: all).
pub fn under<'a>(
    path: &'a str,
    files: &'a BTreeMap<String, String>,
) -> impl Iterator<Item = (&'a String, &'a String)> + 'a {
    files.iter().filter(move |(f, _)| {
        path.is_empty()
            || f.as_str() == path
            || (f.starts_with(path) && f.as_bytes().get(path.len()) == Some(&b'/'))
    })
}

/// The options of a build command that change what it produces: the argv without the progress
/// format and the metadata file (whose path changes per run).
pub fn options_digest(argv: &[String]) -> String {
    let mut hasher = Sha256::new();
    let mut skip_next = false;
    for arg in argv {
        if skip_next {
            skip_next = false;
            continue;
        }
        if arg == "--metadata-file" {
            skip_next = true;
            continue;
        }
        if arg.starts_with("--progress") || arg.starts_with("--metadata-file=") {
            continue;
        }
        hasher.update(arg.as_bytes());
        hasher.update([0]);
    }
    hex(&hasher.finalize())[..32].to_string()
}

/// One digest over the inputs, the strategy and the engine.
pub fn digest(inputs: &Inputs, strategy: &str, engine_id: Option<&str>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(serde_json::to_string(inputs).unwrap_or_default().as_bytes());
    hasher.update([0]);
    hasher.update(strategy.as_bytes());
    hasher.update([0]);
    hasher.update(engine_id.unwrap_or("").as_bytes());
    hex(&hasher.finalize())
}

pub fn digest_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))[..32].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKERFILE: &str = "\
ARG RUST_VERSION=1.95
ARG RUST_IMAGE=rust:${RUST_VERSION}-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim
FROM ${RUST_IMAGE} AS builder
ARG SERVICE
COPY Cargo.toml Cargo.lock ./
COPY crates/common crates/common
COPY crates/${SERVICE} crates/${SERVICE}
RUN --mount=type=cache,target=/c,id=c,sharing=shared cargo build
FROM ${RUNTIME_IMAGE} AS runtime
COPY --from=builder /out/bin/ /usr/local/bin/
FROM builder AS unused
COPY docs docs
";

    #[test]
    fn reads_follow_the_stages_the_target_needs() {
        let r = reads(DOCKERFILE, "runtime", &["SERVICE=api".into()]).unwrap();
        assert_eq!(
            r.sources,
            ["Cargo.toml", "Cargo.lock", "crates/common", "crates/api"]
        );
        assert_eq!(
            r.base_images,
            ["debian:bookworm-slim", "rust:1.95-slim-bookworm"]
        );
        // a build argument overrides a global default
        let r = reads(
            DOCKERFILE,
            "runtime",
            &["SERVICE=x".into(), "RUST_VERSION=2".into()],
        )
        .unwrap();
        assert!(r.base_images.contains(&"rust:2-slim-bookworm".to_string()));
        assert!(reads(DOCKERFILE, "nope", &[]).is_err());
    }

    #[test]
    fn reads_beside_a_stage_stop_at_it_and_name_what_they_take() {
        let text = format!(
            "{DOCKERFILE}FROM runtime AS svc\nARG SERVICE\nCOPY --from=builder /out/svc/${{SERVICE}}/ /b/\nCOPY conf/x.toml /etc/\nRUN --mount=from=builder,source=/out/extra,target=/e true\n"
        );
        let (r, taken) =
            reads_beside(&text, "svc", &["SERVICE=api".into()], Some("builder")).unwrap();
        // the builder's own reads (Cargo.toml, crates, its base image) are not followed
        assert_eq!(r.sources, ["conf/x.toml"]);
        assert_eq!(r.base_images, ["debian:bookworm-slim"]);
        assert_eq!(taken, ["out/svc/api", "out/extra", "out/bin"]);
        // without a cut, the same target reads everything, and takes nothing
        let (all, none) = reads_beside(&text, "svc", &["SERVICE=api".into()], None).unwrap();
        assert!(all.sources.contains(&"crates/api".to_string()) && none.is_empty());
        // a variable the stage does not declare: BuildKit expands it empty, so all of it
        let undeclared = "FROM rust AS builder\nRUN true\nFROM debian AS s\nCOPY --from=builder /out/svc/${SERVICE}/ /\n";
        let (_, all) =
            reads_beside(undeclared, "s", &["SERVICE=api".into()], Some("builder")).unwrap();
        assert_eq!(all, [""]);
        // a stage based on the cut one takes all of it
        let (_, whole) = reads_beside(DOCKERFILE, "unused", &[], Some("builder")).unwrap();
        assert_eq!(whole, [""]);
    }

    #[test]
    fn unknown_variables_and_wildcards_widen_to_the_whole_context() {
        let text = "FROM scratch AS a\nCOPY src/*.rs $NOPE/x /d/\nCOPY [\"json/form\", \"/d\"]\nRUN --mount=type=bind,source=bound,target=/b true\n";
        let r = reads(text, "a", &[]).unwrap();
        assert_eq!(r.sources, ["src", "", "json/form", "bound"]);
        assert!(r.base_images.is_empty());
    }

    #[test]
    fn dockerignore_rules() {
        let rules = dockerignore("# c\ntarget/\n.git/\n**/*.log\n!keep.log\n");
        assert!(ignored(&rules, "target"));
        assert!(ignored(&rules, "target/debug/x"));
        assert!(ignored(&rules, "a/b/c.log"));
        assert!(ignored(&rules, "c.log"));
        assert!(!ignored(&rules, "keep.log"));
        assert!(!ignored(&rules, "crates/common/src/lib.rs"));
        assert!(!ignored(&rules, "targets/x"));
        // `*` stops at a directory, `**` does not; character classes as Docker has them
        let rules = dockerignore("docs/*.md\ncrates/**/tmp\n[ab].txt\n");
        assert!(ignored(&rules, "docs/a.md"));
        assert!(!ignored(&rules, "docs/sub/a.md"));
        assert!(ignored(&rules, "crates/api/src/tmp/x"));
        assert!(ignored(&rules, "a.txt") && !ignored(&rules, "c.txt"));
    }

    #[test]
    fn context_hash_honours_dockerignore_and_sees_one_byte() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join(".dockerignore"), "target/\n").unwrap();
        fs::create_dir_all(root.join("target")).unwrap();
        fs::write(root.join("target/big"), "x").unwrap();
        fs::create_dir_all(root.join("crates/common")).unwrap();
        fs::write(root.join("crates/common/lib.rs"), "a").unwrap();
        let before = hash_context(root).unwrap();
        assert!(before.contains_key("crates/common/lib.rs"));
        assert!(!before.keys().any(|k| k.starts_with("target")));
        fs::write(root.join("crates/common/lib.rs"), "b").unwrap();
        let after = hash_context(root).unwrap();
        assert_ne!(
            source("crates", &before).digest,
            source("crates", &after).digest
        );
        assert_eq!(source("crates", &after).files, 1);
        assert_eq!(source("crate", &after).files, 0);
    }

    #[test]
    fn options_digest_ignores_the_metadata_path() {
        let a: Vec<String> = ["docker", "--metadata-file", "x/1", "--tag", "t"]
            .map(String::from)
            .into();
        let b: Vec<String> = ["docker", "--metadata-file", "y/2", "--tag", "t"]
            .map(String::from)
            .into();
        let c: Vec<String> = ["docker", "--metadata-file", "y/2", "--tag", "u"]
            .map(String::from)
            .into();
        assert_eq!(options_digest(&a), options_digest(&b));
        assert_ne!(options_digest(&a), options_digest(&c));
    }
}
