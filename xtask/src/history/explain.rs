//! Why a build re-ran: the inputs of two runs of an image, compared. Pure.

use std::collections::{BTreeMap, BTreeSet};

use super::inputs::{self, Inputs};

/// One side of a comparison: what a run of an image read.
#[derive(Debug, Clone, Copy)]
pub struct Side<'a> {
    pub inputs: &'a Inputs,
    /// The run's `path -> digest` map of context files.
    pub files: &'a BTreeMap<String, String>,
    pub strategy: &'a str,
    pub engine_id: Option<&'a str>,
}

/// Every input that differs between `before` and `now`, most decisive first: strategy, engine,
/// Dockerfile, base images, build arguments, other options, then the sources in Dockerfile
/// order. Empty when the two read the same.
pub fn differences(before: Side, now: Side) -> Vec<String> {
    let mut out = Vec::new();
    if before.strategy != now.strategy {
        out.push(format!(
            "strategy changed ({} -> {})",
            before.strategy, now.strategy
        ));
    }
    if before.engine_id != now.engine_id {
        out.push("engine changed (its caches start cold)".to_string());
    }
    let (b, n) = (before.inputs, now.inputs);
    if b.dockerfile != n.dockerfile {
        out.push(format!(
            "Dockerfile changed ({} -> {})",
            b.dockerfile, n.dockerfile
        ));
    } else if b.dockerfile_digest != n.dockerfile_digest {
        out.push(format!("{} changed", n.dockerfile));
    }
    if b.target != n.target {
        out.push(format!("target changed ({} -> {})", b.target, n.target));
    }
    for (image, id) in &n.base_images {
        match b.base_images.get(image) {
            Some(old) if old == id => {}
            Some(_) => out.push(format!("base image {image} changed")),
            None => out.push(format!("base image {image} is new")),
        }
    }
    let keys: BTreeSet<&String> = b.build_args.keys().chain(n.build_args.keys()).collect();
    for key in keys {
        if b.build_args.get(key) != n.build_args.get(key) {
            out.push(format!("build arg {key} changed"));
        }
    }
    if b.options_digest != n.options_digest {
        out.push("build options changed (tag, platform, cache import/export...)".to_string());
    }
    for source in &n.sources {
        let old = b.sources.iter().find(|s| s.path == source.path);
        match old {
            Some(old) if old.digest == source.digest => {}
            _ => out.push(source_change(&source.path, before.files, now.files)),
        }
    }
    out
}

/// The first difference, or what the absence of one means for a cargo step that ran.
pub fn first_reason(before: Option<Side>, now: Side) -> String {
    let Some(before) = before else {
        return "no previous run".to_string();
    };
    differences(before, now)
        .into_iter()
        .next()
        .unwrap_or_else(|| {
            "no input changed: the layer cache was dropped (pruned?), cache mount empty (cold)"
                .to_string()
        })
}

/// `crates/common changed (3 files)`, `Cargo.lock changed`, naming the narrowest directory that
/// holds every changed file of the source.
fn source_change(
    path: &str,
    before: &BTreeMap<String, String>,
    now: &BTreeMap<String, String>,
) -> String {
    let old: BTreeMap<&String, &String> = inputs::under(path, before).collect();
    let new: BTreeMap<&String, &String> = inputs::under(path, now).collect();
    let changed: Vec<&str> = old
        .keys()
        .chain(new.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|f| old.get(*f) != new.get(*f))
        .map(|f| f.as_str())
        .collect();
    let shown = if path.is_empty() {
        "the build context"
    } else {
        path
    };
    match changed.as_slice() {
        // the earlier run's files were not recorded (or equal): name the source
        [] => format!("{shown} changed"),
        [one] if *one == path => format!("{path} changed"),
        [one] => format!("{one} changed"),
        many => {
            let dir = common_dir(many);
            let name = if dir.len() > path.len() {
                dir.as_str()
            } else {
                shown
            };
            format!("{name} changed ({} files)", many.len())
        }
    }
}

