//! The web console's login: `POST /console/login` checks a user's password and starts a browser session (an HttpOnly,
//! SameSite=Strict cookie the authentication layer accepts, `auth.rs`), `POST /console/logout` ends it, and
//! `GET /console/api/me` says who the caller is and what the console may offer them: READ and WRITE on each system
//! asked about (`?systems=console,wedding`), so the page hides what the server would refuse.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use weir_security::{Operation, ResourceType, Security, ANONYMOUS};

use crate::auth::{session_cookie, Access, LOGIN_PATH, SESSION_COOKIE};
use crate::error::{ApiError, ErrorCode};
use crate::HttpConfig;

/// What the session routes need of the server's configuration.
#[derive(Clone)]
pub(crate) struct Sessions {
    security: Arc<Security>,
    /// The listener uses TLS: the cookie is `Secure`.
    tls: bool,
    /// Logins checked at once, at most one a core (each a PBKDF2 run when the password was not seen before): a flood
    /// of wrong passwords waits its turn rather than taking every core, as the authentication layer's checks do.
    checks: Arc<tokio::sync::Semaphore>,
}

/// The routes, for the API over the embedded broker and on a cluster alike.
pub(crate) fn routes(config: &HttpConfig) -> Router {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let checks = Arc::new(tokio::sync::Semaphore::new(cores));
    let state = Sessions { security: config.security.clone(), tls: config.tls.is_some(), checks };
    Router::new()
        .route(LOGIN_PATH, post(login))
        .route("/console/logout", post(logout))
        .route("/console/api/me", get(me))
        .with_state(state)
}

#[derive(Debug, Deserialize)]
pub(crate) struct Login {
    user: String,
    password: String,
}

/// The cookie for a session id: sent back on every request to this server, never readable by scripts nor sent by
/// another site's page; `Secure` when the listener uses TLS.
fn cookie(value: &str, max_age_s: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text = format!("{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}");
    // Hex ids and fixed attributes: always a valid header value.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("weir_session=; Max-Age=0"))
}

/// `POST /console/login {"user", "password"}`: 200 with the principal and the session cookie, or 401.
pub(crate) async fn login(
    State(state): State<Sessions>,
    body: Result<Json<Login>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(login)) = body else {
        return ApiError::new(ErrorCode::BadRequest, "send {\"user\": ..., \"password\": ...} as JSON").into_response();
    };
    let security = state.security.clone();
    // The semaphore is never closed.
    let Ok(permit) = state.checks.clone().acquire_owned().await else {
        return ApiError::internal("the password checks stopped").into_response();
    };
    // PBKDF2: milliseconds of CPU, off the async workers.
    let checked = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        security.check_password(&login.user, &login.password)
    })
    .await;
    let principal = match checked {
        Ok(Some(p)) => p,
        Ok(None) => {
            metrics::counter!("weir_http_authentication_failures_total", "reason" => "wrong_password").increment(1);
            return ApiError::new(ErrorCode::Unauthenticated, "wrong user name or password").into_response();
        }
        Err(e) => return ApiError::internal(format!("checking the password failed: {e}")).into_response(),
    };
    let id = state.security.sessions.start(&principal);
    let lifetime = weir_security::sessions::SESSION_LIFETIME.as_secs();
    let mut response = Json(json!({"principal": principal, "expires_in_seconds": lifetime})).into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie(&id, lifetime, state.tls));
    response
}

/// `POST /console/logout`: ends the session of the cookie sent, and clears the cookie.
pub(crate) async fn logout(State(state): State<Sessions>, headers: HeaderMap) -> Response {
    let ended = session_cookie(&headers).is_some_and(|id| state.security.sessions.end(id));
    let mut response = Json(json!({"logged_out": ended})).into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie("", 0, state.tls));
    response
}

#[derive(Debug, Deserialize)]
pub(crate) struct MeQuery {
    /// Systems to say READ and WRITE of, comma-separated (`console` by default).
    systems: Option<String>,
}

/// `GET /console/api/me?systems=console,wedding`: the caller's principal, whether they came with a session, and what
/// they may do on each system named.
pub(crate) async fn me(
    State(state): State<Sessions>,
    access: Access,
    headers: HeaderMap,
    Query(q): Query<MeQuery>,
) -> Response {
    let mut systems = Map::new();
    for name in q.systems.as_deref().unwrap_or("console").split(',').map(str::trim).filter(|n| !n.is_empty()).take(64) {
        let read = access.allows(Operation::Read, ResourceType::System, name);
        let write = access.allows(Operation::Write, ResourceType::System, name);
        systems.insert(name.to_string(), json!({"read": read, "write": write}));
    }
    let session = session_cookie(&headers).is_some_and(|id| state.security.check_session(id).is_some());
    let body = json!({
        "principal": access.principal(),
        "anonymous": access.principal() == ANONYMOUS,
        "session": session,
        "authentication_required": state.security.requires_authentication(),
        "systems": Value::Object(systems),
    });
    (StatusCode::OK, Json(body)).into_response()
}
