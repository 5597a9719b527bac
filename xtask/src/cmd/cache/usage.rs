//! `cargo xtask cache du|prune`: the BuildKit cache mounts this workspace's Dockerfiles declare
//! (`cargo-home`, `target-*`, and the namespaced copies verify-parallel and bench make), their
//! size and last use, and their removal. Other projects' caches on the same engine are never
//! touched: prune names each record it removes by its BuildKit id.
//!
//! Parsing `docker buildx du --verbose` and choosing what to prune are pure; `run` is the edge.

use std::{fmt::Write as _, fs, path::Path};

use crate::proc::{Command, Stdio};

use anyhow::{bail, Context as _};

use crate::{dockerfile::model, flags, util::Status, util::UsageError};

#[cfg(test)]
use crate::cache::records::parse_ago;
pub use crate::cache::records::{buildx_du, parse_du, parse_duration, parse_size, Du, DuRecord};

pub fn run(root: &Path, cmd: flags::CacheCmd) -> anyhow::Result<Status> {
    let declared = declared_ids(root)?;
    match cmd {
        flags::CacheCmd::Du(du_args) => {
            let du = parse_du(&buildx_du()?);
            if du_args.json {
                let ours: Vec<&DuRecord> = du
                    .records
                    .iter()
                    .filter(|r| owner(&declared, r).is_some())
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({
                        "declared_ids": declared,
                        "cache_mounts": ours,
                        "layer_cache_bytes": layer_bytes(&du),
                        "total_bytes": du.total_bytes,
                    })
                );
            } else {
                print!("{}", render_du(&declared, &du));
            }
            Ok(Status::Ok)
        }
        flags::CacheCmd::Prune(prune_args) => prune(&declared, prune_args),
        _ => unreachable!("export and import are dispatched in cmd/cache"),
    }
}

fn prune(declared: &[String], args: flags::CachePruneArgs) -> anyhow::Result<Status> {
    if let Some(id) = &args.id {
        if !declared.contains(id) {
            return Err(UsageError(format!(
                "--id `{id}` is not a cache id of this workspace's Dockerfiles; known ids: {}",
                declared.join(", ")
            ))
            .into());
        }
    }
    let older = match &args.older_than {
        Some(text) => Some(parse_duration(text).ok_or_else(|| {
            UsageError(format!(
                "--older-than `{text}` is not a duration (e.g. 90m, 12h, 7d)"
            ))
        })?),
        None => None,
    };
    let keep = match &args.keep_storage {
        Some(text) => Some(parse_size(text).ok_or_else(|| {
            UsageError(format!(
                "--keep-storage `{text}` is not a size (e.g. 500MB, 10GB)"
            ))
        })?),
        None => None,
    };
    let du = parse_du(&buildx_du()?);
    let chosen = select(declared, &du, args.id.as_deref(), older, keep);
    let bytes: u64 = chosen.iter().map(|r| r.size_bytes).sum();
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removing"
    };
    println!(
        "cache prune: {verb} {} record(s), {}",
        chosen.len(),
        crate::session::human_size(bytes)
    );
    for r in &chosen {
        println!(
            "  {:<28} {:>10}  last used {}  ({})",
            r.cache_id.as_deref().unwrap_or("-"),
            crate::session::human_size(r.size_bytes),
            r.last_used,
            r.record
        );
    }
    if args.dry_run {
        return Ok(Status::Ok);
    }
    let mut failed = 0;
    for (i, r) in chosen.iter().enumerate() {
        eprintln!(
            "cache prune: {}/{} {}",
            i + 1,
            chosen.len(),
            r.cache_id.as_deref().unwrap_or("-")
        );
        let status = crate::proc::status(
            Command::new("docker")
                .args(["buildx", "prune", "--force", "--filter"])
                .arg(format!("id={}", r.record))
                .stdin(Stdio::null())
                .stdout(Stdio::null()),
        )
        .context("cannot run docker buildx prune")?;
        if !status.success() {
            eprintln!(
                "cache prune: {} ({}): {status}",
                r.record,
                r.cache_id.as_deref().unwrap_or("-")
            );
            failed += 1;
        }
    }
    Ok(Status::from_ok(failed == 0))
}

