//! Every child process's helpers: running one to completion, capturing its output with a
//! timeout, signalling a process or process group, and quoting an argv for logs.

use std::{
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{bail, Context};

pub fn run_checked(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("cannot start {what} ({:?})", cmd.get_program()))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Runs a command, returns its stdout, and fails with its stderr when it fails or takes too long.
pub fn capture_with_timeout(cmd: &mut Command, timeout: Duration) -> anyhow::Result<String> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(output) => {
            let output = output?;
            if output.status.success() {
                Ok(String::from_utf8_lossy(&output.stdout).into_owned())
            } else {
                bail!("{}", String::from_utf8_lossy(&output.stderr).trim())
            }
        }
        Err(_) => {
            send_signal(pid as i32, libc::SIGKILL);
            bail!("timed out after {} s", timeout.as_secs())
        }
    }
}

/// Sends `signal` to process `pid`, or to process group `-pid` when negative. Errors (the process
/// is already gone) are ignored: every caller only wants the process stopped.
pub fn send_signal(pid: i32, signal: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, signal);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting() {
        let argv: Vec<String> = ["docker", "a b", "it's", "x=1"].map(String::from).into();
        assert_eq!(shell_line(&argv), r"docker 'a b' 'it'\''s' x=1");
    }
}
