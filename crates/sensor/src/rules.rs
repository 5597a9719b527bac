//! Trigger rules and their evaluation.
//!
//! A rules file is a JSON array of rules (or `{"rules": [...]}`); each rule has a `name`, an
//! optional `trigger` (default `core.<kind>`) and a `kind` with its fields:
//!
//! * `{"kind":"interval","every_ms":5000}`: fires on the first poll, then every `every_ms`.
//! * `{"kind":"file_exists","path":"/tmp/go"}`: fires when the file appears (again).
//! * `{"kind":"file_changed","path":"/etc/app.conf"}`: fires when its size or mtime changes, or
//!   it is created or deleted (the first poll only records the baseline).
//! * `{"kind":"json_value","path":"/tmp/m.json","pointer":"/cpu","op":"gt","value":90}`: fires
//!   when the comparison becomes true (ops: eq, ne, gt, ge, lt, le, exists).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Exists,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Condition {
    Interval {
        every_ms: u64,
    },
    FileExists {
        path: PathBuf,
    },
    FileChanged {
        path: PathBuf,
    },
    JsonValue {
        path: PathBuf,
        pointer: String,
        op: Op,
        #[serde(default)]
        value: Value,
    },
}

impl Condition {
    pub fn kind(&self) -> &'static str {
        match self {
            Condition::Interval { .. } => "interval",
            Condition::FileExists { .. } => "file_exists",
            Condition::FileChanged { .. } => "file_changed",
            Condition::JsonValue { .. } => "json_value",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    #[serde(flatten)]
    pub condition: Condition,
}

impl Rule {
    pub fn trigger(&self) -> String {
        self.trigger
            .clone()
            .unwrap_or_else(|| format!("core.{}", self.condition.kind()))
    }
}

/// The rules used when no rules file is configured: one heartbeat a minute.
pub fn default_rules() -> Vec<Rule> {
    vec![Rule {
        name: "heartbeat".into(),
        trigger: Some("core.heartbeat".into()),
        condition: Condition::Interval { every_ms: 60_000 },
    }]
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RulesDoc {
    List(Vec<Rule>),
    Wrapped { rules: Vec<Rule> },
}

/// Parses and validates a rules document.
pub fn parse_rules(text: &str) -> Result<Vec<Rule>, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    // parse item by item for precise errors
    let items = match &value {
        Value::Array(items) => items.clone(),
        Value::Object(obj) if obj.contains_key("rules") => match &obj["rules"] {
            Value::Array(items) => items.clone(),
            _ => return Err("`rules` must be an array".into()),
        },
        _ => return Err("expected an array of rules or {\"rules\": [...]}".into()),
    };
    for (i, item) in items.iter().enumerate() {
        serde_json::from_value::<Rule>(item.clone()).map_err(|e| format!("rule {}: {e}", i + 1))?;
    }
    let rules = match serde_json::from_value::<RulesDoc>(value).map_err(|e| e.to_string())? {
        RulesDoc::List(rules) | RulesDoc::Wrapped { rules } => rules,
    };
    validate(&rules)?;
    Ok(rules)
}

pub fn load_rules(path: &Path) -> Result<Vec<Rule>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_rules(&text).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn validate(rules: &[Rule]) -> Result<(), String> {
    let mut names = HashSet::new();
    for rule in rules {
        if rule.name.trim().is_empty() {
            return Err("a rule has an empty name".into());
        }
        if !names.insert(rule.name.as_str()) {
            return Err(format!("duplicate rule name {:?}", rule.name));
        }
        match &rule.condition {
            Condition::Interval { every_ms } if *every_ms == 0 => {
                return Err(format!("rule {:?}: every_ms must be at least 1", rule.name));
            }
            Condition::JsonValue { pointer, .. }
                if !(pointer.is_empty() || pointer.starts_with('/')) =>
            {
                return Err(format!(
                    "rule {:?}: pointer must be a JSON pointer such as /a/b",
                    rule.name
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Size and modification time of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    pub len: u64,
    pub modified_ms: u64,
}

/// What the rules look at; the real one reads the file system, tests use a fake.
pub trait Observer {
    fn stat(&self, path: &Path) -> Option<FileStamp>;
    fn read_json(&self, path: &Path) -> Result<Value, String>;
}

pub struct FsObserver;

impl Observer for FsObserver {
    fn stat(&self, path: &Path) -> Option<FileStamp> {
        let meta = std::fs::metadata(path).ok()?;
        let modified_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Some(FileStamp {
            len: meta.len(),
            modified_ms,
        })
    }

    fn read_json(&self, path: &Path) -> Result<Value, String> {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        serde_json::from_str(&text).map_err(|e| e.to_string())
    }
}

fn compare(op: Op, actual: Option<&Value>, expected: &Value) -> bool {
    let Some(actual) = actual else {
        return false;
    };
    match op {
        Op::Exists => true,
        Op::Eq => actual == expected,
        Op::Ne => actual != expected,
        Op::Gt | Op::Ge | Op::Lt | Op::Le => {
            let ord = match (actual, expected) {
                (Value::Number(a), Value::Number(b)) => match (a.as_f64(), b.as_f64()) {
                    (Some(a), Some(b)) => a.partial_cmp(&b),
                    _ => None,
                },
                (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
                _ => None,
            };
            let Some(ord) = ord else {
                return false;
            };
            match op {
                Op::Gt => ord.is_gt(),
                Op::Ge => ord.is_ge(),
                Op::Lt => ord.is_lt(),
                _ => ord.is_le(),
            }
        }
    }
}

#[derive(Debug, Default)]
struct RuleState {
    polls: u64,
    fired: u64,
    last_fired_ms: Option<u64>,
    last_stamp: Option<FileStamp>,
    last_truth: bool,
}

/// A trigger that fired: `(rule trigger, payload)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Firing {
    pub trigger: String,
    pub payload: Value,
}

pub struct Evaluator {
    rules: Vec<(Rule, RuleState)>,
}

impl Evaluator {
    pub fn new(rules: Vec<Rule>) -> Self {
        Self {
            rules: rules
                .into_iter()
                .map(|r| (r, RuleState::default()))
                .collect(),
        }
    }

    /// Evaluates every rule once; `now_ms` is a monotonic clock in milliseconds.
    pub fn poll(&mut self, now_ms: u64, observer: &impl Observer) -> Vec<Firing> {
        let mut out = Vec::new();
        for (rule, state) in &mut self.rules {
            let first = state.polls == 0;
            state.polls += 1;
            let payload = match &rule.condition {
                Condition::Interval { every_ms } => {
                    let due = state
                        .last_fired_ms
                        .is_none_or(|last| now_ms.saturating_sub(last) >= *every_ms);
                    due.then(|| json!({ "every_ms": every_ms, "tick": state.fired + 1 }))
                }
                Condition::FileExists { path } => {
                    let exists = observer.stat(path).is_some();
                    let fire = exists && !state.last_truth;
                    state.last_truth = exists;
                    fire.then(|| json!({ "path": path }))
                }
                Condition::FileChanged { path } => {
                    let stamp = observer.stat(path);
                    let previous = state.last_stamp;
                    state.last_stamp = stamp;
                    (!first && stamp != previous).then(|| {
                        json!({
                            "path": path,
                            "exists": stamp.is_some(),
                            "len": stamp.map(|s| s.len),
                            "modified_ms": stamp.map(|s| s.modified_ms),
                        })
                    })
                }
                Condition::JsonValue {
                    path,
                    pointer,
                    op,
                    value,
                } => {
                    let doc = observer.read_json(path).ok();
                    let actual = doc.as_ref().and_then(|d| d.pointer(pointer));
                    let truth = compare(*op, actual, value);
                    let fire = truth && !state.last_truth;
                    state.last_truth = truth;
                    fire.then(
                        || json!({ "path": path, "pointer": pointer, "value": actual.cloned() }),
                    )
                }
            };
            if let Some(mut payload) = payload {
                state.fired += 1;
                state.last_fired_ms = Some(now_ms);
                payload["rule"] = Value::String(rule.name.clone());
                out.push(Firing {
                    trigger: rule.trigger(),
                    payload,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Fake {
        files: RefCell<HashMap<PathBuf, FileStamp>>,
        json: RefCell<HashMap<PathBuf, Value>>,
    }

    impl Fake {
        fn set(&self, path: &str, len: u64, modified_ms: u64) {
            self.files
                .borrow_mut()
                .insert(path.into(), FileStamp { len, modified_ms });
        }
        fn remove(&self, path: &str) {
            self.files.borrow_mut().remove(Path::new(path));
        }
        fn set_json(&self, path: &str, v: Value) {
            self.json.borrow_mut().insert(path.into(), v);
        }
    }

    impl Observer for Fake {
        fn stat(&self, path: &Path) -> Option<FileStamp> {
            self.files.borrow().get(path).copied()
        }
        fn read_json(&self, path: &Path) -> Result<Value, String> {
            self.json
                .borrow()
                .get(path)
                .cloned()
                .ok_or("missing".into())
        }
    }

    fn rules(text: &str) -> Evaluator {
        Evaluator::new(parse_rules(text).unwrap())
    }

    #[test]
    fn interval_fires_first_then_every_period() {
        let mut ev = rules(r#"[{"name":"hb","kind":"interval","every_ms":100}]"#);
        let fake = Fake::default();
        let f = ev.poll(0, &fake);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].trigger, "core.interval");
        assert_eq!(f[0].payload["rule"], "hb");
        assert_eq!(f[0].payload["tick"], 1);
        assert!(ev.poll(50, &fake).is_empty());
        let f = ev.poll(100, &fake);
        assert_eq!(f[0].payload["tick"], 2);
        assert!(ev.poll(199, &fake).is_empty());
    }

    #[test]
    fn file_exists_is_edge_triggered() {
        let mut ev = rules(
            r#"{"rules":[{"name":"go","trigger":"ops.go","kind":"file_exists","path":"/tmp/go"}]}"#,
        );
        let fake = Fake::default();
        assert!(ev.poll(0, &fake).is_empty());
        fake.set("/tmp/go", 0, 1);
        let f = ev.poll(1, &fake);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].trigger, "ops.go");
        assert_eq!(f[0].payload["path"], "/tmp/go");
        assert!(ev.poll(2, &fake).is_empty(), "still there: no new event");
        fake.remove("/tmp/go");
        assert!(ev.poll(3, &fake).is_empty());
        fake.set("/tmp/go", 0, 4);
        assert_eq!(ev.poll(4, &fake).len(), 1, "appeared again");
    }

    #[test]
    fn file_changed_ignores_baseline() {
        let mut ev = rules(r#"[{"name":"cfg","kind":"file_changed","path":"/etc/c"}]"#);
        let fake = Fake::default();
        fake.set("/etc/c", 10, 100);
        assert!(ev.poll(0, &fake).is_empty(), "baseline");
        assert!(ev.poll(1, &fake).is_empty());
        fake.set("/etc/c", 12, 200);
        let f = ev.poll(2, &fake);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].payload["len"], 12);
        assert_eq!(f[0].payload["exists"], true);
        fake.remove("/etc/c");
        let f = ev.poll(3, &fake);
        assert_eq!(f[0].payload["exists"], false);
    }

    #[test]
    fn json_value_comparisons() {
        let mut ev = rules(
            r#"[{"name":"hot","kind":"json_value","path":"/m.json","pointer":"/cpu","op":"gt","value":90},
                {"name":"up","kind":"json_value","path":"/m.json","pointer":"/state","op":"eq","value":"up"},
                {"name":"has","kind":"json_value","path":"/m.json","pointer":"/x","op":"exists"}]"#,
        );
        let fake = Fake::default();
        assert!(ev.poll(0, &fake).is_empty(), "unreadable file is false");
        fake.set_json("/m.json", json!({"cpu": 50, "state": "up"}));
        let f = ev.poll(1, &fake);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].payload["rule"], "up");
        assert_eq!(f[0].payload["value"], "up");
        fake.set_json("/m.json", json!({"cpu": 95.5, "state": "up", "x": null}));
        let f = ev.poll(2, &fake);
        let names: Vec<&str> = f
            .iter()
            .map(|f| f.payload["rule"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["hot", "has"]);
        assert!(ev.poll(3, &fake).is_empty(), "edge-triggered");
        assert!(compare(Op::Le, Some(&json!("a")), &json!("b")));
        assert!(!compare(Op::Gt, Some(&json!("1")), &json!(0)));
        assert!(compare(Op::Ne, Some(&json!(1)), &json!(2)));
        assert!(compare(Op::Ge, Some(&json!(2)), &json!(2)));
        assert!(compare(Op::Lt, Some(&json!(-1)), &json!(0)));
    }

    #[test]
    fn invalid_rules_are_rejected_with_reasons() {
        let err = parse_rules(
            r#"[{"name":"a","kind":"interval","every_ms":1},{"name":"b","kind":"nope"}]"#,
        )
        .unwrap_err();
        assert!(err.starts_with("rule 2:"), "{err}");
        assert!(parse_rules(r#"[{"name":"a","kind":"interval","every_ms":0}]"#).is_err());
        let err = parse_rules(
            r#"[{"name":"a","kind":"interval","every_ms":1},{"name":"a","kind":"interval","every_ms":1}]"#,
        )
        .unwrap_err();
        assert!(err.contains("duplicate"), "{err}");
        assert!(parse_rules(
            r#"[{"name":"a","kind":"json_value","path":"/x","pointer":"cpu","op":"eq"}]"#
        )
        .is_err());
        assert!(parse_rules("{}").is_err());
        assert!(parse_rules("[").is_err());
        assert!(parse_rules("[]").unwrap().is_empty());
    }

    #[test]
    fn default_rules_are_valid_and_round_trip() {
        let rules = default_rules();
        validate(&rules).unwrap();
        let text = serde_json::to_string(&rules).unwrap();
        assert!(text.contains("\"kind\":\"interval\""), "{text}");
        assert_eq!(parse_rules(&text).unwrap(), rules);
    }

    #[test]
    fn real_file_system_observer() {
        let dir = std::env::temp_dir().join(format!("attune-sensor-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("m.json");
        std::fs::write(&file, r#"{"ok":true}"#).unwrap();
        assert_eq!(FsObserver.stat(&file).unwrap().len, 11);
        assert_eq!(FsObserver.read_json(&file).unwrap()["ok"], true);
        assert!(FsObserver.stat(&dir.join("none")).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
