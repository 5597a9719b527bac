//! The private daemon's `daemon.json`: the containerd image store, and a build-cache garbage
//! collection sized for this workspace's cache mounts.
//!
//! Docker 28's own defaults reserve a tenth of the disk for the cache and prune the rest whenever
//! less than a fifth of the disk is free. This project's machines often have less free (18-27 of
//! 252 GB during the real-size bench), so BuildKit could prune the cargo target and registry cache
//! mounts between two builds; at the floor, a change in common compiled every crate again
//! (docs/SCALING.md, run 11). These sizes, a pure function of the disk's size, keep Docker's
//! reserve (a tenth) but prune only when less than a twentieth of the disk is free or the cache
//! passes three fifths of it. The reserve stays a tenth because BuildKit never prunes below it,
//! even when the disk is full.

use std::path::Path;

use anyhow::Context;

/// Build-cache garbage-collection sizes, in GiB (`daemon.json` writes them as `NGB`, which
/// dockerd reads as binary units).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CacheGc {
    /// Cache below this size is never pruned (bar cache mounts unused for 48 h).
    pub reserved_gib: u64,
    /// Above this size unused cache is pruned down to `reserved_gib`.
    pub max_used_gib: u64,
    /// With less free disk than this, unused cache is pruned down to `reserved_gib`.
    pub min_free_gib: u64,
}

impl std::fmt::Display for CacheGc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} GiB never pruned; unused cache pruned above {} GiB or with under {} GiB free",
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

/// The daemon.json text for `gc`: one line, so that a config an older xtask wrote compares
/// unequal and its daemon is restarted.
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

/// The size of the filesystem that holds `dir`.
pub fn disk_bytes(dir: &Path) -> anyhow::Result<u64> {
    let stat = rustix::fs::statvfs(dir).with_context(|| {
        format!(
            "cannot read the size of the disk that holds {}",
            dir.display()
        )
    })?;
    Ok(stat.f_blocks.saturating_mul(stat.f_frsize))
}

/// The space free to use on the filesystem that holds `dir`.
pub fn free_bytes(dir: &Path) -> anyhow::Result<u64> {
    let stat = rustix::fs::statvfs(dir).with_context(|| {
        format!(
            "cannot read the free space of the disk that holds {}",
            dir.display()
        )
    })?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Whether `free_bytes` is under the GC's floor: BuildKit then prunes unused cache down to the
/// reserve, which may take the cache mounts the next build uses (measured by hand at the floor:
/// a change in common compiled every crate again; docs/SCALING.md, run 11).
pub fn under_floor(gc: CacheGc, free_bytes: u64) -> bool {
    free_bytes < gc.min_free_gib << 30
}

/// The disk of the engine directory `root` under its GC floor now: the free GiB and the floor,
/// if so.
pub fn dir_under_floor(root: &Path) -> Option<(u64, u64)> {
    let (gc, _) = for_dir(root).ok()?;
    let free = free_bytes(root).ok()?;
    under_floor(gc, free).then_some((free >> 30, gc.min_free_gib))
}

/// The sizes and config for the engine directory `root` (which must exist).
pub fn for_dir(root: &Path) -> anyhow::Result<(CacheGc, String)> {
    let gc = cache_gc(disk_bytes(root)?);
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
        // pruning for free space starts well below Docker 28's fifth of the disk
        assert!(gc.min_free_gib * 5 < 252);
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
    fn the_floor_is_the_min_free_size() {
        let gc = cache_gc(100 << 30);
        assert!(under_floor(gc, (5 << 30) - 1));
        assert!(!under_floor(gc, 5 << 30));
    }

    #[test]
    fn the_disk_of_a_real_directory_has_a_size() {
        let dir = std::env::temp_dir();
        assert!(disk_bytes(&dir).unwrap() > 0);
        assert!(disk_bytes(Path::new("/no/such/dir")).is_err());
        assert!(free_bytes(&dir).unwrap() <= disk_bytes(&dir).unwrap());
    }
}
