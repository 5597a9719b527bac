//! BuildKit's `--progress=rawjson` stream -> steps started, finished, cached or failed.
//!
//! buildx prints one JSON object per status update (0.13: pretty-printed, `{` and `}` alone on
//! their lines; 0.14 and later: one object per line) and, at the end, plain-text lines such as
//! `ERROR: failed to solve: ...`. [`Splitter`] separates the two; [`Tracker`] folds the updates
//! into per-step state and renders the human-readable log that lands in
//! `target/xtask/logs/<image>.log`.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// One line of buildx's stderr, classified.
#[derive(Debug, PartialEq)]
pub enum Chunk {
    Status(Box<SolveStatus>),
    Text(String),
}

/// Splits buildx's stderr, line by line, into JSON status objects and plain text.
#[derive(Debug, Default)]
pub struct Splitter {
    buf: String,
    depth: usize,
}

impl Splitter {
    pub fn push_line(&mut self, line: &str) -> Option<Chunk> {
        // an empty status (bake prints them between its targets' updates)
        if self.depth == 0 && line == "{}" {
            return None;
        }
        // buildx 0.14 and later: one object per line
        let status_keys = ["\"vertexes\"", "\"statuses\"", "\"logs\"", "\"warnings\""];
        if self.depth == 0
            && line.starts_with('{')
            && line.ends_with('}')
            && status_keys.iter().any(|k| line.contains(k))
        {
            if let Ok(status) = serde_json::from_str::<SolveStatus>(line) {
                return Some(Chunk::Status(Box::new(status)));
            }
        }
        if self.depth == 0 && line != "{" {
            return Some(Chunk::Text(line.to_string()));
        }
        if line == "{" {
            self.depth += 1;
        }
        self.buf.push_str(line);
        self.buf.push('\n');
        if line == "}" {
            self.depth = self.depth.saturating_sub(1);
            if self.depth == 0 {
                let text = std::mem::take(&mut self.buf);
                return Some(match serde_json::from_str::<SolveStatus>(&text) {
                    Ok(status) => Chunk::Status(Box::new(status)),
                    Err(_) => Chunk::Text(text.trim_end().to_string()),
                });
            }
        }
        None
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct SolveStatus {
    #[serde(default)]
    pub vertexes: Vec<Vertex>,
    #[serde(default)]
    pub logs: Vec<VertexLog>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Vertex {
    pub digest: String,
    #[serde(default)]
    pub name: String,
    pub started: Option<String>,
    pub completed: Option<String>,
    #[serde(default)]
    pub cached: bool,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct VertexLog {
    pub vertex: String,
    #[serde(default)]
    pub data: String,
    /// When BuildKit received the output (RFC 3339).
    #[serde(default)]
    pub timestamp: Option<String>,
}

/// A build step as BuildKit reported it, with times in seconds since the Unix epoch.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Step {
    /// `#n`: the order in which the step first appeared in this build.
    pub number: usize,
    pub digest: String,
    pub name: String,
    pub started: Option<f64>,
    pub completed: Option<f64>,
    pub cached: bool,
    pub error: Option<String>,
    /// When the step's process printed its first output (BuildKit's log timestamp): with a
    /// `sharing=locked` cache mount, `started` includes the wait for the lock, this does not.
    pub first_output: Option<f64>,
}

impl Step {
    pub fn is_cargo(&self) -> bool {
        is_cargo_step(&self.name)
    }
    pub fn seconds(&self) -> Option<f64> {
        Some(self.completed? - self.started?)
    }
}

/// A Dockerfile step that runs cargo (the step whose execution the tests check).
pub fn is_cargo_step(name: &str) -> bool {
    name.contains(" RUN ") && name.contains("cargo build")
}

/// What happened to an image's cargo step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CargoStep {
    /// It executed in this build (for at least one cargo RUN of the build).
    Ran,
    /// A concurrent build of this engine was running the identical step: this build waited for
    /// it and took its result (BuildKit shows the step started, never finished, then CACHED).
    Shared,
    /// Every cargo RUN was taken from the layer cache.
    Cached,
    /// No cargo RUN was seen (the build failed before it, or has none).
    None,
}

impl CargoStep {
    /// Whether cargo ran for this build: here, or in the concurrent build it waited for.
    pub fn ran(self) -> bool {
        matches!(self, CargoStep::Ran | CargoStep::Shared)
    }
}

/// An update worth showing: a step started, finished, or printed a line.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    Started {
        number: usize,
        name: String,
    },
    Finished {
        number: usize,
        name: String,
        outcome: String,
    },
}

