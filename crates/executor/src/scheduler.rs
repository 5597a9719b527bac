//! The scheduling policy: a FIFO queue in front of a global concurrency limit, over a pool of
//! workers that each offer one runtime.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use attune_common::{now_unix_ms, ExecutionRequest, IdGenerator, Runtime};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecisionKind {
    /// Assigned to a worker now.
    Scheduled,
    /// Waiting for a free slot (`queue_position` is 1-based).
    Queued,
    /// Can never run here (`reason` says why).
    Rejected,
}

/// One scheduling decision, printed as a JSON line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub id: String,
    pub action: String,
    pub runtime: Runtime,
    pub decision: DecisionKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Executions running after this decision.
    pub running: usize,
    pub decided_at_unix_ms: u64,
}

/// The worker pool name that serves `runtime` (matches the worker image variants).
pub fn worker_for(runtime: Runtime) -> String {
    format!("worker-{runtime}")
}

pub struct Scheduler {
    max_concurrency: usize,
    runtimes: Vec<Runtime>,
    ids: IdGenerator,
    running: HashMap<String, Runtime>,
    queue: VecDeque<(String, ExecutionRequest)>,
}

impl Scheduler {
    pub fn new(max_concurrency: usize, runtimes: Vec<Runtime>) -> Self {
        Self {
            max_concurrency: max_concurrency.max(1),
            runtimes,
            ids: IdGenerator::new("exe"),
            running: HashMap::new(),
            queue: VecDeque::new(),
        }
    }

    pub fn running(&self) -> usize {
        self.running.len()
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    fn decision(&self, id: String, request: &ExecutionRequest, kind: DecisionKind) -> Decision {
        Decision {
            id,
            action: request.action.clone(),
            runtime: request.runtime,
            decision: kind,
            worker: None,
            queue_position: None,
            reason: None,
            running: self.running.len(),
            decided_at_unix_ms: now_unix_ms(),
        }
    }

    /// Accepts a new request: scheduled if a slot is free, queued otherwise, rejected if it is
    /// invalid or no worker offers its runtime.
    pub fn submit(&mut self, request: ExecutionRequest) -> Decision {
        let id = self.ids.next_id();
        let reject = |this: &Self, reason: String| Decision {
            reason: Some(reason),
            ..this.decision(id.clone(), &request, DecisionKind::Rejected)
        };
        if let Err(reason) = request.validate() {
            return reject(self, reason);
        }
        if !self.runtimes.contains(&request.runtime) {
            let offered: Vec<&str> = self.runtimes.iter().map(|r| r.as_str()).collect();
            return reject(
                self,
                format!(
                    "no worker offers runtime {} (pool: {})",
                    request.runtime,
                    offered.join(",")
                ),
            );
        }
        if self.running.len() < self.max_concurrency {
            self.start(id, &request)
        } else {
            self.queue.push_back((id.clone(), request.clone()));
            Decision {
                queue_position: Some(self.queue.len()),
                ..self.decision(id, &request, DecisionKind::Queued)
            }
        }
    }

    fn start(&mut self, id: String, request: &ExecutionRequest) -> Decision {
        self.running.insert(id.clone(), request.runtime);
        Decision {
            worker: Some(worker_for(request.runtime)),
            ..self.decision(id, request, DecisionKind::Scheduled)
        }
    }

    /// Marks a running execution finished and schedules queued ones into the freed slot(s).
    pub fn complete(&mut self, id: &str) -> Result<Vec<Decision>, String> {
        if self.running.remove(id).is_none() {
            return Err(format!("execution {id} is not running"));
        }
        let mut started = Vec::new();
        while self.running.len() < self.max_concurrency {
            let Some((id, request)) = self.queue.pop_front() else {
                break;
            };
            started.push(self.start(id, &request));
        }
        Ok(started)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn req(action: &str, runtime: Runtime) -> ExecutionRequest {
        ExecutionRequest {
            action: action.into(),
            runtime,
            code: Some("true".into()),
            parameters: Value::Null,
        }
    }

    #[test]
    fn respects_max_concurrency_then_queues_fifo() {
        let mut s = Scheduler::new(2, Runtime::ALL.to_vec());
        let a = s.submit(req("a", Runtime::Shell));
        let b = s.submit(req("b", Runtime::Python));
        let c = s.submit(req("c", Runtime::Node));
        let d = s.submit(req("d", Runtime::Shell));
        assert_eq!(a.decision, DecisionKind::Scheduled);
        assert_eq!(a.worker.as_deref(), Some("worker-shell"));
        assert_eq!(b.decision, DecisionKind::Scheduled);
        assert_eq!(b.worker.as_deref(), Some("worker-python"));
        assert_eq!(b.running, 2);
        assert_eq!(c.decision, DecisionKind::Queued);
        assert_eq!(c.queue_position, Some(1));
        assert_eq!(d.queue_position, Some(2));
        assert_eq!((s.running(), s.queued()), (2, 2));

        // freeing one slot starts the head of the queue, in order
        let started = s.complete(&a.id).unwrap();
        assert_eq!(started.len(), 1);
        assert_eq!(started[0].id, c.id);
        assert_eq!(started[0].decision, DecisionKind::Scheduled);
        assert_eq!(started[0].worker.as_deref(), Some("worker-node"));
        let started = s.complete(&b.id).unwrap();
        assert_eq!(started[0].id, d.id);
        assert_eq!((s.running(), s.queued()), (2, 0));
        assert!(s.complete(&c.id).unwrap().is_empty());
        assert!(s.complete(&c.id).is_err(), "completing twice");
        assert!(s.complete(&a.id).is_err(), "a was already completed");
    }

    #[test]
    fn rejects_runtimes_outside_the_pool_and_invalid_requests() {
        let mut s = Scheduler::new(1, vec![Runtime::Shell]);
        let r = s.submit(req("a", Runtime::Python));
        assert_eq!(r.decision, DecisionKind::Rejected);
        assert!(r.reason.unwrap().contains("python"));
        let r = s.submit(req("  ", Runtime::Shell));
        assert_eq!(r.decision, DecisionKind::Rejected);
        // rejections take no slot
        assert_eq!(s.running(), 0);
        assert_eq!(
            s.submit(req("ok", Runtime::Shell)).decision,
            DecisionKind::Scheduled
        );
    }

    #[test]
    fn ids_are_unique_and_decisions_serialise() {
        let mut s = Scheduler::new(1, Runtime::ALL.to_vec());
        let a = s.submit(req("a", Runtime::Shell));
        let b = s.submit(req("b", Runtime::Shell));
        assert_ne!(a.id, b.id);
        let v = serde_json::to_value(&b).unwrap();
        assert_eq!(v["decision"], "queued");
        assert_eq!(v["queue_position"], 1);
        assert!(v.get("worker").is_none());
        assert_eq!(serde_json::from_value::<Decision>(v).unwrap(), b);
    }

    #[test]
    fn zero_concurrency_is_clamped_to_one() {
        let mut s = Scheduler::new(0, Runtime::ALL.to_vec());
        assert_eq!(
            s.submit(req("a", Runtime::Shell)).decision,
            DecisionKind::Scheduled
        );
    }
}
