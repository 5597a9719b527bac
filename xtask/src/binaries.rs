//! The builder's binaries first: when the images' last builds recorded what they took from the
//! builder stage, `docker-build` exports the Dockerfile's `binary-digests` stage (the digest of
//! every file the builder leaves for the images, one cargo step) before the images, and leaves
//! out every image whose binaries, and everything else it reads, are what its last successful
//! build had. A change in one service then builds one image, not one per service: each build is
//! a BuildKit solve (measured: 0.13 s of a 2-core engine each, all cached; docs/SCALING.md).
//!
//! Pure: the probe's build, the digests file, each image's product digest.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    path::PathBuf,
};

use serde::Serialize;

use crate::{
    dockerfile::model,
    history::inputs::{self, Inputs, Reads},
    plan::{Build, Plan},
};

/// The stage that holds the digests.
pub const STAGE: &str = "binary-digests";
/// The file the stage holds: `DIGEST  PATH` per line, PATH in the builder's filesystem.
pub const FILE: &str = "digests";
/// What the digests cover in the builder's filesystem: a path an image takes from elsewhere
/// is not known, and the image always builds.
pub const ROOT: &str = "out/svc";

/// What the probe did, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct BinariesReport {
    /// `first` (before the images, some could be left out) or `beside` (with them, to record).
    pub mode: String,
    pub succeeded: bool,
    pub wall_seconds: f64,
    /// The images left out because their binaries and other inputs were unchanged.
    pub left_out: Vec<String>,
    /// Layer records of earlier builds of these images, removed beside the probe
    /// ([`crate::cache::records::superseded`]).
    pub superseded_records: usize,
    pub superseded_bytes: u64,
    /// The probe's cargo step: it ran there for the images built after it (`first`).
    pub cargo_step: crate::exec::events::CargoStep,
    pub log: PathBuf,
    /// The bake files the images after it ran from ([`crate::plan::Plan::bakes`]): one buildx
    /// client and session for many images; empty: one `buildx build` each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bakes: Vec<PathBuf>,
}

/// The stage `binary-digests` copies from (the builder), when the Dockerfile has one.
pub fn source_stage(text: &str) -> Option<String> {
    let file = model::parse(text).ok()?;
    let stage = (file.stages.iter()).find(|s| {
        s.name
            .as_deref()
            .is_some_and(|n| n.eq_ignore_ascii_case(STAGE))
    })?;
    let from = (file.stage_instructions(stage))
        .find_map(|ins| ins.flag("from").and_then(|f| f.value.clone()));
    from
}

/// Where the probe exports the digests: beside the run's logs (one run at a time writes a log
/// directory).
pub fn dir(log_dir: &Path) -> PathBuf {
    log_dir.join(STAGE)
}

/// The probe: the plan's first build, retargeted to the `binary-digests` stage and exported to
/// [`dir`]. `None` when the builds use several Dockerfiles, theirs has no such stage, or they
/// do not agree on what the builder stage reads of them ([`builder_args`], secrets, platforms,
/// builder): then the probe's digests would not be every build's.
pub fn build(plan: &Plan, text: &str, log_dir: &Path) -> Option<Build> {
    let first = plan.builds.first()?;
    if (plan.builds.iter()).any(|b| b.dockerfile() != first.dockerfile()) {
        return None;
    }
    let names = builder_args(text, &source_stage(text)?)?;
    let seen = |b: &Build| {
        let t = &b.target;
        let args: Vec<(String, String)> = (t.args.iter())
            .filter(|(k, _)| names.contains(k))
            .cloned()
            .collect();
        let rest = (
            &t.secrets,
            &t.ssh,
            &t.platforms,
            &t.builder,
            &t.docker_context,
        );
        format!("{args:?} {rest:?}")
    };
    if plan.builds.iter().any(|b| seen(b) != seen(first)) {
        return None;
    }
    Some(first.export_stage(STAGE, dir(log_dir), log_dir))
}

/// The build arguments the builder stage `cut` can read: the global `ARG`s (its `FROM`) and the
/// `ARG`s of it and the stages it is based on. `None` when the Dockerfile does not parse.
pub fn builder_args(text: &str, cut: &str) -> Option<BTreeSet<String>> {
    let file = model::parse(text).ok()?;
    let arg_names = |ins: &model::Instruction| -> Vec<String> {
        (crate::dockerfile::lexer::shell_words(&ins.args).iter())
            .map(|w| w.split('=').next().unwrap_or("").to_string())
            .collect()
    };
    let mut names: BTreeSet<String> = (file.global.iter())
        .map(|&i| &file.instructions[i])
        .filter(|ins| ins.keyword == "ARG")
        .flat_map(arg_names)
        .collect();
    let mut stage = file.stage(cut);
    let mut seen = BTreeSet::new();
    while let Some(st) = stage.filter(|st| seen.insert(st.index)) {
        for ins in file.stage_instructions(st).filter(|i| i.keyword == "ARG") {
            names.extend(arg_names(ins));
        }
        stage = file.stage(&st.base);
    }
    Some(names)
}

/// The digests file, read: path -> digest (a link's digest is its target), and the links.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Digests {
    files: BTreeMap<String, String>,
    links: BTreeSet<String>,
}

