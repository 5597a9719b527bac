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
                    not_started(job)
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

fn not_started(job: &Job) -> JobResult {
    JobResult {
        name: job.name.clone(),
        outcome: Outcome::NotStarted,
        exit_code: None,
        started_at: unix_now(),
        wall_seconds: 0.0,
        cargo_step: CargoStep::None,
        steps: Vec::new(),
        tail: Vec::new(),
        log: job.log.clone(),
    }
}

fn run_one(job: &Job, reporter: &dyn Reporter) -> JobResult {
    let started_at = unix_now();
    let clock = Instant::now();
    reporter.started(&job.name);
    let mut tracker = Tracker::default();
    let mut tail: VecDeque<String> = VecDeque::new();
    let outcome = stream(job, reporter, &mut tracker, &mut tail);
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

/// Runs the process, writing its log; returns its exit code (None when killed by a signal).
fn stream(
    job: &Job,
    reporter: &dyn Reporter,
    tracker: &mut Tracker,
    tail: &mut VecDeque<String>,
) -> anyhow::Result<Option<i32>> {
    if let Some(dir) = job.log.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut log = fs::File::create(&job.log)
        .with_context(|| format!("cannot write {}", job.log.display()))?;
    // secret-looking build-argument values never reach the log
    writeln!(log, "$ {}", shell_line(&crate::proc::redacted(&job.argv)))?;
    // under a supervisor that kills the build's process group when the xtask dies, even by SIGKILL
    let argv = super::supervise::supervised(&job.argv);
    let expression = duct::cmd(&argv[0], &argv[1..])
        .dir(&job.cwd)
        .stdin_null()
        .stderr_to_stdout()
        .unchecked();
    let expression = expression.before_spawn(|cmd| {
        std::os::unix::process::CommandExt::process_group(cmd, 0);
        Ok(())
    });
    let reader = expression
        .reader()
        .with_context(|| format!("cannot start `{}`", job.argv[0]))?;
    let pids = reader.pids();
    RUNNING.lock().unwrap().extend(&pids);
    let mut splitter = Splitter::default();
    let mut lines = BufReader::new(&reader);
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::InvalidData => continue,
            Err(_) => break,
        }
        let text = line.trim_end_matches(['\n', '\r']);
        match splitter.push_line(text) {
            Some(Chunk::Status(status)) => {
                let (rendered, updates) = tracker.apply(&status);
                log.write_all(rendered.as_bytes())?;
                for l in rendered.lines() {
                    push_tail(tail, l);
                }
                for update in &updates {
                    reporter.update(&job.name, update);
                }
            }
            Some(Chunk::Text(text)) => {
                writeln!(log, "{text}")?;
                push_tail(tail, &text);
            }
            None => {}
        }
    }
    let status = reader.try_wait().ok().flatten().map(|o| o.status);
    RUNNING.lock().unwrap().retain(|p| !pids.contains(p));
    let code = status.and_then(|s| s.code());
    writeln!(
        log,
        "# exit: {}",
        code.map(|c| c.to_string()).unwrap_or("killed".into())
    )?;
    Ok(code)
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
