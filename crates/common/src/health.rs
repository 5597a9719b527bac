//! The health report every service prints for `--self-check` (and the API serves on `/health`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Ok,
    Fail,
}

/// One named check, e.g. `config` or `runtime:python`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub status: CheckStatus,
    pub detail: String,
}

impl Check {
    pub fn ok(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status: CheckStatus::Ok,
            detail: detail.into(),
        }
    }

    pub fn fail(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status: CheckStatus::Fail,
            detail: detail.into(),
        }
    }

    pub fn from_result<T, E: std::fmt::Display>(
        name: impl Into<String>,
        result: &Result<T, E>,
        ok_detail: impl FnOnce(&T) -> String,
    ) -> Self {
        match result {
            Ok(value) => Self::ok(name, ok_detail(value)),
            Err(err) => Self::fail(name, err.to_string()),
        }
    }
}

/// `{"service":"attune-api","version":"0.1.0","status":"ok","checks":[...]}`.
/// `status` is `fail` as soon as one check fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    pub service: String,
    pub version: String,
    pub status: CheckStatus,
    pub checks: Vec<Check>,
}

impl HealthReport {
    pub fn new(service: impl Into<String>, version: impl Into<String>, checks: Vec<Check>) -> Self {
        let status = if checks.iter().all(|c| c.status == CheckStatus::Ok) {
            CheckStatus::Ok
        } else {
            CheckStatus::Fail
        };
        Self {
            service: service.into(),
            version: version.into(),
            status,
            checks,
        }
    }

    pub fn is_ok(&self) -> bool {
        self.status == CheckStatus::Ok
    }

    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.status == CheckStatus::Fail)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a HealthReport always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_checks() {
        let ok = HealthReport::new("attune-x", "0.1.0", vec![Check::ok("config", "fine")]);
        assert!(ok.is_ok());
        let bad = HealthReport::new(
            "attune-x",
            "0.1.0",
            vec![
                Check::ok("config", "fine"),
                Check::fail("runtime:node", "missing"),
            ],
        );
        assert!(!bad.is_ok());
        assert_eq!(bad.failures().count(), 1);
        let empty = HealthReport::new("attune-x", "0.1.0", vec![]);
        assert!(empty.is_ok());
    }

    #[test]
    fn json_shape_and_round_trip() {
        let report = HealthReport::new("attune-api", "0.1.0", vec![Check::fail("config", "bad")]);
        let value: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "service": "attune-api",
                "version": "0.1.0",
                "status": "fail",
                "checks": [{"name": "config", "status": "fail", "detail": "bad"}]
            })
        );
        assert_eq!(
            serde_json::from_value::<HealthReport>(value).unwrap(),
            report
        );
    }

    #[test]
    fn from_result() {
        let good: Result<u8, String> = Ok(3);
        let bad: Result<u8, String> = Err("nope".into());
        assert_eq!(
            Check::from_result("n", &good, |n| format!("n={n}")),
            Check::ok("n", "n=3")
        );
        assert_eq!(
            Check::from_result("n", &bad, |_| String::new()),
            Check::fail("n", "nope")
        );
    }
}
