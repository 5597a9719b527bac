//! Rendering of a verify-parallel report: the terminal tables, Markdown with inline SVG
//! timelines (or HTML), and small pure helpers. Nothing here runs or reads anything.

use std::fmt::Write as _;

use super::{analysis, PerfResult, Phase, RaceResult, ReuseResult, VerifyReport};
use crate::exec::runner::Outcome;

fn secs(v: Option<f64>) -> String {
    v.map(|s| format!("{s:.1}s")).unwrap_or_else(|| "-".into())
}

fn result(o: Outcome) -> &'static str {
    match o {
        Outcome::Succeeded => "ok",
        Outcome::Failed => "FAILED",
        Outcome::Interrupted => "interrupted",
        Outcome::NotStarted => "not started",
    }
}

/// One row per image of a phase: wall, cargo pending (BuildKit started -> process ran), cargo
/// executing, lock wait, cargo's own package-cache waits.
fn phase_rows(out: &mut String, phase: &Phase) {
    let waits = &phase.metrics.lock_waits;
    let _ = writeln!(
        out,
        "  {:<14} {:<7} {:>7} {:>13} {:>10} {:>9} {:>12}",
        "image", "result", "wall", "cargo pending", "cargo run", "lock wait", "cargo blocks"
    );
    for i in &phase.images {
        let wait = waits
            .iter()
            .find(|w| w.image == i.image)
            .map(|w| format!("{:.1}s", w.seconds))
            .unwrap_or_else(|| "-".into());
        let run = match &i.cargo {
            Some(c) if c.cached => "CACHED".to_string(),
            _ => secs(i.cargo_exec_seconds),
        };
        let _ = writeln!(
            out,
            "  {:<14} {:<7} {:>6.1}s {:>13} {:>10} {:>9} {:>12}",
            i.image,
            result(i.result),
            i.wall_seconds,
            secs(i.cargo_pending_seconds),
            run,
            wait,
            i.cargo_blocking_waits
        );
    }
    let m = &phase.metrics;
    let _ = writeln!(
        out,
        "  wall {:.1}s; max cargo steps executing at once {} (counting from BuildKit's start, waits included: {}); lock waits {} ({:.1}s)",
        phase.wall_seconds,
        m.max_concurrent_cargo,
        m.max_concurrent_cargo_started,
        m.lock_waits.len(),
        m.lock_wait_seconds
    );
}

fn verdict(passed: bool) -> &'static str {
    if passed {
        "PASS"
    } else {
        "FAIL"
    }
}

pub fn render_terminal(report: &VerifyReport) -> String {
    let mut out = String::new();
    let env = &report.environment;
    let _ = writeln!(
        out,
        "\nverify-parallel ({}): {} core(s), engine {}, {}; strategy {}",
        env.date, env.cores, env.engine, env.buildx, env.strategy
    );
    if let Some(perf) = &report.perf {
        perf_section(&mut out, perf);
    }
    if let Some(race) = &report.race {
        race_section(&mut out, race);
    }
    if let Some(reuse) = &report.reuse {
        reuse_section(&mut out, reuse);
    }
    let _ = writeln!(out);
    for f in &report.failures {
        let _ = writeln!(
            out,
            "FAIL [{}] {} (log: {})",
            f.test,
            f.message,
            f.log.display()
        );
    }
    let _ = writeln!(
        out,
        "verify-parallel: {} in {:.0}s",
        if report.passed {
            "every selected test passed"
        } else {
            "FAILED"
        },
        report.total_seconds
    );
    out
}

/// The perf test's part of the terminal report: each phase's rows and the ratio.
fn perf_section(out: &mut String, perf: &PerfResult) {
    let _ = writeln!(
        out,
        "\n== perf ({}): {} ==",
        if perf.cold {
            "cold: empty caches"
        } else {
            "incremental: crates/common changed after a warm-up"
        },
        verdict(perf.passed)
    );
    for (name, phase) in [
        ("locked", &perf.locked),
        ("committed (shared)", &perf.shared),
    ] {
        let _ = writeln!(out, "{name}:");
        phase_rows(out, phase);
    }
    let _ = writeln!(
        out,
        "wall shared/locked = {:.1}s / {:.1}s = {} (pass <= {:.2})",
        perf.shared.wall_seconds,
        perf.locked.wall_seconds,
        perf.ratio
            .map(|r| format!("{r:.3}"))
            .unwrap_or_else(|| "-".into()),
        analysis::MAX_RATIO
    );
}

