//! Runs build commands concurrently, each in its own process group, streaming BuildKit's events
//! into a log per build and to a [`Reporter`]. Ctrl-C or SIGTERM stops every running build: the
//! whole process group (docker and its buildx plugin) gets SIGTERM, then SIGKILL after a grace
//! period, and builds not yet started are reported as such.

use std::{
    collections::VecDeque,
    fs,
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex, OnceLock,
    },
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context;
use serde::Serialize;

use crate::proc::{send_signal, shell_line};

use super::events::{CargoStep, Chunk, Splitter, Step, Tracker, Update};

/// One process to run: a build, with where its log goes.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    pub log: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Succeeded,
    Failed,
    Interrupted,
    NotStarted,
}

/// What became of a job.
#[derive(Debug, Clone, Serialize)]
pub struct JobResult {
    pub name: String,
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    /// Seconds since the Unix epoch when the process started, and its wall time.
    pub started_at: f64,
    pub wall_seconds: f64,
    pub cargo_step: CargoStep,
    pub steps: Vec<Step>,
    /// The last lines of the log, for failures.
    pub tail: Vec<String>,
    pub log: PathBuf,
}

impl JobResult {
    pub fn fully_cached(&self) -> bool {
        super::events::fully_cached(&self.steps)
    }
}

/// Receives progress; implementations draw bars or print lines.
pub trait Reporter: Sync {
    fn started(&self, job: &str);
    fn update(&self, job: &str, update: &Update);
    fn finished(&self, result: &JobResult);
}

/// Runs `jobs`, at most `parallel` at a time, and returns their results in the jobs' order.
pub fn run_all(jobs: &[Job], parallel: usize, reporter: &dyn Reporter) -> Vec<JobResult> {
    install_signal_handler();
    // no removal of layer records by another run while these build (crate::engine_use)
    crate::engine_use::hold_shared();
    let queue: Mutex<VecDeque<usize>> = Mutex::new((0..jobs.len()).collect());
    let results: Mutex<Vec<Option<JobResult>>> = Mutex::new(vec![None; jobs.len()]);
    thread::scope(|s| {
        for _ in 0..parallel.clamp(1, jobs.len().max(1)) {
            s.spawn(|| loop {
                let Some(index) = queue.lock().unwrap().pop_front() else {
                    break;
                };
                let job = &jobs[index];
                let result = if interrupted() {
                    not_started(&job.name, &job.log)
                } else {
                    run_one(job, reporter)
                };
                reporter.finished(&result);
                results.lock().unwrap()[index] = Some(result);
            });
        }
    });
    results
        .into_inner()
        .unwrap()
        .into_iter()
        .map(|r| r.expect("every job ran"))
        .collect()
}

/// Whether Ctrl-C or SIGTERM arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static RUNNING: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn install_signal_handler() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let _ = ctrlc::set_handler(|| {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                return;
            }
            eprintln!("\ninterrupted: stopping every running build");
            let pgids: Vec<u32> = RUNNING.lock().map(|r| r.clone()).unwrap_or_default();
            for pgid in &pgids {
                send_signal(-(*pgid as i32), rustix::process::Signal::TERM);
            }
            thread::spawn(|| {
                thread::sleep(Duration::from_secs(5));
                let pgids: Vec<u32> = RUNNING.lock().map(|r| r.clone()).unwrap_or_default();
                for pgid in pgids {
                    send_signal(-(pgid as i32), rustix::process::Signal::KILL);
                }
            });
        });
    });
}

fn not_started(name: &str, log: &std::path::Path) -> JobResult {
    JobResult {
        name: name.to_string(),
        outcome: Outcome::NotStarted,
        exit_code: None,
        started_at: unix_now(),
        wall_seconds: 0.0,
        cargo_step: CargoStep::None,
        steps: Vec::new(),
        tail: Vec::new(),
        log: log.to_path_buf(),
    }
}

/// The result of a build that could not start (`why` is its log's tail).
pub fn failed_to_start(name: &str, log: &std::path::Path, why: String) -> JobResult {
    JobResult {
        outcome: Outcome::Failed,
        tail: vec![why],
        ..not_started(name, log)
    }
}

