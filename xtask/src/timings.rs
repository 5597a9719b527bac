//! `docker-build --timings`: cargo's own view of the build. The strategy's cargo step runs
//! `cargo build --timings` and copies its report (`cargo-timing.html`) into a `timings` stage;
//! after the builds, one more build exports that stage to [`DIR`]. It shares every layer with the
//! images' builds, so it runs no cargo step of its own: when this run's cargo step came from the
//! layer cache, the report is the one of the last cargo step that ran. Pure except [`report`],
//! which reads the exported file.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::plan::{Build, Plan};

/// The Dockerfile stage that holds the report.
pub const STAGE: &str = "timings";
/// Where the stage is exported, relative to the workspace root.
pub const DIR: &str = "target/xtask/timings";
/// The report's file name, as cargo writes it.
pub const HTML: &str = "cargo-timing.html";
/// How many crates the summary names.
pub const SLOWEST: usize = 3;

/// One crate's compile time, from cargo's report: the durations of its units (library, build
/// script, binaries) added up.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CrateTime {
    pub name: String,
    pub version: String,
    pub seconds: f64,
}

/// What `--timings` found, for the summary and `--json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimingsReport {
    /// The exported report, relative to the workspace root.
    pub html: PathBuf,
    /// Whether a cargo step ran in this run (else the report is the last one that ran).
    pub fresh: bool,
    /// The slowest crates, slowest first.
    pub slowest: Vec<CrateTime>,
    /// Why there is no report (the export failed, or the file could not be read or parsed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Deserialize)]
struct Unit {
    name: String,
    #[serde(default)]
    version: String,
    duration: f64,
}

/// The `n` slowest crates of cargo's timing report (`cargo-timing.html`): the JSON array after
/// `UNIT_DATA = ` in its script, units of one crate (name and version) added up. Crates that
/// took less than 0.05 s are left out: cargo lists its fresh units too, with a duration of 0.
pub fn slowest(html: &str, n: usize) -> anyhow::Result<Vec<CrateTime>> {
    const MARK: &str = "UNIT_DATA = ";
    let start = html
        .find(MARK)
        .context("no `UNIT_DATA = ` in the timing report (not cargo's cargo-timing.html?)")?;
    // the array is one JSON value; what follows it (`;` and the rest of the script) is not read
    let units: Vec<Unit> = serde_json::Deserializer::from_str(&html[start + MARK.len()..])
        .into_iter()
        .next()
        .context("nothing after `UNIT_DATA = `")?
        .context("UNIT_DATA is not a JSON array of units")?;
    let mut crates: Vec<CrateTime> = Vec::new();
    for unit in units {
        match (crates.iter_mut()).find(|c| c.name == unit.name && c.version == unit.version) {
            Some(c) => c.seconds += unit.duration,
            None => crates.push(CrateTime {
                name: unit.name,
                version: unit.version,
                seconds: unit.duration,
            }),
        }
    }
    // cargo lists fresh units too, with a duration of 0: they were not compiled
    crates.retain(|c| c.seconds >= 0.05);
    crates.sort_by(|a, b| b.seconds.total_cmp(&a.seconds).then(a.name.cmp(&b.name)));
    crates.truncate(n);
    Ok(crates)
}

/// The build that exports the `timings` stage: the plan's first build (same Dockerfile, build
/// arguments, builder, cache sources) with the stage as its target and [`DIR`] as a local output.
/// Every build of the plan must use one Dockerfile, and it must have the stage (its text is
/// `dockerfile_text`); otherwise the error says why (a usage error: the strategy has no report).
pub fn build(plan: &Plan, dockerfile_text: &str, log_dir: &Path) -> Result<Build, String> {
    let first = plan
        .builds
        .first()
        .ok_or_else(|| "--timings: no image to build".to_string())?;
    let dockerfile = first.dockerfile();
    if let Some(other) = plan.builds.iter().find(|b| b.dockerfile() != dockerfile) {
        return Err(format!(
            "--timings: the {} strategy builds from several Dockerfiles ({}, {}); cargo's timing report comes from a `{STAGE}` stage of one (docker/Dockerfile.workspace has it: --strategy workspace)",
            plan.strategy,
            dockerfile.display(),
            other.dockerfile().display()
        ));
    }
    let has_stage = crate::dockerfile::model::parse(dockerfile_text).is_ok_and(|file| {
        (file.stages.iter()).any(|s| {
            s.name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(STAGE))
        })
    });
    if !has_stage {
        return Err(format!(
            "--timings: {} has no `{STAGE}` stage, so the {} strategy's cargo step leaves no timing report (docker/Dockerfile.workspace has one: --strategy workspace)",
            dockerfile.display(),
            plan.strategy
        ));
    }
    Ok(first.export_stage(STAGE, PathBuf::from(DIR), log_dir))
}

