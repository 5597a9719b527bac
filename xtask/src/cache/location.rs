//! Where entries live: a directory `LOCATION/<key>/` with `manifest.json`, `mounts/<id>.tar.zst`
//! and `layers/` (an OCI layout). An entry is written into a hidden staging directory inside
//! LOCATION and published with one rename, so that no reader ever sees half an entry: Linux's
//! `renameat2(RENAME_EXCHANGE)` swaps it over an existing entry of the same key, and the old one
//! is deleted afterwards. Two exports of one key at once leave one complete entry.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};

use rustix::fs::RenameFlags;

use super::manifest::{self, Manifest};

/// A cache location, as `--to`, `--from` or `--cache` name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Dir(PathBuf),
    /// `registry://HOST:PORT/REPO`: an entry is the image `HOST:PORT/REPO:<key>` (its archives
    /// and manifest.json, the manifest also as a label), its layer cache the tags
    /// `<key>-layers-<image>`.
    Registry(RegistryRef),
}

/// `HOST:PORT` and a repository path of a registry location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRef {
    pub host: String,
    pub repo: String,
}

impl RegistryRef {
    /// `HOST:PORT/REPO`, the prefix of the entry's image references.
    pub fn reference(&self) -> String {
        format!("{}/{}", self.host, self.repo)
    }

    /// The image reference of the entry `key`.
    pub fn entry(&self, key: &str) -> String {
        format!("{}:{key}", self.reference())
    }

    /// The layer cache tag of the entry `key` for `image` (`{image}` for the plan's placeholder):
    /// one tag per image, as concurrent builds would overwrite a shared one.
    pub fn layers(&self, key: &str, image: &str) -> String {
        format!("{}:{key}{}{image}", self.reference(), manifest::LAYERS_TAG)
    }
}

impl Location {
    /// `registry://HOST:PORT/REPO` is a registry location; any other `scheme://` is refused;
    /// anything else is a directory.
    pub fn parse(text: &str) -> Result<Location, crate::util::UsageError> {
        let usage = |why: &str| crate::util::UsageError(format!("cache location `{text}`: {why}"));
        if text.is_empty() {
            return Err(crate::util::UsageError("cache location is empty".into()));
        }
        if let Some(rest) = text.strip_prefix("registry://") {
            let Some((host, repo)) = rest.split_once('/') else {
                return Err(usage("expected registry://HOST:PORT/REPO"));
            };
            let port_ok = host
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !port_ok {
                return Err(usage(
                    "expected registry://HOST:PORT/REPO (a port is needed)",
                ));
            }
            let repo_ok = repo.split('/').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
            });
            if !repo_ok {
                return Err(usage(
                    "the repository must be lowercase letters, digits, `._-` and `/`",
                ));
            }
            return Ok(Location::Registry(RegistryRef {
                host: host.into(),
                repo: repo.into(),
            }));
        }
        if text.contains("://") {
            return Err(usage(
                "only directories and registry://HOST:PORT/REPO are supported",
            ));
        }
        Ok(Location::Dir(PathBuf::from(text)))
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Dir(dir) => write!(f, "{}", dir.display()),
            Location::Registry(r) => write!(f, "registry://{}", r.reference()),
        }
    }
}

/// One entry found at a location; its manifest, or why it cannot be read.
#[derive(Debug)]
pub struct Listed {
    pub name: String,
    pub manifest: Result<Manifest, String>,
}

/// The entries in `dir`: its visible subdirectories (staging directories start with a dot).
pub fn list(dir: &Path) -> anyhow::Result<Vec<Listed>> {
    let mut out = Vec::new();
    let entries = fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = entry.path().join(manifest::FILE);
        let manifest = match fs::read_to_string(&path) {
            Ok(text) => Manifest::parse(&text).and_then(|m| {
                if m.key == name {
                    Ok(m)
                } else {
                    Err(format!("its manifest names another key ({})", m.key))
                }
            }),
            Err(e) => Err(format!("no readable {} ({e})", manifest::FILE)),
        };
        out.push(Listed { name, manifest });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// An entry being written: a hidden directory inside the location, removed unless published.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
    target: PathBuf,
    published: bool,
}

