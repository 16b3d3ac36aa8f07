//! The routes of `serve`: the page, and `/api/v1/...` with bearer-token checks, time limits,
//! body limits, security headers, and errors as JSON `{"error": ...}` with a fitting status.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

mod records;

use records::{export, records};

use super::camera::CameraFeed;
use super::page;
use super::pool::{ClassifyPool, JobFailure, JobInput, Recorder, Reply};
use super::ServerInfo;
use crate::ensemble::Ensemble;
use crate::record::{Outcome, Rejected, DECISION_SUPPORT_NOTICE};

/// A frame older than this is not "the current frame" for a capture.
const CURRENT_FRAME_AGE: Duration = Duration::from_secs(3);

/// Everything the handlers share.
pub struct AppState {
    pub ensemble: Arc<Ensemble>,
    pub pool: Arc<ClassifyPool>,
    pub recorder: Arc<Recorder>,
    pub camera: Option<Arc<CameraFeed>>,
    pub journal_path: Option<PathBuf>,
    pub token: Option<String>,
    pub info: ServerInfo,
    pub max_body_bytes: usize,
}

type Shared = State<Arc<AppState>>;

/// An API error: a status and a JSON body `{"error": message, ...}`.
struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: Option<u64>,
    extra: Option<Value>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
            extra: None,
        }
    }

    fn busy(message: impl Into<String>, seconds: u64) -> ApiError {
        ApiError {
            retry_after: Some(seconds),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if let (Some(Value::Object(extra)), Value::Object(map)) = (self.extra, &mut body) {
            map.extend(extra);
        }
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// The router: the page at `/`, the API under `/api/v1`.
pub fn router(state: Arc<AppState>, request_timeout: Duration, tls: bool) -> Router {
    let limited = Router::new()
        .route("/health", get(health))
        .route("/classify", post(classify))
        .route("/capture", post(capture))
        .route("/records", get(records))
        .route("/records/export", get(export))
        .route("/camera", get(camera_status))
        .route("/frame", get(frame))
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            within(request_timeout, request, next)
        }));
    let api = limited
        .route("/preview", get(preview))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such API route") })
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            require_token,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(
            state.max_body_bytes.saturating_add(64 << 10),
        ));
    Router::new()
        .route("/", get(page::index))
        .route("/app.js", get(page::script))
        .route("/style.css", get(page::style))
        .route("/icon.svg", get(page::icon))
        .nest("/api/v1", api)
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            security_headers(tls, request, next)
        }))
        .with_state(state)
}

async fn within(limit: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request took longer than {} ms; send the image again",
                limit.as_millis()
            ),
        )
        .into_response(),
    }
}

