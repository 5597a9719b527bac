//! The static cache-policy rules of `cargo xtask lint-docker`.
//!
//! Every rule is a failure (`lint-docker` exits 1 on any finding):
//!
//! | id | what |
//! |---|---|
//! | `cache-registry-race` | a cargo `registry`/`git` directory is a shared cache mount while the cargo home around it (where cargo keeps its `.package-cache` locks) is not inside a shared or locked cache mount of the same RUN: concurrent builds unpack the same crates at once (docs/QUICKREF-buildkit-cache-strategy.md, "The race in the seed's recipe") |
//! | `target-cache-without-id` | a cache mount of a cargo target directory without `id=`: every Dockerfile mounting that path shares one cache |
//! | `target-cache-shared-between-services` | a target cache whose id does not contain `${SERVICE}` in a stage that declares `ARG SERVICE`, unless the RUN builds the whole workspace (`--workspace`/`--all`): one build then owns that target directory, and cargo's own build-directory lock (`target/<profile>/.cargo-lock`) lives inside the mount, so concurrent builds that meet there wait for each other instead of racing |
//! | `target-cache-without-platform` | a target cache whose id does not contain `${TARGETPLATFORM}` (or `${TARGETARCH}`): a multi-platform build (`--platform linux/amd64,linux/arm64`) runs the RUN once per platform with the same id, so the platforms' artifacts mix in one target directory and their builds race. The cargo home may stay shared: the registry and the downloaded crates do not depend on the platform |
//! | `target-cache-platform-arg-undeclared` | a target cache id uses `TARGETPLATFORM` (or `TARGETARCH`) while neither its stage before the RUN nor a stage it is built `FROM` declares `ARG TARGETPLATFORM`: BuildKit predefines the platform arguments in the global scope only, so the id expands to an empty platform |
//! | `target-cache-never-read` | two stages mount the same target directory under different cache ids: the earlier stage fills a cache that the later one never reads |
//! | `cargo-failure-ignored` | `\|\| true`, `\|\| :`, `\|\| exit 0` or a trailing `; true` after a cargo command |
//! | `binary-from-cache-mount` | `COPY --from=stage` (or a `from=stage` mount) of a path inside a cache mount of that stage: cache mounts are not part of the image |
//! | `cache-mount-implicit-sharing` | a cache mount without an explicit `sharing=`: the project keeps them explicit so that a reader sees whether concurrent builds share, serialise or copy each cache |
//! | `rust-version-mismatch` | the `ARG RUST_VERSION` default (or a literal `rust:<version>` base image) differs from `workspace.package.rust-version` |
//!
//! A cargo target directory is a cache-mount target whose path ends in `/target`, or the
//! `CARGO_TARGET_DIR` of that RUN (set in the command or by `ENV`).
//!
//! Longer than 500 lines because each rule is its own function over the model, next to the
//! table that names it; the tests are in `lint/tests.rs`.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use super::lexer::{shell_words, LineIndex};
use super::model::{parse, Dockerfile, Instruction, Mount, Stage};
use super::rewrite::Sharing;
use super::ParseError;

/// What the rules need besides the Dockerfile's text.
#[derive(Debug, Clone, Default)]
pub struct LintContext {
    /// `workspace.package.rust-version` of the root Cargo.toml; the rust-version rule is skipped
    /// when None.
    pub rust_version: Option<String>,
}

/// One rule violation at a 1-based line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub id: &'static str,
    pub line: usize,
    /// Why it matters, one sentence.
    pub message: String,
    /// How to fix it, one sentence.
    pub fix: String,
}

/// Every rule id, in the order of the module docs.
pub const RULES: &[&str] = &[
    "cache-registry-race",
    "target-cache-without-id",
    "target-cache-shared-between-services",
    "target-cache-without-platform",
    "target-cache-platform-arg-undeclared",
    "target-cache-never-read",
    "cargo-failure-ignored",
    "binary-from-cache-mount",
    "cache-mount-implicit-sharing",
    "rust-version-mismatch",
];

