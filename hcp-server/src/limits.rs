//! Request limits: the body size limit (checked while reading, so chunked bodies without a
//! `Content-Length` are held to it too), strict JSON bodies, and page sizes.

use bytes::BytesMut;
use futures::StreamExt;
use hcp_core::store::PageRequest;
use hcp_core::{Error, ErrorKind};
use poem::{Body, Request, RequestBody};
use poem_openapi::payload::{ParsePayload, Payload};
use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use serde::de::DeserializeOwned;

use crate::dto::StrictDto;
use crate::error::{ApiError, CODE_PAYLOAD_TOO_LARGE, Problem};

/// Reads the whole request body, refusing it with `413 PAYLOAD_TOO_LARGE` as soon as it exceeds
/// `limit` bytes, whatever its `Content-Length` says (or whether it has one at all).
///
/// # Errors
/// The 413 problem response, or a 400 when the body cannot be read.
pub async fn read_limited(req: &mut Request, limit: usize) -> Result<(), poem::Response> {
    let too_large = || {
        let mut resp = Problem::transport(
            ErrorKind::InvalidSpec,
            CODE_PAYLOAD_TOO_LARGE,
            format!("the request body is larger than the limit of {limit} bytes"),
            None,
        )
        .into_response();
        // The rest of the body is never read, so the connection cannot carry another request:
        // say so, or a pooling client reuses it and its next request fails mid-flight.
        resp.headers_mut().insert(
            poem::http::header::CONNECTION,
            poem::http::HeaderValue::from_static("close"),
        );
        resp
    };
    if let Some(len) = req
        .headers()
        .get(poem::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(too_large());
    }
    let mut stream = req.take_body().into_bytes_stream();
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            Problem::transport(
                ErrorKind::InvalidSpec,
                ErrorKind::InvalidSpec.code(),
                format!("cannot read the request body: {e}"),
                None,
            )
            .into_response()
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    req.set_body(Body::from_bytes(buf.freeze()));
    Ok(())
}

/// A JSON request body parsed strictly with serde: unknown fields and server-owned fields are
/// refused with a 400 whose `field` names them; type errors name the path of the bad value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrictJson<T>(pub T);

impl<T: Type> Payload for StrictJson<T> {
    const CONTENT_TYPE: &'static str = "application/json; charset=utf-8";

    fn check_content_type(content_type: &str) -> bool {
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        essence.eq_ignore_ascii_case("application/json")
            || (essence.starts_with("application/") && essence.ends_with("+json"))
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Type + DeserializeOwned + StrictDto + Send> ParsePayload for StrictJson<T> {
    const IS_REQUIRED: bool = true;

    async fn from_request(request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        let data = body
            .take()
            .map_err(|e| {
                to_poem(Error::invalid(
                    "body",
                    format!("cannot read the request body: {e}"),
                ))
            })?
            .into_vec()
            .await
            .map_err(|e| {
                to_poem(Error::invalid(
                    "body",
                    format!("cannot read the request body: {e}"),
                ))
            })?;
        let _ = request;
        parse_strict::<T>(&data).map(StrictJson).map_err(to_poem)
    }
}

poem_openapi::impl_apirequest_for_payload!(StrictJson<T>, T: Type + DeserializeOwned + StrictDto + Send);

fn to_poem(e: Error) -> poem::Error {
    ApiError::from(e).into()
}

/// Parses `data` as a `T`, refusing unknown and server-owned fields by name.
///
/// # Errors
/// [`ErrorKind::InvalidSpec`] naming the offending field (`body` for a body that is not JSON).
pub fn parse_strict<T: DeserializeOwned + StrictDto>(data: &[u8]) -> Result<T, Error> {
    if data.is_empty() {
        return Err(Error::invalid("body", "a JSON object is required"));
    }
    let value = parse_unique_keys(data)?;
    let Some(obj) = value.as_object() else {
        return Err(Error::invalid("body", "must be a JSON object"));
    };
    if let Some(owned) = T::SERVER_OWNED.iter().find(|f| obj.contains_key(**f)) {
        return Err(Error::invalid(
            *owned,
            "is set by the server and cannot be given in a request; remove it",
        ));
    }
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let inner = e.inner().to_string();
        let path = e.path().to_string();
        if let Some(field) = unknown_field(&inner) {
            // The path already ends with the unknown field, except at the top level.
            let field = if path == "." { field } else { path };
            let allowed = inner
                .split_once(", expected ")
                .map(|(_, rest)| rest.to_string())
                .unwrap_or_default();
            return Error::invalid(field, format!("unknown field; allowed: {allowed}"));
        }
        if let Some(field) = missing_field(&inner) {
            return Error::invalid(field, "is required");
        }
        let field = if path == "." {
            "body".to_string()
        } else {
            path
        };
        Error::invalid(field, inner)
    })
}

