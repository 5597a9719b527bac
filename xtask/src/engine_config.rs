//! The private daemon's `daemon.json`: its image store ([`ImageStore`]: containerd's by default,
//! or dockerd's classic one), and a build-cache garbage collection sized for this workspace's
//! cache mounts.
//!
//! Docker 28's own defaults reserve a tenth of the disk for the cache and prune unused cache
//! whenever less than a fifth of the disk is free, cargo's target and registry cache mounts
//! included: on a disk that is four fifths full, every build may start without them. These
//! sizes, a pure function of the disk's size, keep Docker's reserve (a tenth) but prune only
//! when less than a twentieth of the disk is free or the cache passes three fifths of it. BuildKit
//! counts free blocks (`f_bfree`), which can be far more than df's available space (on this
//! project's machine 199 GiB against 38 GiB: docs/SCALING.md, run 11). The reserve stays a tenth
//! because BuildKit never prunes below it,
//! even when the disk is full. A second engine on the same disk (`engine up --second`) gets the
//! same sizes: together the two reserve a fifth.
//!
//! The sizes are fixed when the daemon starts: a running daemon counts as current when its
//! `daemon.json` has this shape ([`parse`]), whatever the disk's size is now, so a disk that
//! grows or shrinks never restarts a daemon under other builds.

use std::path::Path;

use anyhow::Context;

/// Build-cache garbage-collection sizes, in GiB (`daemon.json` writes them as `NGB`, which
/// dockerd reads as binary units).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CacheGc {
    /// Cache below this size is never pruned (bar cache mounts unused for 48 h).
    pub reserved_gib: u64,
    /// Above this size unused cache is pruned back to it.
    pub max_used_gib: u64,
    /// With less free disk than this, unused cache is pruned until this much is free again (or
    /// the cache is down to `reserved_gib`).
    pub min_free_gib: u64,
}

impl std::fmt::Display for CacheGc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} GiB always kept; unused cache pruned when over {} GiB, or while under {} GiB of the disk is free",
            self.reserved_gib, self.max_used_gib, self.min_free_gib
        )
    }
}

/// The sizes for a disk of `disk_bytes`.
pub fn cache_gc(disk_bytes: u64) -> CacheGc {
    let gib = disk_bytes >> 30;
    CacheGc {
        reserved_gib: (gib / 10).max(1),
        max_used_gib: (gib * 3 / 5).max(2),
        min_free_gib: (gib / 20).max(1),
    }
}

/// Where dockerd keeps images (`features.containerd-snapshotter` in `daemon.json`), chosen with
/// `engine up --image-store`; a daemon keeps its store until asked for the other.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ImageStore {
    /// containerd's image store: the default docker driver exports BuildKit's layer cache
    /// (`--cache-layers`, `--cache-to`, the farm's registry cache) and builds several platforms.
    #[default]
    Containerd,
    /// dockerd's own (overlay2): loading a new layer costs about a third of what the containerd
    /// store costs, 64 images' new 15 MB layers 3.1-3.5 s against 9.3-11.2 s (docs/SCALING.md,
    /// run 12), but the docker driver exports no layer cache and builds one platform.
    Classic,
}

impl ImageStore {
    /// The store `engine up --image-store` switches to from this one.
    pub fn other(self) -> ImageStore {
        match self {
            ImageStore::Containerd => ImageStore::Classic,
            ImageStore::Classic => ImageStore::Containerd,
        }
    }

    /// As the flag spells it.
    pub fn name(self) -> &'static str {
        match self {
            ImageStore::Containerd => "containerd",
            ImageStore::Classic => "classic",
        }
    }
}

/// What a `daemon.json` this module wrote says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Config {
    pub store: ImageStore,
    pub gc: CacheGc,
}

/// The daemon.json text for `config`.
pub fn daemon_json(config: Config) -> String {
    let Config { store, gc } = config;
    let config = serde_json::json!({
        "features": {"containerd-snapshotter": store == ImageStore::Containerd},
        "builder": {"gc": {
            "enabled": true,
            "defaultReservedSpace": format!("{}GB", gc.reserved_gib),
            "defaultMaxUsedSpace": format!("{}GB", gc.max_used_gib),
            "defaultMinFreeSpace": format!("{}GB", gc.min_free_gib),
        }},
    });
    format!("{config}\n")
}

