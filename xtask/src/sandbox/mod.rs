//! Temporary copies of the build context (the repository minus target/ and .git/) whose
//! Dockerfiles the measuring commands rewrite ([`rewrite`]): verify-parallel and bench.

pub mod rewrite;

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};

use crate::dockerfile::{self, Sharing};

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
                    dockerfile::copy_with_sharing(&src, &dst, mode)?;
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
            let err = |e: dockerfile::ParseError| {
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

pub fn nonce() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:x}{:x}",
        (t as u64) & 0xffff_ffff,
        std::process::id() & 0xfff
    )
}
