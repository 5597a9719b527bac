//! Every child process starts here (the concurrent builds aside: `exec/runner.rs`, in process
//! groups, and its supervisor `exec/supervise.rs`): to completion, captured with a timeout,
//! spawned to run on (a daemon), or two piped into each other, each logged with `-v` (argv,
//! duration, exit status); signals to a process or group; an argv quoted for logs. Other modules
//! build a [`Command`] (re-exported from here) and hand it to one of these: no module but these
//! three names `std::process` or `duct` (`xtask/tests/architecture.rs` checks it).

use std::{
    ffi::OsStr,
    process::{Child, Output},
    time::{Duration, Instant},
};

pub use std::process::{Command, ExitStatus, Stdio};

use anyhow::{bail, Context};

/// [`Command::status`], with the process logged (`-v`): argv, duration, exit status.
pub fn status(cmd: &mut Command) -> std::io::Result<ExitStatus> {
    let started = start(cmd);
    let result = cmd.status();
    finished(cmd, started, &result.as_ref().map(ToString::to_string));
    result
}

/// [`Command::output`], with the process logged (`-v`).
pub fn output(cmd: &mut Command) -> std::io::Result<Output> {
    let started = start(cmd);
    let result = cmd.output();
    finished(cmd, started, &result.as_ref().map(|o| o.status.to_string()));
    result
}

/// Starts `cmd` to run on its own (a daemon), logged (`-v`).
pub fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
    let started = start(cmd);
    let result = cmd.spawn();
    finished(
        cmd,
        started,
        &result
            .as_ref()
            .map(|c| format!("running as pid {}", c.id())),
    );
    result
}

/// [`spawn`] in a process group of its own: a daemon that Ctrl-C in the terminal that started
/// it does not stop.
pub fn spawn_daemon(cmd: &mut Command) -> std::io::Result<Child> {
    std::os::unix::process::CommandExt::process_group(cmd, 0);
    spawn(cmd)
}

/// Whether `cmd` ran and succeeded, its output discarded.
pub fn succeeds(cmd: &mut Command) -> bool {
    status(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .is_ok_and(|s| s.success())
}

/// `producer | consumer`, both logged; fails naming `what` unless both succeed.
pub fn pipe(producer: &mut Command, consumer: &mut Command, what: &str) -> anyhow::Result<()> {
    let mut from = spawn(producer.stdout(Stdio::piped()))
        .with_context(|| format!("cannot start {what} ({:?})", producer.get_program()))?;
    let out = from.stdout.take().context("no stdout to pipe")?;
    let consumed = status(consumer.stdin(out));
    // the command keeps the pipe's read end: let go of it, and stop a producer whose consumer
    // failed (it would block on a full pipe)
    consumer.stdin(Stdio::null());
    if !consumed.as_ref().is_ok_and(|s| s.success()) {
        let _ = from.kill();
    }
    let produced = from.wait();
    let consumed =
        consumed.with_context(|| format!("cannot start {what} ({:?})", consumer.get_program()))?;
    let produced = produced.with_context(|| format!("{what}: {:?}", producer.get_program()))?;
    if !(produced.success() && consumed.success()) {
        bail!("{what} failed ({produced}, then {consumed})");
    }
    Ok(())
}

pub fn run_checked(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let status = status(cmd.stdin(Stdio::null()))
        .with_context(|| format!("cannot start {what} ({:?})", cmd.get_program()))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Runs a command, returns its stdout, and fails with its stderr when it fails or takes too long
/// (then it is killed). Through duct's `wait_timeout`.
pub fn capture_with_timeout(cmd: &mut Command, timeout: Duration) -> anyhow::Result<String> {
    let mut expression = duct::cmd(cmd.get_program(), cmd.get_args())
        .stdin_null()
        .stdout_capture()
        .stderr_capture()
        .unchecked();
    if let Some(dir) = cmd.get_current_dir() {
        expression = expression.dir(dir);
    }
    for (key, value) in cmd.get_envs() {
        expression = match value {
            Some(value) => expression.env(key, value),
            None => expression.env_remove(key),
        };
    }
    let started = start(cmd);
    let handle = expression
        .start()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    let Some(output) = handle.wait_timeout(timeout)? else {
        let _ = handle.kill();
        finished(cmd, started, &Ok::<_, String>("killed: timed out"));
        bail!("timed out after {} s", timeout.as_secs())
    };
    finished(cmd, started, &Ok::<_, String>(output.status));
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        bail!("{}", String::from_utf8_lossy(&output.stderr).trim())
    }
}

fn start(cmd: &Command) -> Instant {
    tracing::debug!(argv = %command_line(cmd), "process started");
    Instant::now()
}

fn finished<T: std::fmt::Display, E: std::fmt::Display>(
    cmd: &Command,
    started: Instant,
    status: &Result<T, E>,
) {
    let seconds = started.elapsed().as_secs_f64();
    match status {
        Ok(status) => tracing::debug!(
            argv = %command_line(cmd), seconds, %status, "process finished"
        ),
        Err(err) => tracing::debug!(
            argv = %command_line(cmd), seconds, error = %err, "process did not start"
        ),
    }
}

/// The command line of `cmd`, quoted for a shell.
pub fn command_line(cmd: &Command) -> String {
    let argv: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a: &OsStr| a.to_string_lossy().into_owned())
        .collect();
    shell_line(&argv)
}

