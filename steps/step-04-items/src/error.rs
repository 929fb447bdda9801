//! One error type for the whole API, so every failure has the same shape:
//! `{"error": "<message>"}` with `Content-Type: application/json`.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

use crate::store::StoreError;
use crate::{MAX_BODY_BYTES, MAX_DESCRIPTION_CHARS, MAX_HEADER_BYTES, MAX_NAME_CHARS};

// ANCHOR: error
/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    #[schema(example = "item not found")]
    pub error: String,
    /// The request's id, on a 500, for a bug report (present where the server assigns ids).
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// What a client refused with a 503 is told to wait before retrying, in seconds.
pub const RETRY_AFTER_SECS: u32 = 1;

/// Everything that can go wrong in a request, and nothing about how it is written out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// Not JSON, or JSON of the wrong shape (a number where a string goes, an array, …).
    InvalidBody,
    /// `name` missing, empty or only whitespace.
    NameRequired,
    /// A field longer than its documented limit, in characters.
    TooLong { field: &'static str, max: usize },
    /// No `Content-Type: application/json` on a request with a JSON body.
    UnsupportedMediaType,
    /// A body over [`MAX_BODY_BYTES`].
    PayloadTooLarge,
    /// Headers over [`MAX_HEADER_BYTES`] in all.
    HeadersTooLarge,
    /// No item with that id.
    ItemNotFound,
    /// No route for that path.
    RouteNotFound,
    /// A route for that path, but not for that method (axum adds the `Allow` header).
    MethodNotAllowed,
    /// The store holds `MAX_ITEMS` items already.
    StoreFull { limit: usize },
    /// The store's backend failed.
    StoreUnavailable,
    /// The store cannot hold a value of the request (its message says which).
    Unstorable(&'static str),
    /// The request outlived `REQUEST_TIMEOUT`.
    Timeout,
    /// Too many requests at once: refused before it started (a later step's load shedding).
    Overloaded,
    /// A bug: a handler panicked.
    Internal,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidBody
            | ApiError::NameRequired
            | ApiError::TooLong { .. }
            | ApiError::Unstorable(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::ItemNotFound | ApiError::RouteNotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            // 507 Insufficient Storage says exactly this: the server cannot store what it was
            // asked to store. Not 503: that invites clients and load balancers to retry soon
            // (and can read as "this instance is unhealthy"), yet a full store stays full. Not
            // 409: nothing about this request conflicts with anything; the same request will
            // succeed on a store with room.
            ApiError::StoreFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
            // 503, as in step 02: the server could not answer in time, the client may retry.
            // Not 504 (that is a gateway waiting on an upstream) and not 408 (that blames the
            // client for being slow to send, which it was not: we were slow to answer).
            ApiError::StoreUnavailable | ApiError::Timeout | ApiError::Overloaded => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn message(&self) -> String {
        match self {
            ApiError::InvalidBody => "invalid request body".into(),
            ApiError::NameRequired => "name is required".into(),
            ApiError::TooLong { field, max } => format!("{field} must be at most {max} characters"),
            ApiError::UnsupportedMediaType => "Content-Type must be application/json".into(),
            ApiError::PayloadTooLarge => {
                format!("request body must be at most {MAX_BODY_BYTES} bytes")
            }
            ApiError::HeadersTooLarge => {
                format!("request headers must be at most {MAX_HEADER_BYTES} bytes in all")
            }
            ApiError::ItemNotFound => "item not found".into(),
            ApiError::RouteNotFound => "not found".into(),
            ApiError::MethodNotAllowed => "method not allowed".into(),
            ApiError::StoreFull { limit } => format!("item store is full ({limit} items)"),
            ApiError::StoreUnavailable => "item store unavailable".into(),
            ApiError::Unstorable(why) => (*why).into(),
            ApiError::Timeout => "request timed out".into(),
            ApiError::Overloaded => "server overloaded, retry later".into(),
            ApiError::Internal => "internal server error".into(),
        }
    }
}

impl ApiError {
    /// The response, naming the request when `request_id` is given. Every 503 says when to
    /// retry (`Retry-After`), and no 5xx may be cached on the way back to the client.
    pub fn response(self, request_id: Option<String>) -> Response {
        let status = self.status();
        let body = ErrorBody {
            error: self.message(),
            request_id,
        };
        // `Json` sets `Content-Type: application/json`, whatever the status.
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        if status.is_server_error() {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        // The error itself rides along (not sent), so an outer layer can answer in another
        // protocol's words: step 08 gives a gRPC client a gRPC status instead of this JSON.
        response.extensions_mut().insert(self);
        response
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.response(None)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Full { limit } => ApiError::StoreFull { limit },
            StoreError::Unstorable(why) => ApiError::Unstorable(why),
            StoreError::Unavailable(reason) => {
                // The details go to the log, not to the client.
                tracing::error!(%reason, "item store unavailable");
                ApiError::StoreUnavailable
            }
        }
    }
}
// ANCHOR_END: error

// ANCHOR: extractor
/// `axum::Json`, with its rejections turned into [`ApiError`]s.
///
/// axum already checks the `Content-Type` (415), enforces the body limit (413) and parses;
/// left alone it would answer in plain text and use 422 for JSON of the wrong shape. This
/// wrapper keeps all of that and changes only how the refusal is written.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        // Reads the body (at most the `DefaultBodyLimit`), then parses it.
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(JsonBody(value)),
            Err(rejection) => Err(rejection_to_error(&rejection)),
        }
    }
}

fn rejection_to_error(rejection: &JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
        // A body cut off by the size limit reports 413; one cut off by the client going away
        // reports 400. The rejection already knows which.
        JsonRejection::BytesRejection(bytes) if bytes.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge
        }
        // Syntax errors, wrong types (axum's 422), and anything else about the body.
        _ => ApiError::InvalidBody,
    }
}
// ANCHOR_END: extractor

/// Checks a create request the way the API documents it, field by field.
pub fn validate(name: &str, description: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() {
        return Err(ApiError::NameRequired);
    }
    // Characters (Unicode scalar values), as JSON Schema's `maxLength` counts them.
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::TooLong {
            field: "name",
            max: MAX_NAME_CHARS,
        });
    }
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(ApiError::TooLong {
            field: "description",
            max: MAX_DESCRIPTION_CHARS,
        });
    }
    Ok(())
}
