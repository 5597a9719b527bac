//! The private daemon's `daemon.json`: the containerd image store, and a build-cache garbage
//! collection sized for this workspace's cache mounts.
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

/// The daemon.json text for `gc`.
pub fn daemon_json(gc: CacheGc) -> String {
    let config = serde_json::json!({
        "features": {"containerd-snapshotter": true},
        "builder": {"gc": {
            "enabled": true,
            "defaultReservedSpace": format!("{}GB", gc.reserved_gib),
            "defaultMaxUsedSpace": format!("{}GB", gc.max_used_gib),
            "defaultMinFreeSpace": format!("{}GB", gc.min_free_gib),
        }},
    });
    format!("{config}\n")
}

/// The sizes a daemon.json names, when it has this module's shape (the image store, and the three
/// sizes in whole `GB`); none for one an older xtask wrote, which had no sizes.
pub fn parse(text: &str) -> Option<CacheGc> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    if value["features"]["containerd-snapshotter"] != true
        || value["builder"]["gc"]["enabled"] != true
    {
        return None;
    }
    let size = |key: &str| {
        let text = value["builder"]["gc"][key].as_str()?;
        text.strip_suffix("GB")?.parse::<u64>().ok()
    };
    Some(CacheGc {
        reserved_gib: size("defaultReservedSpace")?,
        max_used_gib: size("defaultMaxUsedSpace")?,
        min_free_gib: size("defaultMinFreeSpace")?,
    })
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

/// The sizes and config for the engine directory `root` (which must exist).
pub fn for_dir(root: &Path) -> anyhow::Result<(CacheGc, String)> {
    let gc = cache_gc(disk_space(root)?.total_bytes);
    Ok((gc, daemon_json(gc)))
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

    #[test]
    fn daemon_json_keeps_the_image_store_and_names_the_sizes() {
        let text = daemon_json(cache_gc(100 << 30));
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["features"]["containerd-snapshotter"], true);
        let gc = &value["builder"]["gc"];
        assert_eq!(gc["enabled"], true);
        assert_eq!(gc["defaultReservedSpace"], "10GB");
        assert_eq!(gc["defaultMaxUsedSpace"], "60GB");
        assert_eq!(gc["defaultMinFreeSpace"], "5GB");
        assert_eq!(text.lines().count(), 1);
    }

    #[test]
    fn parse_reads_back_what_daemon_json_wrote_and_nothing_older() {
        let gc = cache_gc(300 << 30);
        assert_eq!(parse(&daemon_json(gc)), Some(gc));
        // what xtask wrote before the sizes: the image store alone
        assert_eq!(
            parse("{\"features\": {\"containerd-snapshotter\": true}}\n"),
            None
        );
        assert_eq!(parse("not json"), None);
        let other = daemon_json(gc).replace("GB", "MB");
        assert_eq!(parse(&other), None);
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