async fn security_headers(tls: bool, request: Request, next: Next) -> Response {
    let api = request.uri().path().starts_with("/api/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if api {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if tls {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    response
}

/// Equal in time that does not depend on where the tokens differ (their hashes are compared).
fn same_token(given: &str, expected: &str) -> bool {
    let (a, b) = (Sha256::digest(given), Sha256::digest(expected));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

async fn require_token(State(state): Shared, request: Request, next: Next) -> Response {
    if let Some(expected) = &state.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| same_token(g, expected)) {
            let mut response = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this API needs `Authorization: Bearer <token>` with the device's token (the page asks for it once)",
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    next.run(request).await
}

async fn health(State(state): Shared) -> Json<Value> {
    let manifest = &state.ensemble.manifest;
    let camera = state.camera.as_ref().map(|feed| {
        json!({
            "source": feed.source_name,
            "frames": feed.frames(),
            "state": feed.state(),
        })
    });
    let (failures, error) = state.recorder.trouble();
    let journal = state
        .journal_path
        .as_ref()
        .map(|path| json!({ "path": path, "failures": failures, "error": error }));
    Json(json!({
        "status": "ok",
        "ensemble": {
            "name": manifest.name,
            "version": manifest.version,
            "id": manifest.id(),
            "status": manifest.status,
            "malignant_classes": manifest
                .classes
                .iter()
                .filter(|c| c.malignant)
                .map(|c| c.code.as_str())
                .collect::<Vec<_>>(),
        },
        "uptime_s": state.info.started.elapsed().as_secs_f64(),
        "queue": {
            "depth": state.pool.queue_depth(),
            "capacity": state.pool.capacity(),
            "workers": state.pool.workers(),
            "busy": state.pool.busy(),
        },
        "camera": camera,
        "journal": journal,
        "notice": DECISION_SUPPORT_NOTICE,
    }))
}

/// A label for an uploaded file: its base name, printable, at most 80 characters. It names the
/// record; no path from a request is ever opened.
fn upload_label(filename: Option<&str>) -> String {
    let base = filename
        .and_then(|f| f.rsplit(['/', '\\']).next())
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(80)
        .collect::<String>();
    if base.trim().is_empty() {
        "upload".into()
    } else {
        format!("upload:{base}")
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the image is over the {limit}-byte limit; send a smaller export of the photo"),
    )
}

/// Reads a body of at most `limit` bytes.
async fn read_limited(body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut body = body;
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > limit {
                return Err(too_large(limit));
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes)
}

/// The image of a `multipart/form-data` body: its field `image`.
async fn read_multipart(
    request: Request,
    state: &Arc<AppState>,
) -> Result<(Vec<u8>, String), ApiError> {
    let limit = state.max_body_bytes;
    let multipart_error = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large(limit)
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("cannot read the form: {}", e.body_text()),
            )
        }
    };
    let mut multipart = Multipart::from_request(request, state)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        if field.name() != Some("image") {
            continue;
        }
        let label = upload_label(field.file_name());
        let mut bytes = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
            if bytes.len() + chunk.len() > limit {
                return Err(too_large(limit));
            }
            bytes.extend_from_slice(&chunk);
        }
        return Ok((bytes, label));
    }
    Err(ApiError::new(
        StatusCode::BAD_REQUEST,
        "the form has no field `image`; send the photo as field `image`",
    ))
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Sends a job to the pool and waits for its result.
async fn classify_on_pool(
    state: &AppState,
    input: JobInput,
    label: String,
    source: String,
) -> Result<Response, ApiError> {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    state
        .pool
        .submit(input, label, source, Reply::Channel(sender))
        .map_err(|_| {
            ApiError::busy(
                format!(
                    "the device is busy ({} classifications waiting); try again in a moment",
                    state.pool.queue_depth()
                ),
                1,
            )
        })?;
    match receiver.await {
        Ok(Ok(classified)) => Ok(Json(classified).into_response()),
        Ok(Err(JobFailure::Unreadable(message))) => {
            Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message))
        }
        Ok(Err(JobFailure::Inference(message))) => {
            Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message))
        }
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        )),
    }
}

async fn classify(State(state): Shared, request: Request) -> Result<Response, ApiError> {
    let kind = content_type(request.headers());
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.max_body_bytes as u64 + (64 << 10)) {
        return Err(too_large(state.max_body_bytes));
    }
    let (bytes, label) = match kind.as_str() {
        "multipart/form-data" => read_multipart(request, &state).await?,
        "image/jpeg" | "image/png" | "application/octet-stream" => (
            read_limited(request.into_body(), state.max_body_bytes).await?,
            "upload".to_string(),
        ),
        other => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "content type `{other}` is not an image; send image/jpeg or image/png, or multipart/form-data with the photo in field `image`"
                ),
            ))
        }
    };
    if bytes.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the image is empty (0 bytes); send the photo's bytes",
        ));
    }
    classify_on_pool(
        &state,
        JobInput::Encoded(bytes),
        label,
        "serve:upload".into(),
    )
    .await
}

fn live_camera(state: &AppState) -> Result<&Arc<CameraFeed>, ApiError> {
    state.camera.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "this server has no camera or other frame source; start `dermedge serve --source camera`, or upload a photo",
        )
    })
}

