//! An entry's `manifest.json`: its key and inputs, and every file it carries with its sha256.
//! Pure: parsing and validation only.
//!
//! Format 2: a cache travels in parts (`more`), unpacked side by side: its stable part (split when
//! large) and the rest; format 1, one archive per cache, is still read. The layer cache is named by
//! kind so that a registry-backed entry (layers and archives as registry blobs) can use the same
//! manifest with another `kind`.

use serde::{Deserialize, Serialize};

use super::key::KeyInputs;

pub const FORMAT: u32 = 2;
/// The oldest format this xtask reads.
pub const OLDEST_FORMAT: u32 = 1;
pub const FILE: &str = "manifest.json";
/// What separates an entry's key from the image in a layer cache tag.
pub const LAYERS_TAG: &str = "-layers-";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// The entry's directory name, `inputs.key()`.
    pub key: String,
    pub inputs: KeyInputs,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// One archive per cache mount.
    pub mounts: Vec<MountArchive>,
    /// BuildKit's layer cache, when the builds exported one.
    pub layers: Option<Layers>,
}

/// The contents of one cache mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountArchive {
    /// The cache mount's id, target and sharing, as the strategy's Dockerfiles declare them.
    pub id: String,
    pub target: String,
    pub sharing: String,
    /// What of the mount is carried, relative to its target (`.` for all of it).
    pub paths: Vec<String>,
    /// Relative to the entry: `mounts/<id>.tar.zst`. The first part, when there are more.
    pub file: String,
    pub sha256: String,
    /// Size of the compressed file, and of the tar inside it.
    pub bytes: u64,
    pub tar_bytes: u64,
    /// The other parts (`mounts/<id>.<n>.tar.zst`), each a tar of its own: the rest after the
    /// stable part, and a large stable part split, so that the parts unpack at once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more: Vec<ArchivePart>,
    /// How many of the parts, from the first, hold the stable part of the cache (the cargo
    /// home; a target cache's dependency artifacts), and how many files it has: the next
    /// export reuses those parts when the cache still holds them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stable_parts: usize,
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub stable_files: u64,
    /// The digest of the stable files' sorted paths (cargo's hashes in them): what the import's
    /// stamp says with the stable id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stable_list: String,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// One compressed tar of a cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivePart {
    pub file: String,
    pub sha256: String,
    pub bytes: u64,
    pub tar_bytes: u64,
}

impl MountArchive {
    /// Every part, the first one first.
    pub fn parts(&self) -> Vec<ArchivePart> {
        let first = ArchivePart {
            file: self.file.clone(),
            sha256: self.sha256.clone(),
            bytes: self.bytes,
            tar_bytes: self.tar_bytes,
        };
        std::iter::once(first)
            .chain(self.more.iter().cloned())
            .collect()
    }

    /// The stable parts' id: the sha256 of their sha256s, none without stable parts.
    pub fn stable_id(&self) -> Option<String> {
        use sha2::{Digest, Sha256};
        let parts = self.parts();
        let stable = parts.get(..self.stable_parts).filter(|s| !s.is_empty())?;
        let joined: Vec<&str> = stable.iter().map(|p| p.sha256.as_str()).collect();
        Some(super::key::hex(&Sha256::digest(
            joined.join(",").as_bytes(),
        )))
    }

    /// What the import leaves in the cache's stamp: `<stable id> <stable list>`.
    pub fn stamp(&self) -> Option<String> {
        let list = Some(&self.stable_list).filter(|l| !l.is_empty())?;
        self.stable_id().map(|id| format!("{id} {list}"))
    }

    /// The compressed bytes of every part.
    pub fn total_bytes(&self) -> u64 {
        self.bytes + self.more.iter().map(|p| p.bytes).sum::<u64>()
    }

