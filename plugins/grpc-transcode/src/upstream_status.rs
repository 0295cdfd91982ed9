//! The gRPC status of the upstream's answer: `grpc-status`, `grpc-message` and
//! `grpc-status-details-bin`, read from the trailers, or from the headers of a trailers-only
//! response (an error answered without a body).

use airlock_sdk::Response;
use base64::Engine as _;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage};
use serde_json::{Value, json};

/// What the upstream's status says.
#[derive(Debug)]
pub enum Outcome {
    /// `grpc-status: 0`: the body holds the response message.
    Ok,
    /// Another code, with its message and the raw `grpc-status-details-bin`.
    Error {
        /// The gRPC status code.
        code: i32,
        /// `grpc-message`, percent-decoded.
        message: String,
        /// `grpc-status-details-bin` (base64 of a `google.rpc.Status`), if sent.
        details: Option<String>,
    },
    /// No usable `grpc-status`: the reason, for the 502.
    Missing(String),
}

/// Reads the status of `resp` (trailers first, then headers).
pub fn read(resp: &Response) -> Outcome {
    let field = |name: &str| resp.trailer_str(name).or_else(|| resp.header_str(name));
    let Some(raw) = field("grpc-status") else {
        return Outcome::Missing(format!(
            "the upstream's answer (HTTP {}) carries no grpc-status: is it a gRPC server reached over HTTP/2?",
            resp.status()
        ));
    };
    // 1*DIGIT (gRPC over HTTP/2): `parse` alone would take `+5` as 5.
    let digits = raw.trim();
    let code = match digits.parse::<i32>() {
        Ok(code) if code >= 0 && digits.bytes().all(|b| b.is_ascii_digit()) => code,
        _ => return Outcome::Missing(format!("the upstream's grpc-status `{raw}` is not a status code")),
    };
    if code == crate::status::OK {
        return Outcome::Ok;
    }
    let message = field("grpc-message").map(|m| crate::template::decode_lossy(&m)).unwrap_or_default();
    Outcome::Error { code, message, details: field("grpc-status-details-bin") }
}

/// `google.rpc.Status`, as far as the details need it.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<AnyProto>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
struct AnyProto {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// The `details` of a `grpc-status-details-bin`: each `Any` as proto3 JSON when its type is in the
/// descriptor set, else as `{"@type", "value"}` with the value in base64.
pub fn details_json(pool: &DescriptorPool, raw: Option<&str>) -> Vec<Value> {
    let Some(raw) = raw else { return Vec::new() };
    let engine = base64::engine::general_purpose::STANDARD_NO_PAD;
    let Ok(bytes) = engine.decode(raw.trim().trim_end_matches('=')) else { return Vec::new() };
    let Ok(status) = RpcStatus::decode(bytes.as_slice()) else { return Vec::new() };
    status.details.into_iter().map(|any| detail_json(pool, any)).collect()
}

fn detail_json(pool: &DescriptorPool, any: AnyProto) -> Value {
    let type_name = any.type_url.rsplit('/').next().unwrap_or_default();
    if let Some(descriptor) = pool.get_message_by_name(type_name)
        && let Ok(message) = DynamicMessage::decode(descriptor, any.value.as_slice())
            && let Ok(Value::Object(mut fields)) = crate::message::to_json(&message, None).map(|b| serde_json::from_slice(&b).unwrap_or(Value::Null)) {
                let mut out = serde_json::Map::new();
                out.insert("@type".into(), Value::String(any.type_url.clone()));
                out.append(&mut fields);
                return Value::Object(out);
            }
    json!({ "@type": any.type_url, "value": base64::engine::general_purpose::STANDARD.encode(&any.value) })
}
