//! The image declaration: `[workspace.metadata.attune]` in the root Cargo.toml, read through
//! cargo_metadata and checked against the workspace's packages and binaries.
//!
//! Adding a service means adding its crate and one `[[workspace.metadata.attune.images]]` entry;
//! nothing in the xtask's code names an image.
//!
//! Longer than 500 lines: every rule of the declaration (paths inside the workspace, stages,
//! groups, strategies, compose settings) is checked here, where the declaration is read, so no
//! command meets an unchecked one.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};
use serde::Deserialize;

/// Everything the xtask knows about the images, validated.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Declaration {
    /// The default tag (`attune-api:<tag>`).
    pub tag: String,
    /// Prefix of every image name (`attune-` + `api`).
    pub image_prefix: String,
    /// The strategy `docker-build` uses when `--strategy` is not given.
    pub default_strategy: String,
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
    pub strategies: BTreeMap<String, StrategyDecl>,
    /// The images (or groups) verify-parallel and bench build when none are named.
    #[serde(default)]
    pub measure: Vec<String>,
    pub images: Vec<ImageDecl>,
    /// From cargo_metadata, not from the table.
    #[serde(skip)]
    pub crates: Crates,
    /// `workspace.package.rust-version`, from the same cargo_metadata.
    #[serde(skip)]
    pub rust_version: Option<String>,
    /// The names of the workspace's packages and targets, `-` as `_` (see `crate_names`).
    #[serde(skip)]
    pub local_crates: Vec<String>,
    /// What `docker compose up` gives every service (docker-compose.yaml is generated from it).
    #[serde(default)]
    pub compose: ComposeDecl,
}

/// What cargo_metadata says about the crates behind the images.
#[derive(Debug, Clone, Default)]
pub struct Crates {
    /// Binary name -> the directory of the crate that builds it, relative to the root.
    pub bin_dirs: BTreeMap<String, PathBuf>,
    /// The workspace library crate every image's crate depends on (a change there rebuilds
    /// every image), when there is one.
    pub common: Option<PathBuf>,
}

/// `docker compose up` settings shared by every service.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ComposeDecl {
    /// Environment variables and their defaults; the compose file reads each as `${NAME:-default}`
    /// from the environment of the `docker compose` command.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// How `docker compose up` runs one image.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ServiceDecl {
    /// Environment variables of this service and their defaults (as [`ComposeDecl::env`]).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// A container port, published on 127.0.0.1 only, host port `${ATTUNE_<NAME>_PORT:-port}`.
    pub port: Option<u16>,
    /// The health check, run in the container (default: `<binary> --self-check`).
    pub healthcheck: Option<Vec<String>>,
    /// The service reads its input on stdin until end of input: compose keeps stdin open.
    #[serde(default)]
    pub stdin: bool,
    /// Images that must be healthy before this one starts.
    #[serde(default)]
    pub depends_on: Vec<String>,
}

/// How a strategy builds the images.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct StrategyDecl {
    /// One Dockerfile for every image, whose stages are named after the images. When absent, each
    /// image's own `dockerfile` and `target` are used.
    pub dockerfile: Option<PathBuf>,
    /// Per image Dockerfile: an image's own `dockerfile` -> the one this strategy builds instead
    /// (same stage). An image whose Dockerfile is not in a non-empty map cannot use the strategy.
    #[serde(default)]
    pub dockerfiles: BTreeMap<PathBuf, PathBuf>,
    /// Whether `bench` times it (default true).
    #[serde(default = "yes")]
    pub bench: bool,
}

fn yes() -> bool {
    true
}

impl StrategyDecl {
    /// One builder for every image: one cargo step, nothing per image to overlap.
    pub fn one_builder(&self) -> bool {
        self.dockerfile.is_some()
    }
}