/// Every cache mount id the Dockerfiles under `docker/` declare with `id=` (`${VAR}` kept as
/// written).
pub fn declared_ids(root: &Path) -> anyhow::Result<Vec<String>> {
    let mut files = Vec::new();
    let mut dirs = vec![root.join("docker")];
    while let Some(dir) = dirs.pop() {
        let entries =
            fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if entry
                .file_name()
                .to_string_lossy()
                .starts_with("Dockerfile")
            {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut ids = Vec::new();
    for file in files {
        let text =
            fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
        let parsed = model::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        for mount in parsed.instructions.iter().flat_map(|i| &i.mounts) {
            if !mount.is_cache() {
                continue;
            }
            // a mount without `id=` is keyed by its target path, which any other project
            // mounting that path shares: not this workspace's to list or prune
            if let Some(id) = mount.id() {
                let id = id.trim_start_matches('/').to_string();
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
    }
    if ids.is_empty() {
        bail!("no cache mount id in docker/Dockerfile*");
    }
    Ok(ids)
}

/// The declared id a record belongs to: equal to it, or a namespaced copy (`<id>-<namespace>`);
/// a `${VAR}` in the declared id matches any text without a `-` (`${TARGETPLATFORM}`:
/// `linux/amd64`). A `-${TARGETPLATFORM}` (or `-${TARGETARCH}`) may also be missing: the ids of
/// the builds before the target caches carried the platform stay this workspace's to prune.
pub fn owner<'a>(declared: &'a [String], record: &DuRecord) -> Option<&'a str> {
    let id = record.cache_id.as_deref()?;
    declared
        .iter()
        .find(|d| matches_id(d, id) || namespaced(d, id))
        .map(String::as_str)
}

fn namespaced(declared: &str, id: &str) -> bool {
    // the namespace is the last `-word`: `target-workspace-bench-56c4` -> `target-workspace-bench`
    // is not the declared id, so try every `-` split
    id.match_indices('-')
        .any(|(i, _)| matches_id(declared, &id[..i]))
}

fn matches_id(declared: &str, id: &str) -> bool {
    let without_platform = ["TARGETPLATFORM", "TARGETARCH"]
        .iter()
        .fold(declared.to_string(), |d, var| {
            d.replace(&format!("-${{{var}}}"), "")
        });
    matches_pattern(declared, id) || matches_pattern(&without_platform, id)
}

/// Whether `id` is `pattern` with each `${VAR}` replaced by one or more characters but `-`.
fn matches_pattern(pattern: &str, id: &str) -> bool {
    let Some(start) = pattern.find("${") else {
        return pattern == id;
    };
    let Some(len) = pattern[start..].find('}') else {
        return pattern == id;
    };
    let (prefix, rest) = (&pattern[..start], &pattern[start + len + 1..]);
    let Some(tail) = id.strip_prefix(prefix) else {
        return false;
    };
    let value_end = tail.find('-').unwrap_or(tail.len());
    (tail[..value_end].char_indices().skip(1).map(|(i, _)| i))
        .chain((value_end > 0).then_some(value_end))
        .any(|end| matches_pattern(rest, &tail[end..]))
}

/// What `prune` removes: this workspace's cache mounts not in use, narrowed by `--id`, then
/// `--older-than`; with `--keep-storage`, the least recently used first until what stays fits.
pub fn select<'a>(
    declared: &[String],
    du: &'a Du,
    id: Option<&str>,
    older_than: Option<u64>,
    keep_storage: Option<u64>,
) -> Vec<&'a DuRecord> {
    let mut ours: Vec<&DuRecord> = du
        .records
        .iter()
        .filter(|r| !r.in_use)
        .filter(|r| match (owner(declared, r), id) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(o), Some(id)) => o == id,
        })
        .filter(|r| match older_than {
            None => true,
            Some(limit) => r.last_used_seconds.is_none_or(|s| s >= limit),
        })
        .collect();
    let Some(keep) = keep_storage else {
        return ours;
    };
    // least recently used first (never used counts as the oldest)
    ours.sort_by_key(|r| std::cmp::Reverse(r.last_used_seconds.unwrap_or(u64::MAX)));
    let mut total: u64 = ours.iter().map(|r| r.size_bytes).sum();
    let mut chosen = Vec::new();
    for r in ours {
        if total <= keep {
            break;
        }
        total -= r.size_bytes;
        chosen.push(r);
    }
    chosen
}

