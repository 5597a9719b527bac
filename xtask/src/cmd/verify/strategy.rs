//! Which Dockerfiles each verify-parallel strategy builds.
//!
//! Adding a strategy (e.g. a whole-workspace builder) means adding a variant to [`Strategy`] and
//! its Dockerfile mapping in [`Strategy::dockerfile`]; the tests and the plan come from here.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::{
    workspace::{Declaration, ImageDecl},
    UsageError,
};

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
            output_outside_target: false,
            smoke: vec![],
            health: None,
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
    }
}
