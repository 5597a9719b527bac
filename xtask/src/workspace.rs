//! The image declaration: `[workspace.metadata.attune]` in the root Cargo.toml, read through
//! cargo_metadata and checked against the workspace's packages and binaries.
//!
//! Adding a service means adding its crate and one `[[workspace.metadata.attune.images]]` entry;
//! nothing in the xtask's code names an image.

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
    pub images: Vec<ImageDecl>,
    /// What `docker compose up` gives every service (docker-compose.yaml is generated from it).
    #[serde(default)]
    pub compose: ComposeDecl,
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
    pub fn image(&self, name: &str) -> Option<&ImageDecl> {
        self.images.iter().find(|i| i.name == name)
    }

    pub fn image_names(&self) -> Vec<&str> {
        self.images.iter().map(|i| i.name.as_str()).collect()
    }

    /// Expands image names and group names (`all` is every image) into images, in declaration
    /// order, without duplicates. An unknown name is a usage error that lists the valid ones.
    pub fn select(&self, names: &[String]) -> Result<Vec<&ImageDecl>, crate::UsageError> {
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
                return Err(crate::UsageError(format!(
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

    pub fn strategy(&self, name: &str) -> Result<&StrategyDecl, crate::UsageError> {
        self.strategies.get(name).ok_or_else(|| {
            crate::UsageError(format!(
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
}

/// Reads and validates the declaration of the workspace at `root`.
pub fn load(root: &Path) -> anyhow::Result<Declaration> {
    let manifest = root.join("Cargo.toml");
    let metadata = cargo_metadata::MetadataCommand::new()
        .manifest_path(&manifest)
        .no_deps()
        .other_options(vec!["--offline".to_string()])
        .exec()
        .with_context(|| {
            format!(
                "cannot read the workspace metadata of {}",
                manifest.display()
            )
        })?;
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
        })
        .collect();
    parse(&metadata.workspace_metadata, &packages)
        .with_context(|| format!("{}: [workspace.metadata.attune]", manifest.display()))
}

/// Parses `workspace.metadata` (the whole table) and validates it against the packages.
pub fn parse(
    metadata: &serde_json::Value,
    packages: &[PackageBins],
) -> anyhow::Result<Declaration> {
    let Some(table) = metadata.get("attune") else {
        bail!("missing: the image declaration lives there");
    };
    let decl: Declaration =
        serde_json::from_value(table.clone()).context("cannot parse the image declaration")?;
    validate(&decl, packages)?;
    Ok(decl)
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
            let dir = Path::new("crates").join(service);
            if owner.dir != dir {
                bail!(
                    "image `{name}`: service `{service}` must be the crate in {} that builds `{}`, but `{}` comes from package `{}` in {}",
                    dir.display(),
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
    }
    validate_compose(decl)?;
    for (group, members) in &decl.groups {
        for member in members {
            if !seen.contains(member.as_str()) {
                bail!("group `{group}` names unknown image `{member}`");
            }
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
            err.contains("service `worker` must be the crate in crates/worker"),
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
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let decl = load(root).unwrap();
        for name in [
            "api",
            "executor",
            "sensor",
            "worker-shell",
            "worker-python",
            "worker-node",
            "worker-full",
            "pack-binaries",
        ] {
            assert!(decl.image(name).is_some(), "{name} is not declared");
        }
        let services: Vec<_> = decl.select(&["services".into()]).unwrap();
        assert_eq!(services.len(), 4);
    }
}
