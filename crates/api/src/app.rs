//! The HTTP API: routes, handlers and the in-memory execution store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use attune_common::{
    now_unix_ms, Check, Execution, ExecutionRequest, ExecutionStatus, HealthReport, IdGenerator,
};

use crate::SERVICE;

/// At most this many executions are kept; older ones are evicted first.
pub const STORE_CAPACITY: usize = 10_000;

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    ids: IdGenerator,
    executions: Mutex<Store>,
}

#[derive(Default)]
struct Store {
    by_id: HashMap<String, Execution>,
    order: std::collections::VecDeque<String>,
}

impl Default for AppState {
    fn default() -> Self {
        Self::new()
    }
}

impl AppState {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                ids: IdGenerator::new("exe"),
                executions: Mutex::new(Store::default()),
            }),
        }
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        // a panic while holding the lock cannot leave the map inconsistent: keep serving
        self.inner
            .executions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn insert(&self, request: ExecutionRequest) -> Execution {
        let execution = Execution {
            id: self.inner.ids.next_id(),
            status: ExecutionStatus::Requested,
            created_at_unix_ms: now_unix_ms(),
            request,
        };
        let mut store = self.store();
        while store.order.len() >= STORE_CAPACITY {
            if let Some(old) = store.order.pop_front() {
                store.by_id.remove(&old);
            }
        }
        store.order.push_back(execution.id.clone());
        store.by_id.insert(execution.id.clone(), execution.clone());
        execution
    }

    pub fn get(&self, id: &str) -> Option<Execution> {
        self.store().by_id.get(id).cloned()
    }

    pub fn list(&self) -> Vec<Execution> {
        let store = self.store();
        store
            .order
            .iter()
            .filter_map(|id| store.by_id.get(id).cloned())
            .collect()
    }

    pub fn count(&self) -> usize {
        self.store().by_id.len()
    }
}

/// A JSON error body: `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/executions", get(list_executions).post(create_execution))
        .route("/executions/{id}", get(get_execution))
        .fallback(not_found)
        .with_state(state)
}

pub fn health_report(state: &AppState) -> HealthReport {
    HealthReport::new(
        SERVICE,
        attune_common::VERSION,
        vec![Check::ok(
            "store",
            format!("in-memory, {} execution(s)", state.count()),
        )],
    )
}

async fn health(State(state): State<AppState>) -> Json<HealthReport> {
    Json(health_report(&state))
}

async fn create_execution(
    State(state): State<AppState>,
    payload: Result<Json<ExecutionRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) =
        payload.map_err(|rejection| ApiError::new(rejection.status(), rejection.body_text()))?;
    request
        .validate()
        .map_err(|msg| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, msg))?;
    let execution = state.insert(request);
    tracing::info!(
        id = %execution.id,
        action = %execution.request.action,
        runtime = %execution.request.runtime,
        "execution requested"
    );
    let location = format!("/executions/{}", execution.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(execution),
    )
        .into_response())
}

async fn get_execution(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Execution>, ApiError> {
    state
        .get(&id)
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("execution {id} not found")))
}

async fn list_executions(State(state): State<AppState>) -> Json<Vec<Execution>> {
    Json(state.list())
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not found")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use serde_json::Value;
    use tower::ServiceExt;

    async fn send(app: &Router, req: Request<Body>) -> (StatusCode, Value) {
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)))
        };
        (status, value)
    }

    fn post(body: &str) -> Request<Body> {
        Request::post("/executions")
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    }

    fn get_req(uri: &str) -> Request<Body> {
        Request::get(uri).body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn health_is_ok() {
        let app = router(AppState::new());
        let (status, body) = send(&app, get_req("/health")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["service"], "attune-api");
        assert_eq!(body["version"], attune_common::VERSION);
        assert_eq!(body["status"], "ok");
        assert!(body["checks"].is_array());
    }

    #[tokio::test]
    async fn create_then_get() {
        let app = router(AppState::new());
        let (status, created) = send(
            &app,
            post(r#"{"action":"core.echo","runtime":"shell","code":"echo hi"}"#),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(created["status"], "requested");
        assert_eq!(created["request"]["runtime"], "shell");
        let id = created["id"].as_str().unwrap().to_string();
        assert!(id.starts_with("exe-"));

        let (status, fetched) = send(&app, get_req(&format!("/executions/{id}"))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(fetched, created);

        let (status, list) = send(&app, get_req("/executions")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list.as_array().unwrap().len(), 1);

        let (_, health) = send(&app, get_req("/health")).await;
        assert!(health["checks"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("1 execution"));
    }

    #[tokio::test]
    async fn unknown_execution_is_404_json() {
        let app = router(AppState::new());
        let (status, body) = send(&app, get_req("/executions/nope")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body["error"].as_str().unwrap().contains("nope"));
        let (status, body) = send(&app, get_req("/no/such/route")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"], "not found");
    }

    #[tokio::test]
    async fn invalid_requests_are_4xx_json() {
        let app = router(AppState::new());
        for bad in [
            "{not json",
            r#"{"action":"a"}"#,
            r#"{"action":"a","runtime":"ruby"}"#,
            r#"{"action":"","runtime":"shell"}"#,
            r#"{"action":"a","runtime":"shell","parameters":[1]}"#,
        ] {
            let (status, body) = send(&app, post(bad)).await;
            assert!(status.is_client_error(), "{bad}: {status}");
            assert!(body["error"].is_string(), "{bad}: {body}");
        }
        // wrong content type
        let req = Request::post("/executions")
            .header("content-type", "text/plain")
            .body(Body::from(r#"{"action":"a","runtime":"shell"}"#))
            .unwrap();
        let (status, _) = send(&app, req).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[test]
    fn store_evicts_oldest_beyond_capacity() {
        let state = AppState::new();
        let req = ExecutionRequest {
            action: "a".into(),
            runtime: attune_common::Runtime::Shell,
            code: None,
            parameters: Value::Null,
        };
        let first = state.insert(req.clone());
        for _ in 0..STORE_CAPACITY {
            state.insert(req.clone());
        }
        assert_eq!(state.count(), STORE_CAPACITY);
        assert!(state.get(&first.id).is_none());
    }
}
