//! Message types the attune services exchange (all serialised as JSON).

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A runtime a worker can execute code with. Serialised in lowercase: `shell`, `python`, `node`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Shell,
    Python,
    Node,
}

impl Runtime {
    pub const ALL: [Runtime; 3] = [Runtime::Shell, Runtime::Python, Runtime::Node];

    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Shell => "shell",
            Runtime::Python => "python",
            Runtime::Node => "node",
        }
    }

    /// The program looked up on `PATH` for this runtime.
    pub fn program(self) -> &'static str {
        match self {
            Runtime::Shell => "sh",
            Runtime::Python => "python3",
            Runtime::Node => "node",
        }
    }

    /// Parses a comma-separated list (`shell,python`; `all` or `full` for every runtime).
    /// Blank items are ignored and duplicates removed, keeping the first occurrence's order.
    pub fn parse_list(raw: &str) -> Result<Vec<Runtime>, String> {
        let mut out: Vec<Runtime> = Vec::new();
        for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let items: Vec<Runtime> = match item.to_ascii_lowercase().as_str() {
                "all" | "full" => Runtime::ALL.to_vec(),
                _ => vec![item.parse()?],
            };
            for rt in items {
                if !out.contains(&rt) {
                    out.push(rt);
                }
            }
        }
        Ok(out)
    }
}

impl FromStr for Runtime {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "shell" | "sh" => Ok(Runtime::Shell),
            "python" | "python3" => Ok(Runtime::Python),
            "node" | "nodejs" => Ok(Runtime::Node),
            other => Err(format!(
                "unknown runtime {other:?} (expected shell, python or node)"
            )),
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request to run `code` (or an action with `parameters`) with a runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutionRequest {
    pub action: String,
    pub runtime: Runtime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub parameters: Value,
}

impl ExecutionRequest {
    /// Checks what serde cannot: a non-blank action and an object (or absent) `parameters`.
    pub fn validate(&self) -> Result<(), String> {
        if self.action.trim().is_empty() {
            return Err("`action` must not be empty".to_string());
        }
        if !(self.parameters.is_null() || self.parameters.is_object()) {
            return Err("`parameters` must be a JSON object".to_string());
        }
        Ok(())
    }
}

/// Lifecycle of an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStatus {
    Requested,
    Scheduled,
    Running,
    Succeeded,
    Failed,
    TimedOut,
}

impl ExecutionStatus {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ExecutionStatus::Succeeded | ExecutionStatus::Failed | ExecutionStatus::TimedOut
        )
    }
}

/// An execution as the API stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    pub id: String,
    pub status: ExecutionStatus,
    pub created_at_unix_ms: u64,
    pub request: ExecutionRequest,
}

/// The outcome of running an execution on a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionResult {
    pub id: String,
    pub status: ExecutionStatus,
    pub stdout: String,
    pub stderr: String,
    /// `None` when the process was killed by a signal or timed out.
    pub exit_code: Option<i32>,
    pub runtime: Runtime,
    #[serde(default)]
    pub duration_ms: u64,
}

/// An event emitted by a sensor when one of its triggers fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorEvent {
    pub sensor: String,
    pub trigger: String,
    pub payload: Value,
    pub emitted_at_unix_ms: u64,
}

impl SensorEvent {
    pub fn now(sensor: impl Into<String>, trigger: impl Into<String>, payload: Value) -> Self {
        Self {
            sensor: sensor.into(),
            trigger: trigger.into(),
            payload,
            emitted_at_unix_ms: now_unix_ms(),
        }
    }
}

/// Process-unique ids such as `exe-19a2b3c4d5e-000001` (prefix, start time in hex, sequence).
#[derive(Debug)]
pub struct IdGenerator {
    prefix: String,
    epoch: u64,
    next: AtomicU64,
}