async fn capture(State(state): Shared) -> Result<Response, ApiError> {
    let feed = live_camera(&state)?;
    let latest = feed
        .latest()
        .filter(|f| f.at.elapsed() <= CURRENT_FRAME_AGE);
    let Some(latest) = latest else {
        let detail = match feed.state() {
            super::camera::CameraState::Gone { detail } => detail,
            other => format!("{other:?}").to_lowercase(),
        };
        return Err(ApiError::busy(
            format!("the camera is not delivering frames ({detail}); check its cable"),
            2,
        ));
    };
    if !latest.verdict.accepted() {
        let rejected = Outcome::Rejected(Rejected {
            input: latest.origin.clone(),
            sha256: latest.sha256.clone(),
            reasons: latest.verdict.reasons.clone(),
            measures: latest.verdict.measures.clone(),
        });
        state.recorder.record(&feed.source_name, &rejected);
        return Err(ApiError {
            extra: Some(json!({
                "reasons": latest.verdict.reasons,
                "gate": latest.verdict.label(),
                "sha256": latest.sha256,
            })),
            ..ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "the quality gate refused the frame: {}",
                    latest.verdict.reasons.join("; ")
                ),
            )
        });
    }
    classify_on_pool(
        &state,
        JobInput::Frame {
            image: latest.image.clone(),
            sha256: latest.sha256.clone(),
        },
        latest.origin.clone(),
        feed.source_name.clone(),
    )
    .await
}

async fn camera_status(State(state): Shared) -> Result<Json<Value>, ApiError> {
    let feed = live_camera(&state)?;
    let latest = feed.latest();
    let automatic = feed
        .automatic()
        .map(|(n, outcome)| json!({ "sequence": n, "record": outcome }));
    Ok(Json(json!({
        "source": feed.source_name,
        "state": feed.state(),
        "trigger": feed.trigger_mode,
        "frames": feed.frames(),
        "frame": latest.as_ref().map(|f| json!({
            "number": f.number,
            "age_ms": f.at.elapsed().as_millis() as u64,
            "gate": f.verdict.label(),
            "accepted": f.verdict.accepted(),
            "reasons": f.verdict.reasons,
            "measures": f.verdict.measures,
        })),
        "automatic": automatic,
    })))
}

async fn frame(State(state): Shared) -> Result<Response, ApiError> {
    let feed = live_camera(&state)?;
    let latest = feed
        .latest()
        .ok_or_else(|| ApiError::busy("no frame has arrived from the camera yet", 1))?;
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg")),
            (
                header::HeaderName::from_static("x-frame-number"),
                HeaderValue::from(latest.number),
            ),
        ],
        latest.preview.clone(),
    )
        .into_response())
}

const BOUNDARY: &str = "dermedgeframe";

async fn preview(State(state): Shared) -> Result<Response, ApiError> {
    let feed = Arc::clone(live_camera(&state)?);
    let updates = feed.updates.subscribe();
    let stream = futures_util::stream::unfold(
        (updates, feed, true),
        |(mut updates, feed, first)| async move {
            if !first {
                updates.changed().await.ok()?;
            }
            let frame = match feed.latest() {
                Some(f) => f,
                None => {
                    updates.changed().await.ok()?;
                    feed.latest()?
                }
            };
            let mut part = format!(
                "--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\nX-Frame-Number: {}\r\nX-Gate: {}\r\n\r\n",
                frame.preview.len(),
                frame.number,
                frame.verdict.label()
            )
            .into_bytes();
            part.extend_from_slice(&frame.preview);
            part.extend_from_slice(b"\r\n");
            Some((
                Ok::<_, Infallible>(Bytes::from(part)),
                (updates, feed, false),
            ))
        },
    );
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("multipart/x-mixed-replace; boundary=dermedgeframe"),
        )],
        Body::from_stream(stream),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_labels_never_carry_a_path() {
        assert_eq!(upload_label(None), "upload");
        assert_eq!(upload_label(Some("")), "upload");
        assert_eq!(upload_label(Some("../../etc/passwd")), "upload:passwd");
        assert_eq!(
            upload_label(Some("C:\\photos\\mole 1.jpg")),
            "upload:mole 1.jpg"
        );
        assert_eq!(upload_label(Some("a\u{7}b.png")), "upload:ab.png");
        assert_eq!(
            upload_label(Some(&"x".repeat(500))).len(),
            "upload:".len() + 80
        );
    }

    #[test]
    fn tokens_compare_by_content_only() {
        assert!(same_token("a-long-device-token", "a-long-device-token"));
        assert!(!same_token("a-long-device-tokem", "a-long-device-token"));
        assert!(!same_token("", "a-long-device-token"));
    }
}