/// Checks one Dockerfile's text; findings are sorted by line, then id.
pub fn lint(text: &str, ctx: &LintContext) -> Result<Vec<Finding>, ParseError> {
    let dockerfile = parse(text)?;
    let runs = runs(&dockerfile, text)?;
    let lines = LineIndex::new(text);
    let mut findings = Vec::new();
    for run in &runs {
        registry_race(run, &mut findings);
        target_cache_ids(run, &mut findings);
        ignored_failure(run, &lines, &mut findings);
        implicit_sharing(run, &mut findings);
    }
    never_read(&dockerfile, &runs, &mut findings);
    copies_from_cache(&dockerfile, &runs, &mut findings);
    rust_version(&dockerfile, ctx, &mut findings);
    findings.sort_by(|a, b| (a.line, a.id).cmp(&(b.line, b.id)));
    findings.dedup();
    Ok(findings)
}

/// `workspace.package.rust-version` from the text of a workspace's root Cargo.toml: for the
/// Dockerfiles of another workspace, whose `[workspace.package]` cargo metadata does not report
/// when no member inherits it (this workspace's own comes from `workspace::rust_version`).
pub fn workspace_rust_version(cargo_toml: &str) -> Option<String> {
    let mut in_section = false;
    for line in cargo_toml.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.starts_with('[') {
            in_section =
                line.trim_start_matches('[').trim_end_matches(']').trim() == "workspace.package";
            continue;
        }
        if !in_section {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key.trim() == "rust-version" {
            return Some(value.trim().trim_matches(['"', '\'']).to_string());
        }
    }
    None
}

/// A RUN with what the rules need to know about its surroundings.
struct Run<'a> {
    stage: &'a Stage,
    ins: &'a Instruction,
    /// The shell command: the arguments, then the heredoc bodies.
    command: String,
    mounts: Vec<CacheMount<'a>>,
    stage_declares_service: bool,
    /// The automatic platform arguments (`TARGETPLATFORM`, `TARGETARCH`) in scope at this RUN:
    /// declared by `ARG` earlier in the stage or in a stage it is built `FROM`.
    platform_args: PlatformArgs,
}

/// Which automatic platform arguments are declared in a stage's scope.
#[derive(Debug, Clone, Copy, Default)]
struct PlatformArgs {
    platform: bool,
    arch: bool,
}

impl PlatformArgs {
    fn declares(&self, name: &str) -> bool {
        match name {
            "TARGETPLATFORM" => self.platform,
            "TARGETARCH" => self.arch,
            _ => false,
        }
    }
}

/// A cache mount with its target resolved against the WORKDIR and its sharing mode.
struct CacheMount<'a> {
    mount: &'a Mount,
    target: String,
    sharing: Option<Sharing>,
    is_target_dir: bool,
}

impl CacheMount<'_> {
    fn effective_sharing(&self) -> Sharing {
        self.sharing.unwrap_or(Sharing::Shared)
    }

    fn id(&self) -> &str {
        self.mount.id().unwrap_or(&self.target)
    }
}

fn runs<'a>(df: &'a Dockerfile, text: &str) -> Result<Vec<Run<'a>>, ParseError> {
    let mut out = Vec::new();
    // Each stage's final WORKDIR, CARGO_TARGET_DIR (the only variable the rules read) and
    // platform ARGs: a stage inherits them from its parent stage (BuildKit starts a stage FROM
    // another with that stage's state, declared ARGs included). Keeping only these keeps the
    // pass linear.
    let mut finals: Vec<(String, Option<String>, PlatformArgs)> = Vec::new();
    for stage in &df.stages {
        let (mut workdir, mut env_target_dir, mut platform_args) =
            match df.stage(&stage.base).filter(|p| p.index < stage.index) {
                Some(parent) => finals[parent.index].clone(),
                None => ("/".to_string(), None, PlatformArgs::default()),
            };
        let stage_declares_service = df
            .stage_instructions(stage)
            .any(|i| i.keyword == "ARG" && arg_defaults(i).iter().any(|(k, _)| k == "SERVICE"));
        for ins in df.stage_instructions(stage) {
            match ins.keyword.as_str() {
                "WORKDIR" => workdir = resolve(&workdir, unquote(&ins.args)),
                "ARG" => {
                    for (name, _) in arg_defaults(ins) {
                        match name.as_str() {
                            "TARGETPLATFORM" => platform_args.platform = true,
                            "TARGETARCH" => platform_args.arch = true,
                            _ => {}
                        }
                    }
                }
                "ENV" => {
                    if let Some((_, dir)) = env_pairs(&ins.args)
                        .into_iter()
                        .rfind(|(k, _)| k == "CARGO_TARGET_DIR")
                    {
                        env_target_dir = Some(dir);
                    }
                }
                "RUN" | "ONBUILD"
                    if ins.keyword == "RUN" || ins.trigger.as_deref() == Some("RUN") =>
                {
                    let mut command = ins.args.clone();
                    for doc in &ins.heredocs {
                        command.push('\n');
                        command.push_str(&text[doc.body.clone()]);
                    }
                    let target_dir = assignment(&command, "CARGO_TARGET_DIR")
                        .or_else(|| env_target_dir.clone())
                        .map(|dir| resolve(&workdir, &dir));
                    let mut mounts = Vec::new();
                    for mount in ins.mounts.iter().filter(|m| m.is_cache()) {
                        let target = resolve(&workdir, mount.target().unwrap_or(""));
                        let sharing = mount_sharing(mount)?;
                        let is_target_dir = target.ends_with("/target")
                            || target_dir.as_deref() == Some(target.as_str());
                        mounts.push(CacheMount {
                            mount,
                            target,
                            sharing,
                            is_target_dir,
                        });
                    }
                    out.push(Run {
                        stage,
                        ins,
                        command,
                        mounts,
                        stage_declares_service,
                        platform_args,
                    });
                }
                _ => {}
            }
        }
        finals.push((workdir, env_target_dir, platform_args));
    }
    Ok(out)
}

