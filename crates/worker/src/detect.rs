//! Runtime detection: looks each runtime's program up on a `PATH` value, asks it for its
//! version and (for `--self-check`) runs a one-line smoke program with it.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use attune_common::Runtime;

/// What was found for one runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuntimeInfo {
    pub runtime: Runtime,
    pub program: &'static str,
    pub available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `3.11.2` for python, `20.11.0` for node; for the shell, the program `sh` resolves to
    /// (e.g. `dash`, `bash`, `busybox`), as POSIX sh has no version flag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RuntimeInfo {
    pub fn path_buf(&self) -> Option<PathBuf> {
        self.path.as_ref().map(PathBuf::from)
    }
}

/// The first executable file named `program` in the directories of `path_var`.
pub fn find_program(program: &str, path_var: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(path_var)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

/// Runs `cmd` with a deadline; retries a few times on ETXTBSY (a script that another thread
/// of this process just wrote may briefly be "busy" while a fork still holds it open).
pub fn output_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut attempts = 0;
    let mut child = loop {
        match cmd.spawn() {
            Ok(child) => break child,
            Err(err) if err.raw_os_error() == Some(26) && attempts < 10 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(err) => return Err(format!("cannot start: {err}")),
        }
    };
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return child.wait_with_output().map_err(|e| e.to_string()),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {} ms", timeout.as_millis()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(err) => return Err(err.to_string()),
        }
    }
}

/// Extracts `3.11.2` from `Python 3.11.2` and `20.11.0` from `v20.11.0`.
pub fn parse_version(runtime: Runtime, text: &str) -> Option<String> {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    let version = match runtime {
        Runtime::Python => line.strip_prefix("Python ").unwrap_or(line),
        Runtime::Node => line.strip_prefix('v').unwrap_or(line),
        Runtime::Shell => line,
    };
    Some(version.trim().to_string())
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Detects one runtime on `path_var`. A program that is found but cannot report its version
/// (e.g. a pyenv shim with no Python behind it) counts as unavailable, with the reason.
pub fn detect(runtime: Runtime, path_var: &OsStr) -> RuntimeInfo {
    let program = runtime.program();
    let mut info = RuntimeInfo {
        runtime,
        program,
        available: false,
        path: None,
        version: None,
        error: None,
    };
    let Some(path) = find_program(program, path_var) else {
        info.error = Some(format!("{program} not found on PATH"));
        return info;
    };
    info.path = Some(path.display().to_string());
    match runtime {
        Runtime::Shell => {
            info.available = true;
            info.version = std::fs::canonicalize(&path)
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        }
        Runtime::Python | Runtime::Node => {
            let mut cmd = Command::new(&path);
            cmd.arg("--version");
            match output_with_timeout(&mut cmd, PROBE_TIMEOUT) {
                Ok(out) if out.status.success() => {
                    // Python 2 printed its version on stderr
                    let text = if out.stdout.is_empty() {
                        String::from_utf8_lossy(&out.stderr).into_owned()
                    } else {
                        String::from_utf8_lossy(&out.stdout).into_owned()
                    };
                    info.version = parse_version(runtime, &text);
                    info.available = true;
                }
                Ok(out) => {
                    let stderr = String::from_utf8_lossy(&out.stderr);
                    info.error = Some(format!(
                        "`{} --version` failed ({}): {}",
                        path.display(),
                        out.status,
                        stderr.trim()
                    ));
                }
                Err(err) => {
                    info.error = Some(format!("`{} --version`: {err}", path.display()));
                }
            }
        }
    }
    info
}

/// Detects every runtime, in `Runtime::ALL` order.
pub fn detect_all(path_var: &OsStr) -> Vec<RuntimeInfo> {
    Runtime::ALL
        .iter()
        .map(|&rt| detect(rt, path_var))
        .collect()
}

/// The process `PATH` (empty if unset).
pub fn process_path() -> std::ffi::OsString {
    std::env::var_os("PATH").unwrap_or_default()
}

/// Runs a one-line program that prints `attune-ok` with the detected runtime.
pub fn smoke_run(info: &RuntimeInfo) -> Result<(), String> {
    let path = info.path_buf().ok_or("not installed")?;
    let snippet = match info.runtime {
        Runtime::Shell => "echo attune-ok",
        Runtime::Python => "print('attune-ok')",
        Runtime::Node => "console.log('attune-ok')",
    };
    let mut cmd = Command::new(path);
    cmd.arg(crate::run::code_flag(info.runtime)).arg(snippet);
    let out = output_with_timeout(&mut cmd, PROBE_TIMEOUT)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && stdout.trim() == "attune-ok" {
        Ok(())
    } else {
        Err(format!(
            "smoke program failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    pub struct TempDir(pub PathBuf);

    impl TempDir {
        pub fn new(tag: &str) -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "attune-worker-test-{}-{tag}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        /// Writes an executable `#!/bin/sh` script.
        pub fn script(&self, name: &str, body: &str) -> PathBuf {
            use std::os::unix::fs::PermissionsExt;
            let path = self.0.join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn parses_versions() {
        assert_eq!(
            parse_version(Runtime::Python, "Python 3.11.2\n").as_deref(),
            Some("3.11.2")
        );
        assert_eq!(
            parse_version(Runtime::Node, "v20.11.0\n").as_deref(),
            Some("20.11.0")
        );
        assert_eq!(parse_version(Runtime::Node, "\n\n"), None);
    }

    #[test]
    fn shell_is_always_found_on_the_real_path() {
        let info = detect(Runtime::Shell, &process_path());
        assert!(info.available, "{info:?}");
        assert!(info.path.as_deref().unwrap().ends_with("/sh"));
        smoke_run(&info).unwrap();
    }

    #[test]
    fn detects_fake_runtimes_on_a_custom_path() {
        let dir = TempDir::new("fake");
        dir.script("python3", "echo 'Python 3.99.1'");
        dir.script("node", "echo v42.0.0");
        // a non-executable `sh` does not count
        std::fs::write(dir.0.join("sh"), "").unwrap();
        let path_var = std::env::join_paths([Path::new("/nonexistent"), &dir.0]).unwrap();

        let all = detect_all(&path_var);
        assert_eq!(all.len(), 3);
        let shell = &all[0];
        assert!(!shell.available);
        assert!(shell.error.as_deref().unwrap().contains("sh not found"));
        let python = &all[1];
        assert!(python.available, "{python:?}");
        assert_eq!(python.version.as_deref(), Some("3.99.1"));
        assert_eq!(
            python.path.as_deref(),
            Some(dir.0.join("python3").to_str().unwrap())
        );
        assert_eq!(all[2].version.as_deref(), Some("42.0.0"));
    }

    #[test]
    fn broken_programs_are_unavailable_with_a_reason() {
        let dir = TempDir::new("broken");
        dir.script(
            "python3",
            "echo 'pyenv: python3: command not found' >&2; exit 127",
        );
        let info = detect(Runtime::Python, dir.0.as_os_str());
        assert!(!info.available);
        assert!(
            info.error.as_deref().unwrap().contains("command not found"),
            "{info:?}"
        );
        let missing = detect(Runtime::Node, OsStr::new(""));
        assert!(!missing.available);
        assert_eq!(missing.path, None);
    }

    #[test]
    fn timeouts_kill_the_program() {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg("sleep 5");
        let started = Instant::now();
        let err = output_with_timeout(&mut cmd, Duration::from_millis(100)).unwrap_err();
        assert!(err.contains("no answer"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(4));
    }
}