/// Folds status updates into steps, and renders the human-readable log.
#[derive(Debug, Default)]
pub struct Tracker {
    steps: Vec<Step>,
    by_digest: HashMap<String, usize>,
    /// Output of a step that does not end in a newline yet (BuildKit splits lines across chunks).
    partial: HashMap<String, String>,
}

impl Tracker {
    /// Applies one status update; returns the log text it adds and the updates worth showing.
    pub fn apply(&mut self, status: &SolveStatus) -> (String, Vec<Update>) {
        let mut log = String::new();
        let mut updates = Vec::new();
        for v in &status.vertexes {
            let index = match self.by_digest.get(&v.digest) {
                Some(&i) => i,
                None => {
                    self.steps.push(Step {
                        number: self.steps.len() + 1,
                        digest: v.digest.clone(),
                        name: v.name.clone(),
                        started: None,
                        completed: None,
                        cached: false,
                        error: None,
                        first_output: None,
                    });
                    self.by_digest
                        .insert(v.digest.clone(), self.steps.len() - 1);
                    self.steps.len() - 1
                }
            };
            let step = &mut self.steps[index];
            let was_started = step.started.is_some();
            let was_completed = step.completed.is_some();
            if step.started.is_none() {
                step.started = v.started.as_deref().and_then(parse_rfc3339);
            }
            if v.cached {
                step.cached = true;
            }
            if let Some(error) = &v.error {
                step.error = Some(error.clone());
            }
            if !was_started && (step.started.is_some() || v.cached) {
                log.push_str(&format!("#{} {}\n", step.number, step.name));
                updates.push(Update::Started {
                    number: step.number,
                    name: step.name.clone(),
                });
            }
            if let Some(done) = v.completed.as_deref().and_then(parse_rfc3339) {
                step.completed = Some(done);
                if !was_completed {
                    if let Some(rest) = self.partial.remove(&v.digest).filter(|r| !r.is_empty()) {
                        log.push_str(&format!("#{} {rest}\n", step.number));
                    }
                    let outcome = if let Some(error) = &step.error {
                        format!("ERROR: {error}")
                    } else if step.cached {
                        "CACHED".to_string()
                    } else {
                        format!("DONE {:.1}s", step.seconds().unwrap_or(0.0))
                    };
                    log.push_str(&format!("#{} {outcome}\n", step.number));
                    updates.push(Update::Finished {
                        number: step.number,
                        name: step.name.clone(),
                        outcome,
                    });
                }
            }
        }
        for entry in &status.logs {
            let number = self
                .by_digest
                .get(&entry.vertex)
                .map(|&i| self.steps[i].number)
                .unwrap_or(0);
            if let Some(&i) = self.by_digest.get(&entry.vertex) {
                let step = &mut self.steps[i];
                if step.first_output.is_none() {
                    step.first_output = entry.timestamp.as_deref().and_then(parse_rfc3339);
                }
            }
            let bytes = decode_base64(&entry.data);
            let pending = self.partial.entry(entry.vertex.clone()).or_default();
            pending.push_str(&String::from_utf8_lossy(&bytes));
            while let Some(end) = pending.find('\n') {
                let line: String = pending.drain(..=end).collect();
                log.push_str(&format!(
                    "#{number} {}\n",
                    line.trim_end_matches(['\n', '\r'])
                ));
            }
        }
        (log, updates)
    }

    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    pub fn cargo_steps(&self) -> Vec<&Step> {
        self.steps.iter().filter(|s| s.is_cargo()).collect()
    }

    pub fn cargo_step(&self) -> CargoStep {
        let cargo = self.cargo_steps();
        let executed = |s: &&Step| !s.cached && s.started.is_some();
        if cargo.is_empty() {
            CargoStep::None
        } else if cargo.iter().any(|s| executed(s) && s.completed.is_some()) {
            CargoStep::Ran
        } else if cargo.iter().any(|s| s.cached) && cargo.iter().any(executed) {
            CargoStep::Shared
        } else if cargo.iter().any(executed) {
            CargoStep::Ran
        } else {
            CargoStep::Cached
        }
    }
}

