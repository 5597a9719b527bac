//! Pure timeline logic: when each image's cargo step waited and executed, how many executed at
//! once, the lock waits, and the pass/fail decisions of the three tests. Nothing here runs a
//! process or reads a file; the unit tests feed synthetic timelines.
//!
//! Times are seconds since the Unix epoch, from BuildKit's own timestamps:
//! - `started`: BuildKit marks the cargo step started *before* it acquires the step's cache
//!   mounts. With `sharing=locked`, a step whose mount another build holds is shown started but
//!   blocked (measured on dockerd 26.1 / buildx 0.13: `started` includes the wait).
//! - `exec_start`: the timestamp of the step's first output line. verify-parallel's copy of each
//!   Dockerfile makes the cargo RUN print `verify-exec-start` first, so this is when the process
//!   really ran; `pending = exec_start - started` is the time spent before it could run.
//! - `completed`: when the step finished.

use serde::Serialize;

/// Two cargo steps "run at the same time" when their execution intervals share more than this.
pub const OVERLAP_MIN: f64 = 0.5;
/// A pending time counts as a lock wait from this length on (container set-up alone takes a few
/// tenths of a second, more on a loaded machine)...
pub const LOCK_WAIT_MIN: f64 = 1.0;
/// ...and when at least this share of it was spent while another image's cargo step executed
/// (a step only waits for a lock that another running step holds).
pub const LOCK_WAIT_COVER: f64 = 0.5;
/// The committed policy passes the performance test when shared / locked wall time is at most this.
pub const MAX_RATIO: f64 = 1.10;

/// One image's build in one phase, reduced to what the analysis needs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lane {
    pub image: String,
    pub succeeded: bool,
    pub build_start: f64,
    pub build_end: f64,
    pub cargo: Option<CargoSpan>,
}

/// The cargo step of one build.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CargoSpan {
    pub started: f64,
    /// First output of the step's process; None when it printed nothing (e.g. cached).
    pub exec_start: Option<f64>,
    pub completed: Option<f64>,
    /// Taken from the layer cache (the step did not execute).
    pub cached: bool,
    /// Whether the log shows the exec marker printed by this step.
    pub marker: bool,
}

impl CargoSpan {
    /// When the step's process ran: [exec_start, completed].
    pub fn exec(&self) -> Option<(f64, f64)> {
        if self.cached {
            return None;
        }
        let start = self.exec_start?;
        Some((start, self.completed?.max(start)))
    }
    /// Time between BuildKit starting the step and its process printing (lock wait + set-up).
    pub fn pending(&self) -> Option<f64> {
        Some((self.exec_start? - self.started).max(0.0))
    }
    pub fn exec_seconds(&self) -> Option<f64> {
        self.exec().map(|(a, b)| b - a)
    }
    /// The step really executed: not cached, printed the marker, finished.
    pub fn ran(&self) -> bool {
        !self.cached && self.marker && self.exec().is_some()
    }
}

/// The largest number of intervals that contain one instant.
pub fn max_concurrency(intervals: &[(f64, f64)]) -> usize {
    let mut events: Vec<(f64, i32)> = Vec::new();
    for &(a, b) in intervals {
        if b > a {
            events.push((a, 1));
            events.push((b, -1));
        }
    }
    // ends before starts at the same instant: touching intervals do not overlap
    events.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
    let (mut now, mut best) = (0i32, 0i32);
    for (_, d) in events {
        now += d;
        best = best.max(now);
    }
    best as usize
}

fn intersection(a: (f64, f64), b: (f64, f64)) -> f64 {
    (a.1.min(b.1) - a.0.max(b.0)).max(0.0)
}

