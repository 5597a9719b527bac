//! BuildKit's cache records as `docker buildx du --verbose` lists them: the parse, the layer
//! records later builds superseded and the prune of them (pure), and the listing and the prune
//! themselves (processes). `cache du|prune` show and remove this workspace's cache mounts;
//! docker-build removes the superseded layer records of its images ([`list_superseded`],
//! [`remove`]).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context as _};
use serde::Serialize;

use crate::proc::{Command, Stdio};

/// One record of `docker buildx du --verbose`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DuRecord {
    /// BuildKit's record id (what `buildx prune --filter id=` takes).
    pub record: String,
    pub kind: String,
    pub size_bytes: u64,
    /// Seconds since the last use (`None`: never used, or unknown).
    pub last_used_seconds: Option<u64>,
    pub last_used: String,
    /// For a cache mount: its id (`cargo-home`); `None` for layers.
    pub cache_id: Option<String>,
    pub in_use: bool,
    /// BuildKit's description: a layer's is its step (`[service 1/1] COPY --from=builder ...`).
    #[serde(skip)]
    pub description: String,
    /// `Created at:` as BuildKit prints it (UTC, to the nanosecond: ordered as text).
    #[serde(skip)]
    pub created_at: String,
}

/// The parsed output: the records and BuildKit's total.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Du {
    pub records: Vec<DuRecord>,
    pub total_bytes: Option<u64>,
}

/// Parses `docker buildx du --verbose`: blocks of `Key: value` lines separated by blank lines;
/// the last block (no `ID:`) holds the totals.
pub fn parse_du(text: &str) -> Du {
    let mut records = Vec::new();
    let mut total = None;
    for block in text.split("\n\n") {
        let field = |key: &str| {
            block.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == key).then(|| v.trim().to_string())
            })
        };
        let Some(record) = field("ID") else {
            if let Some(t) = field("Total") {
                total = parse_size(&t);
            }
            continue;
        };
        let description = field("Description").unwrap_or_default();
        let kind = field("Type").unwrap_or_default();
        let last_used = field("Last used").unwrap_or_else(|| "never".into());
        records.push(DuRecord {
            record,
            cache_id: (kind == "exec.cachemount").then(|| cache_id(&description)),
            kind,
            size_bytes: field("Size").and_then(|s| parse_size(&s)).unwrap_or(0),
            last_used_seconds: parse_ago(&last_used),
            last_used,
            in_use: field("In use").as_deref() == Some("true"),
            description,
            created_at: field("Created at").unwrap_or_default(),
        });
    }
    Du {
        records,
        total_bytes: total,
    }
}

/// `cached mount /build/target from exec ... with id "/target-workspace"` -> `target-workspace`;
/// without `with id` (the id equals the target), the target.
fn cache_id(description: &str) -> String {
    if let Some(pos) = description.rfind(" with id \"") {
        let rest = &description[pos + 10..];
        return rest
            .trim_end_matches('"')
            .trim_start_matches('/')
            .to_string();
    }
    description
        .strip_prefix("cached mount ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or("")
        .trim_start_matches('/')
        .to_string()
}

/// `12.3kB`, `44.52MB`, `1.374GB`, `0B` (decimal units, as docker prints them).
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match unit.trim().to_ascii_uppercase().as_str() {
        "B" => 1.0,
        "KB" | "K" => 1e3,
        "MB" | "M" => 1e6,
        "GB" | "G" => 1e9,
        "TB" | "T" => 1e12,
        _ => return None,
    };
    Some((n * mult) as u64)
}

/// `90s`, `30m`, `12h`, `7d`, `2w` -> seconds.
pub fn parse_duration(text: &str) -> Option<u64> {
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = num.parse().ok()?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        _ => return None,
    };
    Some(n * mult)
}

/// docker's relative times: `Less than a second ago`, `About a minute ago`, `10 minutes ago`,
/// `2 days ago`, `3 weeks ago`, `5 months ago`.
pub fn parse_ago(text: &str) -> Option<u64> {
    let words: Vec<&str> = text.split_whitespace().collect();
    if text.starts_with("Less than a second") {
        return Some(0);
    }
    let (n, unit) = match words.as_slice() {
        ["About", "a" | "an", unit, "ago"] => (1, *unit),
        [n, unit, "ago"] => (n.parse().ok()?, *unit),
        _ => return None,
    };
    let unit = unit.trim_end_matches('s');
    let mult = match unit {
        "second" => 1,
        "minute" => 60,
        "hour" => 3600,
        "day" => 86400,
        "week" => 7 * 86400,
        "month" => 30 * 86400,
        "year" => 365 * 86400,
        _ => return None,
    };
    Some(n * mult)
}

/// `docker buildx du --verbose`, as text.
pub fn buildx_du() -> anyhow::Result<String> {
    buildx_du_of(None)
}

