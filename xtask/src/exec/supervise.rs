//! Children die with the xtask, even when it is killed with SIGKILL.
//!
//! Each build runs under a small supervisor: the xtask binary itself, re-executed as
//! `xtask __supervise <xtask pid> <argv...>`, the leader of the build's process group. The kernel
//! sends it SIGUSR1 when the xtask dies (`PR_SET_PDEATHSIG`), and it then kills its whole process
//! group with SIGKILL: docker, and the buildx plugin docker started (which `PR_SET_PDEATHSIG` on
//! docker alone would not reach: it is docker's child, and the flag is not inherited). Otherwise
//! it waits for docker and exits as docker did. Ctrl-C and SIGTERM go to the whole group as before
//! (the runner signals it); the supervisor ignores them and waits for docker to stop.

use std::{ffi::OsString, process::Command};

/// The first argument that makes the xtask binary a supervisor.
pub const SUPERVISE: &str = "__supervise";

/// The argv that runs `argv` under a supervisor tied to this process.
pub fn supervised(argv: &[String]) -> Vec<String> {
    let mut out = vec![
        // /proc/self/exe is this binary even when cargo replaced or removed its file meanwhile
        "/proc/self/exe".to_string(),
        SUPERVISE.to_string(),
        std::process::id().to_string(),
    ];
    out.extend(argv.iter().cloned());
    out
}

/// Runs the supervisor when the binary was started as one (`args` without argv[0]); returns
/// otherwise.
pub fn run_if_asked(args: &[OsString]) {
    if args.first().and_then(|a| a.to_str()) != Some(SUPERVISE) {
        return;
    }
    let parent: libc::pid_t = args
        .get(1)
        .and_then(|a| a.to_str())
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    let code = supervise(parent, &args[2..]);
    std::process::exit(code);
}

fn supervise(parent: libc::pid_t, argv: &[OsString]) -> i32 {
    if argv.is_empty() {
        eprintln!("xtask {SUPERVISE}: no command");
        return 2;
    }
    // SAFETY: plain libc calls on a local signal set; no memory is shared with other threads (the
    // supervisor has one thread).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in [
            libc::SIGUSR1,
            libc::SIGCHLD,
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
        ] {
            libc::sigaddset(&mut set, signal);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGUSR1 as libc::c_ulong,
            0,
            0,
            0,
        );
        // the xtask may have died before the prctl: then nobody sends SIGUSR1
        if libc::getppid() != parent {
            return 137;
        }
        // the child starts with an empty signal mask (std resets it)
        #[allow(clippy::zombie_processes)] // reaped by waitpid below
        let child = match Command::new(&argv[0]).args(&argv[1..]).spawn() {
            Ok(child) => child,
            Err(err) => {
                eprintln!("cannot start `{}`: {err}", argv[0].to_string_lossy());
                return 127;
            }
        };
        let pid = child.id() as libc::pid_t;
        loop {
            let mut signal: libc::c_int = 0;
            if libc::sigwait(&set, &mut signal) != 0 {
                continue;
            }
            if signal == libc::SIGUSR1 || libc::getppid() != parent {
                // the xtask is gone: so is everything it started
                libc::kill(0, libc::SIGKILL);
            }
            let mut status: libc::c_int = 0;
            if libc::waitpid(pid, &mut status, libc::WNOHANG) == pid {
                if libc::WIFEXITED(status) {
                    return libc::WEXITSTATUS(status);
                }
                if libc::WIFSIGNALED(status) {
                    // die of the same signal, so that the runner sees a killed build
                    let sig = libc::WTERMSIG(status);
                    libc::signal(sig, libc::SIG_DFL);
                    let mut only: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut only);
                    libc::sigaddset(&mut only, sig);
                    libc::pthread_sigmask(libc::SIG_UNBLOCK, &only, std::ptr::null_mut());
                    libc::kill(libc::getpid(), sig);
                    return 128 + sig;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supervised_argv_names_this_process_and_keeps_the_command() {
        let argv: Vec<String> = ["docker", "buildx", "build", "."].map(String::from).into();
        let out = supervised(&argv);
        assert_eq!(out[..2], ["/proc/self/exe", SUPERVISE]);
        assert_eq!(out[2], std::process::id().to_string());
        assert_eq!(out[3..], argv[..]);
    }
}