/// One image (or, with `output`, one set of extracted binaries).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ImageDecl {
    pub name: String,
    /// The binary the image carries; must be a binary target of a workspace package.
    pub binary: String,
    pub dockerfile: PathBuf,
    pub target: String,
    /// The `SERVICE` build argument; its crate is `crates/<service>`.
    pub service: Option<String>,
    /// Where `--output type=local` extracts the stage, relative to the workspace root. Images
    /// without it are loaded into the engine (or pushed) as `<prefix><name>:<tag>`.
    pub output: Option<PathBuf>,
    /// `output` may lie outside `target/` (still inside the workspace): the export overwrites
    /// files there, so it must be asked for.
    #[serde(default)]
    pub output_outside_target: bool,
    /// Argument lists to run the binary with in its container for a smoke test.
    #[serde(default)]
    pub smoke: Vec<Vec<String>>,
    /// An HTTP path the running service answers with 200 (smoke-tested on a running container).
    pub health: Option<String>,
    /// How `docker compose up` runs it (images with an `output` are not compose services).
    #[serde(default)]
    pub compose: ServiceDecl,
}

impl ImageDecl {
    pub fn is_local_output(&self) -> bool {
        self.output.is_some()
    }
}

impl Declaration {
    /// The directory of the crate an image's binary is built from.
    pub fn crate_dir(&self, image: &ImageDecl) -> anyhow::Result<&Path> {
        self.crates
            .bin_dirs
            .get(&image.binary)
            .map(PathBuf::as_path)
            .with_context(|| format!("image `{}`: no crate builds `{}`", image.name, image.binary))
    }

    /// The library crate every image depends on, for tests that change what all images share.
    pub fn common_crate(&self) -> anyhow::Result<&Path> {
        self.crates.common.as_deref().context(
            "no workspace library crate is a dependency of every image's crate (cargo metadata)",
        )
    }

    pub fn image(&self, name: &str) -> Option<&ImageDecl> {
        self.images.iter().find(|i| i.name == name)
    }

    pub fn image_names(&self) -> Vec<&str> {
        self.images.iter().map(|i| i.name.as_str()).collect()
    }

    /// Expands image names and group names (`all` is every image) into images, in declaration
    /// order, without duplicates. An unknown name is a usage error that lists the valid ones.
    pub fn select(&self, names: &[String]) -> Result<Vec<&ImageDecl>, crate::util::UsageError> {
        if names.is_empty() {
            return Ok(self.images.iter().collect());
        }
        let mut wanted = BTreeSet::new();
        for name in names {
            if name == "all" {
                wanted.extend(self.image_names());
            } else if let Some(members) = self.groups.get(name) {
                wanted.extend(members.iter().map(String::as_str));
            } else if self.image(name).is_some() {
                wanted.insert(name.as_str());
            } else {
                return Err(crate::util::UsageError(format!(
                    "unknown image or group `{name}`\n  images: {}\n  groups: {}",
                    self.image_names().join(", "),
                    self.group_names().join(", ")
                )));
            }
        }
        Ok(self
            .images
            .iter()
            .filter(|i| wanted.contains(i.name.as_str()))
            .collect())
    }