/// The race test's part: a line per run, each image's result and cargo step.
fn race_section(out: &mut String, race: &RaceResult) {
    let _ = writeln!(
        out,
        "\n== race ({} run(s), strategy {}, cold caches each): {} failed: {} ==",
        race.runs.len(),
        race.strategy,
        race.failed_runs,
        verdict(race.passed)
    );
    for run in &race.runs {
        let p = &run.phase;
        let cells: Vec<String> = p
            .images
            .iter()
            .map(|i| {
                let cargo = match &i.cargo {
                    Some(c) if c.ran() => format!("ran {}", secs(i.cargo_exec_seconds)),
                    Some(c) if c.cached => "CACHED".into(),
                    _ => "not run".into(),
                };
                let race = if i.race_lines.is_empty() {
                    String::new()
                } else {
                    format!(", {} race line(s)", i.race_lines.len())
                };
                format!("{} {} (cargo {cargo}{race})", i.image, result(i.result))
            })
            .collect();
        let _ = writeln!(
            out,
            "  {:<6} {:>6.1}s  {}  {}",
            p.run,
            p.wall_seconds,
            if run.failures.is_empty() {
                "clean "
            } else {
                "FAILED"
            },
            cells.join("; ")
        );
    }
}

/// The reuse test's part: what each build ran and what came from the cache.
fn reuse_section(out: &mut String, reuse: &ReuseResult) {
    let _ = writeln!(
        out,
        "\n== reuse ({}): {} ==",
        reuse.image,
        verdict(reuse.passed)
    );
    for phase in [&reuse.first, &reuse.unchanged, &reuse.changed] {
        for i in &phase.images {
            let ran: Vec<String> = i
                .steps
                .iter()
                .filter(|s| !s.cached && !analysis::is_base_load(&s.name))
                .map(|s| short_step(&s.name))
                .collect();
            let cached = i
                .steps
                .iter()
                .filter(|s| s.cached && !analysis::is_base_load(&s.name))
                .count();
            let _ = writeln!(
                out,
                "  {:<12} {:<7} {:>6.1}s  {} step(s) CACHED; ran: {}",
                phase.run,
                result(i.result),
                i.wall_seconds,
                cached,
                if ran.is_empty() {
                    "nothing".to_string()
                } else {
                    ran.join(", ")
                }
            );
        }
    }
    let _ = writeln!(
        out,
        "  unchanged/first wall = {:.1}s / {:.1}s = {}",
        reuse.unchanged.wall_seconds,
        reuse.first.wall_seconds,
        reuse
            .ratio
            .map(|r| format!("{r:.3}"))
            .unwrap_or_else(|| "-".into())
    );
}

