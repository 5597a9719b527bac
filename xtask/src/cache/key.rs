//! Cache keys: what decides whether an entry's artifacts are valid, and which entry to import
//! when no entry has the exact key. Pure.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Everything an entry's validity depends on. Two builds with equal inputs produce artifacts
/// cargo can reuse as they are; an entry with the same toolchain and platform but other inputs is
/// still worth importing (cargo recompiles what differs); an entry of another toolchain or
/// platform never is (cargo would discard or, worse, mix its artifacts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInputs {
    /// sha256 (hex) of Cargo.lock.
    pub cargo_lock: String,
    /// `RUST_VERSION` the Dockerfiles build with.
    pub rust_version: String,
    /// The builder's base image, as the Dockerfile names it, and its image id in the engine.
    pub base_image: String,
    pub base_image_id: String,
    pub strategy: String,
    /// The cargo profile the Dockerfiles build (`release`).
    pub profile: String,
    /// `os/arch[/variant]` of the builds.
    pub platform: String,
    /// `RUSTFLAGS` given as a build argument (empty when none).
    pub rustflags: String,
}

impl KeyInputs {
    /// The entry's directory name: readable parts, then a hash of every input.
    /// `workspace-linux-amd64-1a2b3c4d5e6f7081`.
    pub fn key(&self) -> String {
        let mut hasher = Sha256::new();
        for part in [
            "attune-cache-v1",
            &self.cargo_lock,
            &self.rust_version,
            &self.base_image,
            &self.base_image_id,
            &self.strategy,
            &self.profile,
            &self.platform,
            &self.rustflags,
        ] {
            hasher.update(part.as_bytes());
            hasher.update([0u8]);
        }
        let hash = hex(&hasher.finalize());
        format!(
            "{}-{}-{}",
            slug(&self.strategy),
            slug(&self.platform),
            &hash[..16]
        )
    }

    /// Whether artifacts of `other` may be imported at all: same toolchain, same platform.
    pub fn compatible(&self, other: &KeyInputs) -> Result<(), String> {
        if self.rust_version != other.rust_version || self.base_image_id != other.base_image_id {
            return Err(format!(
                "another toolchain (Rust {} on {}, here Rust {} on {})",
                other.rust_version,
                short_id(&other.base_image_id),
                self.rust_version,
                short_id(&self.base_image_id)
            ));
        }
        if self.platform != other.platform {
            return Err(format!(
                "another platform ({}, here {})",
                other.platform, self.platform
            ));
        }
        Ok(())
    }

    /// The inputs of `other` that differ from these, by name.
    pub fn differences(&self, other: &KeyInputs) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.cargo_lock != other.cargo_lock {
            out.push("Cargo.lock");
        }
        if self.strategy != other.strategy {
            out.push("strategy");
        }
        if self.profile != other.profile {
            out.push("profile");
        }
        if self.rustflags != other.rustflags {
            out.push("RUSTFLAGS");
        }
        if self.base_image != other.base_image {
            out.push("base image name");
        }
        out
    }
}

/// An entry found at a location, as [`choose`] sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub name: String,
    pub inputs: KeyInputs,
    /// Seconds since the Unix epoch.
    pub created: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// The entry with the wanted key.
    Exact(String),
    /// The closest compatible entry, and the inputs in which it differs.
    Closest {
        name: String,
        differs: Vec<&'static str>,
    },
    /// No compatible entry; why each entry was rejected (empty when the location has none).
    Miss(Vec<(String, String)>),
}