impl Staging {
    /// Creates `LOCATION/.staging-<key>-<pid>-<nanos>/` (and LOCATION when missing).
    pub fn create(location: &Path, key: &str) -> anyhow::Result<Staging> {
        fs::create_dir_all(location)
            .with_context(|| format!("cannot create the cache location {}", location.display()))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = location.join(format!(".staging-{key}-{}-{nanos}", std::process::id()));
        fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Staging {
            dir,
            target: location.join(key),
            published: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Makes the staged entry visible under its key in one rename; an existing entry of that key
    /// is swapped out atomically and then deleted. Returns whether one was replaced.
    pub fn publish(mut self) -> anyhow::Result<bool> {
        let replaced = match rename2(&self.dir, &self.target, RenameFlags::NOREPLACE) {
            Ok(()) => false,
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                rename2(&self.dir, &self.target, RenameFlags::EXCHANGE).with_context(|| {
                    format!("cannot swap the new entry over {}", self.target.display())
                })?;
                // the staging path now holds the old entry
                let _ = fs::remove_dir_all(&self.dir);
                true
            }
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP)
                ) =>
            {
                // a file system without renameat2 flags: move the old entry aside first (a
                // reader may then briefly find no entry, never half of one)
                let old = self.dir.with_extension("old");
                let replaced = fs::rename(&self.target, &old).is_ok();
                fs::rename(&self.dir, &self.target)
                    .with_context(|| format!("cannot publish {}", self.target.display()))?;
                let _ = fs::remove_dir_all(&old);
                replaced
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot publish {}", self.target.display()))
            }
        };
        self.published = true;
        Ok(replaced)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.published {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn rename2(from: &Path, to: &Path, flags: RenameFlags) -> io::Result<()> {
    use rustix::fs::{renameat_with, CWD};
    renameat_with(CWD, from, CWD, to, flags).map_err(io::Error::from)
}

/// Reads an entry's manifest and checks it is the entry named `name`.
pub fn read_manifest(entry: &Path) -> anyhow::Result<Manifest> {
    let path = entry.join(manifest::FILE);
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    match Manifest::parse(&text) {
        Ok(m) => Ok(m),
        Err(e) => bail!("{}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(staging: &Staging, text: &str) {
        fs::write(staging.path().join("payload"), text).unwrap();
    }

    #[test]
    fn locations() {
        assert_eq!(
            Location::parse("ci-cache").unwrap(),
            Location::Dir("ci-cache".into())
        );
        let Location::Registry(r) =
            Location::parse("registry://127.0.0.1:5000/attune/cache").unwrap()
        else {
            panic!("a registry location")
        };
        assert_eq!(r.host, "127.0.0.1:5000");
        assert_eq!(r.entry("k"), "127.0.0.1:5000/attune/cache:k");
        assert_eq!(
            r.layers("k", "{image}"),
            "127.0.0.1:5000/attune/cache:k-layers-{image}"
        );
        for (bad, why) in [
            (
                "registry://127.0.0.1:5000",
                "expected registry://HOST:PORT/REPO",
            ),
            ("registry://localhost/cache", "a port is needed"),
            ("registry://localhost:5000/Cache", "must be lowercase"),
            ("registry://localhost:5000/a//b", "must be lowercase"),
            ("s3://bucket/cache", "only directories and registry://"),
        ] {
            let err = Location::parse(bad).unwrap_err().0;
            assert!(err.contains(why), "{bad}: {err}");
        }
        assert!(Location::parse("").is_err());
    }

    #[test]
    fn publish_is_one_rename_and_replaces_an_entry_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let loc = tmp.path().join("cache");
        let first = Staging::create(&loc, "k").unwrap();
        entry(&first, "one");
        // not visible while staged
        assert!(list(&loc).unwrap().is_empty());
        assert!(!first.publish().unwrap());
        assert_eq!(fs::read_to_string(loc.join("k/payload")).unwrap(), "one");

        let (a, b) = (
            Staging::create(&loc, "k").unwrap(),
            Staging::create(&loc, "k").unwrap(),
        );
        entry(&a, "two");
        entry(&b, "three");
        assert!(a.publish().unwrap());
        assert!(b.publish().unwrap());
        assert_eq!(fs::read_to_string(loc.join("k/payload")).unwrap(), "three");
        let names: Vec<String> = fs::read_dir(&loc)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["k"], "nothing staged is left behind");
    }

    #[test]
    fn an_unpublished_staging_directory_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let staging = Staging::create(tmp.path(), "k").unwrap();
        let dir = staging.path().to_path_buf();
        entry(&staging, "half");
        drop(staging);
        assert!(!dir.exists());
        assert!(!tmp.path().join("k").exists());
    }

    #[test]
    fn listing_reports_unreadable_entries() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("broken")).unwrap();
        fs::write(tmp.path().join("broken/manifest.json"), "{").unwrap();
        fs::create_dir(tmp.path().join("empty")).unwrap();
        fs::create_dir(tmp.path().join(".staging-x")).unwrap();
        let listed = list(tmp.path()).unwrap();
        let names: Vec<&str> = listed.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["broken", "empty"]);
        assert!(listed[0]
            .manifest
            .as_ref()
            .unwrap_err()
            .starts_with("not a cache manifest"));
        assert!(listed[1]
            .manifest
            .as_ref()
            .unwrap_err()
            .starts_with("no readable manifest.json"));
    }
}