/// The store and sizes a daemon.json names, when it has this module's shape (the image store,
/// and the three sizes in whole `GB`); none for one an older xtask wrote, which had no sizes.
pub fn parse(text: &str) -> Option<Config> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let store = match value["features"]["containerd-snapshotter"].as_bool()? {
        true => ImageStore::Containerd,
        false => ImageStore::Classic,
    };
    if value["builder"]["gc"]["enabled"] != true {
        return None;
    }
    let size = |key: &str| {
        let text = value["builder"]["gc"][key].as_str()?;
        text.strip_suffix("GB")?.parse::<u64>().ok()
    };
    let gc = CacheGc {
        reserved_gib: size("defaultReservedSpace")?,
        max_used_gib: size("defaultMaxUsedSpace")?,
        min_free_gib: size("defaultMinFreeSpace")?,
    };
    Some(Config { store, gc })
}

/// The size of a filesystem, and its free space counted as BuildKit counts it for its min-free
/// rule (free blocks, root's reserve included).
#[derive(Debug, Clone, Copy)]
pub struct DiskSpace {
    pub total_bytes: u64,
    pub free_bytes: u64,
}

/// The space of the filesystem that holds `dir`.
pub fn disk_space(dir: &Path) -> anyhow::Result<DiskSpace> {
    let stat = rustix::fs::statvfs(dir)
        .with_context(|| format!("cannot read the disk that holds {}", dir.display()))?;
    Ok(DiskSpace {
        total_bytes: stat.f_blocks.saturating_mul(stat.f_frsize),
        free_bytes: stat.f_bfree.saturating_mul(stat.f_frsize),
    })
}

/// Whether `free_bytes` is under the GC's floor: BuildKit then prunes unused cache until the
/// floor is free again, which may take the cache mounts the next build uses.
pub fn under_floor(gc: CacheGc, free_bytes: u64) -> bool {
    free_bytes < gc.min_free_gib << 30
}

/// The config, and its text, for the engine directory `root` (which must exist) with `store`.
pub fn for_dir(root: &Path, store: ImageStore) -> anyhow::Result<(Config, String)> {
    let gc = cache_gc(disk_space(root)?.total_bytes);
    let config = Config { store, gc };
    Ok((config, daemon_json(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_shares_of_the_disk() {
        let gc = cache_gc(252 << 30);
        assert_eq!(
            gc,
            CacheGc {
                reserved_gib: 25,
                max_used_gib: 151,
                min_free_gib: 12
            }
        );
    }

    #[test]
    fn a_tiny_disk_still_gets_sizes_dockerd_accepts() {
        let gc = cache_gc(512 << 20);
        assert!(gc.reserved_gib >= 1 && gc.min_free_gib >= 1);
        assert!(gc.max_used_gib > gc.reserved_gib);
    }

    fn config(store: ImageStore, disk: u64) -> Config {
        Config {
            store,
            gc: cache_gc(disk),
        }
    }

    #[test]
    fn daemon_json_names_the_image_store_and_the_sizes() {
        let text = daemon_json(config(ImageStore::Containerd, 100 << 30));
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["features"]["containerd-snapshotter"], true);
        let classic = daemon_json(config(ImageStore::Classic, 100 << 30));
        let classic: serde_json::Value = serde_json::from_str(&classic).unwrap();
        assert_eq!(classic["features"]["containerd-snapshotter"], false);
        let gc = &value["builder"]["gc"];
        assert_eq!(gc["enabled"], true);
        assert_eq!(gc["defaultReservedSpace"], "10GB");
        assert_eq!(gc["defaultMaxUsedSpace"], "60GB");
        assert_eq!(gc["defaultMinFreeSpace"], "5GB");
        assert_eq!(text.lines().count(), 1);
    }

    #[test]
    fn parse_reads_back_what_daemon_json_wrote_and_nothing_older() {
        for store in [ImageStore::Containerd, ImageStore::Classic] {
            let written = config(store, 300 << 30);
            assert_eq!(parse(&daemon_json(written)), Some(written));
        }
        let gc = config(ImageStore::Containerd, 300 << 30);
        // what xtask wrote before the sizes: the image store alone
        assert_eq!(
            parse("{\"features\": {\"containerd-snapshotter\": true}}\n"),
            None
        );
        assert_eq!(parse("not json"), None);
        let other = daemon_json(gc).replace("GB", "MB");
        let no_store = daemon_json(gc).replace("\"containerd-snapshotter\":true", "");
        assert_eq!(parse(&other), None);
        assert!(no_store.contains("\"features\":{}"), "{no_store}");
        assert_eq!(parse(&no_store), None);
    }

    #[test]
    fn the_floor_is_the_min_free_size() {
        let gc = cache_gc(100 << 30);
        assert!(under_floor(gc, (5 << 30) - 1));
        assert!(!under_floor(gc, 5 << 30));
    }

    #[test]
    fn the_disk_of_a_real_directory_has_a_size() {
        let space = disk_space(&std::env::temp_dir()).unwrap();
        assert!(space.total_bytes > 0 && space.free_bytes <= space.total_bytes);
        assert!(disk_space(Path::new("/no/such/dir")).is_err());
    }
}