/// Length of `window` covered by the union of `intervals`.
fn covered(window: (f64, f64), intervals: &[(f64, f64)]) -> f64 {
    let mut clipped: Vec<(f64, f64)> = intervals
        .iter()
        .map(|&(a, b)| (a.max(window.0), b.min(window.1)))
        .filter(|(a, b)| b > a)
        .collect();
    clipped.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut total = 0.0;
    let mut current: Option<(f64, f64)> = None;
    for (a, b) in clipped {
        match current {
            Some((ca, cb)) if a <= cb => current = Some((ca, cb.max(b))),
            Some((ca, cb)) => {
                total += cb - ca;
                current = Some((a, b));
            }
            None => current = Some((a, b)),
        }
    }
    if let Some((a, b)) = current {
        total += b - a;
    }
    total
}

/// Pairs of images whose cargo steps executed at the same time, with the shared seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overlap {
    pub a: String,
    pub b: String,
    pub seconds: f64,
}

pub fn overlaps(lanes: &[Lane]) -> Vec<Overlap> {
    let mut out = Vec::new();
    for (i, x) in lanes.iter().enumerate() {
        for y in &lanes[i + 1..] {
            let (Some(ex), Some(ey)) = (
                x.cargo.as_ref().and_then(CargoSpan::exec),
                y.cargo.as_ref().and_then(CargoSpan::exec),
            ) else {
                continue;
            };
            let seconds = intersection(ex, ey);
            if seconds > OVERLAP_MIN {
                out.push(Overlap {
                    a: x.image.clone(),
                    b: y.image.clone(),
                    seconds,
                });
            }
        }
    }
    out
}

/// A cargo step that was started but blocked while other images' cargo steps executed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LockWait {
    pub image: String,
    /// exec_start - started.
    pub seconds: f64,
    /// The images whose cargo steps executed during the wait.
    pub during: Vec<String>,
}

/// Lock waits, as defined in docs/DOCKER-OPTIMIZATION-SUMMARY.md: a cargo step's pending time
/// (`exec_start - started`) when it is at least [`LOCK_WAIT_MIN`] and other images' cargo steps
/// executed during at least [`LOCK_WAIT_COVER`] of it.
pub fn lock_waits(lanes: &[Lane]) -> Vec<LockWait> {
    let mut out = Vec::new();
    for (i, lane) in lanes.iter().enumerate() {
        let Some(cargo) = lane.cargo.as_ref().filter(|c| !c.cached) else {
            continue;
        };
        let (Some(pending), Some(exec_start)) = (cargo.pending(), cargo.exec_start) else {
            continue;
        };
        if pending < LOCK_WAIT_MIN {
            continue;
        }
        let window = (cargo.started, exec_start);
        let mut others = Vec::new();
        let mut during = Vec::new();
        for (j, other) in lanes.iter().enumerate() {
            if i == j {
                continue;
            }
            if let Some(e) = other.cargo.as_ref().and_then(CargoSpan::exec) {
                if intersection(window, e) > 0.0 {
                    during.push(other.image.clone());
                }
                others.push(e);
            }
        }
        if covered(window, &others) >= LOCK_WAIT_COVER * pending {
            out.push(LockWait {
                image: lane.image.clone(),
                seconds: pending,
                during,
            });
        }
    }
    out
}

/// What one phase (a set of builds run in parallel) measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    pub wall_seconds: f64,
    /// The largest number of cargo steps executing at one instant.
    pub max_concurrent_cargo: usize,
    /// The same, counting a step from when BuildKit started it (lock waits included).
    pub max_concurrent_cargo_started: usize,
    pub overlaps: Vec<Overlap>,
    pub lock_waits: Vec<LockWait>,
    pub lock_wait_seconds: f64,
}

pub fn metrics(lanes: &[Lane], wall_seconds: f64) -> Metrics {
    let exec: Vec<(f64, f64)> = lanes
        .iter()
        .filter_map(|l| l.cargo.as_ref().and_then(CargoSpan::exec))
        .collect();
    let started: Vec<(f64, f64)> = lanes
        .iter()
        .filter_map(|l| l.cargo.as_ref())
        .filter(|c| !c.cached)
        .filter_map(|c| Some((c.started, c.completed?)))
        .collect();
    let lock_waits = lock_waits(lanes);
    Metrics {
        wall_seconds,
        max_concurrent_cargo: max_concurrency(&exec),
        max_concurrent_cargo_started: max_concurrency(&started),
        overlaps: overlaps(lanes),
        lock_wait_seconds: lock_waits.iter().fold(0.0, |a, w| a + w.seconds),
        lock_waits,
    }
}