/// Parses `data` as JSON, refusing an object that gives the same key twice (serde_json keeps the
/// last one silently, so two readers of one body could disagree on what it says).
///
/// # Errors
/// [`ErrorKind::InvalidSpec`] naming the duplicated key's path (`tags.env`), or the field where
/// the JSON stops being valid (`body` when it is not inside a field).
pub fn parse_unique_keys(data: &[u8]) -> Result<serde_json::Value, Error> {
    let mut de = serde_json::Deserializer::from_slice(data);
    match serde_path_to_error::deserialize::<_, UniqueValue>(&mut de) {
        Ok(UniqueValue(v)) => {
            de.end()
                .map_err(|e| Error::invalid("body", format!("is not valid JSON: {e}")))?;
            Ok(v)
        }
        Err(e) => {
            let msg = e.inner().to_string();
            if let Some(key) = msg.strip_prefix(DUPLICATE_KEY) {
                let key = key.split(" at line ").next().unwrap_or(key);
                let path = e.path().to_string();
                let field = if path == "." {
                    key.to_string()
                } else {
                    format!("{path}.{key}")
                };
                return Err(Error::invalid(
                    hcp_core::echo(&field),
                    "is given more than once in the JSON object; give each key once",
                ));
            }
            // A number out of range (`1e400`) is a JSON error inside a field: name the field.
            let field = json_error_path(data).unwrap_or_else(|| "body".to_string());
            Err(Error::invalid(
                field,
                format!("is not valid JSON: {}", e.inner()),
            ))
        }
    }
}

const DUPLICATE_KEY: &str = "duplicate key: ";

/// A JSON value whose objects have unique keys.
struct UniqueValue(serde_json::Value);

impl<'de> serde::Deserialize<'de> for UniqueValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueVisitor).map(UniqueValue)
    }
}