/// `docker buildx du --verbose`, of the records `filter` (`--filter`) names when given.
fn buildx_du_of(filter: Option<&str>) -> anyhow::Result<String> {
    let mut args: Vec<String> = ["buildx", "du", "--verbose"].map(String::from).into();
    args.extend(
        filter
            .map(|f| ["--filter".to_string(), f.to_string()])
            .into_iter()
            .flatten(),
    );
    docker(&args)
}

/// `docker ARGS`' standard output; an error names the command and carries its stderr.
fn docker(args: &[String]) -> anyhow::Result<String> {
    let what = format!("docker {}", args[..args.len().min(2)].join(" "));
    let out = crate::proc::output(Command::new("docker").args(args).stdin(Stdio::null()))
        .with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The steps of a build log that copy from the stage `from` (`#12 [service 1/1] COPY
/// --from=builder /out/svc/api/ /usr/local/bin/` -> `[service 1/1] COPY --from=builder ...`): the
/// descriptions BuildKit gives their layer records. Each build of a changed binary adds one
/// such record per image, and every one kept makes each later build slower (BuildKit's build
/// record walks them: docs/SCALING.md).
pub fn copy_steps(log: &str, from: &str) -> BTreeSet<String> {
    let needle = format!("] COPY --from={from} ");
    (step_lines(log))
        .filter(|step| step.contains(&needle))
        .map(str::to_string)
        .collect()
}

/// Whether a build log shows its cargo step begun (`#14 [builder 6/6] RUN ... cargo build ...`):
/// the build's lookups of the steps before it are over.
pub fn cargo_step_started(log: &str) -> bool {
    step_lines(log).any(crate::exec::events::is_cargo_step)
}

/// The steps a rendered build log names (`#12 [service 1/1] COPY ...` -> `[service 1/1] COPY
/// ...`), not their output or status lines (`#12 DONE 0.1s`, `#12 1.2 Compiling ...`).
fn step_lines(log: &str) -> impl Iterator<Item = &str> {
    (log.lines()).filter_map(|line| {
        let (num, rest) = line.strip_prefix('#')?.split_once(' ')?;
        (num.chars().all(|c| c.is_ascii_digit()) && rest.starts_with('[')).then_some(rest)
    })
}

/// The layer records of `steps` an earlier build left and a later one replaced: not in use, and
/// not the newest record of the same step (the one used last; of records docker shows as used
/// equally long ago, to the minute, the one created last), which is kept, as is every record
/// whose last use is unknown. Not per parent: each generation has a parent record of its own
/// (measured: three generations of one step, three parents), because removing a record costs
/// BuildKit the cache of its parent step (the runtime base's `RUN useradd` ran again after each
/// removal, and stayed cached without it; still a gain at 64 images: docs/SCALING.md, run 7).
/// Another checkout's, base's or platform's build of the same step shares that newest one: what
/// it loses is its older layer, which a rebuild copies again.
pub fn superseded<'a>(du: &'a Du, steps: &BTreeSet<String>) -> Vec<&'a DuRecord> {
    let ours = |r: &&DuRecord| r.kind == "regular" && steps.contains(&r.description);
    let key = |r: &'a DuRecord| r.description.as_str();
    let mut newest: BTreeMap<&str, &DuRecord> = BTreeMap::new();
    for r in du.records.iter().filter(ours) {
        let Some(age) = r.last_used_seconds else {
            continue;
        };
        let n = newest.entry(key(r)).or_insert(r);
        let n_age = n.last_used_seconds.unwrap_or(u64::MAX);
        if age < n_age || (age == n_age && r.created_at > n.created_at) {
            *n = r;
        }
    }
    (du.records.iter())
        .filter(ours)
        .filter(|r| !r.in_use && r.last_used_seconds.is_some())
        .filter(|r| newest.get(&key(r)).is_some_and(|n| n.record != r.record))
        .collect()
}

/// One `docker buildx prune` of exactly these records (buildx matches `id=` as a regex; `--all`:
/// a layer an image was exported from is a shared record, which a plain prune keeps).
pub fn prune_argv(records: &[&DuRecord]) -> Vec<String> {
    let ids: Vec<&str> = records.iter().map(|r| r.record.as_str()).collect();
    ["buildx", "prune", "--force", "--all", "--filter"]
        .into_iter()
        .map(String::from)
        .chain([format!("id=^({})$", ids.join("|"))])
        .collect()
}

/// `docker buildx du --verbose` of the layer records alone (`--filter type=regular`): a listing
/// makes BuildKit work out the size of each record it lists whose size is unknown, and while it
/// does so for a cache mount, no build can take that mount: a build that asks for it meanwhile
/// gets a new, empty one (measured: a change in common downloaded all 548 crates again;
/// docs/SCALING.md, run 12). The filter applies before the sizing, so no cache mount is touched.
pub fn buildx_du_layers() -> anyhow::Result<String> {
    buildx_du_of(Some("type=regular"))
}