/// The image's cargo step: the one that executed, else the one that started, else the first
/// listed. BuildKit announces steps it may never start, so the first cargo step listed is not
/// necessarily the one that ran.
pub fn main_cargo_step(steps: &[Step]) -> Option<&Step> {
    let cargo = || steps.iter().filter(|s| s.is_cargo());
    cargo()
        .find(|s| !s.cached && s.started.is_some() && s.completed.is_some())
        .or_else(|| cargo().find(|s| s.started.is_some()))
        .or_else(|| cargo().next())
}

/// True when every Dockerfile step that appeared was taken from the cache (`FROM` steps, which
/// BuildKit resolves rather than caches, aside).
pub fn fully_cached(steps: &[Step]) -> bool {
    steps
        .iter()
        .filter(|s| is_instruction(&s.name) && !s.name.contains("] FROM "))
        .all(|s| s.cached)
}

/// Steps that come from a Dockerfile instruction (`[stage n/m] RUN ...`), not exports or loads.
pub fn is_instruction(name: &str) -> bool {
    name.starts_with('[') && !name.starts_with("[internal]") && !name.starts_with("[auth]")
}

/// Seconds since the Unix epoch for BuildKit's timestamps (`2026-11-29T12:26:44.046649522Z`).
pub fn parse_rfc3339(text: &str) -> Option<f64> {
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.unix_timestamp_nanos() as f64 / 1e9)
}

