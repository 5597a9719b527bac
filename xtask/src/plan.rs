//! The build plan, as data: which images, with which Dockerfile, stage, build arguments, tags and
//! outputs, and the exact `docker buildx build` argv for each. Pure: nothing here runs a process
//! or touches the file system, so every option's effect is snapshot-tested.
//!
//! Longer than 500 lines: the flags' checks (owned build args, secrets, ssh, stages) and the
//! dry-run renderings sit beside the plan they check and render.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{
    proc::shell_line,
    target::{Compression, Output, Spec, Target},
    workspace::{Declaration, ImageDecl},
};

/// How many builds run at once when `--jobs` is not given. Measured (docs/SCALING.md, 64 service
/// images of the real dependency set on one engine, after a change in one service): all 64 buildx
/// builds at once took 39-55 s and 7 to 64 of them failed with BuildKit's `DeadlineExceeded:
/// context deadline exceeded` (one `buildx bake` of the 64 targets failed the same way); 16 at a
/// time took 19.4 s and 8 at a time 16.7-17.9 s, none failed. 32 at once (the 32-image size)
/// never failed. Every image the project declares today runs at once under it.
pub const AUTO_JOBS: usize = 16;

/// What the caller chose; every field changes the commands in a way the plan tests pin down.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub strategy: String,
    pub tag: String,
    /// `registry/namespace` to prefix image names with (for `--push`).
    pub registry: Option<String>,
    pub builder: Option<String>,
    pub platforms: Vec<String>,
    pub push: bool,
    /// With `push`: push each image's tag as its build finishes (no atomic publish).
    pub push_partial: bool,
    /// Builders (buildx builder names or docker contexts) to spread the images over.
    pub builders: Vec<String>,
    /// Which of `builders` are docker contexts (run with `docker --context`), not buildx builders.
    pub contexts: Vec<String>,
    /// With several builders: a failed build is not run again on another builder.
    pub no_retry: bool,
    /// Typed from the flags; `{image}` is replaced by the image name.
    pub cache_from: Vec<Spec>,
    pub cache_to: Vec<Spec>,
    /// `KEY=VALUE`, given to every build after the declared ones (never one the declaration
    /// owns: see [`check_build_args`]).
    pub build_args: Vec<String>,
    /// buildx `--secret` and `--ssh` values, passed through (see [`check_secret`], [`check_ssh`]).
    pub secrets: Vec<Spec>,
    pub ssh: Vec<String>,
    pub no_cache: bool,
    pub pull: bool,
    /// The new layers' compression (`--compression`); none: uncompressed for a loaded image,
    /// BuildKit's default for a pushed one (see [`crate::target::Compression`]).
    pub compression: Option<Compression>,
    /// Where the logs go, relative to the workspace root.
    pub log_dir: PathBuf,
    /// How many builds run at once (0: up to [`AUTO_JOBS`]).
    pub jobs: usize,
}

/// One image's build: its typed [`Target`], and how this xtask runs it. The command line is
/// never stored: [`Build::argv`] renders it from the target, where the process starts (and in
/// `--dry-run` and `--json`, which show the same rendering).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    pub image: String,
    pub target: Target,
    pub log: PathBuf,
    /// The tag that moves to this build's pushed digest once the whole set is pushed (an atomic
    /// publish: the build itself pushes only the staging tag).
    pub publish: Option<Publish>,
}

impl Serialize for Build {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut out = s.serialize_struct("Build", 5)?;
        out.serialize_field("image", &self.image)?;
        out.serialize_field("target", &self.target)?;
        out.serialize_field("argv", &self.argv())?;
        out.serialize_field("log", &self.log)?;
        match &self.publish {
            Some(publish) => out.serialize_field("publish", publish)?,
            None => out.skip_field("publish")?,
        }
        out.end()
    }
}

/// A tag that moves only when every image of the set has been pushed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Publish {
    /// `REPO:TAG`, the tag users pull.
    pub tag: String,
    /// `REPO`, where the pushed digest lives.
    pub repository: String,
}

/// The build pushes `REPO:<this prefix><TAG>`: the tag users pull is not touched by the build.
pub const STAGING_PREFIX: &str = "xtask-staging-";

impl Publish {
    /// The command that points the tag at `digest`: the registry copies nothing, the manifest
    /// is the one the build pushed.
    pub fn move_argv(&self, digest: &str) -> Vec<String> {
        vec![
            "docker".into(),
            "buildx".into(),
            "imagetools".into(),
            "create".into(),
            "--tag".into(),
            self.tag.clone(),
            format!("{}@{digest}", self.repository),
        ]
    }
}

impl Build {
    /// The full command line, starting with `docker`, rendered from `target`; run from the
    /// workspace root.
    pub fn argv(&self) -> Vec<String> {
        self.target.build_argv("rawjson")
    }

    /// Where it runs: its buildx builder or docker context, if named.
    pub fn runs_on(&self) -> Option<&str> {
        (self.target.builder.as_deref()).or(self.target.docker_context.as_deref())
    }

    /// `attune-api:dev` for images; `None` for local outputs.
    pub fn tag(&self) -> Option<&String> {
        self.target.tags.first()
    }

    pub fn dockerfile(&self) -> &Path {
        &self.target.dockerfile
    }