struct UniqueVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
        serde_json::Number::from_f64(v)
            .map(serde_json::Value::Number)
            .ok_or_else(|| E::custom("a number must be finite"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(UniqueValue(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(serde_json::Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut obj = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if obj.contains_key(&key) {
                return Err(serde::de::Error::custom(format!("{DUPLICATE_KEY}{key}")));
            }
            let UniqueValue(v) = map.next_value()?;
            obj.insert(key, v);
        }
        Ok(serde_json::Value::Object(obj))
    }
}

/// Returns the path of the field where `data` stops being valid JSON (`memory_mib`,
/// `networks[0].network`), or `None` when the error is not inside an object's field.
fn json_error_path(data: &[u8]) -> Option<String> {
    let mut de = serde_json::Deserializer::from_slice(data);
    let e = serde_path_to_error::deserialize::<_, serde_json::Value>(&mut de).err()?;
    let path = e.path().to_string();
    // A body cut short, or an error before a key was read, is the body's fault.
    (!e.inner().is_eof() && path != "." && !path.contains('?')).then_some(path)
}

fn backticked(s: &str) -> Option<String> {
    let start = s.find('`')? + 1;
    let len = s[start..].find('`')?;
    Some(s[start..start + len].to_string())
}

fn unknown_field(msg: &str) -> Option<String> {
    msg.strip_prefix("unknown field ").and_then(backticked)
}

fn missing_field(msg: &str) -> Option<String> {
    msg.strip_prefix("missing field ").and_then(backticked)
}

/// Page sizes: a default and a documented maximum that every list route clamps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimits {
    /// The page size when the client gives none.
    pub default: usize,
    /// The largest page; larger requests are clamped to it.
    pub max: usize,
}

/// The longest `cursor` a list route accepts, in bytes (cursors the server hands out are ids of
/// a few dozen bytes).
pub const MAX_CURSOR_BYTES: usize = 255;

impl PageLimits {
    /// Builds the page request for `limit` and `cursor` from a query string. A `limit` outside
    /// `1..=max` is clamped into it; an empty `cursor` means the first page.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSpec`] naming `cursor` when it is longer than [`MAX_CURSOR_BYTES`] or
    /// holds control characters (no cursor the server handed out does).
    pub fn request(
        &self,
        limit: Option<u32>,
        cursor: Option<String>,
    ) -> Result<PageRequest, Error> {
        if let Some(c) = &cursor
            && (c.len() > MAX_CURSOR_BYTES || c.chars().any(char::is_control))
        {
            return Err(Error::invalid(
                "cursor",
                format!(
                    "is not a cursor this server handed out: pass the `next` of the previous page \
                     (at most {MAX_CURSOR_BYTES} bytes, no control characters)"
                ),
            ));
        }
        let limit = limit
            .map_or(self.default, |l| usize::try_from(l).unwrap_or(usize::MAX))
            .clamp(1, self.max.min(PageRequest::MAX_LIMIT));
        Ok(PageRequest {
            limit,
            cursor: cursor.filter(|c| !c.is_empty()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dto::CreateVmRequest;

    #[test]
    fn unknown_and_server_owned_fields_are_named() {
        let e = parse_strict::<CreateVmRequest>(br#"{"name":"a","image":"i","flavr":"x"}"#)
            .unwrap_err();
        assert_eq!(e.field(), Some("flavr"), "{e}");
        assert!(e.message().contains("allowed"), "{e}");
        let e =
            parse_strict::<CreateVmRequest>(br#"{"name":"a","image":"i","host":"h"}"#).unwrap_err();
        assert_eq!(e.field(), Some("host"));
        assert!(e.message().contains("set by the server"));
        let e = parse_strict::<CreateVmRequest>(
            br#"{"name":"a","image":"i","networks":[{"network":"n","vlan":3}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.field(), Some("networks[0].vlan"), "{e}");
        let e = parse_strict::<CreateVmRequest>(br#"{"name":"a"}"#).unwrap_err();
        assert_eq!(e.field(), Some("image"));
        let e = parse_strict::<CreateVmRequest>(br#"{"name":"a","image":"i","vcpus":"two"}"#)
            .unwrap_err();
        assert_eq!(e.field(), Some("vcpus"), "{e}");
        let e = parse_strict::<CreateVmRequest>(b"[1]").unwrap_err();
        assert_eq!(e.field(), Some("body"));
        let e = parse_strict::<CreateVmRequest>(br#"{"name":"a","image":"i","memory_mib":1e400}"#)
            .unwrap_err();
        assert_eq!(e.field(), Some("memory_mib"), "{e}");
        let e = parse_strict::<CreateVmRequest>(
            br#"{"name":"a","image":"i","networks":[{"network":"n"},{"network":-1e999}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.field(), Some("networks[1].network"), "{e}");
        let e = parse_strict::<CreateVmRequest>(br#"{"name":"a","#).unwrap_err();
        assert_eq!(e.field(), Some("body"), "{e}");
        for (body, field) in [
            (r#"{"name":"a","image":"i","vcpus":-1}"#, "vcpus"),
            (r#"{"name":"a","image":"i","vcpus":4294967296}"#, "vcpus"),
            (r#"{"name":"a","image":"i","vcpus":1.5}"#, "vcpus"),
            (
                r#"{"name":"a","image":"i","memory_mib":18446744073709551616}"#,
                "memory_mib",
            ),
            (
                r#"{"name":"a","image":"i","disk_gib":-9223372036854775808}"#,
                "disk_gib",
            ),
        ] {
            let e = parse_strict::<CreateVmRequest>(body.as_bytes()).unwrap_err();
            assert_eq!(e.field(), Some(field), "{body}: {e}");
        }
        let ok = parse_strict::<CreateVmRequest>(br#"{"name":"a","image":"i","flavor":"small"}"#)
            .unwrap();
        assert_eq!(ok.flavor.as_deref(), Some("small"));
    }

    #[test]
    fn duplicate_keys_are_refused_by_path() {
        let e =
            parse_strict::<CreateVmRequest>(br#"{"name":"a","image":"i","name":"b"}"#).unwrap_err();
        assert_eq!(e.field(), Some("name"), "{e}");
        assert!(e.message().contains("more than once"), "{e}");
        let e = parse_strict::<CreateVmRequest>(
            br#"{"name":"a","image":"i","tags":{"env":"x","env":"y"}}"#,
        )
        .unwrap_err();
        assert_eq!(e.field(), Some("tags.env"), "{e}");
        let e = parse_strict::<CreateVmRequest>(
            br#"{"name":"a","image":"i","networks":[{"network":"n","network":"m"}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.field(), Some("networks[0].network"), "{e}");
        let long = "k".repeat(10_000);
        let body = format!(r#"{{"name":"a","image":"i","tags":{{"{long}":"1","{long}":"2"}}}}"#);
        let e = parse_strict::<CreateVmRequest>(body.as_bytes()).unwrap_err();
        assert!(e.field().unwrap().len() < 120, "{e}");
        // The same key in two objects is fine.
        parse_strict::<CreateVmRequest>(
            br#"{"name":"a","image":"i","networks":[{"network":"n"},{"network":"m"}]}"#,
        )
        .unwrap();
        // Trailing data after the object is not JSON.
        let e = parse_strict::<CreateVmRequest>(br#"{"name":"a","image":"i"} {}"#).unwrap_err();
        assert_eq!(e.field(), Some("body"), "{e}");
    }

    #[test]
    fn pages_are_clamped() {
        let p = PageLimits {
            default: 100,
            max: 500,
        };
        assert_eq!(p.request(None, None).unwrap().limit, 100);
        assert_eq!(p.request(Some(0), None).unwrap().limit, 1);
        assert_eq!(
            p.request(Some(u32::MAX), Some(String::new())).unwrap(),
            PageRequest {
                limit: 500,
                cursor: None
            }
        );
        for bad in ["x".repeat(MAX_CURSOR_BYTES + 1), "vm-\n1".to_string()] {
            let e = p.request(None, Some(bad)).unwrap_err();
            assert_eq!(e.field(), Some("cursor"));
        }
        assert_eq!(
            p.request(None, Some("vm-ü".into()))
                .unwrap()
                .cursor
                .as_deref(),
            Some("vm-ü")
        );
    }
}