/// The bytes of a log entry's `data`; undecodable data is shown as it came.
fn decode_base64(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap_or_else(|_| text.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(tracker: &mut Tracker, splitter: &mut Splitter, text: &str) -> (String, Vec<Update>) {
        let mut log = String::new();
        let mut updates = Vec::new();
        for line in text.lines() {
            match splitter.push_line(line) {
                Some(Chunk::Status(s)) => {
                    let (l, u) = tracker.apply(&s);
                    log.push_str(&l);
                    updates.extend(u);
                }
                Some(Chunk::Text(t)) => log.push_str(&format!("{t}\n")),
                None => {}
            }
        }
        (log, updates)
    }

    const RUN: &str =
        "[builder 6/6] RUN --mount=type=cache,target=/cargo-home cargo build --release";

    fn status(vertex: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(vertex).unwrap();
        serde_json::to_string_pretty(&serde_json::json!({ "vertexes": [v] })).unwrap()
    }

    #[test]
    fn steps_logs_and_trailing_error_text() {
        let mut tracker = Tracker::default();
        let mut splitter = Splitter::default();
        let stream = [
            status(&format!(r#"{{"digest":"sha256:a","name":"{RUN}","started":"2026-11-29T12:00:00Z"}}"#)),
            serde_json::to_string_pretty(&serde_json::json!({"logs":[{"vertex":"sha256:a","stream":1,"data":"aGVsbG8K","timestamp":"x"}]})).unwrap(),
            status(&format!(r#"{{"digest":"sha256:a","name":"{RUN}","started":"2026-11-29T12:00:00Z","completed":"2026-11-29T12:00:30.5Z"}}"#)),
            status(r#"{"digest":"sha256:b","name":"[runtime 2/3] COPY --from=builder /out/bin/ /usr/local/bin/","started":"2026-11-29T12:00:31Z","completed":"2026-11-29T12:00:31Z","cached":true}"#),
            "ERROR: failed to solve: something".to_string(),
        ]
        .join("\n");
        let (log, updates) = feed(&mut tracker, &mut splitter, &stream);
        assert_eq!(
            log,
            format!("#1 {RUN}\n#1 hello\n#1 DONE 30.5s\n#2 [runtime 2/3] COPY --from=builder /out/bin/ /usr/local/bin/\n#2 CACHED\nERROR: failed to solve: something\n")
        );
        assert_eq!(updates.len(), 4);
        assert_eq!(tracker.cargo_step(), CargoStep::Ran);
        assert_eq!(tracker.cargo_steps()[0].seconds(), Some(30.5));
        assert!(!fully_cached(tracker.steps()));
    }

    #[test]
    fn buildx_0_14_and_later_print_one_object_per_line() {
        // the same stream as the pretty-printed one above, as buildx 0.29 prints it
        let compact = |v: &str| {
            let v: serde_json::Value = serde_json::from_str(v).unwrap();
            serde_json::to_string(&serde_json::json!({ "vertexes": [v] })).unwrap()
        };
        let stream = [
            compact(&format!(r#"{{"digest":"sha256:a","name":"{RUN}","started":"2026-11-29T12:00:00Z"}}"#)),
            r#"{"logs":[{"vertex":"sha256:a","stream":1,"data":"aGVsbG8K","timestamp":"x"}]}"#.to_string(),
            compact(&format!(r#"{{"digest":"sha256:a","name":"{RUN}","started":"2026-11-29T12:00:00Z","completed":"2026-11-29T12:00:30.5Z"}}"#)),
            "{not json}".to_string(),
            r#"{"message":"an object of something else"}"#.to_string(),
            "ERROR: failed to solve: something".to_string(),
        ]
        .join("\n");
        let mut tracker = Tracker::default();
        let (log, _) = feed(&mut tracker, &mut Splitter::default(), &stream);
        assert_eq!(
            log,
            format!("#1 {RUN}\n#1 hello\n#1 DONE 30.5s\n{{not json}}\n{{\"message\":\"an object of something else\"}}\nERROR: failed to solve: something\n")
        );
        assert_eq!(tracker.cargo_step(), CargoStep::Ran);
    }

    #[test]
    fn output_lines_split_across_chunks_are_joined() {
        let mut tracker = Tracker::default();
        let mut splitter = Splitter::default();
        let chunk = |data: &str| {
            serde_json::to_string_pretty(
                &serde_json::json!({"logs":[{"vertex":"sha256:a","data":data}]}),
            )
            .unwrap()
        };
        let stream = [
            status(&format!(r#"{{"digest":"sha256:a","name":"{RUN}","started":"2026-11-29T12:00:00Z"}}"#)),
            chunk("ICAgQ29tcGlsaW5n"),     // "   Compiling"
            chunk("IHNlcmRlCmRvbmUK"),     // " serde\ndone\n"
            chunk("dGFpbA=="),             // "tail" (no newline)
            status(&format!(r#"{{"digest":"sha256:a","name":"{RUN}","started":"2026-11-29T12:00:00Z","completed":"2026-11-29T12:00:01Z"}}"#)),
        ]
        .join("\n");
        let (log, _) = feed(&mut tracker, &mut splitter, &stream);
        assert_eq!(
            log,
            format!("#1 {RUN}\n#1    Compiling serde\n#1 done\n#1 tail\n#1 DONE 1.0s\n")
        );
    }

    #[test]
    fn a_cargo_step_waited_for_in_another_build_is_shared() {
        let mut tracker = Tracker::default();
        let mut splitter = Splitter::default();
        let stream = [
            status(&format!(r#"{{"digest":"sha256:a","name":"{RUN}","started":"2026-11-29T12:00:30Z"}}"#)),
            status(&format!(r#"{{"digest":"sha256:b","name":"{RUN}","started":"2026-11-29T12:00:31Z","completed":"2026-11-29T12:00:31Z","cached":true}}"#)),
        ]
        .join("\n");
        feed(&mut tracker, &mut splitter, &stream);
        assert_eq!(tracker.cargo_step(), CargoStep::Shared);
    }

    #[test]
    fn cached_cargo_step() {
        let mut tracker = Tracker::default();
        let mut splitter = Splitter::default();
        feed(
            &mut tracker,
            &mut splitter,
            &status(&format!(
                r#"{{"digest":"sha256:a","name":"{RUN}","started":"2026-11-29T12:00:00Z","completed":"2026-11-29T12:00:00Z","cached":true}}"#
            )),
        );
        assert_eq!(tracker.cargo_step(), CargoStep::Cached);
        assert!(fully_cached(tracker.steps()));
    }

    #[test]
    fn errors_are_reported_on_the_step() {
        let mut tracker = Tracker::default();
        let mut splitter = Splitter::default();
        let (log, _) = feed(
            &mut tracker,
            &mut splitter,
            &status(&format!(
                r#"{{"digest":"sha256:a","name":"{RUN}","started":"2026-11-29T12:00:00Z","completed":"2026-11-29T12:00:01Z","error":"exit code: 101"}}"#
            )),
        );
        assert!(log.contains("#1 ERROR: exit code: 101"), "{log}");
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(parse_rfc3339("2000-03-01T00:00:01.5Z"), Some(951_868_801.5));
        assert_eq!(
            parse_rfc3339("2000-03-01T01:00:01+01:00"),
            Some(951_868_801.0)
        );
        assert_eq!(parse_rfc3339("garbage"), None);
    }

    #[test]
    fn base64() {
        assert_eq!(decode_base64("aGVsbG8K"), b"hello\n");
        assert_eq!(decode_base64("YQ=="), b"a");
    }
}