/// `[builder 6/6] RUN --mount=... cargo build ...` -> `builder 6/6 RUN (cargo)`.
pub fn short_step(name: &str) -> String {
    let (stage, rest) = match name.strip_prefix('[').and_then(|r| r.split_once("] ")) {
        Some((stage, rest)) => (stage, rest),
        None => ("", name),
    };
    let keyword = rest.split_whitespace().next().unwrap_or("");
    let what = if crate::exec::events::is_cargo_step(name) {
        "(cargo)".to_string()
    } else {
        rest.split_whitespace()
            .filter(|w| !w.starts_with("--"))
            .nth(1)
            .unwrap_or("")
            .to_string()
    };
    format!("{stage} {keyword} {what}").trim().to_string()
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An SVG drawing the phases side by side on one time scale: per image, the build (thin grey),
/// the cargo step from BuildKit's start to its process's first output (hatched orange: waiting,
/// a lock wait when the analysis counts it as one) and executing (blue).
pub fn svg_timelines(phases: &[&Phase]) -> String {
    let lane_h = 22.0;
    let label_w = 110.0;
    let plot_w = 420.0;
    let gap = 30.0;
    let longest = phases
        .iter()
        .map(|p| {
            p.images
                .iter()
                .map(|i| i.ended_at - p.started_at)
                .fold(p.wall_seconds, f64::max)
        })
        .fold(1.0, f64::max);
    let scale = plot_w / longest;
    let panel_w = label_w + plot_w + gap;
    let rows = phases.iter().map(|p| p.images.len()).max().unwrap_or(1) as f64;
    let height = 40.0 + rows * lane_h + 30.0;
    let width = panel_w * phases.len() as f64;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="11">"#
    );
    s.push_str(r##"<defs><pattern id="wait" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="3" height="6" fill="#f0a030"/></pattern></defs>"##);
    for (k, phase) in phases.iter().enumerate() {
        let x0 = k as f64 * panel_w;
        let t0 = phase.started_at;
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="14" font-weight="bold">{} / {}: wall {:.1}s, max {} cargo at once, lock waits {:.1}s</text>"#,
            x0,
            esc(&phase.test),
            esc(&phase.run),
            phase.wall_seconds,
            phase.metrics.max_concurrent_cargo,
            phase.metrics.lock_wait_seconds
        );
        for (row, image) in phase.images.iter().enumerate() {
            let y = 30.0 + row as f64 * lane_h;
            let x = |t: f64| x0 + label_w + (t - t0).max(0.0) * scale;
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
                x0,
                y + 13.0,
                esc(&image.image)
            );
            let _ = write!(
                s,
                r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="4" fill="#bbb"><title>build {:.1}s</title></rect>"##,
                x(image.started_at),
                y + 8.0,
                (x(image.ended_at) - x(image.started_at)).max(1.0),
                image.wall_seconds
            );
            if let Some(c) = &image.cargo {
                cargo_bars(&mut s, phase, image, c, y, &x);
            }
        }
        let axis_y = 30.0 + rows * lane_h + 12.0;
        let step = nice_step(longest);
        let mut t = 0.0;
        while t <= longest + 1e-9 {
            let _ = write!(
                s,
                r##"<text x="{:.1}" y="{axis_y:.1}" fill="#666">{t:.0}s</text>"##,
                x0 + label_w + t * scale
            );
            t += step;
        }
    }
    s.push_str("</svg>");
    s
}

/// The cargo step of one image's lane: the time it waited to execute (hatched, red-edged for a
/// lock wait) and the time it executed or came from the cache.
fn cargo_bars(
    s: &mut String,
    phase: &Phase,
    image: &super::ImageRun,
    c: &analysis::CargoSpan,
    y: f64,
    x: &dyn Fn(f64) -> f64,
) {
    let end = c.completed.unwrap_or(image.ended_at);
    let exec = c.exec_start.unwrap_or(c.started);
    if exec > c.started {
        let lock = phase
            .metrics
            .lock_waits
            .iter()
            .any(|w| w.image == image.image);
        let _ = write!(
            s,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="14" fill="url(#wait)" stroke="{}"><title>started, not yet executing {:.1}s{}</title></rect>"##,
            x(c.started),
            y + 3.0,
            (x(exec) - x(c.started)).max(1.0),
            if lock { "#c00" } else { "none" },
            exec - c.started,
            if lock { " (lock wait)" } else { "" }
        );
    }
    let fill = if c.cached { "#9c9" } else { "#3870c0" };
    let _ = write!(
        s,
        r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="14" fill="{fill}"><title>cargo {} {:.1}s</title></rect>"#,
        x(exec),
        y + 3.0,
        (x(end) - x(exec)).max(1.0),
        if c.cached { "CACHED" } else { "executing" },
        end - exec
    );
}

fn nice_step(total: f64) -> f64 {
    for step in [5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0] {
        if total / step <= 8.0 {
            return step;
        }
    }
    600.0
}

pub fn render_markdown(report: &VerifyReport) -> String {
    let mut out = String::new();
    let env = &report.environment;
    let _ = writeln!(out, "# verify-parallel report\n");
    let _ = writeln!(
        out,
        "`{}` on {}: {} core(s), engine {}, {}, strategy {}, images {}.\n",
        env.command,
        env.date,
        env.cores,
        env.engine,
        env.buildx,
        env.strategy,
        env.images.join(", ")
    );
    let _ = writeln!(
        out,
        "Timelines: grey = the whole build; hatched = cargo step started by BuildKit but not yet \
         executing (outlined red when counted as a lock wait); blue = cargo executing; green = cached.\n"
    );
    let _ = writeln!(out, "```text{}```\n", render_terminal(report));
    if let Some(perf) = &report.perf {
        let _ = writeln!(out, "## perf: locked (left) and committed policy (right)\n");
        let _ = writeln!(out, "{}\n", svg_timelines(&[&perf.locked, &perf.shared]));
    }
    if let Some(race) = &report.race {
        let _ = writeln!(out, "## race\n");
        for run in &race.runs {
            let _ = writeln!(out, "{}\n", svg_timelines(&[&run.phase]));
        }
    }
    if let Some(reuse) = &report.reuse {
        let _ = writeln!(out, "## reuse\n");
        let _ = writeln!(
            out,
            "{}\n",
            svg_timelines(&[&reuse.first, &reuse.unchanged, &reuse.changed])
        );
    }
    out
}