impl IdGenerator {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            epoch: now_unix_ms(),
            next: AtomicU64::new(1),
        }
    }

    pub fn next_id(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}-{:x}-{:06}", self.prefix, self.epoch, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn runtime_serde_and_parsing() {
        assert_eq!(
            serde_json::to_string(&Runtime::Python).unwrap(),
            "\"python\""
        );
        let rt: Runtime = serde_json::from_str("\"node\"").unwrap();
        assert_eq!(rt, Runtime::Node);
        assert!(serde_json::from_str::<Runtime>("\"ruby\"").is_err());
        assert_eq!("SH".parse::<Runtime>().unwrap(), Runtime::Shell);
        assert_eq!("python3".parse::<Runtime>().unwrap(), Runtime::Python);
        assert!("ruby".parse::<Runtime>().unwrap_err().contains("ruby"));
        for rt in Runtime::ALL {
            assert_eq!(rt.to_string().parse::<Runtime>().unwrap(), rt);
        }
    }

    #[test]
    fn runtime_lists() {
        assert_eq!(Runtime::parse_list("").unwrap(), vec![]);
        assert_eq!(
            Runtime::parse_list("node, shell,node").unwrap(),
            vec![Runtime::Node, Runtime::Shell]
        );
        assert_eq!(Runtime::parse_list("all").unwrap(), Runtime::ALL.to_vec());
        assert_eq!(
            Runtime::parse_list("python,full").unwrap(),
            vec![Runtime::Python, Runtime::Shell, Runtime::Node]
        );
        assert!(Runtime::parse_list("shell,perl").is_err());
    }

    #[test]
    fn execution_request_round_trip() {
        let req = ExecutionRequest {
            action: "core.echo".into(),
            runtime: Runtime::Shell,
            code: Some("echo hi".into()),
            parameters: json!({"greeting": "hi"}),
        };
        let text = serde_json::to_string(&req).unwrap();
        assert_eq!(
            serde_json::from_str::<ExecutionRequest>(&text).unwrap(),
            req
        );

        // code and parameters are optional
        let min: ExecutionRequest =
            serde_json::from_str(r#"{"action":"a","runtime":"python"}"#).unwrap();
        assert_eq!(min.code, None);
        assert!(min.parameters.is_null());
        assert_eq!(
            serde_json::to_value(&min).unwrap(),
            json!({"action": "a", "runtime": "python"})
        );
        assert!(min.validate().is_ok());

        // unknown fields, missing fields and bad parameters are rejected
        assert!(serde_json::from_str::<ExecutionRequest>(r#"{"action":"a"}"#).is_err());
        assert!(serde_json::from_str::<ExecutionRequest>(
            r#"{"action":"a","runtime":"shell","extra":1}"#
        )
        .is_err());
        let bad: ExecutionRequest =
            serde_json::from_str(r#"{"action":" ","runtime":"shell","parameters":[1]}"#).unwrap();
        assert!(bad.validate().is_err());
    }

    #[test]
    fn execution_result_round_trip() {
        let res = ExecutionResult {
            id: "exe-1".into(),
            status: ExecutionStatus::TimedOut,
            stdout: "out".into(),
            stderr: String::new(),
            exit_code: None,
            runtime: Runtime::Node,
            duration_ms: 12,
        };
        let value = serde_json::to_value(&res).unwrap();
        assert_eq!(value["status"], "timed_out");
        assert_eq!(value["exit_code"], Value::Null);
        assert_eq!(value["runtime"], "node");
        assert_eq!(
            serde_json::from_value::<ExecutionResult>(value).unwrap(),
            res
        );
        assert!(ExecutionStatus::TimedOut.is_final());
        assert!(!ExecutionStatus::Requested.is_final());
    }

    #[test]
    fn execution_and_sensor_event_round_trip() {
        let exe = Execution {
            id: "exe-2".into(),
            status: ExecutionStatus::Requested,
            created_at_unix_ms: 5,
            request: ExecutionRequest {
                action: "a".into(),
                runtime: Runtime::Python,
                code: None,
                parameters: Value::Null,
            },
        };
        let text = serde_json::to_string(&exe).unwrap();
        assert!(text.contains("\"status\":\"requested\""), "{text}");
        assert_eq!(serde_json::from_str::<Execution>(&text).unwrap(), exe);

        let ev = SensorEvent::now("core.timer", "core.intervaltimer", json!({"tick": 1}));
        assert!(ev.emitted_at_unix_ms > 1_600_000_000_000);
        let text = serde_json::to_string(&ev).unwrap();
        assert_eq!(serde_json::from_str::<SensorEvent>(&text).unwrap(), ev);
    }

    #[test]
    fn ids_are_unique_and_prefixed() {
        let ids = IdGenerator::new("exe");
        let a = ids.next_id();
        let b = ids.next_id();
        assert_ne!(a, b);
        assert!(a.starts_with("exe-") && a.ends_with("-000001"), "{a}");
    }
}