fn run_one(job: &Job, reporter: &dyn Reporter) -> JobResult {
    let started_at = unix_now();
    let clock = Instant::now();
    reporter.started(&job.name);
    // one build is a stream of one target (Demux passes it through whole)
    let one = Bake {
        argv: job.argv.clone(),
        cwd: job.cwd.clone(),
        targets: vec![(job.name.clone(), job.log.clone())],
    };
    let mut parts = [Part::default()];
    let outcome = bake_stream(&one, reporter, &mut parts, &clock);
    let [Part {
        tracker, mut tail, ..
    }] = parts;
    let (outcome, exit_code) = match outcome {
        Ok(code) if code == Some(0) => (Outcome::Succeeded, code),
        Ok(code) if interrupted() => (Outcome::Interrupted, code),
        Ok(code) => (Outcome::Failed, code),
        Err(err) => {
            tail.push_back(format!("{err:#}"));
            (Outcome::Failed, None)
        }
    };
    JobResult {
        name: job.name.clone(),
        outcome,
        exit_code,
        started_at,
        wall_seconds: clock.elapsed().as_secs_f64(),
        cargo_step: tracker.cargo_step(),
        steps: tracker.steps().to_vec(),
        tail: tail.into_iter().collect(),
        log: job.log.clone(),
    }
}

/// Several builds as one process, `docker buildx bake` of their targets: one buildx client and
/// one session for all of them ([`super::demux`] gives each target its own log and progress).
#[derive(Debug, Clone)]
pub struct Bake {
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    /// Each target's name (bake's and the reporter's) and log.
    pub targets: Vec<(String, PathBuf)>,
}

/// What one target of a bake has seen.
#[derive(Default)]
struct Part {
    tracker: Tracker,
    tail: VecDeque<String>,
    /// Seconds from the bake's start to the target's last status.
    last: f64,
}

/// Runs `bake` and returns one result per target, in its order: what a [`run_all`] of the
/// targets' own builds would return. When bake fails, a target whose image was exported
/// without an error of its own succeeded; the others failed (bake stops them all at the first
/// failure) or were interrupted.
pub fn run_bake(bake: &Bake, reporter: &dyn Reporter) -> Vec<JobResult> {
    install_signal_handler();
    crate::engine_use::hold_shared();
    if interrupted() {
        return (bake.targets.iter())
            .map(|(name, log)| not_started(name, log))
            .inspect(|r| reporter.finished(r))
            .collect();
    }
    let started_at = unix_now();
    let clock = Instant::now();
    for (name, _) in &bake.targets {
        reporter.started(name);
    }
    let mut parts: Vec<Part> = bake.targets.iter().map(|_| Part::default()).collect();
    let code = bake_stream(bake, reporter, &mut parts, &clock);
    let wall = clock.elapsed().as_secs_f64();
    let results: Vec<JobResult> = (bake.targets.iter().zip(parts))
        .map(|((name, log), mut part)| {
            let (outcome, exit_code) = match &code {
                Ok(code) => bake_outcome(*code, interrupted(), part.tracker.steps()),
                Err(err) => {
                    push_tail(&mut part.tail, &format!("{err:#}"));
                    (Outcome::Failed, None)
                }
            };
            let ok = outcome == Outcome::Succeeded;
            JobResult {
                name: name.clone(),
                outcome,
                exit_code,
                started_at,
                wall_seconds: if ok && part.last > 0.0 {
                    part.last
                } else {
                    wall
                },
                cargo_step: part.tracker.cargo_step(),
                steps: part.tracker.steps().to_vec(),
                tail: part.tail.into_iter().collect(),
                log: log.clone(),
            }
        })
        .collect();
    for result in &results {
        reporter.finished(result);
    }
    results
}

/// What became of one target of a bake that exited with `code`, from its own steps: bake stops
/// every target at the first failure (or Ctrl-C), so after a failed bake a target succeeded only
/// when its image was exported and none of its steps failed.
fn bake_outcome(code: Option<i32>, interrupted: bool, steps: &[Step]) -> (Outcome, Option<i32>) {
    let exported = !failed_itself(steps)
        && (steps.iter()).any(|s| {
            s.name.starts_with("exporting to") && s.completed.is_some() && s.error.is_none()
        });
    match code {
        Some(0) => (Outcome::Succeeded, code),
        _ if exported => (Outcome::Succeeded, Some(0)),
        _ if interrupted => (Outcome::Interrupted, code),
        _ => (Outcome::Failed, code),
    }
}