/// Parses [`FILE`]; a line that is not `DIGEST  PATH` is an error naming it.
pub fn parse(text: &str) -> Result<Digests, String> {
    let mut files = BTreeMap::new();
    let mut links = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match line.split_once("  ") {
            Some((digest, path)) if !digest.is_empty() && !path.is_empty() => {
                let sha256 = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit());
                if !sha256 {
                    links.insert(path.to_string());
                }
                files.insert(path.to_string(), digest.to_string());
            }
            _ => return Err(format!("{FILE} line {}: not `DIGEST  PATH`: {line}", n + 1)),
        }
    }
    Ok(Digests { files, links })
}

impl Digests {
    /// One digest over the files at or under `path`; `None` when the path is not under [`ROOT`],
    /// names no file, or is (or passes through) a link, which COPY would follow to a file whose
    /// digest is not the link's (then what the image takes is not known).
    pub fn under(&self, path: &str) -> Option<String> {
        let inside = |p: &str, dir: &str| {
            p == dir || (p.starts_with(dir) && p.as_bytes().get(dir.len()) == Some(&b'/'))
        };
        if !inside(path, ROOT) || self.links.iter().any(|l| inside(path, l)) {
            return None;
        }
        let lines: Vec<String> = (self.files.iter())
            .filter(|(p, _)| inside(p, path))
            .map(|(p, d)| format!("{d}  {p}\n"))
            .collect();
        (!lines.is_empty()).then(|| inputs::digest_bytes(lines.concat().as_bytes()))
    }
}

/// What an image is made of, as one digest: everything it reads beside the builder (`inputs`,
/// its sources and base images narrowed to `beside`, `files` the context's digests) and the
/// digests of what it takes from the builder (`taken`). `None` when anything is not known.
pub fn product(
    inputs: &Inputs,
    beside: &Reads,
    taken: &[String],
    files: &BTreeMap<String, String>,
    digests: &Digests,
    strategy: &str,
    engine_id: Option<&str>,
) -> Option<String> {
    let engine_id = engine_id?;
    let mut bases = BTreeMap::new();
    for base in &beside.base_images {
        bases.insert(base.clone(), inputs.base_images.get(base)?.clone()?);
    }
    let took: Vec<(String, String)> = (taken.iter())
        .map(|p| Some((p.clone(), digests.under(p)?)))
        .collect::<Option<_>>()?;
    let sources: Vec<inputs::Source> = (beside.sources.iter())
        .map(|s| inputs::source(s, files))
        .collect();
    let what = serde_json::json!({
        "dockerfile_digest": inputs.dockerfile_digest,
        "target": inputs.target,
        "build_args": inputs.build_args,
        "options_digest": inputs.options_digest,
        "base_images": bases,
        "sources": sources,
        "taken": took,
        "strategy": strategy,
        "engine": engine_id,
    });
    Some(inputs::digest_bytes(what.to_string().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGESTS: &str = "\
attune-a  out/svc/a/attune-service
1111111111111111111111111111111111111111111111111111111111111111  out/svc/a/attune-a
2222222222222222222222222222222222222222222222222222222222222222  out/svc/b/attune-b
";

    #[test]
    fn digests_cover_the_paths_under_their_root_only() {
        let d = parse(DIGESTS).unwrap();
        let a = d.under("out/svc/a").unwrap();
        assert_ne!(Some(a.clone()), d.under("out/svc/b"));
        assert!(d.under("out/svc/a/attune-a").is_some());
        // a prefix that is not a directory boundary, a path outside the root, nothing there
        assert_eq!(d.under("out/svc/a/attune"), None);
        assert_eq!(d.under("out"), None);
        assert_eq!(d.under(""), None);
        assert_eq!(d.under("out/svc/c"), None);
        // one byte of one binary changes its directory's digest only
        let changed = parse(&DIGESTS.replacen("1111", "1112", 1)).unwrap();
        assert_ne!(changed.under("out/svc/a"), Some(a));
        assert_eq!(changed.under("out/svc/b"), d.under("out/svc/b"));
        // the link itself, or a path through it: COPY follows it
        assert_eq!(d.under("out/svc/a/attune-service"), None);
        assert_eq!(d.under("out/svc/a/attune-service/x"), None);
        let err = parse("1111 out/svc/a\n").unwrap_err();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn the_stage_and_its_source_are_read_from_the_dockerfile() {
        let text = "FROM rust AS b\nRUN true\nFROM scratch AS binary-digests\nCOPY --from=b /out/digests /\n";
        assert_eq!(source_stage(text).as_deref(), Some("b"));
        assert_eq!(source_stage("FROM rust AS b\n"), None);
    }

    #[test]
    fn builder_args_are_the_global_ones_and_the_builder_chains() {
        let text = "ARG RUST=1\nFROM rust:${RUST} AS base\nARG PROFILE=release\nFROM base AS b\nARG FEATURES\nRUN true\nFROM debian AS svc\nARG SERVICE\nCOPY --from=b /out/svc/${SERVICE}/ /\n";
        let names = builder_args(text, "b").unwrap();
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            ["FEATURES", "PROFILE", "RUST"]
        );
    }
}