/// The problems that make a phase's builds unusable for a measurement, as (image, message):
/// failed builds and cargo steps that did not execute.
///
/// With `one_builder` (the workspace strategy: every image's build shares one cargo step), BuildKit
/// runs that step once: one lane executes it and the others may see it CACHED or without the
/// marker. Then it is enough that some lane executed it.
pub fn build_problems(lanes: &[Lane], one_builder: bool) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let some_lane_ran = lanes
        .iter()
        .any(|l| l.cargo.as_ref().is_some_and(CargoSpan::ran));
    for lane in lanes {
        let mut push = |m: &str| out.push((lane.image.clone(), m.to_string()));
        if !lane.succeeded {
            push("the build failed");
        }
        match &lane.cargo {
            None if lane.succeeded => push("no cargo step was seen"),
            None => {}
            Some(c) if one_builder && !c.ran() && some_lane_ran => {}
            Some(c) if one_builder && !c.ran() && lane.succeeded => {
                push("no build executed the shared cargo step (it was CACHED everywhere)")
            }
            Some(c) if c.cached => push("the cargo step was CACHED (it did not execute)"),
            Some(c) if !c.ran() && lane.succeeded => {
                push("the cargo step did not print its exec marker (did it execute?)")
            }
            Some(_) => {}
        }
    }
    out
}

