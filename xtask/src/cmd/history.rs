//! `cargo xtask history`: the recorded `docker-build` runs as a table, per-image medians and
//! trends, JSON, an SVG plot, and why an image's last build re-ran.

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use anyhow::{bail, Context as _};
use serde::Serialize;

use crate::{
    flags,
    history::{self, explain, Record},
    util::Status,
    util::UsageError,
};

pub fn run(root: &Path, args: flags::HistoryArgs) -> anyhow::Result<Status> {
    let (records, warnings) = history::read_all(&history::path(root));
    for warning in &warnings {
        eprintln!("warning: {warning}");
    }
    let (records, others) = select(records, &args.source);
    let window = &records[records.len().saturating_sub(args.last.max(1))..];
    if let Some(image) = &args.explain {
        print!("{}", render_explain(&records, image)?);
        return Ok(Status::Ok);
    }
    if let Some(file) = &args.plot {
        let path = root.join(file);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(&path, history::plot::svg(window))
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!(
            "history: {} run(s) plotted to {}",
            window.len(),
            file.display()
        );
    }
    let stats = image_stats(window);
    if args.json {
        #[derive(Serialize)]
        struct Out<'a> {
            runs: &'a [Record],
            images: &'a [ImageStats],
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&Out {
                runs: window,
                images: &stats
            })?
        );
    } else if args.plot.is_none() {
        print!("{}", render_table(window, &stats));
        if let Some(note) = render_others(&others) {
            print!("{note}");
        }
    }
    Ok(Status::Ok)
}

/// The records of `source` (`all`: every one), and how many runs of each other source were left
/// out.
pub fn select(records: Vec<Record>, source: &str) -> (Vec<Record>, BTreeMap<String, usize>) {
    let mut others: BTreeMap<String, usize> = BTreeMap::new();
    let kept = records
        .into_iter()
        .filter(|r| {
            let keep = source == "all" || r.source() == source;
            if !keep {
                *others.entry(r.source().to_string()).or_default() += 1;
            }
            keep
        })
        .collect();
    (kept, others)
}

/// `(also recorded: 12 bench run(s), ...; --source NAME or all)`, when runs were left out.
pub fn render_others(others: &BTreeMap<String, usize>) -> Option<String> {
    if others.is_empty() {
        return None;
    }
    let list: Vec<String> = (others.iter())
        .map(|(source, n)| format!("{n} {source} run(s)"))
        .collect();
    Some(format!(
        "(not shown: {}; --source {} or all)\n",
        list.join(", "),
        others.keys().cloned().collect::<Vec<_>>().join("|")
    ))
}

/// An image over the window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ImageStats {
    pub image: String,
    pub runs: usize,
    pub ran: usize,
    pub median_wall_seconds: Option<f64>,
    /// Over the runs whose cargo step ran.
    pub median_cargo_seconds: Option<f64>,
    /// Newer half's median wall time over the older half's (1.0 = flat).
    pub trend: Option<f64>,
    pub last_result: String,
}

pub fn image_stats(records: &[Record]) -> Vec<ImageStats> {
    let mut by_image: BTreeMap<&str, Vec<&history::ImageRecord>> = BTreeMap::new();
    let mut order = Vec::new();
    for r in records {
        for i in &r.images {
            if !by_image.contains_key(i.image.as_str()) {
                order.push(i.image.as_str());
            }
            by_image.entry(&i.image).or_default().push(i);
        }
    }
    order
        .into_iter()
        .map(|name| {
            let runs = &by_image[name];
            let walls: Vec<f64> = runs.iter().map(|i| i.wall_seconds).collect();
            let cargo: Vec<f64> = runs.iter().filter_map(|i| i.cargo_seconds).collect();
            ImageStats {
                image: name.to_string(),
                runs: runs.len(),
                ran: runs.iter().filter(|i| i.ran()).count(),
                median_wall_seconds: history::median(&walls),
                median_cargo_seconds: history::median(&cargo),
                trend: history::trend(&walls),
                last_result: runs.last().map(|i| i.result.clone()).unwrap_or_default(),
            }
        })
        .collect()
}

