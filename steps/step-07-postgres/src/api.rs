//! `POST /api/items` with `Idempotency-Key`: the only handler this step writes. Every other
//! route is step 04's, unchanged (`step_04::api::read_routes`).
//!
//! Step 06 answers an overloaded moment with `503` and `Retry-After`, which invites clients to
//! retry. A retried `GET` is harmless; a retried `POST` whose first attempt *did* create (the
//! answer was lost on the way back) creates a second item. The IETF httpapi draft
//! "The Idempotency-Key HTTP Header Field" gives clients a way out: send a unique key with the
//! POST, send the same key again on every retry, and the server creates at most once.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use step_04::api::{AppState, CreateItem};
use step_04::error::{ApiError, ErrorBody, JsonBody, validate};
use step_04::store::{Item, NewItem};

use crate::store::{Fingerprint, IdempotentOutcome, MAX_IDEMPOTENCY_KEY_CHARS, PgStore};

/// The request header that carries the client's key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

// ANCHOR: errors
/// What can go wrong with a key, on top of step 04's errors. Written out in step 04's shape
/// (`{"error": …}` as JSON), so a client parses every error of the API the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateError {
    /// One of step 04's: bad body, store unavailable, …
    Api(ApiError),
    /// The key is empty, too long, or not visible ASCII (400).
    BadKey,
    /// A request with the same key is being processed right now (409, the draft's answer).
    KeyInFlight,
    /// The key was used before with a different request body (422, the draft's answer).
    KeyReused,
}

impl From<ApiError> for CreateError {
    fn from(error: ApiError) -> Self {
        CreateError::Api(error)
    }
}

impl IntoResponse for CreateError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            CreateError::Api(error) => return error.into_response(),
            CreateError::BadKey => (
                StatusCode::BAD_REQUEST,
                format!(
                    "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} visible ASCII characters"
                ),
            ),
            CreateError::KeyInFlight => (
                StatusCode::CONFLICT,
                "a request with this Idempotency-Key is still being processed; retry later".into(),
            ),
            CreateError::KeyReused => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "this Idempotency-Key was used with a different request body".into(),
            ),
        };
        let body = ErrorBody {
            error: message,
            request_id: None,
        };
        (status, Json(body)).into_response()
    }
}
// ANCHOR_END: errors

// ANCHOR: create
#[utoipa::path(post, path = "/api/items", tag = "items",
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255,
        pattern = "^[!-~]+$",
        description = "Optional: 1 to 255 visible ASCII characters, bare or as a quoted \
            string. The same key on a retry returns the first answer and creates nothing; keys \
            are remembered for IDEMPOTENCY_KEY_TTL (24 h by default). Ids come from a database \
            sequence: unique and increasing, but with gaps.")),
    request_body(content = CreateItem, content_type = "application/json"),
    responses(
        (status = 201, description = "Created (or, for a repeated key, the item first created)",
            body = Item, headers(
                ("Location" = String, description = "Where the new item can be fetched"),
                ("Idempotent-Replayed" = String, description = "`true` on a repeated key's answer"))),
        (status = 400, description = "Malformed JSON, a field out of bounds or with a NUL character, or a bad Idempotency-Key", body = ErrorBody),
        (status = 409, description = "A request with the same Idempotency-Key is in progress", body = ErrorBody),
        (status = 413, description = "Body over the size limit", body = ErrorBody),
        (status = 415, description = "Content-Type is not application/json", body = ErrorBody),
        (status = 422, description = "The Idempotency-Key was used with a different body", body = ErrorBody),
    ))]
pub async fn create_item(
    State(state): State<AppState>,
    Extension(store): Extension<Arc<PgStore>>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<CreateItem>,
) -> Result<Response, CreateError> {
    validate(&request.name, &request.description)?;
    let new = NewItem {
        name: request.name,
        description: request.description,
    };
    let Some(key) = idempotency_key(&headers)? else {
        // No key: exactly step 04's create, through the `ItemStore` trait.
        let item = state.store.create(new).await.map_err(ApiError::from)?;
        return Ok(created(&item, false));
    };
    let fingerprint = Fingerprint::of(&new);
    // One transaction in the database: lock the key, look it up, create item and key together.
    let outcome = store
        .create_idempotent(key, &fingerprint, new)
        .await
        .map_err(ApiError::from)?;
    match outcome {
        IdempotentOutcome::Created(item) => Ok(created(&item, false)),
        IdempotentOutcome::Replayed(item) => Ok(created(&item, true)),
        IdempotentOutcome::InFlight => Err(CreateError::KeyInFlight),
        IdempotentOutcome::Mismatch => Err(CreateError::KeyReused),
    }
}

/// The key, if the request has one. The draft writes it as a structured-field string
/// (`"abc"`); many clients send it bare (`abc`): both are the same key.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, CreateError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| CreateError::BadKey)?.trim();
    // The header as sent, quotes included, is what the documented limits apply to.
    let fine = (1..=MAX_IDEMPOTENCY_KEY_CHARS).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_graphic());
    let key = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    if fine && !key.is_empty() {
        Ok(Some(key))
    } else {
        Err(CreateError::BadKey)
    }
}

/// `201 Created` with `Location`, the same whether the item is new or replayed; a replay says
/// so in `Idempotent-Replayed`, for clients and logs that want to know.
fn created(item: &Arc<Item>, replayed: bool) -> Response {
    let location = format!("/api/items/{}", item.id);
    let mut response = (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(item.clone()),
    )
        .into_response();
    if replayed {
        let headers = response.headers_mut();
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}
// ANCHOR_END: create
