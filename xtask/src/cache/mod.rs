//! Caches that survive the machine: an entry carries BuildKit's layer cache and the contents of
//! the strategy's cache mounts (the cargo home, the target directories) to a location, keyed by
//! what decides whether its artifacts are valid.
//!
//! - [`key`]: the key from its inputs, and which entry to import on a miss (pure).
//! - [`manifest`]: an entry's manifest.json (pure).
//! - [`helper`]: the cache mounts of the strategy's Dockerfiles, and the helper builds that copy
//!   their contents out and in (pure).
//! - [`archive`]: zstd and sha256 on the host.
//! - [`location`]: the directory layout and the atomic publication of an entry.
//! - [`remote`]: registry locations: the push and fetch helper builds, the registry API answers
//!   (pure).
//! - [`transfer`]: import and export, running the helper builds.
//! - [`records`]: BuildKit's cache records (`docker buildx du`), parsed.

pub mod archive;
pub mod helper;
pub mod key;
pub mod location;
pub mod manifest;
pub mod records;
pub mod remote;
pub mod transfer;