/// Sends `signal` to process `pid`, or to process group `-pid` when negative. Errors (the process
/// is already gone) are ignored: every caller only wants the process stopped.
pub fn send_signal(pid: i32, signal: rustix::process::Signal) {
    use rustix::process::{kill_process, kill_process_group, Pid};
    let _ = match Pid::from_raw(pid.abs()) {
        Some(group) if pid < 0 => kill_process_group(group, signal),
        Some(process) => kill_process(process, signal),
        None => Ok(()),
    };
}

/// Whether process `pid` exists (signal 0; a process of another user counts).
pub fn alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e == rustix::io::Errno::PERM,
    }
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Whether a build argument's name looks like it carries a secret: its value is never printed.
pub fn is_secret_name(key: &str) -> bool {
    let key = key.to_ascii_uppercase();
    [
        "TOKEN",
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "KEY",
        "CREDENTIAL",
        "AUTH",
    ]
    .iter()
    .any(|word| key.contains(word))
}

/// `KEY=***` when the name looks like a secret, else the argument as is.
pub fn redact_build_arg(arg: &str) -> String {
    match arg.split_once('=') {
        Some((key, _)) if is_secret_name(key) => format!("{key}=***"),
        _ => arg.to_string(),
    }
}

/// `argv` with the values of secret-looking build arguments replaced by `***`: what logs,
/// `--dry-run` and `--json` show.
pub fn redacted(argv: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len());
    let mut after_build_arg = false;
    for arg in argv {
        out.push(if after_build_arg {
            redact_build_arg(arg)
        } else {
            arg.clone()
        });
        after_build_arg = arg == "--build-arg";
    }
    out
}

/// Quotes an argv for a POSIX shell, for `--dry-run` and error messages.
pub fn shell_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_=.,/:@+%{}".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The pid a pid file names, if that process is alive and its command line contains every one of
/// `cmdline_has` (a pid file left by a killed daemon is stale, and its pid may be reused).
pub fn live_pid(pidfile: &std::path::Path, cmdline_has: &[&str]) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline);
    cmdline_has
        .iter()
        .all(|needle| cmdline.contains(needle))
        .then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting() {
        let argv: Vec<String> = ["docker", "a b", "it's", "x=1"].map(String::from).into();
        assert_eq!(shell_line(&argv), r"docker 'a b' 'it'\''s' x=1");
    }
}