/// `--dry-run`'s lines for the export, after the plan's.
pub fn render_dry_run(build: &Build) -> String {
    format!(
        "# then, when every build succeeded: cargo's timing report (layer-cached, no cargo step of its own)\n{}   # {STAGE} -> {}\n",
        crate::proc::shell_line(&crate::plan::redacted(&build.argv())),
        build.log.display()
    )
}

/// The report of an export that succeeded (`exported`) or not: the slowest crates of the HTML
/// under `root`'s [`DIR`].
pub fn report(root: &Path, fresh: bool, exported: Result<(), String>) -> TimingsReport {
    let html = Path::new(DIR).join(HTML);
    let parsed = exported.and_then(|()| {
        let path = root.join(&html);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", html.display()))?;
        slowest(&text, SLOWEST).map_err(|e| format!("{}: {e:#}", html.display()))
    });
    let (slowest, error) = match parsed {
        Ok(s) => (s, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    TimingsReport {
        html,
        fresh,
        slowest,
        error,
    }
}

/// The summary's line: `timings: PATH; slowest: tokio 12.3s, ...`, and whose build it is.
pub fn render(report: &TimingsReport) -> String {
    if let Some(error) = &report.error {
        return format!("timings: no report ({error})\n");
    }
    let slowest = if report.slowest.is_empty() {
        "none (cargo compiled nothing: every crate was fresh)".to_string()
    } else {
        (report.slowest.iter())
            .map(|c| format!("{} {:.1}s", c.name, c.seconds))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = format!("timings: {}; slowest: {slowest}\n", report.html.display());
    if !report.fresh {
        out.push_str(
            "timings: no cargo step ran in this run (layer-cached): the report is the one of the last build whose cargo step ran\n",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of cargo 1.95's report: the array, then `;` and more script (with a `;` inside
    /// a string of the array, which a search for the first `;` would cut at).
    const HTML_FIXTURE: &str = r#"<html><script>
DURATION = 20;
const UNIT_DATA = [
  {"i": 0, "name": "serde", "version": "1.0.0", "mode": "todo", "target": " build script", "start": 0.1, "duration": 1.5},
  {"i": 1, "name": "tokio", "version": "1.40.0", "mode": "todo", "target": "", "start": 0.2, "duration": 12.25, "features": ["a;b"]},
  {"i": 2, "name": "serde", "version": "1.0.0", "mode": "todo", "target": "", "start": 1.7, "duration": 7.0},
  {"i": 3, "name": "attune-common", "version": "0.1.0", "mode": "todo", "target": "", "start": 13.0, "duration": 4.0},
  {"i": 4, "name": "libc", "version": "0.2.0", "mode": "todo", "target": "", "start": 0.1, "duration": 0.5},
  {"i": 5, "name": "anstream", "version": "1.0.0", "mode": "todo", "target": "", "start": 0.0, "duration": 0.0}
];
const CONCURRENCY_DATA = [{"t": 0.1, "active": 1}];
</script></html>"#;

    #[test]
    fn slowest_adds_up_a_crates_units_and_sorts() {
        let top = slowest(HTML_FIXTURE, 3).unwrap();
        let names: Vec<(&str, f64)> = top.iter().map(|c| (c.name.as_str(), c.seconds)).collect();
        assert_eq!(
            names,
            [("tokio", 12.25), ("serde", 8.5), ("attune-common", 4.0)]
        );
        assert_eq!(top[1].version, "1.0.0");
        // anstream was fresh (0 s): not a compiled crate
        assert_eq!(slowest(HTML_FIXTURE, 10).unwrap().len(), 4);
    }

    #[test]
    fn an_empty_build_and_a_foreign_file() {
        assert_eq!(
            slowest("const UNIT_DATA = [];\nconst X = 1;", 3).unwrap(),
            []
        );
        let err = slowest("<html>no report</html>", 3).unwrap_err();
        assert!(format!("{err:#}").contains("UNIT_DATA"), "{err:#}");
        assert!(slowest("const UNIT_DATA = {\"not\": 1};", 3).is_err());
    }

    #[test]
    fn render_names_the_slowest_and_says_when_the_report_is_old() {
        let report = TimingsReport {
            html: PathBuf::from(DIR).join(HTML),
            fresh: false,
            slowest: slowest(HTML_FIXTURE, 3).unwrap(),
            error: None,
        };
        let text = render(&report);
        assert!(
            text.starts_with(
                "timings: target/xtask/timings/cargo-timing.html; slowest: tokio 12.2s, serde 8.5s, attune-common 4.0s\n"
            ),
            "{text}"
        );
        assert!(text.contains("layer-cached"), "{text}");
        let fresh = render(&TimingsReport {
            fresh: true,
            ..report
        });
        assert!(!fresh.contains("layer-cached"), "{fresh}");
    }
}
