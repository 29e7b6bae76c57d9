//! JSON response bodies written straight to bytes with serde.
//!
//! poem-openapi's `Json<T>` answers through `ToJSON`: it builds a `serde_json::Value` tree of
//! the whole body (a map with owned keys for every object), serialises the tree and drops it.
//! On a page of VMs that tree is most of the request's CPU. [`JsonBody`] documents the same
//! schema as `Json<T>` (its type, content type and response metadata are `Json<T>`'s) but
//! serialises the body once, with serde, into the response bytes. Every type sent this way
//! serialises exactly as its `ToJSON` does (the DTO tests compare the two byte for byte).

use std::fmt;
use std::marker::PhantomData;

use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use poem_openapi::payload::{Json, Payload};
use poem_openapi::registry::{MetaResponses, MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use poem_openapi::{ApiResponse, ResponseContent};
use serde::{Serialize, Serializer};

/// A value that serialises exactly as the response DTO `T` would: a borrowed view that writes
/// the DTO's JSON without building the DTO.
pub(crate) trait SerializesAs<T>: Serialize {}

impl<T: Serialize> SerializesAs<T> for T {}

/// A JSON response body of schema `T`, already serialised.
pub(crate) struct JsonBody<T> {
    /// The body, or why serialising it failed (answered as a 500, as poem's `Json` does).
    body: Result<Vec<u8>, String>,
    schema: PhantomData<fn() -> T>,
}

impl<T> JsonBody<T> {
    /// Serialises `value`, a `T` or a view that serialises as one.
    pub(crate) fn new(value: &impl SerializesAs<T>) -> Self {
        JsonBody {
            body: serde_json::to_vec(value).map_err(|e| e.to_string()),
            schema: PhantomData,
        }
    }

    /// Returns the serialised body (for tests).
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> Option<&[u8]> {
        self.body.as_deref().ok()
    }
}

impl<T> fmt::Debug for JsonBody<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.body {
            Ok(b) => f.debug_struct("JsonBody").field("bytes", &b.len()).finish(),
            Err(e) => f.debug_struct("JsonBody").field("error", e).finish(),
        }
    }
}

impl<T: Type> Payload for JsonBody<T> {
    const CONTENT_TYPE: &'static str = <Json<T> as Payload>::CONTENT_TYPE;

    fn check_content_type(content_type: &str) -> bool {
        <Json<T> as Payload>::check_content_type(content_type)
    }

    fn schema_ref() -> MetaSchemaRef {
        <Json<T> as Payload>::schema_ref()
    }

    fn register(registry: &mut Registry) {
        <Json<T> as Payload>::register(registry);
    }
}

impl<T: Type> IntoResponse for JsonBody<T> {
    fn into_response(self) -> Response {
        match self.body {
            Ok(bytes) => Response::builder()
                .header(poem::http::header::CONTENT_TYPE, Self::CONTENT_TYPE)
                .body(bytes),
            Err(e) => Response::builder()
                .status(StatusCode::INTERNAL_SERVER_ERROR)
                .body(e),
        }
    }
}

impl<T: Type + poem_openapi::types::ToJSON> ApiResponse for JsonBody<T> {
    fn meta() -> MetaResponses {
        <Json<T> as ApiResponse>::meta()
    }

    fn register(registry: &mut Registry) {
        <Json<T> as ResponseContent>::register(registry);
    }
}

/// Serialises a timestamp as poem-openapi's `ToJSON` does (`to_rfc3339`: `+00:00`, not serde's
/// `Z`), so both paths write the same text.
pub(crate) fn rfc3339<S: Serializer>(
    at: &chrono::DateTime<chrono::Utc>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(&at.to_rfc3339())
}

/// [`rfc3339`] for an optional timestamp (the field is skipped when absent).
pub(crate) fn rfc3339_opt<S: Serializer>(
    at: &Option<chrono::DateTime<chrono::Utc>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => rfc3339(at, s),
        None => s.serialize_none(),
    }
}

/// Serialises `value` as the routes do (serde, into the response body) and `dto` as
/// poem-openapi's `Json<T>` did (`ToJSON`), and asserts they are the same document: the
/// same keys (a `None` left out, not `null`), the same strings (dates, enums) and numbers.
/// Only the order of keys may differ: serde writes the schema's order, while `ToJSON`'s
/// order depends on serde_json's `preserve_order` feature (alphabetical without it).
#[cfg(test)]
pub(crate) fn assert_same_json<T, V>(what: &str, dto: &T, value: &V)
where
    T: poem_openapi::types::ToJSON,
    V: crate::json::SerializesAs<T>,
{
    let tree = dto.to_json().unwrap();
    let body = crate::json::JsonBody::<T>::new(value);
    let direct: serde_json::Value = serde_json::from_slice(body.bytes().unwrap()).unwrap();
    assert_eq!(direct, tree, "{what}: serde and ToJSON differ");
    // The same text too, once both are in one key order.
    assert_eq!(
        serde_json::to_string(&direct).unwrap(),
        serde_json::to_string(&tree).unwrap(),
        "{what}"
    );
}
