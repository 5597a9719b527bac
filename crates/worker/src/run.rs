//! Running code with a runtime (tokio::process), producing an `ExecutionResult`.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use attune_common::{ExecutionResult, ExecutionStatus, Runtime};

/// Captured stdout/stderr beyond this many bytes are cut (with a marker).
pub const MAX_CAPTURE_BYTES: usize = 1 << 20;

/// The flag that makes the runtime's program run inline code: `sh -c`, `python3 -c`, `node -e`.
pub fn code_flag(runtime: Runtime) -> &'static str {
    match runtime {
        Runtime::Shell | Runtime::Python => "-c",
        Runtime::Node => "-e",
    }
}

fn capture(bytes: &[u8]) -> String {
    if bytes.len() > MAX_CAPTURE_BYTES {
        let mut text = String::from_utf8_lossy(&bytes[..MAX_CAPTURE_BYTES]).into_owned();
        text.push_str(&format!(
            "\n[attune-worker: output truncated, {} bytes total]",
            bytes.len()
        ));
        text
    } else {
        String::from_utf8_lossy(bytes).into_owned()
    }
}

/// Runs `code` with the program at `program` (the runtime's interpreter). The execution id and
/// the parameters (JSON) are passed as `ATTUNE_EXECUTION_ID` and `ATTUNE_PARAMETERS`.
pub async fn execute(
    id: &str,
    runtime: Runtime,
    program: &Path,
    code: &str,
    parameters: &Value,
    timeout: Duration,
) -> ExecutionResult {
    let started = Instant::now();
    let mut result = ExecutionResult {
        id: id.to_string(),
        status: ExecutionStatus::Failed,
        stdout: String::new(),
        stderr: String::new(),
        exit_code: None,
        runtime,
        duration_ms: 0,
    };
    let params = if parameters.is_null() {
        "{}".to_string()
    } else {
        parameters.to_string()
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.arg(code_flag(runtime))
        .arg(code)
        .env("ATTUNE_EXECUTION_ID", id)
        .env("ATTUNE_PARAMETERS", params)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    match cmd.spawn() {
        Err(err) => {
            result.stderr = format!("attune-worker: cannot start {}: {err}", program.display());
        }
        Ok(child) => match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Err(_) => {
                // dropping the future kills the child (kill_on_drop)
                result.status = ExecutionStatus::TimedOut;
                result.stderr = format!(
                    "attune-worker: killed after the {} ms timeout",
                    timeout.as_millis()
                );
            }
            Ok(Err(err)) => {
                result.stderr = format!("attune-worker: waiting for {}: {err}", program.display());
            }
            Ok(Ok(output)) => {
                result.stdout = capture(&output.stdout);
                result.stderr = capture(&output.stderr);
                result.exit_code = output.status.code();
                result.status = if output.status.success() {
                    ExecutionStatus::Succeeded
                } else {
                    ExecutionStatus::Failed
                };
            }
        },
    }
    result.duration_ms = started.elapsed().as_millis() as u64;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{detect, process_path};

    fn sh() -> std::path::PathBuf {
        detect(Runtime::Shell, &process_path()).path_buf().unwrap()
    }

    #[tokio::test]
    async fn runs_shell_code() {
        let params = serde_json::json!({"name": "attune"});
        let r = execute(
            "exe-t1",
            Runtime::Shell,
            &sh(),
            "echo \"hello $ATTUNE_EXECUTION_ID $ATTUNE_PARAMETERS\"; echo oops >&2",
            &params,
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(r.status, ExecutionStatus::Succeeded, "{r:?}");
        assert_eq!(r.exit_code, Some(0));
        assert_eq!(r.stdout, "hello exe-t1 {\"name\":\"attune\"}\n");
        assert_eq!(r.stderr, "oops\n");
        assert_eq!(r.runtime, Runtime::Shell);
    }

    #[tokio::test]
    async fn failing_code_is_failed_with_its_exit_code() {
        let r = execute(
            "e",
            Runtime::Shell,
            &sh(),
            "exit 3",
            &Value::Null,
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(r.status, ExecutionStatus::Failed);
        assert_eq!(r.exit_code, Some(3));
    }

    #[tokio::test]
    async fn slow_code_times_out() {
        let r = execute(
            "e",
            Runtime::Shell,
            &sh(),
            "sleep 5",
            &Value::Null,
            Duration::from_millis(100),
        )
        .await;
        assert_eq!(r.status, ExecutionStatus::TimedOut);
        assert_eq!(r.exit_code, None);
        assert!(r.duration_ms < 4000);
    }

    #[tokio::test]
    async fn missing_program_is_failed() {
        let r = execute(
            "e",
            Runtime::Python,
            Path::new("/nonexistent/python3"),
            "print(1)",
            &Value::Null,
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(r.status, ExecutionStatus::Failed);
        assert!(r.stderr.contains("cannot start"), "{}", r.stderr);
    }

    #[test]
    fn flags_and_truncation() {
        assert_eq!(code_flag(Runtime::Node), "-e");
        assert_eq!(code_flag(Runtime::Python), "-c");
        let big = vec![b'x'; MAX_CAPTURE_BYTES + 10];
        assert!(capture(&big).ends_with("bytes total]"));
        assert_eq!(capture(b"hi"), "hi");
    }
}
