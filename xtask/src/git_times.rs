//! A fresh `git clone` gives every file the time of the clone, and cargo judges the freshness of
//! path crates by mtime: a restored target directory is then stale for every workspace crate.
//! [`restore_commit_mtimes`] gives each tracked file the time of the last commit that changed it
//! (what `git restore-mtime` does), so cargo recompiles only what the commits changed.

use std::{collections::BTreeMap, fs, path::Path, time::SystemTime};

use crate::proc::Command;

use anyhow::Context;

/// `git log --format=@%ct --name-only` -> each path's newest commit time (log order is newest
/// first). Pure.
pub fn last_commit_times(log: &str) -> BTreeMap<String, i64> {
    let mut times = BTreeMap::new();
    let mut current: Option<i64> = None;
    for line in log.lines() {
        if let Some(t) = line.strip_prefix('@') {
            current = t.trim().parse().ok();
        } else if !line.is_empty() {
            if let Some(t) = current {
                times.entry(line.to_string()).or_insert(t);
            }
        }
    }
    times
}

/// Sets the mtime of every tracked file of the work tree at `repo` to its last commit's time;
/// returns how many files it set.
pub fn restore_commit_mtimes(repo: &Path) -> anyhow::Result<usize> {
    let out = crate::proc::capture_with_timeout(
        Command::new("git")
            .args(["log", "--format=@%ct", "--name-only", "--no-renames"])
            .current_dir(repo),
        std::time::Duration::from_secs(120),
    )
    .with_context(|| format!("cannot read the git log of {}", repo.display()))?;
    let mut set = 0;
    for (path, time) in last_commit_times(&out) {
        let file = repo.join(&path);
        let Ok(handle) = fs::OpenOptions::new().write(true).open(&file) else {
            continue; // deleted since, or not a regular file
        };
        let when = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(time.max(0) as u64);
        handle
            .set_modified(when)
            .with_context(|| format!("cannot set the mtime of {}", file.display()))?;
        set += 1;
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_commit_of_each_path_wins() {
        let log = "@300\n\ncrates/api/src/main.rs\n@200\n\ncrates/common/src/lib.rs\n\
                   crates/api/src/main.rs\n@100\n\nCargo.toml\n";
        let times = last_commit_times(log);
        assert_eq!(times["crates/api/src/main.rs"], 300);
        assert_eq!(times["crates/common/src/lib.rs"], 200);
        assert_eq!(times["Cargo.toml"], 100);
        assert_eq!(times.len(), 3);
    }

    #[test]
    fn a_clone_gets_its_commit_times() {
        let dir = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            let ok = Command::new("git")
                .args(["-c", "user.name=t", "-c", "user.email=t@localhost"])
                .args(args)
                .current_dir(dir.path())
                .env("GIT_COMMITTER_DATE", "@1000000000 +0000")
                .env("GIT_AUTHOR_DATE", "@1000000000 +0000")
                .output()
                .unwrap();
            assert!(ok.status.success(), "{:?}", ok);
        };
        git(&["init", "-q"]);
        fs::write(dir.path().join("a.rs"), "fn a() {}\n").unwrap();
        git(&["add", "a.rs"]);
        git(&["commit", "-qm", "a"]);
        assert_eq!(restore_commit_mtimes(dir.path()).unwrap(), 1);
        let mtime = fs::metadata(dir.path().join("a.rs"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(
            mtime
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            1_000_000_000
        );
    }
}