    /// The bytes of every part's tar.
    pub fn total_tar_bytes(&self) -> u64 {
        self.tar_bytes + self.more.iter().map(|p| p.tar_bytes).sum::<u64>()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layers {
    /// `oci-layout`: a directory as `--cache-to type=local` writes it, one tag per image.
    pub kind: String,
    /// Relative to the entry.
    pub dir: String,
    pub tags: Vec<String>,
    pub bytes: u64,
}

impl Manifest {
    /// Parses and checks a manifest; the error names what is wrong, in one line.
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let manifest: Manifest =
            serde_json::from_str(text).map_err(|e| format!("not a cache manifest ({e})"))?;
        if !(OLDEST_FORMAT..=FORMAT).contains(&manifest.format) {
            return Err(format!(
                "manifest format {} (this xtask reads {OLDEST_FORMAT}-{FORMAT})",
                manifest.format
            ));
        }
        if manifest.key != manifest.inputs.key() {
            return Err(format!(
                "its key {} does not match its inputs ({})",
                manifest.key,
                manifest.inputs.key()
            ));
        }
        for mount in &manifest.mounts {
            for part in mount.parts() {
                if !is_plain_relative(&part.file) {
                    return Err(format!(
                        "mount {}: file `{}` is not a plain relative path",
                        mount.id, part.file
                    ));
                }
                if part.sha256.len() != 64 || !part.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(format!(
                        "mount {}: `{}` is not a sha256",
                        mount.id, part.sha256
                    ));
                }
            }
        }
        if let Some(layers) = &manifest.layers {
            let registry_tag = format!("{}{}{{image}}", manifest.key, LAYERS_TAG);
            let ok = match layers.kind.as_str() {
                "oci-layout" => is_plain_relative(&layers.dir),
                "registry" => layers.dir == registry_tag,
                _ => false,
            };
            if !ok {
                return Err(format!(
                    "layers: kind `{}` in `{}` is neither an oci-layout directory of the entry nor the registry tags {registry_tag}",
                    layers.kind, layers.dir
                ));
            }
        }
        Ok(manifest)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a manifest serializes") + "\n"
    }

    /// Checks every cache the entry carries against the strategy's cache mounts (`(id, target)`
    /// each, of every image the strategy builds): an id that is none of them, or a target other
    /// than the Dockerfiles', or a carried path that is not inside the mount, refuses the entry.
    pub fn check_mounts(&self, known: &[(String, String)]) -> Result<(), String> {
        for mount in &self.mounts {
            let Some((_, target)) = known.iter().find(|(id, _)| *id == mount.id) else {
                let ids: Vec<&str> = known.iter().map(|(id, _)| id.as_str()).collect();
                return Err(format!(
                    "it carries a cache mount `{}`, which is not one of the strategy's ({})",
                    mount.id,
                    ids.join(", ")
                ));
            };
            if *target != mount.target {
                return Err(format!(
                    "cache mount `{}` has the target `{}`; the Dockerfiles mount it at `{target}`",
                    mount.id, mount.target
                ));
            }
            if let Some(path) = (mount.paths.iter()).find(|p| *p != "." && !is_plain_relative(p)) {
                return Err(format!(
                    "cache mount `{}` carries `{path}`, which is not a path inside it",
                    mount.id
                ));
            }
        }
        Ok(())
    }

    pub fn mount(&self, id: &str) -> Option<&MountArchive> {
        self.mounts.iter().find(|m| m.id == id)
    }

    /// Bytes of every file the entry carries.
    pub fn total_bytes(&self) -> u64 {
        self.mounts
            .iter()
            .map(MountArchive::total_bytes)
            .sum::<u64>()
            + self.layers.as_ref().map_or(0, |l| l.bytes)
    }
}