/// The deepest directory holding all `paths`, cut at a crate's directory (`crates/common`), so
/// the message names a unit a person knows.
fn common_dir(paths: &[&str]) -> String {
    let dirs: Vec<Vec<&str>> = paths
        .iter()
        .map(|p| {
            let mut parts: Vec<&str> = p.split('/').collect();
            parts.pop();
            parts
        })
        .collect();
    let mut common = dirs[0].clone();
    for dir in &dirs[1..] {
        let n = common.iter().zip(dir).take_while(|(a, b)| a == b).count();
        common.truncate(n);
    }
    if common.len() > 2 && common[0] == "crates" {
        common.truncate(2);
    }
    common.join("/")
}

#[cfg(test)]
pub mod tests {
    use super::*;
    pub use crate::history::fixtures::{files, inputs_over};

    fn side<'a>(inputs: &'a Inputs, files: &'a BTreeMap<String, String>) -> Side<'a> {
        Side {
            inputs,
            files,
            strategy: "workspace",
            engine_id: Some("e1"),
        }
    }

    fn base_files() -> BTreeMap<String, String> {
        files(&[
            ("Cargo.toml", "t1"),
            ("Cargo.lock", "l1"),
            ("crates/common/src/lib.rs", "c1"),
            ("crates/common/src/config.rs", "c2"),
            ("crates/common/Cargo.toml", "c3"),
            ("crates/api/src/main.rs", "a1"),
        ])
    }

    #[test]
    fn names_the_crate_and_counts_the_files() {
        let before = base_files();
        let mut now = before.clone();
        now.insert("crates/common/src/lib.rs".into(), "c1x".into());
        now.insert("crates/common/src/config.rs".into(), "c2x".into());
        now.insert("crates/common/src/new.rs".into(), "n".into());
        let (b, n) = (inputs_over(&before), inputs_over(&now));
        assert_eq!(
            first_reason(Some(side(&b, &before)), side(&n, &now)),
            "crates/common changed (3 files)"
        );
    }

    #[test]
    fn one_file_is_named() {
        let before = base_files();
        let mut now = before.clone();
        now.insert("crates/api/src/main.rs".into(), "a2".into());
        let (b, n) = (inputs_over(&before), inputs_over(&now));
        assert_eq!(
            first_reason(Some(side(&b, &before)), side(&n, &now)),
            "crates/api/src/main.rs changed"
        );
    }

    #[test]
    fn lockfile_base_image_build_arg_and_dockerfile() {
        let before = base_files();
        let b = inputs_over(&before);

        let mut now = before.clone();
        now.insert("Cargo.lock".into(), "l2".into());
        let n = inputs_over(&now);
        assert_eq!(
            first_reason(Some(side(&b, &before)), side(&n, &now)),
            "Cargo.lock changed"
        );

        let mut n = inputs_over(&before);
        n.base_images
            .insert("rust:1.95-slim-bookworm".into(), Some("sha256:r2".into()));
        assert_eq!(
            first_reason(Some(side(&b, &before)), side(&n, &before)),
            "base image rust:1.95-slim-bookworm changed"
        );

        let mut n = inputs_over(&before);
        n.build_args.insert("X".into(), "1".into());
        assert_eq!(
            first_reason(Some(side(&b, &before)), side(&n, &before)),
            "build arg X changed"
        );

        let mut n = inputs_over(&before);
        n.dockerfile_digest = "df2".into();
        n.build_args.insert("X".into(), "1".into());
        let all = differences(side(&b, &before), side(&n, &before));
        assert_eq!(
            all,
            ["docker/Dockerfile.workspace changed", "build arg X changed"]
        );
    }

    #[test]
    fn no_previous_run_and_no_change() {
        let f = base_files();
        let i = inputs_over(&f);
        assert_eq!(first_reason(None, side(&i, &f)), "no previous run");
        assert!(first_reason(Some(side(&i, &f)), side(&i, &f)).contains("cold"));
        assert!(differences(side(&i, &f), side(&i, &f)).is_empty());
        let mut other = side(&i, &f);
        other.engine_id = Some("e2");
        assert_eq!(
            first_reason(Some(side(&i, &f)), other),
            "engine changed (its caches start cold)"
        );
    }
}