pub fn render_html(report: &VerifyReport) -> String {
    let md = render_markdown(report);
    let mut body = String::new();
    let mut in_code = false;
    for line in md.lines() {
        if let Some(rest) = line.strip_prefix("```") {
            if in_code {
                body.push_str("</pre>\n");
            } else {
                body.push_str("<pre>");
                body.push_str(&esc(rest.trim_start_matches("text")));
                body.push('\n');
            }
            in_code = !in_code;
        } else if in_code {
            body.push_str(&esc(line));
            body.push('\n');
        } else if let Some(h) = line.strip_prefix("## ") {
            let _ = writeln!(body, "<h2>{}</h2>", esc(h));
        } else if let Some(h) = line.strip_prefix("# ") {
            let _ = writeln!(body, "<h1>{}</h1>", esc(h));
        } else if line.starts_with("<svg") {
            body.push_str(line);
            body.push('\n');
        } else if !line.is_empty() {
            let _ = writeln!(body, "<p>{}</p>", esc(line));
        }
    }
    format!("<!doctype html><html><head><meta charset=\"utf-8\"><title>verify-parallel</title></head><body>\n{body}</body></html>\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::verify::{analysis::CargoSpan, ImageRun};
    use std::path::PathBuf;

    fn phase(run: &str, locked: bool) -> Phase {
        let image = |name: &str, started: f64, exec: f64, done: f64| ImageRun {
            image: name.into(),
            result: Outcome::Succeeded,
            wall_seconds: done + 1.0 - 100.0,
            started_at: 100.0,
            ended_at: done + 1.0,
            cargo: Some(CargoSpan {
                started,
                exec_start: Some(exec),
                completed: Some(done),
                cached: false,
                marker: true,
            }),
            cargo_pending_seconds: Some(exec - started),
            cargo_exec_seconds: Some(done - exec),
            fully_cached: false,
            cargo_blocking_waits: 0,
            race_lines: vec![],
            steps: vec![],
            log: PathBuf::from("target/xtask/verify/perf/x/api.log"),
        };
        let images = if locked {
            vec![
                image("api", 102.0, 102.2, 130.0),
                image("executor", 102.0, 130.3, 160.0),
            ]
        } else {
            vec![
                image("api", 102.0, 102.2, 150.0),
                image("executor", 102.0, 102.3, 155.0),
            ]
        };
        let mut p = Phase {
            test: "perf".into(),
            run: run.into(),
            sharing: "x".into(),
            namespace: "verify".into(),
            change: None,
            wall_seconds: 61.0,
            started_at: 100.0,
            images,
            metrics: analysis::metrics(&[], 0.0),
            log_dir: PathBuf::from("target/xtask/verify/perf/x"),
        };
        p.metrics = analysis::metrics(&p.lanes(), 61.0);
        p
    }

    #[test]
    fn svg_marks_lock_waits() {
        let svg = svg_timelines(&[&phase("locked", true), &phase("shared", false)]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("(lock wait)").count(), 1, "{svg}");
        assert!(svg.contains("perf / locked: wall 61.0s, max 1 cargo at once, lock waits 28.3s"));
        assert!(
            svg.contains("perf / shared: wall 61.0s, max 2 cargo at once, lock waits 0.0s"),
            "{svg}"
        );
    }

    #[test]
    fn helpers() {
        assert_eq!(
            short_step("[builder 6/6] RUN --mount=type=cache,target=/x echo verify-exec-start; cargo build --release"),
            "builder 6/6 RUN (cargo)"
        );
        assert_eq!(
            short_step("[builder 5/6] COPY crates/api crates/api"),
            "builder 5/6 COPY crates/api"
        );
    }
}