/// Whether a build's own step failed: an error other than the cancellation that stops a bake's
/// other targets at the first failure (`context canceled`).
pub fn failed_itself(steps: &[Step]) -> bool {
    (steps.iter()).any(|s| {
        s.error
            .as_deref()
            .is_some_and(|e| !e.ends_with("context canceled"))
    })
}

/// Runs the bake (or one build: a bake of one target), each target's statuses to its own log,
/// tracker and progress; plain text (bake's own errors) to the target it names, else to every
/// target's. Returns the exit code (None when killed by a signal).
fn bake_stream(
    bake: &Bake,
    reporter: &dyn Reporter,
    parts: &mut [Part],
    clock: &Instant,
) -> anyhow::Result<Option<i32>> {
    let mut logs: Vec<fs::File> = (bake.targets.iter())
        .map(|(_, log)| open_log(log, &bake.argv))
        .collect::<anyhow::Result<_>>()?;
    let names: Vec<String> = bake.targets.iter().map(|(n, _)| n.clone()).collect();
    let mut demux = super::demux::Demux::new(names.clone());
    let mut splitter = Splitter::default();
    let code = drive(&bake.argv, &bake.cwd, |text| {
        match splitter.push_line(text) {
            Some(Chunk::Status(status)) => {
                for (i, own) in demux.split(&status) {
                    let part = &mut parts[i];
                    let (rendered, updates) = part.tracker.apply(&own);
                    logs[i].write_all(rendered.as_bytes())?;
                    for l in rendered.lines() {
                        push_tail(&mut part.tail, l);
                    }
                    for update in &updates {
                        reporter.update(&names[i], update);
                    }
                    part.last = clock.elapsed().as_secs_f64();
                }
            }
            Some(Chunk::Text(text)) => {
                let owner = demux.text_owner(&text);
                let each = (logs.iter_mut().zip(parts.iter_mut()).enumerate())
                    .filter(|(i, _)| owner.is_none_or(|o| o == *i));
                for (_, (log, part)) in each {
                    writeln!(log, "{text}")?;
                    push_tail(&mut part.tail, &text);
                }
            }
            None => {}
        }
        Ok(())
    })?;
    for log in &mut logs {
        close_log(log, code)?;
    }
    Ok(code)
}

/// A build's log, begun with its command line (secret-looking build-argument values redacted).
fn open_log(path: &std::path::Path, argv: &[String]) -> anyhow::Result<fs::File> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut log =
        fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(log, "$ {}", shell_line(&crate::proc::redacted(argv)))?;
    Ok(log)
}

fn close_log(log: &mut fs::File, code: Option<i32>) -> std::io::Result<()> {
    let code = code.map(|c| c.to_string()).unwrap_or("killed".into());
    writeln!(log, "# exit: {code}")
}

/// Runs `argv` in `cwd` in its own process group (so Ctrl-C stops all of it), its stderr and
/// stdout line by line to `each`; returns its exit code (None when killed by a signal).
fn drive(
    argv: &[String],
    cwd: &std::path::Path,
    mut each: impl FnMut(&str) -> anyhow::Result<()>,
) -> anyhow::Result<Option<i32>> {
    // under a supervisor that kills the build's process group when the xtask dies, even by SIGKILL
    let supervised = super::supervise::supervised(argv);
    let expression = duct::cmd(&supervised[0], &supervised[1..])
        .dir(cwd)
        .stdin_null()
        .stderr_to_stdout()
        .unchecked();
    let expression = expression.before_spawn(|cmd| {
        std::os::unix::process::CommandExt::process_group(cmd, 0);
        Ok(())
    });
    let reader = expression
        .reader()
        .with_context(|| format!("cannot start `{}`", argv[0]))?;
    let pids = reader.pids();
    RUNNING.lock().unwrap().extend(&pids);
    let mut lines = BufReader::new(&reader);
    let mut line = String::new();
    let read = loop {
        line.clear();
        match lines.read_line(&mut line) {
            Ok(0) => break Ok(()),
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::InvalidData => continue,
            Err(_) => break Ok(()),
        }
        if let Err(err) = each(line.trim_end_matches(['\n', '\r'])) {
            break Err(err);
        }
    };
    if read.is_err() {
        // the whole process group: docker and its buildx plugin, not only the supervisor
        for pid in &pids {
            send_signal(-(*pid as i32), rustix::process::Signal::KILL);
        }
        let _ = reader.kill();
    }
    let status = reader.try_wait().ok().flatten().map(|o| o.status);
    RUNNING.lock().unwrap().retain(|p| !pids.contains(p));
    read?;
    Ok(status.and_then(|s| s.code()))
}