/// The last `sharing=` of a mount, parsed.
fn mount_sharing(mount: &Mount) -> Result<Option<Sharing>, ParseError> {
    let Some(option) = mount.sharing_options().last() else {
        return Ok(None);
    };
    let value = option.value.as_deref().unwrap_or("");
    value.parse().map(Some).map_err(|_| {
        ParseError::new(
            option.line,
            format!("unknown sharing value `{value}` (expected shared, private or locked)"),
        )
    })
}

fn registry_race(run: &Run, findings: &mut Vec<Finding>) {
    for cache in &run.mounts {
        let Some((home, dir)) = cargo_home_of(&cache.target) else {
            continue;
        };
        if cache.effective_sharing() != Sharing::Shared {
            continue;
        }
        let covered = run.mounts.iter().any(|other| {
            other.effective_sharing() != Sharing::Private
                && (home == other.target || home.starts_with(&format!("{}/", other.target)))
        });
        if covered {
            continue;
        }
        findings.push(Finding {
            id: "cache-registry-race",
            line: cache.mount.line,
            message: format!(
                "the cargo {dir} cache {} is shared between concurrent builds, but cargo's package-cache lock lives in {home}, outside any shared mount, so parallel builds unpack the same crates at once (`failed to unpack package ... File exists (os error 17)`)",
                cache.target
            ),
            fix: "mount the whole cargo home as one shared cache (--mount=type=cache,target=/cargo-home,id=cargo-home,sharing=shared) and set CARGO_HOME=/cargo-home for the RUN's cargo command, or use sharing=locked".to_string(),
        });
    }
}

fn target_cache_ids(run: &Run, findings: &mut Vec<Finding>) {
    for cache in run.mounts.iter().filter(|m| m.is_target_dir) {
        let Some(id) = cache.mount.id() else {
            findings.push(Finding {
                id: "target-cache-without-id",
                line: cache.mount.line,
                message: format!(
                    "the target cache {} has no id, so it is keyed by its path and every Dockerfile and stage mounting that path shares it",
                    cache.target
                ),
                fix: format!(
                    "give it an id naming what it builds, e.g. id=target-{}-${{SERVICE}}",
                    run.stage.name.as_deref().unwrap_or("builder")
                ),
            });
            continue;
        };
        target_cache_platform(run, cache, id, findings);
        let per_service = id.contains("${SERVICE}") || id.contains("$SERVICE");
        if !run.stage_declares_service || per_service || builds_workspace(&run.command) {
            continue;
        }
        findings.push(Finding {
            id: "target-cache-shared-between-services",
            line: cache.mount.line,
            message: format!(
                "the target cache id={id} does not depend on SERVICE, so two services' concurrent builds share one target directory and block or overwrite each other"
            ),
            fix: format!("include the service in the id (id={id}-${{SERVICE}}), or build the whole workspace (--workspace) in one builder, whose target cache can be shared because cargo's build-directory lock lives inside it"),
        });
    }
}