pub fn render_table(records: &[Record], stats: &[ImageStats]) -> String {
    let mut out = String::new();
    if records.is_empty() {
        out.push_str("no recorded docker-build run yet (target/xtask/history.jsonl)\n");
        return out;
    }
    // runs of several sources (--source all): a column says which
    let sourced = records.iter().any(|r| r.source.is_some());
    let source_of = |r: &Record| match sourced {
        true => format!("  {}", r.source()),
        false => String::new(),
    };
    let _ = writeln!(
        out,
        "{:<16}  {:<9}  {:<10}  {:>7}  {:>3}  {:>3}  {:>6}  {:>6}  {:>6}{}",
        "time (UTC)",
        "revision",
        "strategy",
        "wall",
        "ok",
        "bad",
        "ran",
        "cached",
        "current",
        if sourced { "  source" } else { "" }
    );
    for r in records {
        let count =
            |f: &dyn Fn(&history::ImageRecord) -> bool| r.images.iter().filter(|i| f(i)).count();
        let rev = r
            .git_rev
            .as_deref()
            .map(|s| s.chars().take(7).collect::<String>())
            .unwrap_or_else(|| "-".into());
        let dirty = if r.git_dirty == Some(true) { "+" } else { "" };
        let _ = writeln!(
            out,
            "{:<16}  {:<9}  {:<10}  {:>6.1}s  {:>3}  {:>3}  {:>6}  {:>6}  {:>6}{}",
            utc(r.time),
            format!("{rev}{dirty}"),
            r.strategy,
            r.wall_seconds,
            count(&|i| i.succeeded()),
            count(&|i| !i.succeeded()),
            count(&|i| i.ran()),
            count(&|i| i.succeeded() && !i.ran() && i.result != "up-to-date"),
            count(&|i| i.result == "up-to-date"),
            source_of(r),
        );
    }
    let _ = writeln!(
        out,
        "\n{:<14}  {:>4}  {:>4}  {:>12}  {:>12}  {:>7}  last",
        "image", "runs", "ran", "median wall", "median cargo", "trend"
    );
    for s in stats {
        let secs = |v: Option<f64>| v.map(|v| format!("{v:.1}s")).unwrap_or_else(|| "-".into());
        let trend = s
            .trend
            .map(|t| format!("{t:.2}x"))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{:<14}  {:>4}  {:>4}  {:>12}  {:>12}  {:>7}  {}",
            s.image,
            s.runs,
            s.ran,
            secs(s.median_wall_seconds),
            secs(s.median_cargo_seconds),
            trend,
            s.last_result
        );
    }
    out.push_str("(trend: the newer half's median wall time over the older half's)\n");
    out
}

/// The last run of `image` against its previous successful run: every input that differs.
pub fn render_explain(records: &[Record], image: &str) -> anyhow::Result<String> {
    let runs: Vec<(&Record, &history::ImageRecord)> = records
        .iter()
        .filter_map(|r| r.images.iter().find(|i| i.image == image).map(|i| (r, i)))
        .collect();
    // the newest run whose cargo step ran is the one to explain; runs after it did not rebuild
    let chosen = runs
        .iter()
        .rposition(|(_, i)| i.ran() && i.inputs.is_some())
        .or(runs.len().checked_sub(1));
    let Some(chosen) = chosen else {
        return Err(unknown_image(records, image).into());
    };
    let (last_run, last) = runs[chosen];
    let mut out = String::new();
    let what = if last.ran() {
        "last run whose cargo step ran"
    } else {
        "last run"
    };
    let _ = writeln!(
        out,
        "{image}: {what} {} ({}), {}, cargo step {}",
        utc(last_run.time),
        last_run
            .git_rev
            .as_deref()
            .map(|s| &s[..s.len().min(7)])
            .unwrap_or("-"),
        last.result,
        last.cargo_step
    );
    let Some(inputs) = &last.inputs else {
        bail!("the last run of {image} recorded no inputs (they could not be hashed)");
    };
    if chosen + 1 < runs.len() {
        let _ = writeln!(
            out,
            "  ({} newer run(s) of {image} did not run the cargo step)",
            runs.len() - chosen - 1
        );
    }
    let previous = runs[..chosen]
        .iter()
        .rev()
        .find(|(_, i)| i.succeeded() && i.inputs.is_some());
    let now = explain::Side {
        inputs,
        files: &last_run.files,
        strategy: &last_run.strategy,
        engine_id: last_run.engine_id.as_deref(),
    };
    match previous {
        None => {
            let _ = writeln!(out, "  no previous successful run to compare with");
        }
        Some((prev_run, prev)) => {
            let before = explain::Side {
                inputs: prev.inputs.as_ref().expect("filtered"),
                files: &prev_run.files,
                strategy: &prev_run.strategy,
                engine_id: prev_run.engine_id.as_deref(),
            };
            let _ = writeln!(out, "  compared with the run of {}:", utc(prev_run.time));
            let diffs = explain::differences(before, now);
            if diffs.is_empty() {
                let _ = writeln!(out, "  no input differs");
            }
            for d in diffs {
                let _ = writeln!(out, "  - {d}");
            }
        }
    }
    render_inputs(&mut out, inputs);
    Ok(out)
}