fn push_tail(tail: &mut VecDeque<String>, line: &str) {
    tail.push_back(line.to_string());
    if tail.len() > 25 {
        tail.pop_front();
    }
}

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::{demux::Demux, events::SolveStatus};

    /// Each target's steps after `lines` of bake's stream.
    fn steps_after(targets: &[&str], lines: &[&str]) -> Vec<Vec<Step>> {
        let mut demux = Demux::new(targets.iter().map(|t| t.to_string()).collect());
        let mut trackers: Vec<Tracker> = targets.iter().map(|_| Tracker::default()).collect();
        for line in lines {
            let status: SolveStatus = serde_json::from_str(line).unwrap();
            for (i, own) in demux.split(&status) {
                trackers[i].apply(&own);
            }
        }
        trackers.iter().map(|t| t.steps().to_vec()).collect()
    }

    #[test]
    fn after_a_failed_bake_only_a_target_whose_image_was_exported_succeeded() {
        let lines = [
            r#"{"vertexes":[{"digest":"sha256:b","name":"[api builder 6/6] RUN cargo build","started":"2026-12-07T02:00:00Z","completed":"2026-12-07T02:00:05Z","cached":true}]}"#,
            r#"{"vertexes":[{"digest":"sha256:b","name":"[sensor builder 6/6] RUN cargo build","started":"2026-12-07T02:00:00Z","completed":"2026-12-07T02:00:05Z","cached":true}]}"#,
            r#"{"vertexes":[{"digest":"sha256:x1","name":"[api] exporting to image","started":"2026-12-07T02:00:06Z","completed":"2026-12-07T02:00:07Z"}]}"#,
            r#"{"vertexes":[{"digest":"sha256:c2","name":"[sensor service 1/1] COPY --from=builder /out/svc/sensor/ /usr/local/bin/","started":"2026-12-07T02:00:06Z","completed":"2026-12-07T02:00:06Z","error":"failed to compute cache key"}]}"#,
        ];
        let targets = ["api", "sensor", "executor"];
        let mut lines = lines.to_vec();
        // stopped by bake at another target's failure: not an error of its own
        lines.push(r#"{"vertexes":[{"digest":"sha256:x3","name":"[executor] exporting to image","started":"2026-12-07T02:00:06Z","completed":"2026-12-07T02:00:07Z","error":"context canceled"}]}"#);
        let steps = steps_after(&targets, &lines);
        assert!(failed_itself(&steps[1]) && !failed_itself(&steps[2]));
        assert_eq!(
            bake_outcome(Some(1), false, &steps[0]),
            (Outcome::Succeeded, Some(0))
        );
        assert_eq!(
            bake_outcome(Some(1), false, &steps[1]),
            (Outcome::Failed, Some(1))
        );
        // stopped before it began: failed, as bake says
        assert_eq!(
            bake_outcome(Some(1), false, &steps[2]),
            (Outcome::Failed, Some(1))
        );
        // Ctrl-C: interrupted, unless its image was exported; a bake that succeeded: every
        // target did
        assert_eq!(bake_outcome(None, true, &steps[1]).0, Outcome::Interrupted);
        assert_eq!(bake_outcome(None, true, &steps[0]).0, Outcome::Succeeded);
        assert_eq!(
            bake_outcome(Some(0), false, &steps[2]),
            (Outcome::Succeeded, Some(0))
        );
    }
}