/// `target-cache-without-platform` and `target-cache-platform-arg-undeclared` for the target
/// cache `cache` with id `id`.
fn target_cache_platform(run: &Run, cache: &CacheMount, id: &str, findings: &mut Vec<Finding>) {
    let vars = variables(id);
    let platform_vars: Vec<&str> = vars
        .into_iter()
        .filter(|v| *v == "TARGETPLATFORM" || *v == "TARGETARCH")
        .collect();
    let line = cache.mount.line;
    if platform_vars.is_empty() {
        findings.push(Finding {
            id: "target-cache-without-platform",
            line,
            message: format!(
                "the target cache id={id} (line {line}) does not contain the platform, so a multi-platform build (--platform linux/amd64,linux/arm64) runs this RUN once per platform in the same target directory: the platforms' artifacts mix and their builds race"
            ),
            fix: format!(
                "add the platform to the id (id={id}-${{TARGETPLATFORM}}) and declare ARG TARGETPLATFORM in the stage before this RUN; TARGETPLATFORM rather than TARGETARCH, which does not separate arm variants (linux/arm/v6, linux/arm/v7)"
            ),
        });
        return;
    }
    for var in platform_vars {
        if run.platform_args.declares(var) {
            continue;
        }
        findings.push(Finding {
            id: "target-cache-platform-arg-undeclared",
            line,
            message: format!(
                "the target cache id={id} (line {line}) uses {var}, but stage {} does not declare ARG {var} before this RUN (nor does a stage it is built FROM): BuildKit predefines {var} in the global scope only, so the id expands without the platform and the platforms share one target directory",
                stage_label(run.stage)
            ),
            fix: format!("declare ARG {var} in stage {} before this RUN", stage_label(run.stage)),
        });
    }
}

/// The names of the variables `$NAME` and `${NAME...}` a word refers to, in order.
fn variables(word: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = word;
    while let Some(at) = rest.find('$') {
        let after = &rest[at + 1..];
        let body = after.strip_prefix('{').unwrap_or(after);
        let end = body
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(body.len());
        if end > 0 {
            out.push(&body[..end]);
        }
        rest = &body[end..];
    }
    out
}

fn never_read(df: &Dockerfile, runs: &[Run], findings: &mut Vec<Finding>) {
    let mut by_target: HashMap<&str, Vec<(&Run, &CacheMount)>> = HashMap::new();
    for run in runs {
        for cache in run.mounts.iter().filter(|m| m.is_target_dir) {
            by_target
                .entry(cache.target.as_str())
                .or_default()
                .push((run, cache));
        }
    }
    for group in by_target.values() {
        let stages: BTreeSet<usize> = group.iter().map(|(run, _)| run.stage.index).collect();
        let ids: BTreeSet<&str> = group.iter().map(|(_, cache)| cache.id()).collect();
        if stages.len() < 2 || ids.len() < 2 {
            continue;
        }
        let last = *stages.last().expect("two stages");
        let reader_ids: BTreeSet<&str> = group
            .iter()
            .filter(|(run, _)| run.stage.index == last)
            .map(|(_, cache)| cache.id())
            .collect();
        let reader = stage_label(&df.stages[last]);
        // id -> the first two different stages that mount it, so that "is this id mounted in
        // another stage" is one lookup (the group can be as long as the file)
        let mut stages_of_id: HashMap<&str, (usize, Option<usize>)> = HashMap::new();
        for (run, cache) in group {
            let entry = stages_of_id
                .entry(cache.id())
                .or_insert((run.stage.index, None));
            if entry.0 != run.stage.index && entry.1.is_none() {
                entry.1 = Some(run.stage.index);
            }
        }
        for (run, cache) in group.iter().filter(|(run, _)| run.stage.index != last) {
            let id = cache.id();
            let read_elsewhere = stages_of_id[id].1.is_some();
            if read_elsewhere {
                continue;
            }
            let reader_list = reader_ids.iter().copied().collect::<Vec<_>>().join(", ");
            findings.push(Finding {
                id: "target-cache-never-read",
                line: cache.mount.line,
                message: format!(
                    "stage {} fills the target cache id={id}, but stage {reader} mounts {} under id={reader_list}, so no later step reads what this one compiles",
                    stage_label(run.stage),
                    cache.target
                ),
                fix: format!("use the same cache id in both stages (id={reader_list}), or drop this stage's cache mount and build"),
            });
        }
    }
}