/// The entry to import for `wanted`: the exact key, else the compatible entry (same toolchain and
/// platform) that differs in the fewest inputs, the newest among equals; never an incompatible one.
pub fn choose(wanted: &KeyInputs, candidates: &[Candidate]) -> Choice {
    let key = wanted.key();
    if let Some(c) = candidates
        .iter()
        .find(|c| c.name == key && c.inputs == *wanted)
    {
        return Choice::Exact(c.name.clone());
    }
    let mut rejected = Vec::new();
    let mut best: Option<(&Candidate, Vec<&'static str>)> = None;
    for candidate in candidates {
        if let Err(why) = wanted.compatible(&candidate.inputs) {
            rejected.push((candidate.name.clone(), why));
            continue;
        }
        let differs = wanted.differences(&candidate.inputs);
        let better = match &best {
            None => true,
            Some((b, bd)) => {
                (differs.len(), std::cmp::Reverse(candidate.created))
                    < (bd.len(), std::cmp::Reverse(b.created))
            }
        };
        if better {
            best = Some((candidate, differs));
        }
    }
    match best {
        Some((c, differs)) => Choice::Closest {
            name: c.name.clone(),
            differs,
        },
        None => Choice::Miss(rejected),
    }
}

pub use crate::util::hex;

fn slug(text: &str) -> String {
    let s: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches('-').to_string();
    if s.is_empty() {
        "none".into()
    } else {
        s
    }
}

fn short_id(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn inputs() -> KeyInputs {
        KeyInputs {
            cargo_lock: "aa".repeat(32),
            rust_version: "1.95".into(),
            base_image: "rust:1.95-slim-bookworm".into(),
            base_image_id: format!("sha256:{}", "3c".repeat(32)),
            strategy: "workspace".into(),
            profile: "release".into(),
            platform: "linux/amd64".into(),
            rustflags: String::new(),
        }
    }

    fn candidate(name: &str, inputs: KeyInputs, created: u64) -> Candidate {
        Candidate {
            name: name.into(),
            inputs,
            created,
        }
    }

    #[test]
    fn key_is_readable_and_changes_with_every_input() {
        let base = inputs();
        let key = base.key();
        assert!(key.starts_with("workspace-linux-amd64-"), "{key}");
        assert_eq!(key.len(), "workspace-linux-amd64-".len() + 16);
        let variants: Vec<KeyInputs> = vec![
            KeyInputs {
                cargo_lock: "bb".repeat(32),
                ..base.clone()
            },
            KeyInputs {
                rust_version: "1.96".into(),
                ..base.clone()
            },
            KeyInputs {
                base_image_id: "sha256:00".into(),
                ..base.clone()
            },
            KeyInputs {
                strategy: "per-service".into(),
                ..base.clone()
            },
            KeyInputs {
                profile: "dev".into(),
                ..base.clone()
            },
            KeyInputs {
                platform: "linux/arm64".into(),
                ..base.clone()
            },
            KeyInputs {
                rustflags: "-C target-cpu=native".into(),
                ..base.clone()
            },
        ];
        let mut keys: Vec<String> = variants.iter().map(KeyInputs::key).collect();
        keys.push(key);
        let n = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), n, "{keys:?}");
    }

    #[test]
    fn exact_entry_wins() {
        let wanted = inputs();
        let candidates = [
            candidate("other", inputs(), 99),
            candidate(&wanted.key(), inputs(), 1),
        ];
        assert_eq!(choose(&wanted, &candidates), Choice::Exact(wanted.key()));
    }

    #[test]
    fn closest_is_fewest_differences_then_newest() {
        let wanted = inputs();
        let new_lock = KeyInputs {
            cargo_lock: "bb".repeat(32),
            ..inputs()
        };
        let new_lock_and_strategy = KeyInputs {
            strategy: "per-service".into(),
            ..new_lock.clone()
        };
        let candidates = [
            candidate("far-newest", new_lock_and_strategy, 300),
            candidate("near-old", new_lock.clone(), 100),
            candidate("near-new", new_lock, 200),
        ];
        assert_eq!(
            choose(&wanted, &candidates),
            Choice::Closest {
                name: "near-new".into(),
                differs: vec!["Cargo.lock"]
            }
        );
    }

    #[test]
    fn never_another_toolchain_or_platform() {
        let wanted = inputs();
        let candidates = [
            candidate(
                "toolchain",
                KeyInputs {
                    rust_version: "1.94".into(),
                    ..inputs()
                },
                5,
            ),
            candidate(
                "base",
                KeyInputs {
                    base_image_id: "sha256:ffff".into(),
                    ..inputs()
                },
                5,
            ),
            candidate(
                "platform",
                KeyInputs {
                    platform: "linux/arm64".into(),
                    ..inputs()
                },
                5,
            ),
        ];
        let Choice::Miss(rejected) = choose(&wanted, &candidates) else {
            panic!("an incompatible entry was chosen");
        };
        let why: Vec<&str> = rejected.iter().map(|(_, w)| w.as_str()).collect();
        assert!(
            why[0].starts_with("another toolchain (Rust 1.94"),
            "{why:?}"
        );
        assert!(why[1].contains("on ffff"), "{why:?}");
        assert_eq!(why[2], "another platform (linux/arm64, here linux/amd64)");
        assert_eq!(choose(&wanted, &[]), Choice::Miss(vec![]));
    }
}