    pub fn group_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.groups.keys().map(String::as_str).collect();
        names.push("all");
        names
    }

    /// The Dockerfile and stage `strategy` builds `image` from.
    pub fn dockerfile_for(
        &self,
        strategy: &str,
        image: &ImageDecl,
    ) -> Result<(PathBuf, String), crate::util::UsageError> {
        let decl = self.strategy(strategy)?;
        if let Some(file) = &decl.dockerfile {
            return Ok((file.clone(), image.name.clone()));
        }
        if decl.dockerfiles.is_empty() {
            return Ok((image.dockerfile.clone(), image.target.clone()));
        }
        match decl.dockerfiles.get(&image.dockerfile) {
            Some(file) => Ok((file.clone(), image.target.clone())),
            None => Err(crate::util::UsageError(format!(
                "image `{}`: strategy `{strategy}` has no Dockerfile for {} (its `dockerfiles` in [workspace.metadata.attune.strategies.{strategy}])",
                image.name,
                image.dockerfile.display()
            ))),
        }
    }

    pub fn strategy(&self, name: &str) -> Result<&StrategyDecl, crate::util::UsageError> {
        self.strategies.get(name).ok_or_else(|| {
            crate::util::UsageError(format!(
                "unknown strategy `{name}`; strategies: {}",
                self.strategies
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }
}

/// A workspace package's binaries and the directory of its manifest (relative to the root).
#[derive(Debug, Clone)]
pub struct PackageBins {
    pub package: String,
    pub dir: PathBuf,
    pub bins: Vec<String>,
    /// The workspace packages it depends on (path dependencies).
    pub deps: Vec<String>,
}

/// `cargo metadata --no-deps` of the workspace at `root`.
fn metadata(root: &Path) -> anyhow::Result<cargo_metadata::Metadata> {
    let manifest = root.join("Cargo.toml");
    cargo_metadata::MetadataCommand::new()
        .manifest_path(&manifest)
        .no_deps()
        .other_options(vec!["--offline".to_string()])
        .exec()
        .with_context(|| {
            format!(
                "cannot read the workspace metadata of {}",
                manifest.display()
            )
        })
}

/// The names of the workspace's packages and of their targets, `-` as `_`, sorted: how cargo
/// names their artifacts in a target directory (`deps/libattune_common-<hash>.rlib`,
/// `.fingerprint/attune-api-<hash>/`).
fn crate_names(metadata: &cargo_metadata::Metadata) -> Vec<String> {
    let mut names: Vec<String> = (metadata.workspace_packages().iter())
        .flat_map(|p| {
            std::iter::once(p.name.to_string()).chain(p.targets.iter().map(|t| t.name.clone()))
        })
        .map(|n| n.replace('-', "_"))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// `workspace.package.rust-version` (the toolchain the images are built with), as cargo reads it:
/// `1.95` for `rust-version = "1.95"`.
pub fn rust_version(root: &Path) -> anyhow::Result<String> {
    let metadata = metadata(root)?;
    let version = metadata
        .workspace_packages()
        .iter()
        .find_map(|p| p.rust_version.clone())
        .with_context(|| {
            format!(
                "{}: no rust-version in [workspace.package]",
                root.join("Cargo.toml").display()
            )
        })?;
    Ok(short_version(&version))
}

/// `1.95` for 1.95.0, `1.95.1` for 1.95.1: the version as a `rust-version` key writes it.
fn short_version(v: &cargo_metadata::semver::Version) -> String {
    if v.patch == 0 {
        format!("{}.{}", v.major, v.minor)
    } else {
        v.to_string()
    }
}

/// Reads and validates the declaration of the workspace at `root`.
pub fn load(root: &Path) -> anyhow::Result<Declaration> {
    let manifest = root.join("Cargo.toml");
    let metadata = metadata(root)?;
    let packages: Vec<PackageBins> = metadata
        .workspace_packages()
        .iter()
        .map(|p| PackageBins {
            package: p.name.to_string(),
            dir: p
                .manifest_path
                .parent()
                .map(|d| {
                    d.as_std_path()
                        .strip_prefix(root)
                        .unwrap_or(d.as_std_path())
                        .to_path_buf()
                })
                .unwrap_or_default(),
            bins: p
                .targets
                .iter()
                .filter(|t| t.is_bin())
                .map(|t| t.name.clone())
                .collect(),
            deps: p
                .dependencies
                .iter()
                .filter(|d| d.path.is_some())
                .map(|d| d.name.clone())
                .collect(),
        })
        .collect();
    let mut decl = parse(&metadata.workspace_metadata, &packages)
        .with_context(|| format!("{}: [workspace.metadata.attune]", manifest.display()))?;
    decl.rust_version = (metadata.workspace_packages().iter())
        .find_map(|p| p.rust_version.as_ref().map(short_version));
    decl.local_crates = crate_names(&metadata);
    check_on_disk(root, &decl)
        .with_context(|| format!("{}: [workspace.metadata.attune]", manifest.display()))?;
    Ok(decl)
}

/// Every declared path, resolved on disk (symlinks followed), stays inside the workspace, and
/// every declared Dockerfile exists, whichever strategy is used.
fn check_on_disk(root: &Path, decl: &Declaration) -> anyhow::Result<()> {
    let real_root = root
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", root.display()))?;
    for (what, path, must_exist) in declared_paths(decl) {
        // the deepest part of the path that exists, resolved; the rest cannot be a symlink
        let full = root.join(&path);
        let existing = full.ancestors().find(|p| p.exists()).unwrap_or(root);
        let real = existing
            .canonicalize()
            .with_context(|| format!("{what}: cannot resolve {}", path.display()))?;
        if !real.starts_with(&real_root) {
            bail!(
                "{what}: {} resolves to {}, outside the workspace",
                path.display(),
                real.display()
            );
        }
        if must_exist && !full.is_file() {
            bail!(
                "{what}: its Dockerfile {} is missing\n  hint: restore it (git checkout -- {}) or fix `dockerfile` in [workspace.metadata.attune]",
                path.display(),
                path.display()
            );
        }
    }
    Ok(())
}

/// (what, path, whether it must be an existing file) for every path of the declaration.
fn declared_paths(decl: &Declaration) -> Vec<(String, PathBuf, bool)> {
    let mut paths = Vec::new();
    for image in &decl.images {
        let what = format!("image `{}`", image.name);
        paths.push((what.clone(), image.dockerfile.clone(), true));
        if let Some(output) = &image.output {
            paths.push((what, output.clone(), false));
        }
    }
    for (name, strategy) in &decl.strategies {
        if let Some(file) = &strategy.dockerfile {
            paths.push((format!("strategy `{name}`"), file.clone(), true));
        }
    }
    paths
}

/// `path` without `.` and `..`, when it is relative and never climbs above the workspace root.
fn normalized(path: &Path) -> Option<PathBuf> {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// A declared path is relative and stays inside the workspace (checked without the file system).
fn check_relative(what: &str, key: &str, path: &Path) -> anyhow::Result<PathBuf> {
    match normalized(path) {
        Some(inside) if !inside.as_os_str().is_empty() => Ok(inside),
        _ => bail!(
            "{what}: `{key} = \"{}\"` must be a path inside the workspace, relative to its root",
            path.display()
        ),
    }
}

/// Parses `workspace.metadata` (the whole table) and validates it against the packages.
pub fn parse(
    metadata: &serde_json::Value,
    packages: &[PackageBins],
) -> anyhow::Result<Declaration> {
    let Some(table) = metadata.get("attune") else {
        bail!("missing: the image declaration lives there");
    };
    let mut decl: Declaration =
        serde_json::from_value(table.clone()).context("cannot parse the image declaration")?;
    validate(&decl, packages)?;
    decl.crates = crates(&decl, packages);
    decl.select(&decl.measure)
        .map_err(|e| anyhow::anyhow!("measure: {e}"))?;
    Ok(decl)
}

fn crates(decl: &Declaration, packages: &[PackageBins]) -> Crates {
    let bin_dirs: BTreeMap<String, PathBuf> = packages
        .iter()
        .flat_map(|p| p.bins.iter().map(|b| (b.clone(), p.dir.clone())))
        .collect();
    let owners: BTreeSet<&str> = decl
        .images
        .iter()
        .filter_map(|i| packages.iter().find(|p| p.bins.contains(&i.binary)))
        .map(|p| p.package.as_str())
        .collect();
    let shared = packages.iter().find(|lib| {
        !owners.is_empty()
            && owners.iter().all(|owner| {
                packages
                    .iter()
                    .any(|p| p.package == *owner && p.deps.contains(&lib.package))
            })
    });
    Crates {
        bin_dirs,
        common: shared.map(|p| p.dir.clone()),
    }
}

fn validate(decl: &Declaration, packages: &[PackageBins]) -> anyhow::Result<()> {
    let mut seen = BTreeSet::new();
    for image in &decl.images {
        let name = &image.name;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            bail!("image `{name}`: names are lowercase letters, digits and `-`");
        }
        if !seen.insert(name.as_str()) {
            bail!("image `{name}` is declared twice");
        }
        if name == "all" || decl.groups.contains_key(name) {
            bail!("image `{name}` has the name of a group");
        }
        let owner = packages
            .iter()
            .find(|p| p.bins.iter().any(|b| b == &image.binary));
        let Some(owner) = owner else {
            let all: Vec<&str> = packages
                .iter()
                .flat_map(|p| p.bins.iter().map(String::as_str))
                .collect();
            bail!(
                "image `{name}`: binary `{}` is not a binary of any workspace package (binaries: {})",
                image.binary,
                all.join(", ")
            );
        };
        if let Some(service) = &image.service {
            if owner.dir.file_name() != Some(std::ffi::OsStr::new(service)) {
                bail!(
                    "image `{name}`: service `{service}` must be the directory of the crate that builds `{}`, but `{}` comes from package `{}` in {}",
                    image.binary,
                    image.binary,
                    owner.package,
                    owner.dir.display()
                );
            }
        }
        if image.target.is_empty() {
            bail!("image `{name}`: `target` (the Dockerfile stage) is empty");
        }
        let what = format!("image `{name}`");
        check_relative(&what, "dockerfile", &image.dockerfile)?;
        if let Some(output) = &image.output {
            let inside = check_relative(&what, "output", output)?;
            let below_target = inside.starts_with("target") && inside.components().count() > 1;
            if !below_target && !image.output_outside_target {
                bail!(
                    "{what}: `output = \"{}\"` is outside target/; the export overwrites files there\n  hint: use a directory under target/, or set `output-outside-target = true` on the image",
                    output.display()
                );
            }
        } else if image.output_outside_target {
            bail!("{what}: `output-outside-target` without `output`");
        }
    }
    for (name, strategy) in &decl.strategies {
        if let Some(file) = &strategy.dockerfile {
            check_relative(&format!("strategy `{name}`"), "dockerfile", file)?;
        }
    }
    validate_compose(decl)?;
    for (group, members) in &decl.groups {
        if group == "all" {
            bail!("group `all` is built in (every image): give the group another name");
        }
        if members.is_empty() {
            bail!("group `{group}` is empty: name its images or remove it");
        }
        for member in members {
            if !seen.contains(member.as_str()) {
                bail!("group `{group}` names unknown image `{member}`");
            }
        }
    }
    for (name, strategy) in &decl.strategies {
        if strategy.dockerfile.is_some() && !strategy.dockerfiles.is_empty() {
            bail!("strategy `{name}`: `dockerfile` (one for every image) and `dockerfiles` (one per image) exclude each other");
        }
    }
    if !decl.strategies.contains_key(&decl.default_strategy) {
        bail!(
            "default-strategy `{}` is not one of the declared strategies ({})",
            decl.default_strategy,
            decl.strategies
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// The compose settings: variable names a shell would accept, defaults compose does not
/// interpolate, dependencies on images that are compose services.
fn validate_compose(decl: &Declaration) -> anyhow::Result<()> {
    let check_env = |whose: &str, env: &BTreeMap<String, String>| -> anyhow::Result<()> {
        for (name, default) in env {
            if name.is_empty()
                || name.starts_with(|c: char| c.is_ascii_digit())
                || !name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            {
                bail!("{whose}: compose env `{name}`: names are A-Z, 0-9 and `_`");
            }
            if default.contains(['$', '}', '\n']) {
                bail!("{whose}: compose env `{name}`: the default {default:?} may not contain `$`, `}}` or a newline");
            }
        }
        Ok(())
    };
    check_env("[workspace.metadata.attune.compose]", &decl.compose.env)?;
    for image in &decl.images {
        let whose = format!("image `{}`", image.name);
        check_env(&whose, &image.compose.env)?;
        for dep in &image.compose.depends_on {
            match decl.image(dep) {
                Some(d) if d.is_local_output() => {
                    bail!("{whose}: compose depends-on `{dep}`, which is not a compose service (it has an `output`)")
                }
                Some(d) if d.name == image.name => bail!("{whose}: compose depends-on itself"),
                Some(_) => {}
                None => bail!("{whose}: compose depends-on unknown image `{dep}`"),
            }
        }
        if image
            .compose
            .healthcheck
            .as_ref()
            .is_some_and(Vec::is_empty)
        {
            bail!("{whose}: compose healthcheck is empty");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn packages() -> Vec<PackageBins> {
        ["api", "worker"]
            .iter()
            .map(|s| PackageBins {
                package: format!("attune-{s}"),
                dir: PathBuf::from(format!("crates/{s}")),
                bins: vec![format!("attune-{s}")],
                deps: vec![],
            })
            .collect()
    }

    fn metadata(images: serde_json::Value) -> serde_json::Value {
        json!({"attune": {
            "tag": "dev", "image-prefix": "attune-", "default-strategy": "per-service",
            "groups": {"services": ["api"]},
            "strategies": {"per-service": {}},
            "images": images,
        }})
    }

    fn api() -> serde_json::Value {
        json!({"name": "api", "binary": "attune-api", "dockerfile": "docker/Dockerfile.optimized",
               "target": "runtime", "service": "api"})
    }

    #[test]
    fn valid_declaration_selects_images_and_groups() {
        let worker = json!({"name": "worker-shell", "binary": "attune-worker",
            "dockerfile": "docker/Dockerfile.worker.optimized", "target": "worker-shell"});
        let decl = parse(&metadata(json!([api(), worker])), &packages()).unwrap();
        let names = |v: Vec<&ImageDecl>| v.iter().map(|i| i.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(decl.select(&[]).unwrap()), ["api", "worker-shell"]);
        assert_eq!(names(decl.select(&["services".into()]).unwrap()), ["api"]);
        assert_eq!(
            names(decl.select(&["worker-shell".into(), "all".into()]).unwrap()),
            ["api", "worker-shell"]
        );
        let err = decl.select(&["nope".into()]).unwrap_err().to_string();
        assert!(err.contains("unknown image or group `nope`"), "{err}");
        assert!(err.contains("api, worker-shell"), "{err}");
    }

    #[test]
    fn binary_must_exist() {
        let mut image = api();
        image["binary"] = json!("attune-nope");
        let err = format!(
            "{:#}",
            parse(&metadata(json!([image])), &packages()).unwrap_err()
        );
        assert!(
            err.contains("binary `attune-nope` is not a binary"),
            "{err}"
        );
    }

    #[test]
    fn service_must_be_the_binarys_crate() {
        let mut image = api();
        image["service"] = json!("worker");
        let err = format!(
            "{:#}",
            parse(&metadata(json!([image])), &packages()).unwrap_err()
        );
        assert!(
            err.contains(
                "service `worker` must be the directory of the crate that builds `attune-api`"
            ),
            "{err}"
        );
    }

    #[test]
    fn unknown_fields_and_duplicates_are_errors() {
        let mut image = api();
        image["colour"] = json!("red");
        let err = format!(
            "{:#}",
            parse(&metadata(json!([image])), &packages()).unwrap_err()
        );
        assert!(err.contains("colour"), "{err}");
        let err = format!(
            "{:#}",
            parse(&metadata(json!([api(), api()])), &packages()).unwrap_err()
        );
        assert!(err.contains("declared twice"), "{err}");
    }

    #[test]
    fn each_strategy_names_the_dockerfile_and_stage_of_an_image() {
        let mut meta = metadata(
            json!([api(), {"name": "worker-shell", "binary": "attune-worker",
            "dockerfile": "docker/Dockerfile.worker.optimized", "target": "worker-shell"}]),
        );
        meta["attune"]["strategies"] = json!({
            "per-service": {},
            "workspace": {"dockerfile": "docker/Dockerfile.workspace"},
            "seed": {"bench": false, "dockerfiles":
                {"docker/Dockerfile.optimized": "docker/reference/Dockerfile.seed"}},
        });
        let decl = parse(&meta, &packages()).unwrap();
        let (api, worker) = (&decl.images[0], &decl.images[1]);
        let of = |strategy: &str, image| decl.dockerfile_for(strategy, image);
        assert_eq!(
            of("per-service", api).unwrap(),
            (
                PathBuf::from("docker/Dockerfile.optimized"),
                "runtime".into()
            )
        );
        assert_eq!(
            of("workspace", api).unwrap(),
            (PathBuf::from("docker/Dockerfile.workspace"), "api".into())
        );
        assert_eq!(
            of("seed", api).unwrap(),
            (
                PathBuf::from("docker/reference/Dockerfile.seed"),
                "runtime".into()
            )
        );
        let err = of("seed", worker).unwrap_err().0;
        assert!(
            err.starts_with("image `worker-shell`: strategy `seed` has no Dockerfile for docker/Dockerfile.worker.optimized"),
            "{err}"
        );
        assert!(of("chef", api)
            .unwrap_err()
            .0
            .contains("unknown strategy `chef`"));
        assert!(decl.strategies["workspace"].one_builder() && decl.strategies["per-service"].bench);
        assert!(!decl.strategies["seed"].bench && !decl.strategies["seed"].one_builder());

        meta["attune"]["strategies"]["seed"]["dockerfile"] = json!("docker/x");
        let err = format!("{:#}", parse(&meta, &packages()).unwrap_err());
        assert!(err.contains("strategy `seed`: `dockerfile`"), "{err}");
    }

    #[test]
    fn crate_dirs_and_the_common_library_come_from_the_packages() {
        let mut packages = packages();
        packages[0].deps = vec!["attune-common".into(), "attune-x".into()];
        packages[1].deps = vec!["attune-common".into()];
        for lib in ["common", "x"] {
            packages.push(PackageBins {
                package: format!("attune-{lib}"),
                dir: PathBuf::from(format!("libs/{lib}")),
                bins: vec![],
                deps: vec![],
            });
        }
        let worker = json!({"name": "worker-shell", "binary": "attune-worker",
            "dockerfile": "docker/Dockerfile.worker.optimized", "target": "worker-shell"});
        let decl = parse(&metadata(json!([api(), worker])), &packages).unwrap();
        assert_eq!(decl.common_crate().unwrap(), Path::new("libs/common"));
        assert_eq!(
            decl.crate_dir(&decl.images[1]).unwrap(),
            Path::new("crates/worker")
        );
        // nothing every image depends on: no common crate, and the tests that need one say so
        packages[1].deps.clear();
        let decl = parse(&metadata(json!([api(), worker])), &packages).unwrap();
        assert!(decl.common_crate().is_err());
        // `measure` names known images or groups
        let mut meta = metadata(json!([api()]));
        meta["attune"]["measure"] = json!(["nope"]);
        let err = format!("{:#}", parse(&meta, &packages).unwrap_err());
        assert!(
            err.contains("measure: unknown image or group `nope`"),
            "{err}"
        );
    }

    #[test]
    fn rust_versions_are_written_as_in_cargo_toml() {
        let v = |s| cargo_metadata::semver::Version::parse(s).unwrap();
        assert_eq!(short_version(&v("1.95.0")), "1.95");
        assert_eq!(short_version(&v("1.95.1")), "1.95.1");
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let version = rust_version(root).unwrap();
        assert!(
            std::fs::read_to_string(root.join("Cargo.toml"))
                .unwrap()
                .contains(&format!("rust-version = \"{version}\"")),
            "{version}"
        );
    }

    #[test]
    fn compose_settings_are_checked() {
        let err_of = |compose: serde_json::Value| {
            let mut image = api();
            image["compose"] = compose;
            format!(
                "{:#}",
                parse(&metadata(json!([image])), &packages()).unwrap_err()
            )
        };
        let err = err_of(json!({"depends-on": ["nope"]}));
        assert!(
            err.contains("image `api`: compose depends-on unknown image `nope`"),
            "{err}"
        );
        let err = err_of(json!({"depends-on": ["api"]}));
        assert!(err.contains("depends-on itself"), "{err}");
        let err = err_of(json!({"env": {"bad-name": "1"}}));
        assert!(err.contains("compose env `bad-name`"), "{err}");
        let err = err_of(json!({"env": {"X": "${Y}"}}));
        assert!(err.contains("may not contain `$`"), "{err}");
        let mut image = api();
        image["compose"] =
            json!({"port": 8080, "stdin": true, "env": {"ATTUNE_API_BIND": "0.0.0.0:8080"}});
        let decl = parse(&metadata(json!([image])), &packages()).unwrap();
        assert_eq!(decl.images[0].compose.port, Some(8080));
    }

    #[test]
    fn the_projects_declaration_is_valid() {
        // no image name or count here: adding a service must not break this test
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let decl = load(root).unwrap();
        assert!(!decl.images.is_empty());
        for group in decl.groups.keys() {
            assert!(!decl.select(std::slice::from_ref(group)).unwrap().is_empty());
        }
        // every strategy's Dockerfile has a stage for every declared image (what docker-build
        // checks before anything runs)
        let names: Vec<String> = decl.images.iter().map(|i| i.name.clone()).collect();
        let missing = crate::session::missing_stages(root, &decl, &names);
        assert!(missing.is_empty(), "{}", missing.join("\n"));
    }

    fn parse_err(image: serde_json::Value) -> String {
        format!(
            "{:#}",
            parse(&metadata(json!([image])), &packages()).unwrap_err()
        )
    }

    #[test]
    fn declared_paths_stay_inside_the_workspace() {
        for bad in ["/etc/passwd", "../../x", "docker/../../x", ".", ""] {
            let mut image = api();
            image["dockerfile"] = json!(bad);
            let err = parse_err(image);
            assert!(
                err.contains(&format!(
                    "image `api`: `dockerfile = \"{bad}\"` must be a path inside the workspace"
                )),
                "{bad}: {err}"
            );
        }
        let mut meta = metadata(json!([api()]));
        meta["attune"]["strategies"]["per-service"]["dockerfile"] = json!("/tmp/Dockerfile");
        let err = format!("{:#}", parse(&meta, &packages()).unwrap_err());
        assert!(
            err.contains("strategy `per-service`: `dockerfile = \"/tmp/Dockerfile\"` must be"),
            "{err}"
        );
        // inside, through `..` that stays inside: fine
        let mut image = api();
        image["dockerfile"] = json!("docker/../docker/Dockerfile.optimized");
        parse(&metadata(json!([image])), &packages()).unwrap();
    }

    #[test]
    fn output_lies_under_target_unless_allowed() {
        for bad in [".", "/tmp/out", "target", "crates/out", "target/../out"] {
            let mut image = api();
            image["output"] = json!(bad);
            let err = parse_err(image);
            assert!(
                err.contains("must be a path inside the workspace")
                    || err.contains("is outside target/"),
                "{bad}: {err}"
            );
        }
        let mut image = api();
        image["output"] = json!("dist/bin");
        image["output-outside-target"] = json!(true);
        parse(&metadata(json!([image])), &packages()).unwrap();
        let mut image = api();
        image["output"] = json!(".");
        image["output-outside-target"] = json!(true);
        assert!(parse_err(image).contains("must be a path inside the workspace"));
        let mut image = api();
        image["output"] = json!("target/pack");
        parse(&metadata(json!([image])), &packages()).unwrap();
    }

    #[test]
    fn a_symlink_out_of_the_workspace_is_refused_and_dockerfiles_must_exist() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("docker")).unwrap();
        std::fs::write(
            root.path().join("docker/Dockerfile.optimized"),
            "FROM x AS runtime\n",
        )
        .unwrap();
        let mut image = api();
        image["output"] = json!("target/out/bin");
        let decl = parse(&metadata(json!([image])), &packages()).unwrap();
        check_on_disk(root.path(), &decl).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("target")).unwrap();
        let err = check_on_disk(root.path(), &decl).unwrap_err().to_string();
        assert!(
            err.starts_with("image `api`: target/out/bin resolves to ")
                && err.ends_with("outside the workspace"),
            "{err}"
        );
        std::fs::remove_file(root.path().join("target")).unwrap();
        std::fs::remove_file(root.path().join("docker/Dockerfile.optimized")).unwrap();
        let err = check_on_disk(root.path(), &decl).unwrap_err().to_string();
        assert!(
            err.starts_with("image `api`: its Dockerfile docker/Dockerfile.optimized is missing"),
            "{err}"
        );
    }

    #[test]
    fn a_group_named_all_or_empty_is_an_error() {
        let mut meta = metadata(json!([api()]));
        meta["attune"]["groups"]["all"] = json!(["api"]);
        let err = format!("{:#}", parse(&meta, &packages()).unwrap_err());
        assert!(err.contains("group `all` is built in"), "{err}");
        let mut meta = metadata(json!([api()]));
        meta["attune"]["groups"]["none"] = json!([]);
        let err = format!("{:#}", parse(&meta, &packages()).unwrap_err());
        assert!(err.contains("group `none` is empty"), "{err}");
    }
}