fn is_plain_relative(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn manifest() -> Manifest {
        let inputs = KeyInputs {
            cargo_lock: "aa".repeat(32),
            rust_version: "1.95".into(),
            base_image: "rust:1.95-slim-bookworm".into(),
            base_image_id: "sha256:3c".into(),
            strategy: "workspace".into(),
            profile: "release".into(),
            platform: "linux/amd64".into(),
            rustflags: String::new(),
        };
        Manifest {
            format: FORMAT,
            key: inputs.key(),
            inputs,
            created: 1_700_000_000,
            mounts: vec![MountArchive {
                id: "cargo-home".into(),
                target: "/cargo-home".into(),
                sharing: "shared".into(),
                paths: vec!["registry/index".into()],
                file: "mounts/cargo-home.tar.zst".into(),
                sha256: "0f".repeat(32),
                bytes: 10,
                tar_bytes: 20,
                more: vec![],
                stable_parts: 0,
                stable_files: 0,
                stable_list: String::new(),
            }],
            layers: Some(Layers {
                kind: "oci-layout".into(),
                dir: "layers".into(),
                tags: vec!["api".into()],
                bytes: 5,
            }),
        }
    }

    #[test]
    fn round_trip() {
        let m = manifest();
        assert_eq!(Manifest::parse(&m.to_json()), Ok(m.clone()));
        assert_eq!(m.total_bytes(), 15);
        assert_eq!(m.mount("cargo-home").unwrap().tar_bytes, 20);
        // a format 1 manifest (one archive per cache, no `more`) still reads
        let old = m.to_json().replace("\"format\": 2", "\"format\": 1");
        assert!(!old.contains("more"), "{old}");
        assert_eq!(Manifest::parse(&old).unwrap().mounts, m.mounts);

        let mut split = m.clone();
        split.mounts[0].more.push(ArchivePart {
            file: "mounts/cargo-home.1.tar.zst".into(),
            sha256: "1f".repeat(32),
            bytes: 7,
            tar_bytes: 30,
        });
        assert_eq!(Manifest::parse(&split.to_json()), Ok(split.clone()));
        assert_eq!(split.total_bytes(), 22);
        assert_eq!(split.mounts[0].total_tar_bytes(), 50);
        assert_eq!(split.mounts[0].stable_id(), None);
        split.mounts[0].stable_parts = 1;
        split.mounts[0].stable_files = 9;
        assert_eq!(split.mounts[0].stamp(), None, "no list, no stamp");
        split.mounts[0].stable_list = "5e".repeat(32);
        assert_eq!(Manifest::parse(&split.to_json()), Ok(split.clone()));
        let id = split.mounts[0].stable_id().unwrap();
        assert_eq!(
            split.mounts[0].stamp(),
            Some(format!("{id} {}", "5e".repeat(32)))
        );
        // the id is that of the stable parts only
        split.mounts[0].more[0].sha256 = "2f".repeat(32);
        assert_eq!(split.mounts[0].stable_id(), Some(id.clone()));
        split.mounts[0].stable_parts = 2;
        assert_ne!(split.mounts[0].stable_id(), Some(id));
        split.mounts[0].stable_parts = 3;
        assert_eq!(split.mounts[0].stable_id(), None);
        split.mounts[0].stable_parts = 0;
        assert_eq!(
            (split.mounts[0].parts().iter())
                .map(|p| p.file.as_str())
                .collect::<Vec<_>>(),
            ["mounts/cargo-home.tar.zst", "mounts/cargo-home.1.tar.zst"]
        );
    }

    #[test]
    fn rejects_what_it_cannot_trust() {
        let bad = |edit: fn(&mut Manifest)| {
            let mut m = manifest();
            edit(&mut m);
            Manifest::parse(&m.to_json()).unwrap_err()
        };
        assert_eq!(
            bad(|m| m.format = 3),
            "manifest format 3 (this xtask reads 1-2)"
        );
        assert!(bad(|m| m.inputs.platform = "linux/arm64".into())
            .starts_with("its key workspace-linux-amd64-"));
        assert_eq!(
            bad(|m| m.mounts[0].file = "../../etc/passwd".into()),
            "mount cargo-home: file `../../etc/passwd` is not a plain relative path"
        );
        assert_eq!(
            bad(|m| m.mounts[0].more.push(ArchivePart {
                file: "/etc/passwd".into(),
                sha256: "1f".repeat(32),
                bytes: 1,
                tar_bytes: 1,
            })),
            "mount cargo-home: file `/etc/passwd` is not a plain relative path"
        );
        assert_eq!(
            bad(|m| m.mounts[0].sha256 = "xyz".into()),
            "mount cargo-home: `xyz` is not a sha256"
        );
        assert!(bad(|m| m.layers.as_mut().unwrap().dir = "/tmp".into()).starts_with("layers:"));
        assert!(Manifest::parse("{\"format\": 1")
            .unwrap_err()
            .starts_with("not a cache manifest ("));
    }
}
