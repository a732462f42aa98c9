//! `GET /health` (the process answers), `GET /ready` (its dependencies answer:
//! Postgres and Redis always, RabbitMQ for roles that use it) and `GET /metrics`.

use super::error::status_of;
use flashtix_model::ErrorCode;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::AppState;
use crate::orders::settled;
use crate::runtime::metrics;
use crate::saga::outbox;

/// How long `/ready` waits for each dependency.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Alive, and which roles it runs: how `flashtix watch` knows what each
/// process it is pointed at does.
pub async fn health(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let roles: Vec<&str> = state.roles.iter().map(|role| role.name()).collect();
    Json(json!({"status": "ok", "roles": roles}))
}

pub async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let postgres = probe(async {
        sqlx::query("SELECT 1")
            .execute(&state.pool)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    });
    let redis = probe(async { state.gate.ping().await.map_err(|e| e.to_string()) });
    let rabbitmq = async {
        let url = state.amqp_url.as_deref()?;
        Some(
            probe(async {
                let connection = crate::saga::broker::connect(url)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = connection.close(200, "ready check".into()).await;
                Ok(())
            })
            .await,
        )
    };
    let (postgres, redis, rabbitmq) = tokio::join!(postgres, redis, rabbitmq);
    let ready = [&postgres, &redis]
        .into_iter()
        .chain(rabbitmq.as_ref())
        .all(|check| check == "ok");
    let mut checks = json!({"postgres": postgres, "redis": redis});
    if let Some(rabbitmq) = rabbitmq {
        checks["rabbitmq"] = json!(rabbitmq);
    }
    if ready {
        (
            StatusCode::OK,
            Json(json!({"status": "ready", "checks": checks})),
        )
            .into_response()
    } else {
        let body = json!({
            "error": {"code": ErrorCode::NotReady.name(), "message": "a dependency is unreachable"},
            "checks": checks,
        });
        (status_of(ErrorCode::NotReady), Json(body)).into_response()
    }
}

async fn probe(check: impl std::future::Future<Output = Result<(), String>>) -> String {
    match tokio::time::timeout(PROBE_TIMEOUT, check).await {
        Ok(Ok(())) => "ok".into(),
        Ok(Err(error)) => error,
        Err(_) => format!("no answer within {PROBE_TIMEOUT:?}"),
    }
}

/// The webhook deliveries waiting and dead (one index scan: the
/// undelivered ones are few, and the partial index holds the waiting).
async fn webhook_backlog(pool: &sqlx::PgPool) -> sqlx::Result<(i64, i64)> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE dead_at IS NULL), count(*) FILTER (WHERE dead_at IS NOT NULL)
         FROM webhook_deliveries WHERE delivered_at IS NULL",
    )
    .fetch_one(pool)
    .await
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    // Read from the database, so any process reports it; the last reading
    // stays when the database does not answer promptly.
    let depth = tokio::time::timeout(PROBE_TIMEOUT, outbox::depth(&state.pool));
    let pending = tokio::time::timeout(PROBE_TIMEOUT, settled::backlog(&state.pool));
    let hooks = tokio::time::timeout(PROBE_TIMEOUT, webhook_backlog(&state.pool));
    let (depth, pending, hooks) = tokio::join!(depth, pending, hooks);
    if let Ok(Ok((waiting, dead))) = hooks {
        state.metrics.set_webhook_deliveries(waiting, dead);
    }
    if let Ok(Ok(depth)) = depth {
        state.metrics.set_outbox_depth(depth);
    }
    if let Ok(Ok(pending)) = pending {
        let oldest = Duration::from_secs_f64(pending.oldest_seconds.max(0.0));
        state.metrics.set_pending(pending.pending, oldest);
    }
    let text = state.metrics.render();
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
}