fn layer_bytes(du: &Du) -> u64 {
    du.records
        .iter()
        .filter(|r| r.kind != "exec.cachemount")
        .map(|r| r.size_bytes)
        .sum()
}

pub fn render_du(declared: &[String], du: &Du) -> String {
    let mut out = String::new();
    let width = declared.iter().map(String::len).max().unwrap_or(0).max(30);
    let _ = writeln!(
        out,
        "{:<width$}  {:>7}  {:>10}  last used",
        "cache id", "records", "size"
    );
    for id in declared {
        let mine: Vec<&DuRecord> = du
            .records
            .iter()
            .filter(|r| owner(declared, r) == Some(id.as_str()))
            .collect();
        let size: u64 = mine.iter().map(|r| r.size_bytes).sum();
        let last = mine
            .iter()
            .filter(|r| r.last_used_seconds.is_some())
            .min_by_key(|r| r.last_used_seconds)
            .map(|r| r.last_used.as_str())
            .unwrap_or(if mine.is_empty() { "-" } else { "never" });
        let _ = writeln!(
            out,
            "{:<width$}  {:>7}  {:>10}  {}",
            id,
            mine.len(),
            crate::session::human_size(size),
            last
        );
    }
    let others = du
        .records
        .iter()
        .filter(|r| r.kind == "exec.cachemount" && owner(declared, r).is_none())
        .count();
    let _ = writeln!(
        out,
        "layer cache (every other record): {}; BuildKit total: {}",
        crate::session::human_size(layer_bytes(du)),
        du.total_bytes
            .map(crate::session::human_size)
            .unwrap_or_else(|| "unknown".into())
    );
    if others > 0 {
        let _ = writeln!(
            out,
            "({others} cache mount record(s) of other projects on this engine, not listed)"
        );
    }
    out.push_str(
        "(records: a namespaced copy made by verify-parallel or bench counts under its id; sizes as `docker buildx du` reports them, 0 B while in use)\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DU: &str = "ID:\t\tr-home\nCreated at:\t2026-11-29 18:02:35 +0000 UTC\nMutable:\ttrue\nReclaimable:\ttrue\nShared:\t\tfalse\nSize:\t\t1.5GB\nDescription:\tcached mount /cargo-home from exec /bin/sh -c cargo build\nUsage count:\t3\nLast used:\t2 days ago\nType:\t\texec.cachemount\n\n\
ID:\t\tr-ws\nSize:\t\t800MB\nDescription:\tcached mount /build/target from exec /bin/sh -c cargo build with id \"/target-workspace-linux/amd64\"\nLast used:\t10 minutes ago\nType:\t\texec.cachemount\n\n\
ID:\t\tr-api\nSize:\t\t300MB\nDescription:\tcached mount /build/target from exec x with id \"/target-builder-api-linux/arm64\"\nLast used:\tAbout an hour ago\nType:\t\texec.cachemount\n\n\
ID:\t\tr-bench\nSize:\t\t200MB\nDescription:\tcached mount /build/target from exec x with id \"/target-workspace-bench-56c4\"\nLast used:\t3 weeks ago\nType:\t\texec.cachemount\n\n\
ID:\t\tr-other\nSize:\t\t5GB\nDescription:\tcached mount /root/.m2 from exec mvn with id \"/other-project\"\nLast used:\t9 weeks ago\nType:\t\texec.cachemount\n\n\
ID:\t\tr-layer\nSize:\t\t44.52MB\nDescription:\tmount / from exec /bin/sh -c apt-get\nLast used:\t5 minutes ago\nType:\t\tregular\n\n\
Shared:\t\t1.374GB\nPrivate:\t44.52MB\nReclaimable:\t866MB\nTotal:\t\t7.9GB\n";

    fn declared() -> Vec<String> {
        [
            "cargo-home",
            "target-builder-${SERVICE}-${TARGETPLATFORM}",
            "target-workspace-${TARGETPLATFORM}",
        ]
        .map(String::from)
        .into()
    }

    #[test]
    fn parses_buildx_du() {
        let du = parse_du(DU);
        assert_eq!(du.records.len(), 6);
        assert_eq!(du.records[0].cache_id.as_deref(), Some("cargo-home"));
        assert_eq!(du.records[0].size_bytes, 1_500_000_000);
        assert_eq!(du.records[0].last_used_seconds, Some(2 * 86400));
        assert_eq!(
            du.records[1].cache_id.as_deref(),
            Some("target-workspace-linux/amd64")
        );
        assert_eq!(du.records[2].last_used_seconds, Some(3600));
        assert_eq!(du.records[5].cache_id, None);
        assert_eq!(du.total_bytes, Some(7_900_000_000));
    }

    #[test]
    fn only_this_workspaces_ids_are_ours() {
        let du = parse_du(DU);
        let d = declared();
        let owners: Vec<Option<&str>> = du.records.iter().map(|r| owner(&d, r)).collect();
        assert_eq!(
            owners,
            [
                Some("cargo-home"),
                Some("target-workspace-${TARGETPLATFORM}"),
                Some("target-builder-${SERVICE}-${TARGETPLATFORM}"),
                Some("target-workspace-${TARGETPLATFORM}"),
                None,
                None
            ]
        );
        let text = render_du(&d, &du);
        assert!(text.contains("target-workspace"), "{text}");
        assert!(!text.contains("other-project"), "{text}");
        assert!(
            text.contains("1 cache mount record(s) of other projects"),
            "{text}"
        );
    }

    #[test]
    fn select_never_takes_other_projects_and_honours_filters() {
        let du = parse_du(DU);
        let d = declared();
        let ids = |v: Vec<&DuRecord>| v.into_iter().map(|r| r.record.clone()).collect::<Vec<_>>();
        assert_eq!(
            ids(select(&d, &du, None, None, None)),
            ["r-home", "r-ws", "r-api", "r-bench"]
        );
        assert_eq!(
            ids(select(
                &d,
                &du,
                Some("target-workspace-${TARGETPLATFORM}"),
                None,
                None
            )),
            ["r-ws", "r-bench"]
        );
        assert_eq!(
            ids(select(&d, &du, None, Some(86400), None)),
            ["r-home", "r-bench"]
        );
        // 2.8 GB of ours; keep 1 GB: the least recently used go first until 1 GB stays
        assert_eq!(
            ids(select(&d, &du, None, None, Some(1_000_000_000))),
            ["r-bench", "r-home", "r-api"]
        );
    }

    #[test]
    fn ids_with_variables_match_their_expansions() {
        let ws = "target-workspace-${TARGETPLATFORM}";
        let svc = "target-builder-${SERVICE}-${TARGETPLATFORM}";
        for (pattern, id) in [
            (ws, "target-workspace-linux/amd64"),
            (ws, "target-workspace-linux/arm/v7"),
            (svc, "target-builder-api-linux/arm64"),
            // the ids before the platform was added
            (ws, "target-workspace"),
            (svc, "target-builder-api"),
        ] {
            assert!(matches_id(pattern, id), "{pattern} {id}");
        }
        for (pattern, id) in [
            (ws, "target-workspace-"),
            (ws, "target-workspaces"),
            (svc, "target-builder--linux/amd64"),
            (svc, "target-builder-api-linux/amd64-x"),
            ("cargo-home", "cargo-home-linux/amd64"),
        ] {
            assert!(!matches_id(pattern, id), "{pattern} {id}");
        }
        // a namespaced copy (verify-parallel, bench) of a platform's cache
        assert!(namespaced(ws, "target-workspace-linux/amd64-bench-56c4"));
        assert!(namespaced(svc, "target-builder-api-linux/amd64-verify-1"));
        assert!(!namespaced(ws, "target-other-linux/amd64-bench"));
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("12.3kB"), Some(12_300));
        assert_eq!(parse_size("10GB"), Some(10_000_000_000));
        assert_eq!(parse_size("0B"), Some(0));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_duration("90m"), Some(5400));
        assert_eq!(parse_duration("7d"), Some(604_800));
        assert_eq!(parse_duration("7 days"), None);
        assert_eq!(parse_ago("Less than a second ago"), Some(0));
        assert_eq!(parse_ago("About a minute ago"), Some(60));
    }
}
