//! gRPC status codes and their HTTP statuses (the table Envoy's and grpc-gateway's transcoders
//! use), and the `google.rpc.Status` JSON error body.

use serde_json::{Value, json};

/// `OK`.
pub const OK: i32 = 0;
/// `INVALID_ARGUMENT`: what a malformed client request is answered with.
pub const INVALID_ARGUMENT: i32 = 3;
/// `NOT_FOUND`: no mapped method for the request.
pub const NOT_FOUND: i32 = 5;
/// `UNIMPLEMENTED`: the path is mapped, but not for the request's method (answered 405).
pub const UNIMPLEMENTED: i32 = 12;
/// `INTERNAL`: the upstream's answer cannot be transcoded.
pub const INTERNAL: i32 = 13;
/// `UNAVAILABLE`: no (usable) gRPC answer from the upstream.
pub const UNAVAILABLE: i32 = 14;

/// The HTTP status answered for gRPC status `code`.
pub fn http_status(code: i32) -> u16 {
    match code {
        0 => 200,   // OK
        1 => 499,   // CANCELLED
        2 => 500,   // UNKNOWN
        3 => 400,   // INVALID_ARGUMENT
        4 => 504,   // DEADLINE_EXCEEDED
        5 => 404,   // NOT_FOUND
        6 => 409,   // ALREADY_EXISTS
        7 => 403,   // PERMISSION_DENIED
        8 => 429,   // RESOURCE_EXHAUSTED
        9 => 400,   // FAILED_PRECONDITION
        10 => 409,  // ABORTED
        11 => 400,  // OUT_OF_RANGE
        12 => 501,  // UNIMPLEMENTED
        13 => 500,  // INTERNAL
        14 => 503,  // UNAVAILABLE
        15 => 500,  // DATA_LOSS
        16 => 401,  // UNAUTHENTICATED
        _ => 500,
    }
}

/// A `google.rpc.Status` as JSON: `{"code", "message", "details"}`.
pub fn body(code: i32, message: &str, details: Vec<Value>) -> Value {
    json!({ "code": code, "message": message, "details": details })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_status() {
        let expected = [200, 499, 500, 400, 504, 404, 409, 403, 429, 400, 409, 400, 501, 500, 503, 500, 401];
        for (code, status) in expected.iter().enumerate() {
            assert_eq!(http_status(code as i32), *status, "code {code}");
        }
        assert_eq!(http_status(17), 500);
        assert_eq!(http_status(-1), 500);
    }
}