    /// Where a local output lands, relative to the workspace root.
    pub fn output_dir(&self) -> Option<&Path> {
        match &self.target.output {
            Output::Local(dir) => Some(dir),
            Output::Load | Output::Push | Output::Registry(_) => None,
        }
    }

    /// Whether the result is loaded into the engine (and so has a size and an image ID there).
    pub fn loaded(&self) -> bool {
        self.target.output == Output::Load
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Plan {
    pub strategy: String,
    /// How many builds run at once.
    pub jobs: usize,
    pub builds: Vec<Build>,
    /// With several builders and one shared builder stage: the image built first, alone, whose
    /// build exports the layer cache (`cache_ref`) that the others import.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_ref: Option<String>,
    /// Whether a failed build runs once more on another builder.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub retry: bool,
    /// The builder names that are docker contexts (see [`Options::contexts`]).
    #[serde(skip)]
    pub contexts: Vec<String>,
    /// A wave's builds run as `docker buildx bake`s of at most this many targets, one after
    /// another, instead of one `buildx build` each (see [`Plan::bakes`]): docker-build sets it
    /// for the images after the binaries' probe, whose builder stage the probe built.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bake: Option<usize>,
}

/// One `docker buildx bake` of some of a plan's builds: its command line, and the bake file it
/// reads (where to write it, what to write). Pure: [`Plan::bakes`] makes it.
#[derive(Debug, Clone, PartialEq)]
pub struct BakeRun {
    /// Indexes into the plan's builds.
    pub builds: Vec<usize>,
    pub file: PathBuf,
    pub definition: serde_json::Value,
    pub argv: Vec<String>,
}

impl Build {
    /// A build of `stage` of this build's Dockerfile, with this build's arguments, exported to
    /// the directory `dest` (no tag, no cache export), its log `LOG_DIR/STAGE.log`: a stage that
    /// is a file to read (cargo's timing report, the binaries' digests), not an image.
    pub fn export_stage(&self, stage: &str, dest: PathBuf, log_dir: &Path) -> Build {
        let mut target = self.target.clone();
        target.name = stage.into();
        target.target = stage.into();
        target.tags.clear();
        target.cache_to.clear();
        target.metadata_file = None;
        target.output = crate::target::Output::Local(dest);
        target.compression = None;
        Build {
            image: stage.into(),
            target,
            log: log_dir.join(format!("{stage}.log")),
            publish: None,
        }
    }
}

impl Plan {
    /// This plan's settings with `build` as its only build: no seed, no retry, one at a time.
    pub fn single(&self, build: Build) -> Plan {
        Plan {
            jobs: 1,
            builds: vec![build],
            seed: None,
            cache_ref: None,
            retry: false,
            ..self.clone()
        }
    }

    /// The builds in the order they start: the seed alone first (when there is one), then all
    /// the others. Indexes into `builds`.
    pub fn waves(&self) -> Vec<Vec<usize>> {
        let all: Vec<usize> = (0..self.builds.len()).collect();
        match &self.seed {
            Some(seed) => {
                let (first, rest): (Vec<usize>, Vec<usize>) = all
                    .into_iter()
                    .partition(|&i| &self.builds[i].image == seed);
                [first, rest]
                    .into_iter()
                    .filter(|w| !w.is_empty())
                    .collect()
            }
            None => vec![all],
        }
    }

    /// How `wave` runs as bakes ([`Plan::bake`]), or None: one `buildx build` per build. Only
    /// two or more builds that a bake file expresses whole and that read nothing outside the
    /// workspace bake needs a permission for: on the default builder, no named contexts,
    /// secrets, ssh, layer cache or metadata file, no secret-looking build argument (the file
    /// stays beside the logs). The file is `bake-N.json` beside the first build's log.
    pub fn bakes(&self, wave: &[usize]) -> Option<Vec<BakeRun>> {
        let size = self.bake?.max(1);
        let builds: Vec<&Build> = wave.iter().map(|&i| &self.builds[i]).collect();
        // bake asks for a permission (`--allow fs=...`) to read or write outside its directory
        let inside = |p: &Path| {
            p.is_relative()
                && (p.components()).all(|c| !matches!(c, std::path::Component::ParentDir))
        };
        let plain = |b: &&Build| {
            let t = &b.target;
            t.builder.is_none()
                && t.docker_context.is_none()
                && t.contexts.is_empty()
                && t.secrets.is_empty()
                && t.ssh.is_empty()
                && t.cache_from.is_empty()
                && t.cache_to.is_empty()
                && t.metadata_file.is_none()
                && !t.args.iter().any(|(k, _)| is_secret_name(k))
                && [&t.context, &t.dockerfile].into_iter().all(|p| inside(p))
                // bake reads the Dockerfile relative to the context
                && t.context == Path::new(".")
                // bake reads a value as an HCL template
                && !(t.args.iter().map(|(_, v)| v).chain(&t.tags).chain(t.labels.iter().map(|(_, v)| v)))
                    .any(|v| v.contains("${") || v.contains("%{"))
                && !matches!(&t.output, Output::Local(dest) if !inside(dest))
        };
        // bake's target names
        let named = |b: &&Build| {
            (b.target.name.chars()).all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if builds.len() < 2 || !builds.iter().all(|b| plain(b) && named(b)) {
            return None;
        }
        let dir = builds[0]
            .log
            .parent()
            .unwrap_or(Path::new("."))
            .to_path_buf();
        (wave.chunks(size).enumerate())
            .map(|(n, chunk)| {
                let targets = chunk.iter().map(|&i| &self.builds[i].target);
                let definition = crate::target::bake_file(targets).ok()?;
                let file = dir.join(format!("bake-{}.json", n + 1));
                let argv = ["docker", "buildx", "bake", "--progress=rawjson", "--file"]
                    .map(String::from)
                    .into_iter()
                    .chain([file.to_string_lossy().into_owned()])
                    .collect();
                Some(BakeRun {
                    builds: chunk.to_vec(),
                    file,
                    definition,
                    argv,
                })
            })
            .collect()
    }

    /// Whether the tags move only after every build has pushed (an atomic publish).
    pub fn publishes(&self) -> bool {
        self.builds.iter().any(|b| b.publish.is_some())
    }
}

/// `build` run on `builder` instead (a docker context when `contexts` names it, else a buildx
/// builder), logging to `log`: a placement or a retry. Pure.
pub fn retarget(build: &Build, builder: &str, log: PathBuf, contexts: &[String]) -> Build {
    let mut target = build.target.clone();
    let is_context = builder != "default" && contexts.iter().any(|c| c == builder);
    target.builder = (!is_context).then(|| builder.to_string());
    target.docker_context = is_context.then(|| builder.to_string());
    Build {
        target,
        log,
        ..build.clone()
    }
}

/// The plan for `images` (already selected) under `options`; an image the strategy cannot
/// build, or an unknown strategy, is a usage error.
///
/// `jobs` 0 runs up to [`AUTO_JOBS`] builds at once.
pub fn plan(
    decl: &Declaration,
    images: &[&ImageDecl],
    options: &Options,
) -> Result<Plan, crate::util::UsageError> {
    let mut builds: Vec<Build> = images
        .iter()
        .map(|image| {
            let (dockerfile, stage) = decl.dockerfile_for(&options.strategy, image)?;
            Ok(build(decl, image, dockerfile, stage, options))
        })
        .collect::<Result<_, crate::util::UsageError>>()?;
    if let Some(c) = options.compression {
        if builds.iter().all(|b| b.target.compression.is_none()) {
            return Err(crate::util::UsageError(format!(
                "--compression {}: none of the selected images is loaded or pushed (their files are exported: {}); it compresses an image's layers",
                c.name(),
                builds.iter().map(|b| b.image.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
    }
    let jobs = match options.jobs {
        0 => builds.len().clamp(1, AUTO_JOBS),
        n => n.min(builds.len().max(1)),
    };
    let (mut seed, mut cache_ref) = (None, None);
    if !options.builders.is_empty() {
        // a strategy declared with one Dockerfile for every image has one builder stage for all
        let shared_stage = builds.len() > 1
            && (decl.strategies.get(&options.strategy)).is_some_and(|s| s.dockerfile.is_some());
        if options.builders.len() > 1 && shared_stage {
            let Some(registry) = &options.registry else {
                return Err(crate::util::UsageError(format!(
                    "--builders {}: the {} strategy's builder stage runs on one builder and its layer cache reaches the others through a registry; add --registry HOST[:PORT]/PREFIX",
                    options.builders.join(","),
                    options.strategy
                )));
            };
            let reference = crate::farm::cache_ref(registry, &options.strategy);
            crate::farm::seed_cache(builds.iter_mut().map(|b| &mut b.target), &reference);
            seed = Some(builds[0].image.clone());
            cache_ref = Some(reference);
        }
        let placement = crate::farm::place(builds.len(), &options.builders);
        for (build, builder) in builds.iter_mut().zip(placement) {
            *build = retarget(build, &builder, build.log.clone(), &options.contexts);
        }
    }
    Ok(Plan {
        strategy: options.strategy.clone(),
        jobs,
        builds,
        seed,
        cache_ref,
        retry: options.builders.len() > 1 && !options.no_retry,
        contexts: options.contexts.clone(),
        bake: None,
    })
}

fn build(
    decl: &Declaration,
    image: &ImageDecl,
    dockerfile: PathBuf,
    stage: String,
    options: &Options,
) -> Build {
    let tag = (!image.is_local_output()).then(|| {
        let name = format!("{}{}:{}", decl.image_prefix, image.name, options.tag);
        match &options.registry {
            Some(registry) => format!("{}/{name}", registry.trim_end_matches('/')),
            None => name,
        }
    });
    let args = image
        .service
        .iter()
        .map(|service| ("SERVICE".to_string(), service.clone()))
        .chain(options.build_args.iter().map(|arg| {
            let (key, value) = arg.split_once('=').unwrap_or((arg, ""));
            (key.to_string(), value.to_string())
        }))
        .collect();
    let atomic = options.push && !options.push_partial;
    let publish = tag.as_ref().filter(|_| atomic).map(|tag| {
        let (repository, _) = tag.rsplit_once(':').unwrap_or((tag, ""));
        Publish {
            tag: tag.clone(),
            repository: repository.to_string(),
        }
    });
    let pushed_tag = match &publish {
        Some(p) => Some(format!("{}:{STAGING_PREFIX}{}", p.repository, options.tag)),
        None => tag.clone(),
    };
    let output = match (&tag, &image.output) {
        (Some(_), _) if options.push => Output::Push,
        (Some(_), _) => Output::Load,
        (None, Some(dest)) => Output::Local(dest.clone()),
        (None, None) => unreachable!("an image without a tag has a local output"),
    };
    let pushed = output == Output::Push;
    let compression = match output {
        Output::Load => Some(options.compression.unwrap_or(Compression::Uncompressed)),
        Output::Push => options.compression,
        Output::Local(_) | Output::Registry(_) => None,
    };
    let target = Target {
        name: image.name.clone(),
        context: PathBuf::from("."),
        dockerfile,
        target: stage,
        args,
        tags: pushed_tag.into_iter().collect(),
        platforms: options.platforms.clone(),
        cache_from: (options.cache_from.iter())
            .map(|from| from.for_image(&image.name))
            .collect(),
        cache_to: (options.cache_to.iter())
            .map(|to| to.for_image(&image.name))
            .collect(),
        output,
        compression,
        secrets: options.secrets.clone(),
        ssh: options.ssh.clone(),
        pull: options.pull,
        no_cache: options.no_cache,
        builder: options.builder.clone(),
        docker_context: None,
        // a pushed image's digest is read from there
        metadata_file: pushed.then(|| {
            options
                .log_dir
                .join(format!("{}.metadata.json", image.name))
        }),
        ..Target::default()
    };
    Build {
        image: image.name.clone(),
        target,
        log: options.log_dir.join(format!("{}.log", image.name)),
        publish,
    }
}

/// Build arguments the declaration sets itself: a user's value would silently win over the
/// declared one (the last `--build-arg` wins), putting another service's binary under an image.
pub const OWNED_BUILD_ARGS: &[&str] = &["SERVICE"];

/// Checks `--build-arg` values: `KEY=VALUE` with a non-empty key, and no key the declaration owns.
pub fn check_build_args(args: &[String]) -> Result<(), String> {
    for arg in args {
        let Some((key, _)) = arg.split_once('=') else {
            return Err(format!("--build-arg `{arg}` is not KEY=VALUE"));
        };
        if key.is_empty() || key.chars().any(char::is_whitespace) {
            return Err(format!(
                "--build-arg `{arg}`: the name before `=` is empty or has spaces"
            ));
        }
        if let Some(owned) = OWNED_BUILD_ARGS
            .iter()
            .find(|o| o.eq_ignore_ascii_case(key))
        {
            return Err(format!(
                "--build-arg {key}: {owned} is set per image by the declaration ([workspace.metadata.attune], `service`) and cannot be overridden; select images by name instead"
            ));
        }
    }
    Ok(())
}

/// Checks a `--secret` value as buildx reads it: `id=NAME[,src=FILE|,env=VAR][,type=file|env]`.
pub fn check_secret(value: &str) -> Result<(), String> {
    let mut id = false;
    for part in value.split(',') {
        match part.split_once('=') {
            Some(("id", v)) if !v.is_empty() => id = true,
            Some(("src" | "source" | "env", v)) if !v.is_empty() => {}
            Some(("type", "file" | "env")) => {}
            _ => {
                return Err(format!(
                    "--secret `{value}`: expected id=NAME[,src=FILE|,env=VAR] (bad `{part}`)"
                ))
            }
        }
    }
    if !id {
        return Err(format!("--secret `{value}`: no id=NAME"));
    }
    Ok(())
}

/// Checks an `--ssh` value as buildx reads it: `default` or `ID[=SOCKET|KEY[,KEY...]]`.
pub fn check_ssh(value: &str) -> Result<(), String> {
    let (id, paths) = value.split_once('=').unwrap_or((value, "x"));
    let id_ok = !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !id_ok || paths.split(',').any(str::is_empty) {
        return Err(format!(
            "--ssh `{value}`: expected `default` or ID[=SOCKET|KEY[,KEY...]]"
        ));
    }
    Ok(())
}

pub use crate::proc::{is_secret_name, redacted};

impl Plan {
    /// The plan as it may be shown: secret-looking build-argument values redacted.
    pub fn redacted(&self) -> Plan {
        let mut plan = self.clone();
        for build in &mut plan.builds {
            for (key, value) in &mut build.target.args {
                if is_secret_name(key) {
                    *value = "***".into();
                }
            }
        }
        plan
    }
}

/// Checks that the stage `build` targets is one of the stages of its Dockerfile, whose text is
/// `text`: the error names the image, the file and the line to add. A Dockerfile that does not
/// parse is left for buildx to report.
pub fn check_stage(build: &Build, text: &str) -> Result<(), String> {
    let Ok(file) = crate::dockerfile::model::parse(text) else {
        return Ok(());
    };
    let stages: Vec<String> = file
        .stages
        .iter()
        .filter_map(|s| s.name.as_deref())
        .map(str::to_ascii_lowercase)
        .collect();
    if stages.contains(&build.target.target.to_ascii_lowercase()) {
        return Ok(());
    }
    let has_service_arg = build.target.args.iter().any(|(key, _)| key == "SERVICE");
    let base = if has_service_arg && stages.iter().any(|s| s == "service") {
        "service"
    } else {
        "<base stage>"
    };
    Err(format!(
        "image `{}`: {} has no stage `{}` (stages: {})\n  hint: add the line `FROM {base} AS {}` to {}",
        build.image,
        build.dockerfile().display(),
        build.target.target,
        stages.join(", "),
        build.target.target,
        build.dockerfile().display()
    ))
}

/// `--dry-run`'s text: the commands in the order and grouping in which they would run, where
/// each runs (with several builders), and the tag moves of an atomic publish.
pub fn render_dry_run(plan: &Plan) -> String {
    let mut out = String::new();
    let n = plan.builds.len();
    out.push_str(&format!(
        "# strategy {}: {n} build{}, {} at a time, from the workspace root\n",
        plan.strategy,
        if n == 1 { "" } else { "s" },
        plan.jobs
    ));
    let line = |out: &mut String, build: &Build| {
        out.push_str(&shell_line(&redacted(&build.argv())));
        out.push_str(&format!("   # {}", build.image));
        if let Some(builder) = build.runs_on() {
            out.push_str(&format!(" on {builder}"));
        }
        out.push_str(&format!(" -> {}\n", build.log.display()));
    };
    let mut rest: Vec<&Build> = plan.builds.iter().collect();
    if let (Some(seed), Some(cache)) = (&plan.seed, &plan.cache_ref) {
        out.push_str(&format!(
            "# first, alone: {seed} compiles the shared builder stage and exports its layer cache to {cache}\n"
        ));
        for build in plan.builds.iter().filter(|b| &b.image == seed) {
            line(&mut out, build);
        }
        rest.retain(|b| &b.image != seed);
        out.push_str("# then the others, importing that cache:\n");
    }
    for (wave, chunk) in rest.chunks(plan.jobs.max(1)).enumerate() {
        if plan.jobs < rest.len() {
            out.push_str(&format!(
                "# started {}: the next build starts as soon as one finishes\n",
                if wave == 0 {
                    "first"
                } else {
                    "as slots free up"
                }
            ));
        } else {
            out.push_str("# started together, running concurrently\n");
        }
        for build in chunk {
            line(&mut out, build);
        }
    }
    if plan.retry {
        out.push_str("# a build that fails runs once more on another builder\n");
    }
    if plan.publishes() {
        out.push_str(&format!(
            "# each build pushes only its staging tag ({STAGING_PREFIX}TAG); only when every build succeeded, every tag moves to its pushed digest (nothing moves otherwise):\n"
        ));
        for build in &plan.builds {
            if let Some(publish) = &build.publish {
                out.push_str(&shell_line(
                    &publish.move_argv(&format!("<digest of {}>", build.image)),
                ));
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::{PackageBins, StrategyDecl};

    fn decl() -> Declaration {
        let metadata = serde_json::json!({"attune": {
            "tag": "dev", "image-prefix": "attune-", "default-strategy": "per-service",
            "groups": {"services": ["api", "worker-shell"]},
            "strategies": {"per-service": {}, "workspace": {"dockerfile": "docker/Dockerfile.workspace"}},
            "images": [
                {"name": "api", "binary": "attune-api", "dockerfile": "docker/Dockerfile.optimized",
                 "target": "runtime", "service": "api"},
                {"name": "worker-shell", "binary": "attune-worker",
                 "dockerfile": "docker/Dockerfile.worker.optimized", "target": "worker-shell"},
                {"name": "pack-binaries", "binary": "attune-core-timer-sensor",
                 "dockerfile": "docker/Dockerfile.pack-binaries", "target": "pack-binaries",
                 "output": "target/pack-binaries"},
            ],
        }});
        let packages: Vec<PackageBins> = ["api", "worker", "core-timer-sensor"]
            .iter()
            .map(|s| PackageBins {
                package: format!("attune-{s}"),
                dir: PathBuf::from(format!("crates/{s}")),
                bins: vec![format!("attune-{s}")],
                deps: vec![],
            })
            .collect();
        let decl = crate::workspace::parse(&metadata, &packages).unwrap();
        assert!(matches!(
            decl.strategies.get("per-service"),
            Some(StrategyDecl {
                dockerfile: None,
                ..
            })
        ));
        decl
    }

    fn options() -> Options {
        Options {
            strategy: "per-service".into(),
            tag: "dev".into(),
            log_dir: PathBuf::from("target/xtask/logs"),
            ..Options::default()
        }
    }

    fn lines(decl: &Declaration, names: &[&str], options: &Options) -> Vec<String> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let images = decl.select(&names).unwrap();
        plan(decl, &images, options)
            .unwrap()
            .builds
            .iter()
            .map(|b| shell_line(&b.argv()))
            .collect()
    }

    #[test]
    fn default_commands_for_each_kind_of_image() {
        let decl = decl();
        assert_eq!(
            lines(&decl, &[], &options()),
            [
                "docker buildx build --progress=rawjson --file docker/Dockerfile.optimized --target runtime \
                 --build-arg SERVICE=api \
                 --tag attune-api:dev --output type=docker,compression=uncompressed .",
                "docker buildx build --progress=rawjson --file docker/Dockerfile.worker.optimized \
                 --target worker-shell \
                 --tag attune-worker-shell:dev --output type=docker,compression=uncompressed .",
                "docker buildx build --progress=rawjson --file docker/Dockerfile.pack-binaries \
                 --target pack-binaries \
                 --output type=local,dest=target/pack-binaries .",
            ]
        );
    }

    #[test]
    fn a_wave_runs_as_bakes_of_its_builds_only_when_the_plan_says_so_and_bake_can_express_them() {
        let decl = decl();
        let images = decl.select(&[]).unwrap();
        let mut plan = plan(&decl, &images, &options()).unwrap();
        let wave: Vec<usize> = (0..plan.builds.len()).collect();
        assert!(wave.len() >= 2, "the test needs two builds or more");
        assert_eq!(plan.bakes(&wave), None, "no bake unless the plan says so");

        plan.bake = Some(usize::MAX);
        let bakes = plan.bakes(&wave).expect("one bake");
        assert_eq!(bakes.len(), 1);
        let bake = &bakes[0];
        assert_eq!(bake.builds, wave);
        assert_eq!(bake.file, Path::new("target/xtask/logs/bake-1.json"));
        assert_eq!(
            shell_line(&bake.argv),
            "docker buildx bake --progress=rawjson --file target/xtask/logs/bake-1.json"
        );
        // the file holds each build's own target, as `cargo xtask bake` writes it
        let targets = plan.builds.iter().map(|b| &b.target);
        assert_eq!(bake.definition, crate::target::bake_file(targets).unwrap());

        // --jobs N: bakes of N, in the wave's order
        plan.bake = Some(2);
        let bakes = plan.bakes(&wave).unwrap();
        let chunks: Vec<Vec<usize>> = bakes.iter().map(|b| b.builds.clone()).collect();
        assert_eq!(
            chunks,
            wave.chunks(2).map(<[usize]>::to_vec).collect::<Vec<_>>()
        );
        assert_eq!(
            bakes.last().unwrap().file,
            Path::new("target/xtask/logs").join(format!("bake-{}.json", chunks.len()))
        );

        // one build, or any build bake would need more than the file for: one build each
        assert_eq!(plan.bakes(&wave[..1]), None);
        for change in [
            |t: &mut Target| t.builder = Some("farm".into()),
            |t: &mut Target| t.metadata_file = Some("m.json".into()),
            |t: &mut Target| t.args.push(("NPM_TOKEN".into(), "x".into())),
            |t: &mut Target| t.contexts.push(("src".into(), "/elsewhere".into())),
            |t: &mut Target| t.output = Output::Local("../elsewhere".into()),
            |t: &mut Target| t.dockerfile = "/elsewhere/Dockerfile".into(),
            |t: &mut Target| t.context = "sub".into(),
            |t: &mut Target| t.args.push(("NOTE".into(), "${HOME}".into())),
        ] {
            let mut other = plan.clone();
            change(&mut other.builds[1].target);
            assert_eq!(other.bakes(&wave), None, "{:?}", other.builds[1].target);
        }
    }

    #[test]
    fn pass_through_options() {
        let decl = decl();
        let options = Options {
            tag: "1.2.3".into(),
            registry: Some("registry.example/attune/".into()),
            builder: Some("k8s".into()),
            platforms: vec!["linux/amd64".into(), "linux/arm64".into()],
            push: true,
            push_partial: true,
            cache_from: vec!["type=registry,ref=registry.example/cache:{image}".into()],
            cache_to: vec!["type=registry,ref=registry.example/cache:{image},mode=max".into()],
            build_args: vec!["RUST_VERSION=1.96".into()],
            no_cache: true,
            pull: true,
            ..options()
        };
        assert_eq!(
            lines(&decl, &["api"], &options),
            ["docker buildx build --builder k8s --progress=rawjson \
              --metadata-file target/xtask/logs/api.metadata.json --file docker/Dockerfile.optimized \
              --target runtime --build-arg SERVICE=api --build-arg RUST_VERSION=1.96 \
              --platform linux/amd64,linux/arm64 \
              --cache-from type=registry,ref=registry.example/cache:api \
              --cache-to type=registry,ref=registry.example/cache:api,mode=max --no-cache --pull \
              --tag registry.example/attune/attune-api:1.2.3 --push ."]
        );
    }

    #[test]
    fn an_atomic_push_pushes_a_staging_tag_and_moves_the_real_one_afterwards() {
        let decl = decl();
        let options = Options {
            registry: Some("127.0.0.1:5000/attune".into()),
            push: true,
            ..options()
        };
        let images = decl
            .select(&["api".into(), "pack-binaries".into()])
            .unwrap();
        let plan = plan(&decl, &images, &options).unwrap();
        assert!(plan.publishes());
        let api = &plan.builds[0];
        assert_eq!(
            api.target.tags,
            ["127.0.0.1:5000/attune/attune-api:xtask-staging-dev"]
        );
        assert_eq!(
            api.target.metadata_file.as_deref(),
            Some(Path::new("target/xtask/logs/api.metadata.json"))
        );
        let publish = api.publish.as_ref().unwrap();
        assert_eq!(
            publish.move_argv("sha256:ab"),
            [
                "docker",
                "buildx",
                "imagetools",
                "create",
                "--tag",
                "127.0.0.1:5000/attune/attune-api:dev",
                "127.0.0.1:5000/attune/attune-api@sha256:ab"
            ]
        );
        // a local output is not published
        assert_eq!(plan.builds[1].publish, None);
        let text = render_dry_run(&plan);
        assert!(
            text.contains("only when every build succeeded, every tag moves"),
            "{text}"
        );
        assert!(
            text.contains("docker buildx imagetools create --tag 127.0.0.1:5000/attune/attune-api:dev '127.0.0.1:5000/attune/attune-api@<digest of api>'"),
            "{text}"
        );
        // --push-partial: the real tag, pushed by the build itself
        let partial = Options {
            push_partial: true,
            ..options
        };
        let plan = super::plan(&decl, &images, &partial).unwrap();
        assert!(!plan.publishes());
        assert_eq!(
            plan.builds[0].target.tags,
            ["127.0.0.1:5000/attune/attune-api:dev"]
        );
    }

    #[test]
    fn several_builders_share_one_builder_stage_through_the_registry() {
        let decl = decl();
        let options = Options {
            strategy: "workspace".into(),
            registry: Some("127.0.0.1:5000/attune".into()),
            builders: vec!["default".into(), "second".into()],
            ..options()
        };
        let images = decl.select(&[]).unwrap();
        let plan = plan(&decl, &images, &options).unwrap();
        let cache = "127.0.0.1:5000/attune/attune-cache:workspace";
        assert_eq!(plan.seed.as_deref(), Some("api"));
        assert_eq!(plan.cache_ref.as_deref(), Some(cache));
        assert!(plan.retry);
        assert_eq!(plan.waves(), [vec![0], vec![1, 2]]);
        let where_: Vec<_> = (plan.builds.iter())
            .map(|b| b.target.builder.as_deref().unwrap())
            .collect();
        assert_eq!(where_, ["default", "second", "default"]);
        assert_eq!(
            plan.builds[0].target.cache_to,
            [Spec::from(
                format!("type=registry,ref={cache},mode=max").as_str()
            )]
        );
        for build in &plan.builds[1..] {
            assert_eq!(
                build.target.cache_from,
                [Spec::from(format!("type=registry,ref={cache}").as_str())]
            );
            assert!(build.target.cache_to.is_empty());
            assert!(
                build.argv().contains(&"second".to_string())
                    || build.argv().contains(&"default".to_string())
            );
        }
        let text = render_dry_run(&plan);
        assert!(
            text.contains("# first, alone: api compiles the shared builder stage"),
            "{text}"
        );
        assert!(text.contains("# worker-shell on second -> "), "{text}");
        // without a registry, the cache has nowhere to go
        let err = super::plan(
            &decl,
            &images,
            &Options {
                registry: None,
                ..options.clone()
            },
        )
        .unwrap_err();
        assert!(err.0.starts_with("--builders default,second: "), "{err}");
        // per-service builds share no stage: spread, no seed, no registry needed
        let spread = super::plan(
            &decl,
            &images,
            &Options {
                strategy: "per-service".into(),
                registry: None,
                no_retry: true,
                ..options
            },
        )
        .unwrap();
        assert_eq!(spread.seed, None);
        assert!(!spread.retry);
        assert_eq!(spread.waves(), [vec![0, 1, 2]]);
        assert_eq!(spread.builds[1].target.builder.as_deref(), Some("second"));
    }

    #[test]
    fn a_retry_runs_the_same_build_on_another_builder() {
        let decl = decl();
        let options = Options {
            builders: vec!["a".into(), "b".into()],
            ..options()
        };
        let images = decl.select(&["api".into()]).unwrap();
        let plan = plan(&decl, &images, &options).unwrap();
        let again = retarget(&plan.builds[0], "b", "logs/api.retry.log".into(), &[]);
        assert_eq!(again.target.builder.as_deref(), Some("b"));
        assert_eq!(again.log, Path::new("logs/api.retry.log"));
        let mut want = plan.builds[0].argv();
        want[4] = "b".into();
        assert_eq!(again.argv(), want);
        // a docker context runs the build with `docker --context`, not `--builder`
        let on_context = retarget(&plan.builds[0], "b", "x.log".into(), &["b".into()]);
        assert_eq!(on_context.target.builder, None);
        assert_eq!(
            on_context.argv()[..5],
            ["docker", "--context", "b", "buildx", "build"]
        );
        assert_eq!(on_context.runs_on(), Some("b"));
        assert!(on_context.target.bake().is_err());
        // `default` is the builder of DOCKER_HOST's engine, even though a context has that name
        let default = retarget(
            &plan.builds[0],
            "default",
            "x.log".into(),
            &["default".into()],
        );
        assert_eq!(default.target.builder.as_deref(), Some("default"));
    }

    #[test]
    fn workspace_strategy_uses_one_dockerfile_with_a_stage_per_image() {
        let decl = decl();
        let options = Options {
            strategy: "workspace".into(),
            ..options()
        };
        let lines = lines(&decl, &["worker-shell", "pack-binaries"], &options);
        assert_eq!(
            lines,
            [
                "docker buildx build --progress=rawjson --file docker/Dockerfile.workspace --target worker-shell \
                 --tag attune-worker-shell:dev --output type=docker,compression=uncompressed .",
                "docker buildx build --progress=rawjson --file docker/Dockerfile.workspace --target pack-binaries \
                 --output type=local,dest=target/pack-binaries .",
            ]
        );
    }

    #[test]
    fn every_declared_image_runs_at_once_without_jobs() {
        // AUTO_JOBS's doc says so: the project's own declaration, read, not restated
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap();
        let decl = crate::workspace::load(root).unwrap();
        let all = decl.select(&[]).unwrap();
        assert!(all.len() <= AUTO_JOBS, "{} images > AUTO_JOBS", all.len());
        let plan = plan(
            &decl,
            &all,
            &Options {
                strategy: decl.default_strategy.clone(),
                ..Options::default()
            },
        )
        .unwrap();
        assert_eq!(plan.jobs, all.len());
    }

    #[test]
    fn jobs_bound_and_dry_run_grouping() {
        let decl = decl();
        let images = decl.select(&[]).unwrap();
        let all = plan(&decl, &images, &options()).unwrap();
        assert_eq!(all.jobs, 3);
        let text = render_dry_run(&all);
        assert!(
            text.starts_with("# strategy per-service: 3 builds, 3 at a time"),
            "{text}"
        );
        assert!(
            text.contains("# started together, running concurrently"),
            "{text}"
        );
        let two = plan(
            &decl,
            &images,
            &Options {
                jobs: 2,
                ..options()
            },
        )
        .unwrap();
        assert_eq!(two.jobs, 2);
        let text = render_dry_run(&two);
        assert!(text.contains("# started first"), "{text}");
        assert!(text.contains("# started as slots free up"), "{text}");
        assert!(
            text.contains("# pack-binaries -> target/xtask/logs/pack-binaries.log"),
            "{text}"
        );
    }

    #[test]
    fn a_stage_missing_from_the_dockerfile_is_reported_with_the_line_to_add() {
        let decl = decl();
        let options = Options {
            strategy: "workspace".into(),
            ..options()
        };
        let images = decl.select(&["api".into(), "worker-shell".into()]).unwrap();
        let plan = plan(&decl, &images, &options).unwrap();
        let text =
            "FROM rust AS builder\nFROM debian AS service\nARG SERVICE\nFROM service AS Api\n";
        assert_eq!(check_stage(&plan.builds[0], text), Ok(()));
        let err = check_stage(&plan.builds[1], text).unwrap_err();
        assert!(
            err.starts_with(
                "image `worker-shell`: docker/Dockerfile.workspace has no stage `worker-shell` (stages: builder, service, api)"
            ),
            "{err}"
        );
        assert!(
            err.contains(
                "add the line `FROM <base stage> AS worker-shell` to docker/Dockerfile.workspace"
            ),
            "{err}"
        );
        let err = check_stage(&plan.builds[0], "FROM debian AS service\n").unwrap_err();
        assert!(err.contains("`FROM service AS api`"), "{err}");
    }

    #[test]
    fn build_args_the_declaration_owns_are_refused() {
        assert_eq!(check_build_args(&["RUST_VERSION=1.96".into()]), Ok(()));
        let err = check_build_args(&["SERVICE=executor".into()]).unwrap_err();
        assert!(
            err.starts_with("--build-arg SERVICE: SERVICE is set per image"),
            "{err}"
        );
        assert!(check_build_args(&["service=x".into()]).is_err());
        let err = check_build_args(&["=x".into()]).unwrap_err();
        assert!(err.contains("the name before `=` is empty"), "{err}");
        assert!(check_build_args(&["X".into()]).is_err());
    }

    #[test]
    fn secret_and_ssh_values_are_checked_and_passed_through() {
        assert_eq!(check_secret("id=npm,src=.npmrc"), Ok(()));
        assert_eq!(check_secret("id=token,env=GH_TOKEN"), Ok(()));
        assert!(check_secret("src=.npmrc")
            .unwrap_err()
            .contains("no id=NAME"));
        assert!(check_secret("id=x,colour=red").is_err());
        assert!(check_secret("").is_err());
        assert_eq!(check_ssh("default"), Ok(()));
        assert_eq!(check_ssh("default=/run/agent.sock"), Ok(()));
        assert_eq!(check_ssh("git=k1,k2"), Ok(()));
        assert!(check_ssh("").is_err());
        assert!(check_ssh("a b").is_err());
        assert!(check_ssh("x=").is_err());
        let decl = decl();
        let options = Options {
            secrets: vec!["id=npm,src=.npmrc".into()],
            ssh: vec!["default".into()],
            ..options()
        };
        let line = &lines(&decl, &["api"], &options)[0];
        assert!(
            line.contains("--build-arg SERVICE=api --secret id=npm,src=.npmrc --ssh default "),
            "{line}"
        );
    }

    #[test]
    fn secret_looking_build_args_are_redacted_where_shown() {
        let decl = decl();
        let options = Options {
            build_args: vec![
                "NPM_TOKEN=abc".into(),
                "db_password=p".into(),
                "RUST_VERSION=1.96".into(),
            ],
            ..options()
        };
        let images = decl.select(&["api".into()]).unwrap();
        let plan = plan(&decl, &images, &options).unwrap();
        // the real argv keeps the values: buildx needs them
        assert!(plan.builds[0].argv().contains(&"NPM_TOKEN=abc".to_string()));
        let shown = plan.redacted();
        let json = serde_json::to_string(&shown).unwrap();
        let text = render_dry_run(&plan);
        for out in [&json, &text] {
            assert!(!out.contains("abc") && !out.contains("=p"), "{out}");
            assert!(
                out.contains("NPM_TOKEN=***") && out.contains("db_password=***"),
                "{out}"
            );
            assert!(out.contains("RUST_VERSION=1.96"), "{out}");
        }
    }
}
