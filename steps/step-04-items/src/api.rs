//! The HTTP API: handlers, and the OpenAPI document generated from the same annotations that
//! put them in the router.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, ResponseBuilder};
use utoipa::{OpenApi as _, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ErrorBody, JsonBody, validate};
use crate::store::{Item, ItemId, ItemStore, NewItem};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Any store: the memory one here, a database later.
    pub store: Arc<dyn ItemStore>,
    /// `/openapi.json`, serialised once at start-up.
    pub openapi: Bytes,
}

// ANCHOR: create_request
/// The body of `POST /api/items`. Unknown fields are ignored.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateItem {
    /// Required: at least one non-whitespace character, at most 200 characters.
    // A missing name is read as "" so that it gets the same "name is required" as an empty one.
    #[serde(default)]
    #[schema(
        required = true,
        min_length = 1,
        max_length = 200,
        pattern = r"[^\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]",
        example = "Test Item"
    )]
    pub name: String,
    /// Optional, at most 2000 characters.
    #[serde(default)]
    #[schema(max_length = 2000, example = "A test")]
    pub description: String,
}
// ANCHOR_END: create_request

/// The body of `GET /health` (the handler writes it as a constant).
#[derive(ToSchema)]
#[allow(dead_code)] // Only its schema is used.
pub struct Health {
    #[schema(example = "ok")]
    status: String,
}

// ANCHOR: handlers
#[utoipa::path(get, path = "/health", tag = "health",
    responses((status = 200, description = "The server is up", body = Health)))]
pub async fn health() -> impl IntoResponse {
    // A constant body: nothing to serialise, nothing to allocate.
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ok"}"#,
    )
}

#[utoipa::path(post, path = "/api/items", tag = "items",
    request_body(content = CreateItem, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = Item,
            headers(("Location" = String, description = "Where the new item can be fetched"))),
        (status = 400, description = "Malformed JSON, wrong field types, or a field out of bounds", body = ErrorBody),
        (status = 413, description = "Body over the size limit", body = ErrorBody),
        (status = 415, description = "Content-Type is not application/json", body = ErrorBody),
        (status = 507, description = "The store holds MAX_ITEMS items already", body = ErrorBody),
    ))]
pub async fn create_item(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<CreateItem>,
) -> Result<Response, ApiError> {
    validate(&request.name, &request.description)?;
    let new = NewItem {
        name: request.name,
        description: request.description,
    };
    // The only `.await` on this path: the memory store answers at once, a database would not.
    let item = state.store.create(new).await?;
    let location = format!("/api/items/{}", item.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(item),
    )
        .into_response())
}

#[utoipa::path(get, path = "/api/items", tag = "items",
    responses((status = 200, description = "Every item, oldest first", body = [Item])))]
pub async fn list_items(State(state): State<AppState>) -> Result<Json<Vec<Arc<Item>>>, ApiError> {
    // The store hands back shared pointers; `Json` serialises after every lock is released.
    Ok(Json(state.store.list().await?))
}

#[utoipa::path(get, path = "/api/items/{id}", tag = "items",
    params(("id" = String, Path, description = "An item id such as item-1", example = "item-1")),
    responses(
        (status = 200, description = "The item", body = Item),
        (status = 404, description = "No item with that id", body = ErrorBody),
    ))]
pub async fn get_item(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Arc<Item>>, ApiError> {
    // Whatever is in the path, it is either the canonical spelling of an id or it names no item
    // (that includes segments that do not even decode as UTF-8: axum's rejection, not ours).
    let id: ItemId = match id {
        Ok(Path(text)) => text.parse().map_err(|()| ApiError::ItemNotFound)?,
        Err(_) => return Err(ApiError::ItemNotFound),
    };
    match state.store.get(id).await? {
        Some(item) => Ok(Json(item)),
        None => Err(ApiError::ItemNotFound),
    }
}

#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "This document", content_type = "application/json", body = Object)))]
pub async fn openapi_json(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], state.openapi)
}

/// Every unknown path.
pub async fn route_not_found() -> ApiError {
    ApiError::RouteNotFound
}

/// A known path with an unknown method; axum adds the `Allow` header to this response.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
// ANCHOR_END: handlers

// ANCHOR: openapi
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "step-04 items",
        description = "The item service of cloud-run-rust, step 04."
    ),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

/// The routes, each registered together with its documentation: `routes!` reads the path and
/// method from the handler's `#[utoipa::path]`, so the router and the document cannot disagree.
pub fn documented_routes() -> OpenApiRouter<AppState> {
    read_routes().routes(routes!(create_item))
}

/// Every route but `POST /api/items`, for a step that creates items its own way (axum merges
/// a later `POST` on `/api/items` with the `GET` registered here).
pub fn read_routes() -> OpenApiRouter<AppState> {
    read_routes_but_get_item().routes(routes!(get_item))
}

/// [`read_routes`] without `GET /api/items/{id}`, for a step that answers it its own way.
pub fn read_routes_but_get_item() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(list_items))
        .routes(routes!(openapi_json))
}

/// The item API as a router: `routes` (normally [`documented_routes`]) with the JSON
/// fallbacks, the store, and the OpenAPI document served at `/openapi.json`, after `edit` has
/// had its say on the document (a later step adds what its layers can answer).
pub fn router(
    routes: OpenApiRouter<AppState>,
    store: Arc<dyn ItemStore>,
    edit: impl FnOnce(&mut OpenApi),
) -> Router {
    let (router, mut openapi) = routes.split_for_parts();
    add_common_responses(&mut openapi);
    edit(&mut openapi);
    // Serialised once; `/openapi.json` hands out the same bytes every time.
    let openapi = openapi
        .to_json()
        .expect("the OpenAPI document serialises")
        .into();
    router
        // Must come after the routes: it is attached to each route registered so far.
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(route_not_found)
        .with_state(AppState { store, openapi })
}

/// Adds what every operation can answer besides its own responses: a 431 (headers too large),
/// a 500 (a handler panicked) and a 503 (the request timed out), all with the error body.
pub fn add_common_responses(openapi: &mut OpenApi) {
    add_error_response(openapi, "431", "Request headers over MAX_HEADER_BYTES");
    add_error_response(openapi, "500", "Internal error (a bug)");
    add_error_response(
        openapi,
        "503",
        "The request took longer than REQUEST_TIMEOUT, or the store is unavailable; \
         retry after the Retry-After header's seconds",
    );
}

/// Documents (or re-documents) one error status, with the error body, on every operation.
pub fn add_error_response(openapi: &mut OpenApi, status: &str, description: &str) {
    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
    };
    for item in openapi.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            let responses = &mut operation.responses.responses;
            responses.insert(status.into(), error(description).into());
        }
    }
}
// ANCHOR_END: openapi