/// Has BuildKit work out the size of every cache mount whose size is unknown (each one a build
/// wrote to since it was last sized), now. BuildKit's GC, which runs a second after a build ends
/// (then at most once a minute), works out every unknown size before it prunes, holding each
/// mount meanwhile; a build that asks for a cache mount (`sharing=shared`) while it is held gets
/// a new, empty one (seen: the next change in common downloaded all 548 crates again, and did
/// not once this ran first; docs/SCALING.md, run 12). Sized, a mount is skipped by the GC's
/// listing until a build uses it again.
pub fn size_cache_mounts() -> anyhow::Result<()> {
    buildx_du_of(Some("type=exec.cachemount")).map(drop)
}

/// The layer records of `steps` that later builds superseded ([`superseded`]), as one listing
/// shows them now. It may run while builds resolve their cache: it lists layer records only
/// ([`buildx_du_layers`]).
pub fn list_superseded(steps: &BTreeSet<String>) -> anyhow::Result<Vec<DuRecord>> {
    if steps.is_empty() {
        return Ok(Vec::new());
    }
    let du = parse_du(&buildx_du_layers()?);
    Ok(superseded(&du, steps).into_iter().cloned().collect())
}

/// Removes `gone` ([`list_superseded`]) in one prune; BuildKit keeps a record that came into use
/// since. Returns how many records and bytes went, as the prune listed them.
pub fn remove(gone: &[DuRecord]) -> anyhow::Result<(usize, u64)> {
    if gone.is_empty() {
        return Ok((0, 0));
    }
    let refs: Vec<&DuRecord> = gone.iter().collect();
    let listed = docker(&prune_argv(&refs))?;
    let removed: Vec<&DuRecord> = (gone.iter())
        .filter(|r| listed.lines().any(|l| l.starts_with(r.record.as_str())))
        .collect();
    Ok((removed.len(), removed.iter().map(|r| r.size_bytes).sum()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, kind: &str, description: &str, ago: Option<u64>, in_use: bool) -> DuRecord {
        DuRecord {
            record: id.into(),
            kind: kind.into(),
            size_bytes: 10,
            last_used_seconds: ago,
            last_used: String::new(),
            cache_id: None,
            in_use,
            description: description.into(),
            created_at: "2026-12-06 17:00:00 +0000 UTC".into(),
        }
    }

    #[test]
    fn superseded_keeps_the_newest_of_each_step_and_everything_else() {
        let a = "[service 1/1] COPY --from=builder /out/svc/a/ /usr/local/bin/";
        let b = "[service 1/1] COPY --from=builder /out/svc/b/ /usr/local/bin/";
        let du = Du {
            records: vec![
                record("a1", "regular", a, Some(5), false),
                record("a2", "regular", a, Some(3600), false),
                record("a3", "regular", a, Some(7200), true),
                record("a4", "regular", a, None, false),
                record("b1", "regular", b, Some(60), false),
                record("m1", "exec.cachemount", a, Some(9000), false),
                record("o1", "regular", "[other 1/1] COPY x y", Some(9000), false),
                record("q1", "regular", a, Some(9000), false),
                // used as long ago as b1 (to the minute), created before it
                DuRecord {
                    created_at: "2026-12-06 16:00:00 +0000 UTC".into(),
                    ..record("b0", "regular", b, Some(60), false)
                },
            ],
            total_bytes: None,
        };
        let steps: BTreeSet<String> = [a.to_string(), b.to_string()].into();
        let gone: Vec<&str> = superseded(&du, &steps)
            .iter()
            .map(|r| r.record.as_str())
            .collect();
        // a2, q1 and b0: a1 is the newest of a, a3 in use, a4 of unknown
        // age, b1 the newest b, m1 a cache mount, o1 another step; b0 as old as b1 to the
        // minute, created earlier
        assert_eq!(gone, ["a2", "q1", "b0"]);
        let argv = prune_argv(&superseded(&du, &steps));
        assert_eq!(argv.last().unwrap(), "id=^(a2|q1|b0)$");
    }

    #[test]
    fn the_cargo_step_is_seen_once_it_begins() {
        let before = "#5 [builder 5/6] COPY crates crates\n#5 DONE 0.1s\n";
        assert!(!cargo_step_started(before));
        let begun = format!(
            "{before}#6 [builder 6/6] RUN --mount=type=cache,target=/cargo-home     cargo build --release\n"
        );
        assert!(cargo_step_started(&begun));
        assert!(
            !cargo_step_started("#6 1.2 cargo build --release\n"),
            "its output is not the step"
        );
    }

    #[test]
    fn copy_steps_are_read_from_a_build_log() {
        let log = "#1 [internal] load build definition\n#9 [service 1/1] COPY --from=builder /out/svc/a/ /usr/local/bin/\n#9 DONE 0.1s\n#7 [builder 5/6] COPY crates crates\n#10 [w 2/3] COPY --from=builderx /o /\n";
        let steps = copy_steps(log, "builder");
        assert_eq!(
            steps.into_iter().collect::<Vec<_>>(),
            ["[service 1/1] COPY --from=builder /out/svc/a/ /usr/local/bin/"]
        );
    }
}
