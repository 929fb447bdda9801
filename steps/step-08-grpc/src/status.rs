//! Errors in gRPC's words.
//!
//! REST answers a refusal with an HTTP status and `{"error": …}`; a gRPC client expects HTTP
//! 200 with `grpc-status` and `grpc-message` instead, and reads anything else as a broken
//! server (`UNKNOWN` or `INTERNAL`, with no message). [`to_status`] maps step 04's errors;
//! [`grpc_errors`] applies it to every refusal made by a layer that only speaks REST (step
//! 04's deadline and header limit, step 06's shedding and panic handler, the JSON 404).

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use step_04::MAX_BODY_BYTES;
use step_04::error::ApiError;
use tonic::{Code, Status};

/// The message of every stream ended, or call refused, because the server is draining.
pub const SHUTTING_DOWN: &str = "server is shutting down";

// ANCHOR: mapping
/// The gRPC status for each of step 04's errors, with the same message REST sends. The codes
/// follow gRPC's own guide (`statuscodes.md`): what a client should do next, as the HTTP
/// statuses say it for REST.
pub fn to_status(error: ApiError) -> Status {
    let code = match &error {
        ApiError::InvalidBody
        | ApiError::NameRequired
        | ApiError::TooLong { .. }
        | ApiError::UnsupportedMediaType
        | ApiError::Unstorable(_) => Code::InvalidArgument,
        ApiError::ItemNotFound => Code::NotFound,
        // REST's 413, 431 and 507: too big, or no room. Not retried as they are.
        ApiError::PayloadTooLarge | ApiError::HeadersTooLarge | ApiError::StoreFull { .. } => {
            Code::ResourceExhausted
        }
        // REST's 503 with Retry-After: the one code gRPC clients retry by themselves.
        ApiError::StoreUnavailable | ApiError::Overloaded => Code::Unavailable,
        // REST's 503 for a request that ran out of time: gRPC has a code for exactly that.
        ApiError::Timeout => Code::DeadlineExceeded,
        // No such method (a path no service has), or a method used the wrong way.
        ApiError::RouteNotFound | ApiError::MethodNotAllowed => Code::Unimplemented,
        ApiError::Internal => Code::Internal,
    };
    Status::new(code, error.message())
}

/// Draining: `UNAVAILABLE`, so the client retries on another instance.
pub fn shutting_down() -> Status {
    Status::unavailable(SHUTTING_DOWN)
}
// ANCHOR_END: mapping

// ANCHOR: translate
/// Middleware, outermost: a gRPC request (`content-type: application/grpc…`) refused by a
/// layer that answers in REST's words gets the same refusal as a gRPC status.
pub async fn grpc_errors(request: Request, next: Next) -> Response {
    if !is_grpc(request.headers()) {
        return next.run(request).await;
    }
    let response = next.run(request).await;
    if is_grpc(response.headers()) {
        return size_limit_as_resource_exhausted(response);
    }
    let status = match response.extensions().get::<ApiError>() {
        Some(error) => to_status(error.clone()),
        // Not one of ours (none is expected): gRPC's table for HTTP statuses.
        None => Status::new(from_http(response.status()), response.status().to_string()),
    };
    trailers_only(status, response)
}

/// Whether these headers belong to a gRPC message: `application/grpc`, `application/grpc+proto`.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"))
}

/// A gRPC error as HTTP: status 200, no body, `grpc-status` and `grpc-message` in the headers
/// ("trailers-only"). The other headers of the answer it replaces (`x-request-id`,
/// `retry-after`, `cache-control`) are kept.
fn trailers_only(status: Status, replaced: Response) -> Response {
    let mut response = status.into_http::<Body>();
    for (name, value) in replaced.headers() {
        if name != header::CONTENT_LENGTH && !response.headers().contains_key(name) {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response
}

/// tonic refuses a message over its size limit with `OUT_OF_RANGE`; gRPC's guide (and grpc-go,
/// grpc-java) say `RESOURCE_EXHAUSTED`, the code REST's 413 maps to above. Same limit, same
/// words as REST.
fn size_limit_as_resource_exhausted(response: Response) -> Response {
    let too_large = Status::from_header_map(response.headers()).is_some_and(|status| {
        status.code() == Code::OutOfRange && status.message().contains("message length too large")
    });
    if !too_large {
        return response;
    }
    debug_assert_eq!(MAX_BODY_BYTES, crate::MAX_MESSAGE_BYTES);
    trailers_only(to_status(ApiError::PayloadTooLarge), response)
}

/// gRPC's mapping of HTTP statuses (`http-grpc-status-mapping.md`), for answers that carry no
/// `ApiError` (hyper's own, say).
fn from_http(status: StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}
// ANCHOR_END: translate

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_a_code_other_than_unknown_and_keeps_its_message() {
        let all = [
            ApiError::InvalidBody,
            ApiError::NameRequired,
            ApiError::TooLong {
                field: "name",
                max: 200,
            },
            ApiError::UnsupportedMediaType,
            ApiError::PayloadTooLarge,
            ApiError::HeadersTooLarge,
            ApiError::ItemNotFound,
            ApiError::RouteNotFound,
            ApiError::MethodNotAllowed,
            ApiError::StoreFull { limit: 3 },
            ApiError::StoreUnavailable,
            ApiError::Timeout,
            ApiError::Overloaded,
            ApiError::Internal,
        ];
        for error in all {
            let status = to_status(error.clone());

            assert_ne!(status.code(), Code::Unknown, "{error:?}");
            assert_eq!(status.message(), error.message());
        }
    }
}