/// The usage error of `--explain IMAGE` for an image no run recorded, naming those recorded.
fn unknown_image(records: &[Record], image: &str) -> UsageError {
    let mut known: Vec<&str> = (records.iter())
        .flat_map(|r| r.images.iter().map(|i| i.image.as_str()))
        .collect();
    known.sort();
    known.dedup();
    UsageError(format!(
        "no recorded run of image `{image}`; recorded images: {}",
        if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        }
    ))
}

/// The recorded inputs of a run, a line each.
fn render_inputs(out: &mut String, inputs: &history::Inputs) {
    let _ = writeln!(out, "  inputs of the last run:");
    let _ = writeln!(
        out,
        "    Dockerfile {} (target {})",
        inputs.dockerfile, inputs.target
    );
    for (base, id) in &inputs.base_images {
        let _ = writeln!(
            out,
            "    base image {base} {}",
            id.as_deref().unwrap_or("(missing)")
        );
    }
    for (k, v) in &inputs.build_args {
        let _ = writeln!(out, "    build arg {k}={v}");
    }
    for s in &inputs.sources {
        let path = if s.path.is_empty() { "." } else { &s.path };
        let files = if s.files == 1 { "file" } else { "files" };
        let _ = writeln!(out, "    source {path} ({} {files}) {}", s.files, s.digest);
    }
}

/// `2026-11-29 17:49` from seconds since the epoch (UTC).
pub fn utc(t: f64) -> String {
    let secs = t as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Howard Hinnant's civil_from_days
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::fixtures::{image, record};

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0.0), "1970-01-01 00:00");
        assert_eq!(utc(1_800_000_000.0), "2027-01-15 08:00");
    }

    #[test]
    fn stats_medians_and_trend() {
        let records = vec![
            record(1.0, vec![image("api", "succeeded", 60.0, "ran")]),
            record(2.0, vec![image("api", "succeeded", 2.0, "cached")]),
            record(3.0, vec![image("api", "succeeded", 4.0, "ran")]),
            record(4.0, vec![image("api", "up-to-date", 0.0, "none")]),
        ];
        let stats = image_stats(&records);
        assert_eq!(stats.len(), 1);
        assert_eq!(stats[0].runs, 4);
        assert_eq!(stats[0].ran, 2);
        assert_eq!(stats[0].median_wall_seconds, Some(3.0));
        assert_eq!(stats[0].median_cargo_seconds, Some(31.0));
        assert_eq!(stats[0].last_result, "up-to-date");
        let table = render_table(&records, &stats);
        assert!(table.contains("api"), "{table}");
    }

    #[test]
    fn explain_picks_the_last_run_whose_cargo_step_ran() {
        use crate::history::fixtures::{files, inputs_over};
        let before = files(&[("Cargo.lock", "l1"), ("crates/common/src/lib.rs", "c1")]);
        let mut after = before.clone();
        after.insert("Cargo.lock".into(), "l2".into());
        let with = |t: f64, cargo: &str, f: &BTreeMap<String, String>| {
            let mut i = image("api", "succeeded", 1.0, cargo);
            i.inputs = Some(inputs_over(f));
            let mut r = record(t, vec![i]);
            r.files = f.clone();
            r
        };
        let records = vec![
            with(1.0, "ran", &before),
            with(2.0, "ran", &after),
            with(3.0, "cached", &after),
        ];
        let text = render_explain(&records, "api").unwrap();
        assert!(text.contains("last run whose cargo step ran"), "{text}");
        assert!(text.contains("- Cargo.lock changed"), "{text}");
        assert!(text.contains("1 newer run(s)"), "{text}");
    }

    #[test]
    fn explain_an_unknown_image_is_a_usage_error() {
        let records = vec![record(1.0, vec![image("api", "succeeded", 1.0, "ran")])];
        let err = render_explain(&records, "nope").unwrap_err();
        assert!(err.downcast_ref::<UsageError>().is_some());
        assert!(err.to_string().contains("recorded images: api"), "{err}");
    }
}
