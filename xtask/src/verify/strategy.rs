//! Which Dockerfiles each verify-parallel strategy builds, and the temporary copy of the build
//! context (the repository minus target/ and .git/) whose Dockerfiles the tests rewrite.
//!
//! Adding a strategy (e.g. a whole-workspace builder) means adding a variant to [`Strategy`] and
//! its Dockerfile mapping in [`Strategy::dockerfile`]; the tests and the plan come from here.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};

use crate::{
    dockerfile::Sharing,
    policy,
    workspace::{Declaration, ImageDecl},
    UsageError,
};

use super::rewrite;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// The committed per-service Dockerfiles of docker/ (one shared cargo-home cache mount, a
    /// target cache per service); `ours` is an alias.
    PerService,
    /// The committed whole-workspace Dockerfile: one builder shared by every image (the
    /// declaration's `workspace` strategy).
    Workspace,
    /// The seed design's literal recipe, docker/reference/Dockerfile.seed*.
    Seed,
}

pub const NAMES: &[&str] = &["per-service", "workspace", "seed"];

impl Strategy {
    pub fn parse(name: &str) -> Result<Strategy, UsageError> {
        match name {
            "per-service" | "ours" => Ok(Strategy::PerService),
            "workspace" => Ok(Strategy::Workspace),
            "seed" => Ok(Strategy::Seed),
            other => Err(UsageError(format!(
                "unknown strategy `{other}` (known: {})",
                NAMES.join(", ")
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Strategy::PerService => "per-service",
            Strategy::Workspace => "workspace",
            Strategy::Seed => "seed",
        }
    }

    /// The Dockerfile, relative to the workspace root, that this strategy builds `image` from.
    pub fn dockerfile(self, image: &ImageDecl) -> anyhow::Result<PathBuf> {
        match self {
            Strategy::PerService | Strategy::Workspace => Ok(image.dockerfile.clone()),
            Strategy::Seed => {
                let name = image
                    .dockerfile
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("");
                let reference = match name {
                    "Dockerfile.optimized" => "Dockerfile.seed",
                    "Dockerfile.worker.optimized" => "Dockerfile.seed.worker",
                    _ => {
                        return Err(UsageError(format!(
                            "image `{}`: the seed strategy has no reference Dockerfile for {}",
                            image.name,
                            image.dockerfile.display()
                        ))
                        .into())
                    }
                };
                Ok(Path::new("docker/reference").join(reference))
            }
        }
    }

    /// The declaration with each of the `selected` images' Dockerfile replaced by this
    /// strategy's, and the per-image strategy (each image's own `dockerfile` and `target`) as the
    /// default.
    pub fn declaration(self, decl: &Declaration, selected: &[&str]) -> anyhow::Result<Declaration> {
        let mut out = decl.clone();
        for image in out
            .images
            .iter_mut()
            .filter(|i| selected.contains(&i.name.as_str()))
        {
            if self == Strategy::Workspace {
                // one Dockerfile for every image, a stage named after each
                image.dockerfile = decl
                    .strategies
                    .get("workspace")
                    .and_then(|s| s.dockerfile.clone())
                    .context("the declaration has no `workspace` strategy with a dockerfile")?;
                image.target = image.name.clone();
            } else {
                image.dockerfile = self.dockerfile(image)?;
            }
        }
        out.default_strategy = PER_IMAGE.into();
        out.strategies.insert(PER_IMAGE.into(), Default::default());
        Ok(out)
    }
}

/// The plan strategy name under which every image uses its own Dockerfile.
pub const PER_IMAGE: &str = "verify-per-image";

/// A temporary copy of the build context; removed when dropped unless `keep`.
#[derive(Debug)]
pub struct Sandbox {
    pub root: PathBuf,
    source: PathBuf,
    keep: bool,
}

impl Sandbox {
    /// Copies `source` (minus its top-level target/ and .git/) to a fresh directory.
    pub fn create(source: &Path, name: &str, keep: bool) -> anyhow::Result<Sandbox> {
        let root = std::env::temp_dir().join(format!("attune-verify-{name}"));
        if root.exists() {
            fs::remove_dir_all(&root)
                .with_context(|| format!("cannot remove {}", root.display()))?;
        }
        copy_tree(source, &root, true)?;
        Ok(Sandbox {
            root,
            source: source.to_path_buf(),
            keep,
        })
    }

    /// Writes the sandbox's copies of `dockerfiles` from the source tree: with every cache mount
    /// set to `sharing` (through `policy::copy_with_sharing`, the rollback code) or as committed
    /// (`None`), cache ids suffixed with `-<namespace>`, and the exec marker in the cargo RUNs.
    pub fn prepare_dockerfiles(
        &self,
        dockerfiles: &[PathBuf],
        sharing: Option<Sharing>,
        namespace: &str,
    ) -> anyhow::Result<()> {
        let dirs: BTreeSet<PathBuf> = dockerfiles
            .iter()
            .map(|f| f.parent().unwrap_or(Path::new("")).to_path_buf())
            .collect();
        for dir in &dirs {
            let (src, dst) = (self.source.join(dir), self.root.join(dir));
            match sharing {
                Some(mode) => {
                    policy::copy_with_sharing(&src, &dst, mode)?;
                }
                None => {
                    for file in dockerfiles.iter().filter(|f| f.parent() == Some(dir)) {
                        fs::copy(self.source.join(file), self.root.join(file))
                            .with_context(|| format!("cannot copy {}", file.display()))?;
                    }
                }
            }
        }
        let unique: BTreeSet<&PathBuf> = dockerfiles.iter().collect();
        for file in unique {
            let path = self.root.join(file);
            let text = fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let err = |e: crate::dockerfile::ParseError| {
                anyhow::anyhow!("{}:{}: {}", file.display(), e.line, e.message)
            };
            let text = rewrite::namespace_cache_ids(&text, namespace).map_err(err)?;
            let text = rewrite::mark_cargo_runs(&text).map_err(err)?;
            fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }

    /// Makes a source change in `crate_dir` of the sandbox: the source tree's lib.rs or main.rs
    /// with a comment carrying `note` appended (a fresh file content, so the COPY and the cargo
    /// step run again). Returns the changed file, relative to the root.
    pub fn change(&self, crate_dir: &Path, note: &str) -> anyhow::Result<PathBuf> {
        for candidate in ["src/lib.rs", "src/main.rs"] {
            let rel = crate_dir.join(candidate);
            let src = self.source.join(&rel);
            if src.is_file() {
                let mut text = fs::read_to_string(&src)
                    .with_context(|| format!("cannot read {}", src.display()))?;
                text.push_str(&format!("\n// verify-parallel source change: {note}\n"));
                let dst = self.root.join(&rel);
                fs::write(&dst, text).with_context(|| format!("cannot write {}", dst.display()))?;
                return Ok(rel);
            }
        }
        bail!(
            "{} has neither src/lib.rs nor src/main.rs",
            crate_dir.display()
        )
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

fn copy_tree(src: &Path, dst: &Path, top: bool) -> anyhow::Result<()> {
    fs::create_dir_all(dst).with_context(|| format!("cannot create {}", dst.display()))?;
    for entry in fs::read_dir(src).with_context(|| format!("cannot read {}", src.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        if top && (name == "target" || name == ".git") {
            continue;
        }
        let (from, to) = (entry.path(), dst.join(&name));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&from, &to, false)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)
                .with_context(|| format!("cannot link {}", to.display()))?;
        } else if kind.is_file() {
            fs::copy(&from, &to).with_context(|| format!("cannot copy {}", from.display()))?;
        }
    }
    Ok(())
}

/// The crate directory an image's binary is built from (`crates/<service>`, or for images without
/// a service, the crate named after the binary without the `attune-` prefix).
pub fn crate_dir(image: &ImageDecl) -> PathBuf {
    let name = match &image.service {
        Some(service) => service.clone(),
        None => image
            .binary
            .strip_prefix("attune-")
            .unwrap_or(&image.binary)
            .to_string(),
    };
    Path::new("crates").join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_seed_mapping() {
        assert_eq!(Strategy::parse("seed").unwrap(), Strategy::Seed);
        assert!(Strategy::parse("chef").is_err());
        assert_eq!(Strategy::parse("ours").unwrap(), Strategy::PerService);
        assert_eq!(Strategy::parse("workspace").unwrap(), Strategy::Workspace);
        let image = |file: &str| ImageDecl {
            name: "x".into(),
            binary: "attune-worker".into(),
            dockerfile: PathBuf::from(file),
            target: "t".into(),
            service: None,
            output: None,
            smoke: vec![],
            health: None,
            compose: Default::default(),
        };
        assert_eq!(
            Strategy::Seed
                .dockerfile(&image("docker/Dockerfile.worker.optimized"))
                .unwrap(),
            PathBuf::from("docker/reference/Dockerfile.seed.worker")
        );
        assert!(Strategy::Seed
            .dockerfile(&image("docker/Dockerfile.pack-binaries"))
            .is_err());
        assert_eq!(
            crate_dir(&image("docker/Dockerfile.worker.optimized")),
            PathBuf::from("crates/worker")
        );
    }

    #[test]
    fn reference_dockerfiles_parse_and_rewrite() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for file in ["Dockerfile.seed", "Dockerfile.seed.worker"] {
            let text = fs::read_to_string(root.join("docker/reference").join(file)).unwrap();
            let out = rewrite::namespace_cache_ids(&text, "t").unwrap();
            assert!(out.contains(
                "target=/usr/local/cargo/registry,sharing=shared,id=/usr/local/cargo/registry-t"
            ));
            assert!(rewrite::mark_cargo_runs(&out)
                .unwrap()
                .contains(rewrite::EXEC_MARKER));
            let locked = crate::dockerfile::set_sharing(&text, Sharing::Locked).unwrap();
            assert_eq!(locked.mounts.len(), 3);
        }
    }
}