/// The performance test's decision: one line per failed check.
pub fn perf_failures(locked: &Metrics, shared: &Metrics, images: usize) -> Vec<String> {
    let mut out = Vec::new();
    if images < 2 {
        out.push("the performance test needs at least two images".into());
        return out;
    }
    if shared.max_concurrent_cargo < 2 {
        out.push(format!(
            "committed policy: cargo steps of different images never ran at the same time (max concurrent {})",
            shared.max_concurrent_cargo
        ));
    }
    if !shared.lock_waits.is_empty() {
        out.push(format!(
            "committed policy: {} lock wait(s), {:.1} s in total ({})",
            shared.lock_waits.len(),
            shared.lock_wait_seconds,
            shared
                .lock_waits
                .iter()
                .map(|w| format!("{} {:.1}s", w.image, w.seconds))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !locked.overlaps.is_empty() || locked.max_concurrent_cargo > 1 {
        out.push(format!(
            "locked: cargo steps overlapped ({}): the measurement does not see the serialisation",
            locked
                .overlaps
                .iter()
                .map(|o| format!("{}+{} {:.1}s", o.a, o.b, o.seconds))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    match ratio(shared.wall_seconds, locked.wall_seconds) {
        Some(r) if r <= MAX_RATIO => {}
        Some(r) => out.push(format!(
            "committed policy slower than locked: wall {:.1}s / {:.1}s = {r:.2} > {MAX_RATIO:.2}",
            shared.wall_seconds, locked.wall_seconds
        )),
        None => out.push("no wall time measured".into()),
    }
    out
}

pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

/// Log lines that show the race (an unpack colliding with another build's).
pub const RACE_PATTERNS: &[&str] = &[
    "File exists",
    "failed to unpack",
    "os error 17",
    "os error 39",
    "Directory not empty",
    "failed to verify the checksum",
];

/// The lines of a build log that match [`RACE_PATTERNS`].
pub fn race_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| RACE_PATTERNS.iter().any(|p| l.contains(p)))
        .map(|l| l.trim().to_string())
        .collect()
}

/// How many times cargo waited for its own package-cache lock (`Blocking waiting for file lock`):
/// the committed policy's serialisation of downloads, not a BuildKit lock wait.
pub fn cargo_blocking_lines(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("Blocking waiting for file lock"))
        .count()
}

/// A step of one build, as the cache-reuse test sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRun {
    pub name: String,
    pub cached: bool,
}

/// A `FROM` step: BuildKit (dockerd 26.1) never reports loading a base image as CACHED, and it
/// does no build work; the cache checks leave it out.
pub fn is_base_load(name: &str) -> bool {
    name.contains("] FROM ")
}

/// The cache-reuse test's check of the build after a change in the image's own crate: the COPY
/// of that crate, the cargo RUN and what copies the builder's output may run; every other
/// Dockerfile step (the stages before, the manifests, crates/common) must be CACHED.
pub fn reuse_changed_failures(steps: &[StepRun], crate_dir: &str) -> Vec<String> {
    let mut out = Vec::new();
    // the COPY of the changed crate: its own (per-service) or all of crates/ (workspace)
    let copies_crate = |s: &StepRun| {
        s.name.contains(&format!("{crate_dir} ")) || s.name.contains(" COPY crates crates")
    };
    let expected = |s: &StepRun| {
        crate::exec::events::is_cargo_step(&s.name)
            || (s.name.contains(" COPY ") && (copies_crate(s) || s.name.contains("--from=")))
    };
    let mut copy_ran = false;
    let mut cargo_ran = false;
    for s in steps {
        if s.cached || is_base_load(&s.name) {
            continue;
        }
        if !expected(s) {
            out.push(format!("ran although nothing it uses changed: {}", s.name));
        } else if crate::exec::events::is_cargo_step(&s.name) {
            cargo_ran = true;
        } else if copies_crate(s) {
            copy_ran = true;
        }
    }
    if !copy_ran {
        out.push(format!("the COPY of {crate_dir} did not run"));
    }
    if !cargo_ran {
        out.push("the cargo step did not run".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane(image: &str, started: f64, exec: f64, done: f64) -> Lane {
        Lane {
            image: image.into(),
            succeeded: true,
            build_start: 0.0,
            build_end: done + 1.0,
            cargo: Some(CargoSpan {
                started,
                exec_start: Some(exec),
                completed: Some(done),
                cached: false,
                marker: true,
            }),
        }
    }

    /// Four builds queued on one locked mount: started together, executed one after another.
    fn locked() -> Vec<Lane> {
        vec![
            lane("api", 10.0, 10.2, 40.0),
            lane("executor", 10.1, 40.3, 70.0),
            lane("sensor", 10.1, 70.2, 100.0),
            lane("worker-shell", 10.2, 100.3, 130.0),
        ]
    }

    fn shared() -> Vec<Lane> {
        vec![
            lane("api", 10.0, 10.2, 120.0),
            lane("executor", 10.1, 10.4, 118.0),
            lane("sensor", 10.1, 10.5, 121.0),
            lane("worker-shell", 10.2, 10.6, 125.0),
        ]
    }

    #[test]
    fn concurrency_of_intervals() {
        assert_eq!(max_concurrency(&[]), 0);
        assert_eq!(max_concurrency(&[(0.0, 1.0), (1.0, 2.0)]), 1, "touching");
        assert_eq!(max_concurrency(&[(0.0, 2.0), (1.0, 3.0), (1.5, 1.6)]), 3);
        let m = metrics(&locked(), 131.0);
        assert_eq!(m.max_concurrent_cargo, 1);
        assert_eq!(
            m.max_concurrent_cargo_started, 4,
            "started includes the wait"
        );
        assert_eq!(metrics(&shared(), 126.0).max_concurrent_cargo, 4);
    }

    #[test]
    fn lock_waits_are_pending_time_while_others_execute() {
        let waits = lock_waits(&locked());
        let names: Vec<&str> = waits.iter().map(|w| w.image.as_str()).collect();
        assert_eq!(names, ["executor", "sensor", "worker-shell"]);
        assert!((waits[0].seconds - 30.2).abs() < 1e-9);
        assert_eq!(waits[2].during, ["api", "executor", "sensor"]);
        assert!(lock_waits(&shared()).is_empty());
        // a long pending time while nothing else executes is not a lock wait (a slow start)
        let alone = vec![
            lane("api", 0.0, 5.0, 10.0),
            lane("executor", 20.0, 20.1, 30.0),
        ];
        assert!(lock_waits(&alone).is_empty());
    }

    #[test]
    fn perf_passes_on_a_clean_pair_of_timelines() {
        let l = metrics(&locked(), 131.0);
        let s = metrics(&shared(), 126.0);
        assert_eq!(perf_failures(&l, &s, 4), Vec::<String>::new());
    }

    #[test]
    fn perf_fails_when_locked_steps_overlap() {
        let mut lanes = locked();
        lanes[1] = lane("executor", 10.1, 30.0, 70.0); // ran while api still held the lock
        let l = metrics(&lanes, 131.0);
        let s = metrics(&shared(), 126.0);
        let failures = perf_failures(&l, &s, 4);
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].starts_with("locked: cargo steps overlapped (api+executor 10.0s)"));
    }

    #[test]
    fn perf_fails_on_serial_shared_lock_waits_or_slowness() {
        let l = metrics(&locked(), 100.0);
        let s = metrics(&locked(), 131.0);
        let failures = perf_failures(&l, &s, 4);
        assert_eq!(failures.len(), 3, "{failures:?}");
        assert!(failures[0].contains("never ran at the same time"));
        assert!(failures[1].contains("3 lock wait(s)"));
        assert!(failures[2].contains("= 1.31 > 1.10"));
        assert_eq!(perf_failures(&l, &s, 1).len(), 1);
    }

    #[test]
    fn problems_of_builds() {
        let mut lanes = shared();
        lanes[0].succeeded = false;
        lanes[1].cargo.as_mut().unwrap().cached = true;
        lanes[2].cargo.as_mut().unwrap().marker = false;
        lanes[3].cargo = None;
        let p = build_problems(&lanes, false);
        assert_eq!(p.len(), 4, "{p:?}");
        assert_eq!(p[1].0, "executor");
        assert!(p[1].1.contains("CACHED"));
        assert!(build_problems(&shared(), false).is_empty());
        // one shared builder: a lane that took the result of another lane's execution is fine
        let mut one = shared();
        one[1].cargo.as_mut().unwrap().cached = true;
        one[2].cargo.as_mut().unwrap().marker = false;
        assert!(build_problems(&one, true).is_empty());
        for lane in &mut one {
            lane.cargo.as_mut().unwrap().cached = true;
        }
        assert_eq!(build_problems(&one, true).len(), 4);
    }

    #[test]
    fn race_patterns() {
        let log = "#9 Compiling serde\n#9 error: failed to unpack package `x v1.0`\n#9 Caused by: File exists (os error 17)\n#9 Blocking waiting for file lock on package cache\n";
        assert_eq!(race_lines(log).len(), 2);
        assert_eq!(cargo_blocking_lines(log), 1);
        assert!(race_lines("#9 Finished release").is_empty());
    }

    #[test]
    fn reuse_after_a_change() {
        let step = |name: &str, cached| StepRun {
            name: name.into(),
            cached,
        };
        let good = vec![
            step("[builder 1/7] FROM docker.io/library/rust:1.95", true),
            step("[builder 4/7] COPY crates/common crates/common", true),
            step("[builder 5/7] COPY crates/api crates/api", false),
            step("[builder 6/7] RUN --mount=type=cache,target=/cargo-home echo verify-exec-start; cargo build --release", false),
            step("[runtime 3/4] COPY --from=builder /out/bin/ /usr/local/bin/", false),
        ];
        assert!(reuse_changed_failures(&good, "crates/api").is_empty());
        let mut from = good.clone();
        from[0].cached = false; // a FROM of a local image is never reported CACHED
        assert!(reuse_changed_failures(&from, "crates/api").is_empty());
        let mut bad = good.clone();
        bad[1].cached = false;
        bad[2].cached = true;
        let f = reuse_changed_failures(&bad, "crates/api");
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(f[0].contains("COPY crates/common"));
    }
}