fn ignored_failure(run: &Run, lines: &LineIndex, findings: &mut Vec<Finding>) {
    let Some(at) = swallowed_failure(&run.command) else {
        return;
    };
    findings.push(Finding {
        id: "cargo-failure-ignored",
        line: command_line(run, lines, at),
        message: "the cargo command's failure is ignored, so a broken build succeeds and its error surfaces later, far from its cause".to_string(),
        fix: "remove the `|| true` (or `|| :`, `; true`) after the cargo command".to_string(),
    });
}

/// The 1-based line of byte `at` of a RUN's command (arguments, then heredoc bodies).
fn command_line(run: &Run, lines: &LineIndex, at: usize) -> usize {
    let ins = run.ins;
    if at < ins.args.len() {
        return ins.line_of_text(lines, ins.args_start + at);
    }
    let mut offset = ins.args.len();
    for doc in &ins.heredocs {
        offset += 1;
        if at < offset + doc.body.len() {
            return lines.line_of(doc.body.start + at - offset);
        }
        offset += doc.body.len();
    }
    ins.line
}

fn implicit_sharing(run: &Run, findings: &mut Vec<Finding>) {
    for cache in run.mounts.iter().filter(|m| m.sharing.is_none()) {
        findings.push(Finding {
            id: "cache-mount-implicit-sharing",
            line: cache.mount.line,
            message: format!(
                "the cache mount {} has no explicit sharing= (BuildKit defaults to shared), so a reader cannot tell whether concurrent builds are meant to share it",
                cache.target
            ),
            fix: "add ,sharing=shared (or locked/private) to the mount".to_string(),
        });
    }
}

fn copies_from_cache(df: &Dockerfile, runs: &[Run], findings: &mut Vec<Finding>) {
    // (line, path, the stage copied from) of every COPY/ADD --from and RUN --mount from=
    let mut copies: Vec<(usize, String, &Stage)> = Vec::new();
    for ins in &df.instructions {
        if matches!(ins.keyword.as_str(), "COPY" | "ADD") {
            let Some(stage) = ins
                .flag("from")
                .and_then(|f| f.value.as_deref())
                .and_then(|r| df.stage(r))
            else {
                continue;
            };
            let words = copy_words(&ins.args);
            let Some((_, sources)) = words.split_last() else {
                continue;
            };
            for source in sources {
                copies.push((ins.line, resolve("/", source), stage));
            }
        }
        if ins.keyword == "RUN" {
            for mount in ins.mounts.iter().filter(|m| !m.is_cache()) {
                let Some(stage) = mount.get("from").and_then(|r| df.stage(r)) else {
                    continue;
                };
                let path = resolve("/", mount.get("source").or(mount.get("src")).unwrap_or("/"));
                copies.push((mount.line, path, stage));
            }
        }
    }
    let paths: Vec<(&str, usize)> = copies
        .iter()
        .map(|(_, path, stage)| (path.as_str(), stage.index))
        .collect();
    let found = cache_targets_in_ancestry(df, runs, &paths);
    for ((line, path, stage), target) in copies.iter().zip(found) {
        let Some(target) = target else {
            continue;
        };
        findings.push(Finding {
            id: "binary-from-cache-mount",
            line: *line,
            message: format!(
                "{path} is inside the cache mount {target} of stage {}, and a cache mount is not part of the image, so this copies whatever an older build left there, or nothing",
                stage_label(stage)
            ),
            fix: format!(
                "copy the file out of {target} inside the RUN that builds it (e.g. install -D target/release/x /out/bin/x) and take it from there"
            ),
        });
    }
}

