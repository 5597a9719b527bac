//! The build plan, as data: which images, with which Dockerfile, stage, build arguments, tags and
//! outputs, and the exact `docker buildx build` argv for each. Pure: nothing here runs a process
//! or touches the file system, so every option's effect is snapshot-tested.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{
    proc::shell_line,
    target::{Output, Target},
    workspace::{Declaration, ImageDecl},
};

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
    /// Passed through; `{image}` is replaced by the image name.
    pub cache_from: Vec<String>,
    pub cache_to: Vec<String>,
    /// `KEY=VALUE`, given to every build after the declared ones.
    pub build_args: Vec<String>,
    pub no_cache: bool,
    pub pull: bool,
    /// Where the logs go, relative to the workspace root.
    pub log_dir: PathBuf,
    /// How many builds run at once (0: all).
    pub jobs: usize,
}

/// One image's build: its typed [`Target`], and how this xtask runs it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Build {
    pub image: String,
    pub target: Target,
    /// The full command line, starting with `docker`, rendered from `target`; run from the
    /// workspace root.
    pub argv: Vec<String>,
    pub log: PathBuf,
}

impl Build {
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
            Output::Load | Output::Push => None,
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
}

/// The plan for `images` (already selected) under `options`; an image the strategy cannot
/// build, or an unknown strategy, is a usage error.
pub fn plan(
    decl: &Declaration,
    images: &[&ImageDecl],
    options: &Options,
) -> Result<Plan, crate::UsageError> {
    let builds: Vec<Build> = images
        .iter()
        .map(|image| {
            let (dockerfile, stage) = decl.dockerfile_for(&options.strategy, image)?;
            Ok(build(decl, image, dockerfile, stage, options))
        })
        .collect::<Result<_, crate::UsageError>>()?;
    let jobs = match options.jobs {
        0 => builds.len().max(1),
        n => n.min(builds.len().max(1)),
    };
    Ok(Plan {
        strategy: options.strategy.clone(),
        jobs,
        builds,
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
    let output = match (&tag, &image.output) {
        (Some(_), _) if options.push => Output::Push,
        (Some(_), _) => Output::Load,
        (None, Some(dest)) => Output::Local(dest.clone()),
        (None, None) => unreachable!("an image without a tag has a local output"),
    };
    let target = Target {
        name: image.name.clone(),
        context: PathBuf::from("."),
        dockerfile,
        target: stage,
        args,
        tags: tag.into_iter().collect(),
        platforms: options.platforms.clone(),
        cache_from: (options.cache_from.iter())
            .map(|from| from.replace("{image}", &image.name))
            .collect(),
        cache_to: (options.cache_to.iter())
            .map(|to| to.replace("{image}", &image.name))
            .collect(),
        output,
        pull: options.pull,
        no_cache: options.no_cache,
        builder: options.builder.clone(),
    };
    Build {
        image: image.name.clone(),
        argv: target.build_argv("rawjson"),
        target,
        log: options.log_dir.join(format!("{}.log", image.name)),
    }
}

/// `--dry-run`'s text: the commands in the order and grouping in which they would run.
pub fn render_dry_run(plan: &Plan) -> String {
    let mut out = String::new();
    let n = plan.builds.len();
    out.push_str(&format!(
        "# strategy {}: {n} build{}, {} at a time, from the workspace root\n",
        plan.strategy,
        if n == 1 { "" } else { "s" },
        plan.jobs
    ));
    for (wave, chunk) in plan.builds.chunks(plan.jobs.max(1)).enumerate() {
        if plan.jobs < n {
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
            out.push_str(&shell_line(&build.argv));
            out.push_str(&format!(
                "   # {} -> {}\n",
                build.image,
                build.log.display()
            ));
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
            .map(|b| shell_line(&b.argv))
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
                 --tag attune-api:dev --load .",
                "docker buildx build --progress=rawjson --file docker/Dockerfile.worker.optimized \
                 --target worker-shell \
                 --tag attune-worker-shell:dev --load .",
                "docker buildx build --progress=rawjson --file docker/Dockerfile.pack-binaries \
                 --target pack-binaries \
                 --output type=local,dest=target/pack-binaries .",
            ]
        );
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
            cache_from: vec!["type=registry,ref=registry.example/cache:{image}".into()],
            cache_to: vec!["type=registry,ref=registry.example/cache:{image},mode=max".into()],
            build_args: vec!["RUST_VERSION=1.96".into()],
            no_cache: true,
            pull: true,
            ..options()
        };
        assert_eq!(
            lines(&decl, &["api"], &options),
            ["docker buildx build --builder k8s --progress=rawjson --file docker/Dockerfile.optimized \
              --target runtime --build-arg SERVICE=api --build-arg RUST_VERSION=1.96 \
              --platform linux/amd64,linux/arm64 \
              --cache-from type=registry,ref=registry.example/cache:api \
              --cache-to type=registry,ref=registry.example/cache:api,mode=max --no-cache --pull \
              --tag registry.example/attune/attune-api:1.2.3 --push ."]
        );
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
                 --tag attune-worker-shell:dev --load .",
                "docker buildx build --progress=rawjson --file docker/Dockerfile.workspace --target pack-binaries \
                 --output type=local,dest=target/pack-binaries .",
            ]
        );
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
}
