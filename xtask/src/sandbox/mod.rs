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
    /// Removes the directory when dropped; `None` when kept.
    _dir: Option<tempfile::TempDir>,
}

impl Sandbox {
    /// Copies `source` (minus its top-level target/ and .git/) to a fresh temporary directory
    /// named `attune-verify-<name>-<random>`.
    pub fn create(source: &Path, name: &str, keep: bool) -> anyhow::Result<Sandbox> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("attune-verify-{name}-"))
            .tempdir()
            .context("cannot create a temporary directory")?;
        let root = dir.path().to_path_buf();
        copy_tree(source, &root, true)?;
        let dir = if keep {
            let _kept: PathBuf = dir.keep();
            None
        } else {
            Some(dir)
        };
        Ok(Sandbox {
            root,
            source: source.to_path_buf(),
            _dir: dir,
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
    /// step run again), and where the file declares `const CHANGE: &str = "";` (bench's generated
    /// crates) that value set to `note`, so that the binaries change too. Returns the changed
    /// file, relative to the root.
    pub fn change(&self, crate_dir: &Path, note: &str) -> anyhow::Result<PathBuf> {
        const CHANGE_MARK: &str = "const CHANGE: &str = \"\";";
        for candidate in ["src/lib.rs", "src/main.rs"] {
            let rel = crate_dir.join(candidate);
            let src = self.source.join(&rel);
            if src.is_file() {
                let mut text = fs::read_to_string(&src)
                    .with_context(|| format!("cannot read {}", src.display()))?;
                // a crate that names the value a change sets (bench's generated ones) gets a
                // change that reaches its binaries; a comment alone may leave them bit-identical
                text = text.replacen(CHANGE_MARK, &format!("const CHANGE: &str = {note:?};"), 1);
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

/// Copies a tree, the entries of each directory in parallel (rayon): a build context has
/// thousands of small files, and copying them one after the other leaves cores idle.
fn copy_tree(src: &Path, dst: &Path, top: bool) -> anyhow::Result<()> {
    use rayon::prelude::*;
    fs::create_dir_all(dst).with_context(|| format!("cannot create {}", dst.display()))?;
    let entries: Vec<fs::DirEntry> = fs::read_dir(src)
        .with_context(|| format!("cannot read {}", src.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot read {}", src.display()))?;
    entries.par_iter().try_for_each(|entry| {
        let name = entry.file_name();
        if top && (name == "target" || name == ".git") {
            return Ok(());
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
        Ok(())
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sandbox_copies_the_tree_minus_target_and_git_and_goes_away() {
        let src = tempfile::tempdir().unwrap();
        for dir in ["crates/a/src", "target/debug", ".git", "docker"] {
            fs::create_dir_all(src.path().join(dir)).unwrap();
        }
        fs::write(src.path().join("crates/a/src/lib.rs"), "pub fn a() {}\n").unwrap();
        fs::write(src.path().join("target/debug/x"), "x").unwrap();
        std::os::unix::fs::symlink("crates", src.path().join("link")).unwrap();
        let sandbox = Sandbox::create(src.path(), "test", false).unwrap();
        let root = sandbox.root.clone();
        assert!(root.join("crates/a/src/lib.rs").is_file());
        assert!(root.join("docker").is_dir() && root.join("link").is_symlink());
        assert!(!root.join("target").exists() && !root.join(".git").exists());
        let changed = sandbox.change(Path::new("crates/a"), "n1").unwrap();
        assert_eq!(changed, Path::new("crates/a/src/lib.rs"));
        assert!(fs::read_to_string(root.join(&changed))
            .unwrap()
            .contains("n1"));
        drop(sandbox);
        assert!(!root.exists());
        let kept = Sandbox::create(src.path(), "kept", true).unwrap();
        let root = kept.root.clone();
        drop(kept);
        assert!(root.is_dir());
        fs::remove_dir_all(root).unwrap();
    }
}