/// For each `(path, stage)`: the cache-mount target of that stage or one of the stages it is
/// built `FROM` that is `path` or contains it (the first such mount in the file), if any.
///
/// One walk over the tree of stages, keeping for every target the mounts of the stages on the
/// current path from the root: linear in stages, mounts and path lengths, however deep the chain.
fn cache_targets_in_ancestry<'a>(
    df: &Dockerfile,
    runs: &'a [Run],
    queries: &[(&str, usize)],
) -> Vec<Option<&'a str>> {
    let n = df.stages.len();
    let mut mounts_of: Vec<Vec<(usize, &str)>> = vec![Vec::new(); n];
    let mut order = 0;
    for run in runs {
        for cache in &run.mounts {
            mounts_of[run.stage.index].push((order, cache.target.as_str()));
            order += 1;
        }
    }
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut roots = Vec::new();
    for stage in &df.stages {
        match df.stage(&stage.base).filter(|p| p.index < stage.index) {
            Some(parent) => children[parent.index].push(stage.index),
            None => roots.push(stage.index),
        }
    }
    let mut asked: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, &(_, stage)) in queries.iter().enumerate() {
        asked[stage].push(i);
    }
    let mut answers = vec![None; queries.len()];
    // target -> orders of its mounts on the current root-to-stage path, the earliest first
    let mut on_path: HashMap<&str, Vec<usize>> = HashMap::new();
    // (stage, entering?) events of an iterative depth-first walk: chains can be deep
    let mut stack: Vec<(usize, bool)> = roots.iter().rev().map(|&r| (r, true)).collect();
    while let Some((stage, entering)) = stack.pop() {
        if !entering {
            for &(_, target) in &mounts_of[stage] {
                if let Some(orders) = on_path.get_mut(target) {
                    orders.pop();
                }
            }
            continue;
        }
        for &(order, target) in &mounts_of[stage] {
            on_path.entry(target).or_default().push(order);
        }
        for &q in &asked[stage] {
            let path = queries[q].0;
            let prefixes = std::iter::once(path).chain(
                path.match_indices('/')
                    .filter(|&(i, _)| i > 0)
                    .map(|(i, _)| &path[..i]),
            );
            answers[q] = prefixes
                .filter_map(|prefix| {
                    let (target, orders) = on_path.get_key_value(prefix)?;
                    orders.first().map(|&order| (order, *target))
                })
                .min()
                .map(|(_, target)| target);
        }
        stack.push((stage, false));
        stack.extend(children[stage].iter().rev().map(|&c| (c, true)));
    }
    answers
}

fn rust_version(df: &Dockerfile, ctx: &LintContext, findings: &mut Vec<Finding>) {
    let Some(expected) = ctx.rust_version.as_deref() else {
        return;
    };
    let fix =
        format!("set the default to the workspace's rust-version: ARG RUST_VERSION={expected}");
    let mut declared = false;
    for ins in df.instructions.iter().filter(|i| i.keyword == "ARG") {
        for (name, default) in arg_defaults(ins) {
            if name != "RUST_VERSION" {
                continue;
            }
            declared = true;
            let message = match default {
                Some(v) if v == expected => continue,
                Some(v) => format!(
                    "the default RUST_VERSION {v} differs from the workspace's rust-version {expected}, so the images build with another toolchain than the one the workspace declares"
                ),
                None => format!(
                    "RUST_VERSION has no default, so a build without --build-arg RUST_VERSION does not use the workspace's rust-version {expected}"
                ),
            };
            findings.push(Finding {
                id: "rust-version-mismatch",
                line: ins.line,
                message,
                fix: fix.clone(),
            });
        }
    }
    if declared {
        return;
    }
    for stage in &df.stages {
        let image = stage
            .base
            .strip_prefix("docker.io/library/")
            .unwrap_or(&stage.base);
        let Some(tag) = image.strip_prefix("rust:") else {
            continue;
        };
        let version = tag.split('-').next().unwrap_or("");
        if !version.starts_with(|c: char| c.is_ascii_digit()) || version == expected {
            continue;
        }
        findings.push(Finding {
            id: "rust-version-mismatch",
            line: stage.line,
            message: format!(
                "the base image rust:{version} differs from the workspace's rust-version {expected}, so the image builds with another toolchain than the one the workspace declares"
            ),
            fix: format!("declare ARG RUST_VERSION={expected} and use FROM rust:${{RUST_VERSION}}-..."),
        });
    }
}

/// For a cache target inside a cargo home (`<home>/registry[/...]` or `<home>/git[/...]`):
/// the home and which of the two directories it is.
fn cargo_home_of(target: &str) -> Option<(String, &'static str)> {
    let parts: Vec<&str> = target.split('/').collect();
    let at = parts.iter().position(|p| *p == "registry" || *p == "git")?;
    let dir = if parts[at] == "registry" {
        "registry"
    } else {
        "git"
    };
    let home = parts[..at].join("/");
    Some((
        if home.is_empty() {
            "/".to_string()
        } else {
            home
        },
        dir,
    ))
}

/// Whether a cargo command builds the whole workspace (`--workspace` or its alias `--all`).
fn builds_workspace(command: &str) -> bool {
    command
        .split_whitespace()
        .any(|w| w == "--workspace" || w == "--all")
}

/// The byte index in `command` of an `|| true`, `|| :`, `|| exit 0` or trailing `; true` that
/// follows a cargo command.
fn swallowed_failure(command: &str) -> Option<usize> {
    let cargo = find_word(command, "cargo")?;
    let rest = &command[cargo..];
    let mut search = 0;
    while let Some(i) = rest[search..].find("||") {
        let at = search + i;
        let after = rest[at + 2..].trim_start();
        let swallow = ["true", ":", "exit 0"].iter().any(|w| {
            after.strip_prefix(w).is_some_and(|tail| {
                tail.is_empty()
                    || tail.starts_with(|c: char| c.is_whitespace() || c == ';' || c == ')')
            })
        });
        if swallow {
            return Some(cargo + at);
        }
        search = at + 2;
    }
    let trimmed = rest.trim_end();
    for tail in ["true", ":"] {
        let Some(head) = trimmed.strip_suffix(tail) else {
            continue;
        };
        let head = head.trim_end();
        if let Some(head) = head.strip_suffix(';') {
            return Some(cargo + head.len());
        }
    }
    None
}

/// The index of `word` in `text` where it stands as a command word.
fn find_word(text: &str, word: &str) -> Option<usize> {
    text.match_indices(word).map(|(i, _)| i).find(|&i| {
        let before_ok = text[..i].chars().next_back().is_none_or(|c| {
            c.is_whitespace() || matches!(c, ';' | '&' | '|' | '(' | '`' | '"' | '\'')
        });
        let after_ok = text[i + word.len()..]
            .chars()
            .next()
            .is_none_or(|c| c.is_whitespace());
        before_ok && after_ok
    })
}

/// `NAME=value` in a command (e.g. `CARGO_TARGET_DIR=/x cargo build`), value unquoted.
fn assignment(command: &str, name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    shell_words(command).into_iter().find_map(|w| {
        w.strip_prefix(prefix.as_str())
            .map(|v| unquote(v).to_string())
    })
}

/// `ARG A=1 B` -> [("A", Some("1")), ("B", None)].
fn arg_defaults(ins: &Instruction) -> Vec<(String, Option<String>)> {
    shell_words(&ins.args)
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(unquote(v).to_string())),
            None => (w.to_string(), None),
        })
        .collect()
}

/// `ENV A=1 B=2` or `ENV A 1`.
fn env_pairs(args: &str) -> Vec<(String, String)> {
    let words = shell_words(args);
    match words.first() {
        Some(first) if !first.contains('=') => {
            let value = args[first.len()..].trim();
            vec![(first.to_string(), unquote(value).to_string())]
        }
        _ => words
            .into_iter()
            .filter_map(|w| {
                w.split_once('=')
                    .map(|(k, v)| (k.to_string(), unquote(v).to_string()))
            })
            .collect(),
    }
}

/// The source and destination words of a COPY/ADD, JSON form included.
fn copy_words(args: &str) -> Vec<String> {
    if args.starts_with('[') {
        if let Ok(words) = serde_json::from_str::<Vec<String>>(args) {
            return words;
        }
    }
    shell_words(args)
        .into_iter()
        .map(|w| unquote(w).to_string())
        .collect()
}

fn unquote(s: &str) -> &str {
    let s = s.trim();
    for q in ['"', '\''] {
        if let Some(inner) = s.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return inner;
        }
    }
    s
}

/// An absolute, normalized path: `path` resolved against `dir`, without `.`, empty components
/// or a trailing slash.
fn resolve(dir: &str, path: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{dir}/{path}")
    };
    let parts: Vec<&str> = joined
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

fn stage_label(stage: &Stage) -> String {
    stage
        .name
        .clone()
        .unwrap_or_else(|| stage.index.to_string())
}

#[cfg(test)]
mod tests;
