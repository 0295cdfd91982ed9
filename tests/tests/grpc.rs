//! `builtin:grpc-transcode` and HTTP/2 upstreams, end to end: REST/JSON clients through the real
//! gateway to a real tonic gRPC server (h2c, and h2 over TLS with a test CA made by rcgen), every
//! mapping kind, well-known types, every status code, a large message; what the server received
//! is compared field by field. Trailers are carried both ways for a real HTTP/2 client, and seen
//! by a response phase.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use airlock_tests::{Gateway, HttpClient, Reply};
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message as _;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tonic::{Code, Status};

#[allow(clippy::all, missing_docs)]
mod pb {
    tonic::include_proto!("demo.v1");
}

use pb::users_client::UsersClient;
use pb::users_server::{Users, UsersServer};
use pb::{BigReply, BigRequest, CreateUserRequest, Everything, FailRequest, Filter, GetUserRequest, PingReply, PingRequest, Role, User};

/// The FileDescriptorSet of tests/protos (imports included), compiled by build.rs with protox.
const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/demo.pb"));

// ---------------------------------------------------------------------------------------------
// The gRPC server

/// What the server received, per method, and the metadata of the last call.
#[derive(Default)]
struct Seen {
    get: Mutex<Option<GetUserRequest>>,
    create: Mutex<Option<CreateUserRequest>>,
    update: Mutex<Option<User>>,
    echo: Mutex<Option<Everything>>,
    big: Mutex<Option<(u32, usize)>>,
    metadata: Mutex<Option<HeaderMap>>,
    calls: Mutex<usize>,
}

impl Seen {
    fn record<T>(&self, request: &tonic::Request<T>) {
        *self.metadata.lock().unwrap() = Some(request.metadata().clone().into_headers());
        *self.calls.lock().unwrap() += 1;
    }

    fn header(&self, name: &str) -> Option<String> {
        self.metadata.lock().unwrap().as_ref()?.get(name).map(|v| v.to_str().unwrap().to_owned())
    }

    fn calls(&self) -> usize {
        *self.calls.lock().unwrap()
    }
}

/// `google.rpc.Status`, for `grpc-status-details-bin`.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

struct Demo(Arc<Seen>);

fn created_at() -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: 1_700_000_000, nanos: 0 }
}

#[tonic::async_trait]
impl Users for Demo {
    async fn get_user(&self, request: tonic::Request<GetUserRequest>) -> Result<tonic::Response<User>, Status> {
        self.0.record(&request);
        let r = request.into_inner();
        *self.0.get.lock().unwrap() = Some(r.clone());
        if r.id == 404 {
            return Err(Status::not_found("no user 404"));
        }
        Ok(tonic::Response::new(User {
            id: r.id,
            display_name: format!("user {}", r.id),
            role: Role::Admin as i32,
            created_at: Some(created_at()),
            tags: r.fields,
        }))
    }

    async fn create_user(&self, request: tonic::Request<CreateUserRequest>) -> Result<tonic::Response<User>, Status> {
        self.0.record(&request);
        let r = request.into_inner();
        *self.0.create.lock().unwrap() = Some(r.clone());
        Ok(tonic::Response::new(User { id: 7, ..r.user.unwrap_or_default() }))
    }

    async fn update_user(&self, request: tonic::Request<User>) -> Result<tonic::Response<User>, Status> {
        self.0.record(&request);
        let r = request.into_inner();
        *self.0.update.lock().unwrap() = Some(r.clone());
        Ok(tonic::Response::new(r))
    }

    async fn echo(&self, request: tonic::Request<Everything>) -> Result<tonic::Response<Everything>, Status> {
        self.0.record(&request);
        let mut r = request.into_inner();
        *self.0.echo.lock().unwrap() = Some(r.clone());
        // Answers no proto3 JSON writer may write as it is: a Duration of mixed signs.
        if r.text == "mixed-signs" {
            r.took = Some(prost_types::Duration { seconds: 1, nanos: -5 });
        }
        Ok(tonic::Response::new(r))
    }

    async fn fail(&self, request: tonic::Request<FailRequest>) -> Result<tonic::Response<()>, Status> {
        self.0.record(&request);
        let r = request.into_inner();
        if r.code == 0 {
            return Ok(tonic::Response::new(()));
        }
        let code = Code::from_i32(r.code);
        if r.message == "details" {
            let detail = Filter { name_prefix: "x".into(), limit: 3 };
            let status = RpcStatus {
                code: r.code,
                message: "with details".into(),
                details: vec![prost_types::Any { type_url: "type.googleapis.com/demo.v1.Filter".into(), value: detail.encode_to_vec() }],
            };
            return Err(Status::with_details(code, "with details", status.encode_to_vec().into()));
        }
        Err(Status::new(code, r.message))
    }

    async fn big(&self, request: tonic::Request<BigRequest>) -> Result<tonic::Response<BigReply>, Status> {
        self.0.record(&request);
        let r = request.into_inner();
        *self.0.big.lock().unwrap() = Some((r.size, r.payload.len()));
        Ok(tonic::Response::new(BigReply { data: vec![b'x'; r.size as usize], received: r.payload.len() as u32 }))
    }

    async fn ping(&self, request: tonic::Request<PingRequest>) -> Result<tonic::Response<PingReply>, Status> {
        self.0.record(&request);
        Ok(tonic::Response::new(PingReply { note: request.into_inner().note }))
    }
}

/// Serves `service` over HTTP/2 only: h2c, or TLS (ALPN h2) with `tls`.
fn spawn_h2<S, B>(listener: TcpListener, tls: Option<TlsAcceptor>, service: S) -> tokio::task::JoinHandle<()>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let service = service.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                match tls {
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                    }
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                }
            });
        }
    })
}

/// A running tonic server.
struct GrpcServer {
    addr: std::net::SocketAddr,
    seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl GrpcServer {
    async fn start(tls: Option<TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let routes = tonic::service::Routes::new(UsersServer::new(Demo(seen.clone())).max_decoding_message_size(16 << 20));
        let task = spawn_h2(listener, tls, hyper_util::service::TowerToHyperService::new(routes));
        Self { addr, seen, task }
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// Gateway configs

/// The config of a gateway transcoding `/v1` to `server` (h2c), with `extra` plugin config lines
/// (service `demo.v1.Users` only, unless they name `services`: `demo.v1.Feed` streams).
fn config(server: &GrpcServer, extra: &str) -> String {
    let services = if extra.contains("services") { "" } else { "services = [\"demo.v1.Users\"]" };
    format!(
        r#"
[upstreams.grpc]
targets = ["{addr}"]
protocol = "h2c"

[plugins.users]
source = "builtin:grpc-transcode"
capabilities = ["files"]
files = {{ dir = "protos" }}
cpu_ms = 5000

[[routes]]
path_prefix = "/"
upstream = "grpc"
timeout_ms = 5000
[[routes.plugins]]
plugin = "users"
[routes.plugins.config]
descriptor = "demo.pb"
{services}
{extra}
"#,
        addr = server.addr
    )
}

/// Starts a gateway whose config directory holds `protos/demo.pb` (the plugin reads it at load).
async fn gateway(toml: &str) -> Result<Gateway, airlock::StartError> {
    Gateway::try_start_with_files(toml, None, &[("protos/demo.pb", DESCRIPTOR_SET)]).await
}

async fn json_call(gw: &Gateway, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    raw_call(gw, method, path, &body).await
}

/// [`json_call`] with the body sent as it is written: number texts that `json!` would change
/// (`1.0`, `9007199254740993.0`), one object's keys in their order.
async fn raw_call(gw: &Gateway, method: &str, path: &str, body: &str) -> (StatusCode, Value) {
    let client = HttpClient::http1();
    let reply: Reply = client.request(method, &gw.url(path), &[("content-type", "application/json")], body.as_bytes()).await;
    let value = if reply.body.is_empty() { Value::Null } else { reply.json() };
    (reply.status, value)
}

/// Sends each `(method, path, raw body)` and checks the answer is a 400 (INVALID_ARGUMENT) whose
/// message holds the text.
async fn assert_400s(gw: &Gateway, cases: &[(&str, &str, &str, &str)]) {
    for (method, path, body, text) in cases {
        let (status, reply) = raw_call(gw, method, path, body).await;
        assert_eq!(status, 400, "{method} {path} {body}: {reply}");
        assert_eq!(reply["code"], 3, "{method} {path} {body}: {reply}");
        let message = reply["message"].as_str().unwrap();
        assert!(message.contains(text), "{method} {path} {body}: {reply}");
    }
}

// ---------------------------------------------------------------------------------------------
// Mappings

#[tokio::test]
async fn get_with_path_variable_and_query_fields() {
    let server = GrpcServer::start(None).await;
    let gw = gateway(&config(&server, "")).await.unwrap();
    let (status, body) = json_call(
        &gw,
        "GET",
        "/v1/users/42?view=full&fields=a&fields=b%20c&role=ROLE_READER&verbose=true&filter.name_prefix=al&filter.limit=5",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"id": "42", "displayName": "user 42", "role": "ROLE_ADMIN", "createdAt": "2023-11-14T22:13:20Z", "tags": ["a", "b c"]})
    );
    let got = server.seen.get.lock().unwrap().clone().unwrap();
    assert_eq!(got.id, 42);
    assert_eq!(got.view, "full");
    assert_eq!(got.fields, vec!["a".to_owned(), "b c".to_owned()]);
    assert_eq!(got.role, Role::Reader as i32);
    assert!(got.verbose);
    assert_eq!(got.filter, Some(Filter { name_prefix: "al".into(), limit: 5 }));
    // What made it a gRPC call, and the deadline from the route's timeout.
    assert_eq!(server.seen.header("content-type").as_deref(), Some("application/grpc"));
    assert_eq!(server.seen.header("te").as_deref(), Some("trailers"));
    assert_eq!(server.seen.header("grpc-timeout").as_deref(), Some("5000m"));
}

/// HEAD is transcoded as the GET bound to its path: the server is called, and the client gets
/// the GET's status and headers without the body; a HEAD where only other methods are bound is
/// refused as they are.
#[tokio::test]
async fn head_is_transcoded_as_the_get_without_its_body() {
    let server = GrpcServer::start(None).await;
    let gw = gateway(&config(&server, "")).await.unwrap();
    let client = HttpClient::http1();
    let get = client.request("GET", &gw.url("/v1/users/7?view=brief"), &[], b"").await;
    assert_eq!(get.status, 200, "{}", get.text());
    let head = client.request("HEAD", &gw.url("/v1/users/7?view=brief"), &[], b"").await;
    assert_eq!(head.status, 200, "{}", head.text());
    assert!(head.body.is_empty(), "a HEAD answer has no body: {}", head.text());
    assert_eq!(head.header("content-type").as_deref(), Some("application/json"));
    assert_eq!(head.header("content-length"), get.header("content-length"), "the GET's length");
    assert_eq!(server.seen.calls(), 2, "both reached the gRPC server");
    let got = server.seen.get.lock().unwrap().clone().unwrap();
    assert_eq!((got.id, got.view.as_str()), (7, "brief"));
    // `/v1/echo` is bound to POST only.
    let head = client.request("HEAD", &gw.url("/v1/echo"), &[], b"").await;
    assert_eq!((head.status.as_u16(), head.header("allow").as_deref()), (405, Some("POST")));
    assert!(head.body.is_empty());
    assert_eq!(server.seen.calls(), 2);
}

#[tokio::test]
async fn post_with_the_body_in_one_field_and_patch_with_the_whole_body() {
    let server = GrpcServer::start(None).await;
    let gw = gateway(&config(&server, "")).await.unwrap();
    let user = json!({"displayName": "Ann", "role": "ROLE_READER", "createdAt": "2024-01-02T03:04:05.500Z", "tags": ["x"]});
    let (status, body) = json_call(&gw, "POST", "/v1/users", Some(user)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"id": "7", "displayName": "Ann", "role": "ROLE_READER", "createdAt": "2024-01-02T03:04:05.500Z", "tags": ["x"]}));
    let got = server.seen.create.lock().unwrap().clone().unwrap();
    let expected = User {
        id: 0,
        display_name: "Ann".into(),
        role: Role::Reader as i32,
        created_at: Some(prost_types::Timestamp { seconds: 1_704_164_645, nanos: 500_000_000 }),
        tags: vec!["x".into()],
    };
    assert_eq!(got.user, Some(expected));
    assert_eq!(got.request_tag, "");

    // body: "*" with the id from the path; the path variable wins over the body.
    let (status, body) = json_call(&gw, "PATCH", "/v1/users/9", Some(json!({"id": "1", "display_name": "B"}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"id": "9", "displayName": "B"}));
    let got = server.seen.update.lock().unwrap().clone().unwrap();
    assert_eq!(got, User { id: 9, display_name: "B".into(), ..Default::default() });
}

#[tokio::test]
async fn every_scalar_and_well_known_type_round_trips() {
    let server = GrpcServer::start(None).await;
    let gw = gateway(&config(&server, "")).await.unwrap();
    let sent = json!({
        "text": "héllo",
        "i32": -7,
        "i64": "9007199254740993",
        "u64": "18446744073709551615",
        "s64": "-5",
        "f64": "7",
        "flag": true,
        "dbl": 1.5,
        "flt": 2.5,
        "raw": "aGVsbG8=",
        "role": "ROLE_ADMIN",
        "at": "2024-05-06T07:08:09.123Z",
        "took": "3.500s",
        "maybeText": "",
        "maybeI64": "12",
        "maybeFlag": false,
        "doc": {"a": 1.0, "b": [true, null, "x"]},
        "anyValue": [1.0, "two"],
        "numbers": ["1", "-2"],
        "labels": {"k": "v"},
        "nested": {"namePrefix": "n", "limit": 1},
        "nestedList": [{"namePrefix": "a"}, {"limit": 2}]
    });
    let (status, body) = json_call(&gw, "POST", "/v1/echo", Some(sent.clone())).await;
    assert_eq!(status, 200, "{body}");
    // proto3 JSON both ways: the echo comes back as it was sent (int64 as strings, enums by
    // name, wrappers as plain values, set wrappers kept even when they hold the default).
    assert_eq!(body, sent);

    let got = server.seen.echo.lock().unwrap().clone().unwrap();
    assert_eq!(got.text, "héllo");
    assert_eq!(got.i32, -7);
    assert_eq!(got.i64, 9_007_199_254_740_993);
    assert_eq!(got.u64, u64::MAX);
    assert_eq!(got.s64, -5);
    assert_eq!(got.f64, 7);
    assert!(got.flag);
    assert_eq!(got.dbl, 1.5);
    assert_eq!(got.flt, 2.5);
    assert_eq!(got.raw, b"hello");
    assert_eq!(got.role, Role::Admin as i32);
    assert_eq!(got.at, Some(prost_types::Timestamp { seconds: 1_714_979_289, nanos: 123_000_000 }));
    assert_eq!(got.took, Some(prost_types::Duration { seconds: 3, nanos: 500_000_000 }));
    assert_eq!(got.maybe_text.as_deref(), Some(""));
    assert_eq!(got.maybe_i64, Some(12));
    assert_eq!(got.maybe_flag, Some(false));
    let doc = got.doc.unwrap();
    assert_eq!(doc.fields["a"].kind, Some(prost_types::value::Kind::NumberValue(1.0)));
    let Some(prost_types::value::Kind::ListValue(list)) = &doc.fields["b"].kind else { panic!("b is a list: {doc:?}") };
    assert_eq!(list.values.len(), 3);
    assert_eq!(list.values[0].kind, Some(prost_types::value::Kind::BoolValue(true)));
    assert!(matches!(list.values[1].kind, Some(prost_types::value::Kind::NullValue(_))));
    assert_eq!(list.values[2].kind, Some(prost_types::value::Kind::StringValue("x".into())));
    assert!(matches!(got.any_value.unwrap().kind, Some(prost_types::value::Kind::ListValue(_))));
    assert_eq!(got.numbers, vec![1, -2]);
    assert_eq!(got.labels, HashMap::from([("k".to_owned(), "v".to_owned())]));
    assert_eq!(got.nested, Some(Filter { name_prefix: "n".into(), limit: 1 }));
    assert_eq!(got.nested_list, vec![Filter { name_prefix: "a".into(), limit: 0 }, Filter { name_prefix: String::new(), limit: 2 }]);

    // The additional binding: GET with a path variable and query parameters of every kind.
    let (status, body) = json_call(&gw, "GET", "/v1/echo/hello%20world?i64=-3&role=ROLE_READER&numbers=4&numbers=5&at=2024-01-01T00:00:00Z&maybe_flag=true", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"text": "hello world", "i64": "-3", "role": "ROLE_READER", "at": "2024-01-01T00:00:00Z", "maybeFlag": true, "numbers": ["4", "5"]})
    );
    let got = server.seen.echo.lock().unwrap().clone().unwrap();
    assert_eq!((got.text.as_str(), got.i64, got.numbers.clone(), got.maybe_flag), ("hello world", -3, vec![4, 5], Some(true)));
}

/// google/api/http.proto: the query sets only fields neither the body nor the path covers.
/// Before, `?user.display_name=` overrode the body's value, `?user.id=` replaced a body that is
/// not an object (`[1, 2]`) and the call went on, and `?id=` lost silently to the path.
#[tokio::test]
async fn query_parameters_inside_the_body_field_or_the_path_are_400() {
    let server = GrpcServer::start(None).await;
    let gw = gateway(&config(&server, "")).await.unwrap();
    let cases: &[(&str, &str, Option<Value>, &str)] = &[
        ("POST", "/v1/users?user.display_name=q", Some(json!({"displayName": "a"})), "query parameter `user.display_name` is inside the request body's field `user`"),
        ("POST", "/v1/users?user.id=5", Some(json!([1, 2])), "query parameter `user.id` is inside the request body's field `user`"),
        ("POST", "/v1/users?user=x", Some(json!({})), "query parameter `user` is the request body's field"),
        ("GET", "/v1/users/5?id=6", None, "query parameter `id` sets the field of path variable `id`"),
        ("PATCH", "/v1/users/5?id=6", Some(json!({})), "unknown query parameter `id`: the request body is the whole message"),
        ("POST", "/v1/echo?text=a", Some(json!({})), "unknown query parameter `text`: the request body is the whole message"),
    ];
    for (method, path, body, text) in cases {
        let (status, reply) = json_call(&gw, method, path, body.clone()).await;
        assert_eq!(status.as_u16(), 400, "{method} {path}: {reply}");
        assert!(reply["message"].as_str().unwrap().starts_with(text), "{method} {path}: {reply}");
    }
    assert_eq!(server.seen.calls(), 0, "none reached the server");
    // A field outside the body is a query parameter, as before.
    let (status, body) = json_call(&gw, "POST", "/v1/users?request_tag=t", Some(json!({"displayName": "a"}))).await;
    assert_eq!((status.as_u16(), body["displayName"].clone()), (200, json!("a")), "{body}");
    let got = server.seen.create.lock().unwrap().clone().unwrap();
    assert_eq!((got.request_tag.as_str(), got.user.map(|u| u.display_name)), ("t", Some("a".to_owned())));
}

#[tokio::test]
async fn malformed_requests_are_400_and_unmapped_ones_404_without_reaching_the_server() {
    let server = GrpcServer::start(None).await;
    let gw = gateway(&config(&server, "")).await.unwrap();
    let cases: &[(&str, &str, Option<Value>, u16, &str)] = &[
        ("POST", "/v1/echo", Some(json!({"nope": 1})), 400, "nope"),
        ("GET", "/v1/users/42?nope=1", None, 400, "unknown query parameter `nope`"),
        ("GET", "/v1/users/abc", None, 400, "GetUserRequest"),
        ("POST", "/v1/echo", Some(json!({"i32": "x"})), 400, "does not fit `demo.v1.Everything`"),
        ("POST", "/v1/echo", Some(json!({"role": "ROLE_NOPE"})), 400, "ROLE_NOPE"),
        ("POST", "/v1/echo?text=a", Some(json!({})), 400, "unknown query parameter `text`"),
        ("GET", "/v1/users/1?verbose=maybe", None, 400, "true or false"),
        ("GET", "/v1/nothing", None, 404, "no gRPC method is mapped to GET /v1/nothing"),
        ("DELETE", "/v1/users/1", None, 405, "DELETE is not mapped to a gRPC method at /v1/users/1"),
        ("GET", "/demo.v1.Users/GetUser", None, 404, "no gRPC method"),
    ];
    for (method, path, body, expected, text) in cases {
        let (status, reply) = json_call(&gw, method, path, body.clone()).await;
        assert_eq!(status.as_u16(), *expected, "{method} {path}: {reply}");
        let code = match expected {
            400 => 3,
            405 => 12,
            _ => 5,
        };
        assert_eq!(reply["code"], code, "{method} {path}: {reply}");
        assert!(reply["message"].as_str().unwrap().contains(text), "{method} {path}: {reply}");
        assert_eq!(reply["details"], json!([]));
    }
    // A path bound to other methods: 405 with them in `Allow` (RFC 9110 15.5.6).
    let reply = HttpClient::http1().request("DELETE", &gw.url("/v1/users/1"), &[], b"").await;
    assert_eq!((reply.status.as_u16(), reply.header("allow").as_deref()), (405, Some("GET, HEAD, PATCH")), "{}", reply.text());
    // Invalid JSON.
    let reply = HttpClient::http1().request("POST", &gw.url("/v1/echo"), &[], b"{not json").await;
    assert_eq!(reply.status, 400);
    assert!(reply.json()["message"].as_str().unwrap().contains("not valid JSON"));
    assert_eq!(server.seen.calls(), 0, "nothing reached the gRPC server");
}

// ---------------------------------------------------------------------------------------------
// Statuses

#[tokio::test]
async fn every_grpc_status_maps_to_its_http_status() {
    let server = GrpcServer::start(None).await;
    let gw = gateway(&config(&server, "")).await.unwrap();
    let table = [
        (1, 499),
        (2, 500),
        (3, 400),
        (4, 504),
        (5, 404),
        (6, 409),
        (7, 403),
        (8, 429),
        (9, 400),
        (10, 409),
        (11, 400),
        (12, 501),
        (13, 500),
        (14, 503),
        (15, 500),
        (16, 401),
    ];
    for (code, http) in table {
        let (status, body) = json_call(&gw, "GET", &format!("/v1/fail/{code}?message=boom%20{code}%20%C3%A9"), None).await;
        assert_eq!(status.as_u16(), http, "grpc code {code}: {body}");
        assert_eq!(body, json!({"code": code, "message": format!("boom {code} é"), "details": []}), "grpc code {code}");
    }
    let (status, body) = json_call(&gw, "GET", "/v1/fail/0", None).await;
    assert_eq!((status.as_u16(), body), (200, json!({})));

    // A real error from a handler (trailers-only answer), and google.rpc.Status details.
    let (status, body) = json_call(&gw, "GET", "/v1/users/404", None).await;
    assert_eq!((status.as_u16(), body), (404, json!({"code": 5, "message": "no user 404", "details": []})));
    let (status, body) = json_call(&gw, "GET", "/v1/fail/9?message=details", None).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"code": 9, "message": "with details", "details": [{"@type": "type.googleapis.com/demo.v1.Filter", "namePrefix": "x", "limit": 3}]})
    );
}

/// An HTTP/2 upstream that answers like a broken gRPC server: `/no-status` without any
/// grpc-status, `/bad-status` with an unparsable one.
async fn broken_grpc_upstream() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = service_fn(|req: Request<Incoming>| async move {
        let path = req.uri().path().to_owned();
        let _ = req.into_body().collect().await;
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("abc"));
        let data = Some(Bytes::from_static(b"\0\0\0\0\0"));
        // `/Ping`: an unparsable grpc-status in the trailers; anything else: no trailers at all.
        let body = TrailerBody { data, trailers: path.ends_with("/Ping").then_some(trailers) };
        let mut response = Response::new(body);
        response.headers_mut().insert("content-type", HeaderValue::from_static("application/grpc"));
        Ok::<_, Infallible>(response)
    });
    (addr, spawn_h2(listener, None, service))
}

#[tokio::test]
async fn a_missing_or_unparsable_grpc_status_is_502() {
    let (addr, task) = broken_grpc_upstream().await;
    let server = GrpcServer { addr, seen: Arc::default(), task };
    let toml = config(
        &server,
        r#"[[routes.plugins.config.mappings]]
method = "demo.v1.Users/Ping"
http = "POST /ping"
body = "*""#,
    );
    let gw = gateway(&toml).await.unwrap();
    let (status, body) = json_call(&gw, "GET", "/v1/users/1", None).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["code"], 14, "{body}");
    assert!(body["message"].as_str().unwrap().contains("no grpc-status"), "{body}");
    let (status, body) = json_call(&gw, "POST", "/ping", Some(json!({"note": "n"}))).await;
    assert_eq!(status, 502, "{body}");
    assert!(body["message"].as_str().unwrap().contains("`abc` is not a status code"), "{body}");
}

/// A plugin after grpc-transcode in the chain that answers the request itself (rate-limit's
/// 429) reaches the client as it is: it is not a gRPC answer to transcode (a 502 before).
#[tokio::test]
async fn a_later_plugins_answer_is_passed_on_untranscoded() {
    let server = GrpcServer::start(None).await;
    let toml = config(&server, "")
        + "\n[[routes.plugins]]\nplugin = \"builtin:rate-limit\"\nconfig = { by = [\"route\"], limits = [{ limit = 1, window = \"minute\" }] }\n";
    let gw = gateway(&toml).await.unwrap();
    let (status, body) = json_call(&gw, "GET", "/v1/users/42", None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = json_call(&gw, "GET", "/v1/users/42", None).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"], "rate_limited", "{body}");
}

// ---------------------------------------------------------------------------------------------
// Large messages, explicit mappings, load-time refusals

#[tokio::test]
async fn a_large_message_both_ways() {
    let server = GrpcServer::start(None).await;
    let gw = gateway(&config(&server, "")).await.unwrap();
    let payload = vec![7u8; 1 << 20];
    let encoded = base64::engine::general_purpose::STANDARD.encode(&payload);
    let (status, body) = json_call(&gw, "POST", "/v1/big", Some(json!({"size": 3_000_000, "payload": encoded}))).await;
    assert_eq!(status, 200);
    // response_body: "data" answers that field alone: bytes as base64.
    let data = base64::engine::general_purpose::STANDARD.decode(body.as_str().unwrap()).unwrap();
    assert_eq!(data.len(), 3_000_000);
    assert!(data.iter().all(|b| *b == b'x'));
    assert_eq!(*server.seen.big.lock().unwrap(), Some((3_000_000, 1 << 20)));
}

#[tokio::test]
async fn explicit_mappings_without_annotations() {
    let server = GrpcServer::start(None).await;
    let extra = r#"annotations = false
[[routes.plugins.config.mappings]]
method = "demo.v1.Users/Ping"
http = "POST /ping"
body = "*"
[[routes.plugins.config.mappings]]
method = "demo.v1.Users.GetUser"
http = "GET /people/{id}"
response_body = "display_name""#;
    let gw = gateway(&config(&server, extra)).await.unwrap();
    let (status, body) = json_call(&gw, "POST", "/ping", Some(json!({"note": "hi"}))).await;
    assert_eq!((status.as_u16(), body), (200, json!({"note": "hi"})));
    let (status, body) = json_call(&gw, "GET", "/people/5", None).await;
    assert_eq!((status.as_u16(), body), (200, json!("user 5")));
    let (status, _) = json_call(&gw, "GET", "/v1/users/5", None).await;
    assert_eq!(status, 404, "annotations are off");
}

#[tokio::test]
async fn each_binding_of_a_method_answers_with_its_own_response_body() {
    let server = GrpcServer::start(None).await;
    // One method, several bindings: an annotation without `response_body` and a mapping with one
    // (GetUser), an annotation with one and a mapping without (Big), two mappings (Ping).
    let extra = r#"[[routes.plugins.config.mappings]]
method = "demo.v1.Users/GetUser"
http = "GET /v1/users/{id}/name"
response_body = "display_name"
[[routes.plugins.config.mappings]]
method = "demo.v1.Users/Big"
http = "POST /v1/big/whole"
body = "*"
[[routes.plugins.config.mappings]]
method = "demo.v1.Users/Ping"
http = "POST /ping/note"
body = "*"
response_body = "note"
[[routes.plugins.config.mappings]]
method = "demo.v1.Users/Ping"
http = "POST /ping"
body = "*""#;
    let gw = gateway(&config(&server, extra)).await.unwrap();
    let (status, body) = json_call(&gw, "GET", "/v1/users/5", None).await;
    assert_eq!((status.as_u16(), body["displayName"].clone()), (200, json!("user 5")), "the whole message");
    let (status, body) = json_call(&gw, "GET", "/v1/users/5/name", None).await;
    assert_eq!((status.as_u16(), body), (200, json!("user 5")), "only display_name");

    let (status, body) = json_call(&gw, "POST", "/v1/big", Some(json!({"size": 3}))).await;
    assert_eq!((status.as_u16(), body), (200, json!("eHh4")), "only data (the annotation's response_body)");
    let (status, body) = json_call(&gw, "POST", "/v1/big/whole", Some(json!({"size": 3}))).await;
    assert_eq!((status.as_u16(), body), (200, json!({"data": "eHh4"})), "the whole message");

    let (status, body) = json_call(&gw, "POST", "/ping/note", Some(json!({"note": "hi"}))).await;
    assert_eq!((status.as_u16(), body), (200, json!("hi")), "only note");
    let (status, body) = json_call(&gw, "POST", "/ping", Some(json!({"note": "hi"}))).await;
    assert_eq!((status.as_u16(), body), (200, json!({"note": "hi"})), "the whole message");
}

#[tokio::test]
async fn undecodable_values_repeated_singular_fields_and_unexpected_bodies_are_400_naming_them() {
    let server = GrpcServer::start(None).await;
    let extra = r#"[[routes.plugins.config.mappings]]
method = "demo.v1.Users/GetUser"
http = "DELETE /v1/users/{id}""#;
    let gw = gateway(&config(&server, extra)).await.unwrap();
    let cases: &[(&str, &str, Option<Value>, &str)] = &[
        // Percent-encoded bytes that are not UTF-8 (grpc-gateway: 400), never U+FFFD sent on.
        ("GET", "/v1/echo/%E9", None, "path variable `text` is not valid UTF-8"),
        ("GET", "/v1/echo/a%FFb", None, "path variable `text` is not valid UTF-8"),
        ("GET", "/v1/users/1?view=%E9t%E9", None, "query parameter `view` is not valid UTF-8"),
        ("GET", "/v1/users/1?vi%E9w=x", None, "query parameter name `vi%E9w` is not valid UTF-8"),
        // A singular field takes one value (grpc-gateway: "too many values").
        ("GET", "/v1/echo/x?i64=1&i64=2", None, "query parameter `i64` is given more than once, but field `i64` of `demo.v1.Everything` is not repeated"),
        ("GET", "/v1/users/1?filter.limit=1&filter.limit=2", None, "field `limit` of `demo.v1.Filter` is not repeated"),
        ("GET", "/v1/echo/x?maybe_flag=true&maybeFlag=false", None, "query parameter `maybeFlag` is given more than once"),
        // A body sent to a binding without `body`: the message names what the client sent.
        ("DELETE", "/v1/users/1", Some(json!({"id": "2"})), "DELETE /v1/users/1 takes no request body"),
    ];
    for (method, path, body, text) in cases {
        let (status, reply) = json_call(&gw, method, path, body.clone()).await;
        assert_eq!(status, 400, "{method} {path}: {reply}");
        assert_eq!(reply["code"], 3, "{method} {path}: {reply}");
        let message = reply["message"].as_str().unwrap();
        assert!(message.contains(text), "{method} {path}: {reply}");
        assert!(!message.contains('\u{FFFD}') && !message.contains("demo.v1.Users/"), "{method} {path}: {reply}");
        assert_eq!(reply["details"], json!([]));
    }
    assert_eq!(server.seen.calls(), 0, "nothing reached the gRPC server");

    // UTF-8 that is valid is decoded, repeated fields still take several values, and the
    // binding without `body` works without one.
    let (status, body) = json_call(&gw, "GET", "/v1/echo/%C3%A9t%C3%A9?numbers=1&numbers=2&maybe_text=%E2%9C%93", None).await;
    assert_eq!((status.as_u16(), body), (200, json!({"text": "été", "maybeText": "✓", "numbers": ["1", "2"]})));
    let (status, body) = json_call(&gw, "DELETE", "/v1/users/8", None).await;
    assert_eq!((status.as_u16(), body["id"].clone()), (200, json!("8")));
}

/// google/api/http.proto: a multi-segment variable (`{f=**}`, `{f=a/*/b/*}`) is percent-decoded
/// except `%2F` / `%2f`, which stay as they are; a single-segment one entirely. The same whatever
/// the value matched (before: a value with a `/` was not decoded at all, one without was, `%2F`
/// included).
#[tokio::test]
async fn multi_segment_path_variables_are_decoded_but_for_encoded_slashes() {
    let server = GrpcServer::start(None).await;
    let extra = r#"[[routes.plugins.config.mappings]]
method = "demo.v1.Users/Echo"
http = "GET /v1/files/{text=**}"
[[routes.plugins.config.mappings]]
method = "demo.v1.Users/Echo"
http = "GET /v1/{text=shelves/*/books/*}""#;
    let gw = gateway(&config(&server, extra)).await.unwrap();
    let cases = [
        ("/v1/files/a%20b/%C3%A9", "a b/é"),
        ("/v1/files/a%20b", "a b"),
        ("/v1/files/a%2Fb", "a%2Fb"),
        ("/v1/files/x/a%2fb%20c", "x/a%2fb c"),
        ("/v1/shelves/a%20b/books/c%2Fd", "shelves/a b/books/c%2Fd"),
        // A single-segment variable: everything decoded, `%2F` too.
        ("/v1/echo/a%2Fb%20c", "a/b c"),
    ];
    for (path, text) in cases {
        let (status, body) = json_call(&gw, "GET", path, None).await;
        assert_eq!((status.as_u16(), body), (200, json!({"text": text})), "{path}");
        assert_eq!(server.seen.echo.lock().unwrap().as_ref().map(|e| e.text.clone()).as_deref(), Some(text), "{path}");
    }
    // Bytes that are not UTF-8 once decoded are still refused, in any segment.
    let calls = server.seen.calls();
    let (status, body) = json_call(&gw, "GET", "/v1/files/a/%E9", None).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("path variable `text` is not valid UTF-8"), "{body}");
    assert_eq!(server.seen.calls(), calls);
}

/// A value that does not fit its field is a 400 naming the path variable, query parameter or
/// body field (before: only the request message was named).
#[tokio::test]
async fn a_value_that_does_not_fit_is_a_400_naming_its_parameter_or_field() {
    let server = GrpcServer::start(None).await;
    let gw = gateway(&config(&server, "")).await.unwrap();
    let cases: &[(&str, &str, Option<Value>, &str)] = &[
        ("GET", "/v1/users/abc", None, "path variable `id` does not fit field `id` (int64) of `demo.v1.GetUserRequest`: "),
        ("GET", "/v1/echo/x?i32=2147483648", None, "query parameter `i32` does not fit field `i32` (int32) of `demo.v1.Everything`: "),
        ("GET", "/v1/echo/x?at=notatime", None, "query parameter `at` does not fit field `at` (google.protobuf.Timestamp)"),
        ("GET", "/v1/users/1?filter.limit=-1", None, "query parameter `filter.limit` does not fit field `limit` (uint32) of `demo.v1.Filter`"),
        ("GET", "/v1/users/1?role=ROLE_NOPE", None, "query parameter `role` does not fit field `role` (demo.v1.Role)"),
        ("GET", "/v1/echo/x?flt=1e40", None, "1e40 is out of range for field `flt` (float)"),
        ("POST", "/v1/echo", Some(json!({"text": "ok", "flag": 1})), "the request does not fit `demo.v1.Everything`: field `flag`: "),
        ("POST", "/v1/echo", Some(json!({"nested": {"limit": "x"}})), "field `nested.limit`: "),
        ("POST", "/v1/echo", Some(json!({"nestedList": [{}, {"limit": -1}]})), "field `nestedList[1].limit`: "),
        ("POST", "/v1/users", Some(json!({"displayName": 5})), "field `user.displayName`: "),
    ];
    for (method, path, body, text) in cases {
        let (status, reply) = json_call(&gw, method, path, body.clone()).await;
        assert_eq!(status, 400, "{method} {path}: {reply}");
        assert_eq!(reply["code"], 3, "{method} {path}: {reply}");
        let message = reply["message"].as_str().unwrap();
        assert!(message.contains(text), "{method} {path}: {reply}");
    }
    assert_eq!(server.seen.calls(), 0, "nothing reached the gRPC server");
}

/// Enum values by number in the path and the query, as in the body (and grpc-gateway).
#[tokio::test]
async fn enum_values_by_number_are_taken_in_the_path_and_query() {
    let server = GrpcServer::start(None).await;
    let extra = r#"[[routes.plugins.config.mappings]]
method = "demo.v1.Users/Echo"
http = "GET /v1/roles/{role}""#;
    let gw = gateway(&config(&server, extra)).await.unwrap();
    let (status, body) = json_call(&gw, "GET", "/v1/roles/2", None).await;
    assert_eq!((status.as_u16(), body), (200, json!({"role": "ROLE_ADMIN"})));
    let (status, body) = json_call(&gw, "GET", "/v1/users/1?role=1", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.seen.get.lock().unwrap().as_ref().map(|r| r.role), Some(Role::Reader as i32));
    let (status, body) = json_call(&gw, "GET", "/v1/roles/ROLE_READER", None).await;
    assert_eq!((status.as_u16(), body), (200, json!({"role": "ROLE_READER"})), "names still work");
    let (status, body) = json_call(&gw, "POST", "/v1/echo", Some(json!({"role": 2}))).await;
    assert_eq!((status.as_u16(), body), (200, json!({"role": "ROLE_ADMIN"})), "as in the body");
}

/// The plugin owns the gRPC framing: a REST client's reserved `grpc-*` headers never reach the
/// server (before: `grpc-accept-encoding: gzip` invited a compressed answer, then refused as
/// 502); `grpc-timeout` is the shorter of the client's and the route's.
#[tokio::test]
async fn a_clients_reserved_grpc_headers_are_not_sent_to_the_server() {
    let server = GrpcServer::start(None).await;
    let gw = gateway(&config(&server, "")).await.unwrap();
    let reserved = [
        ("grpc-encoding", "gzip"),
        ("grpc-accept-encoding", "gzip"),
        ("grpc-status", "5"),
        ("grpc-message", "forged"),
        ("grpc-status-details-bin", "AAAA"),
        ("grpc-previous-rpc-attempts", "3"),
    ];
    let mut headers = reserved.to_vec();
    headers.push(("grpc-timeout", "2S"));
    let reply = HttpClient::http1().request("GET", &gw.url("/v1/users/3"), &headers, b"").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["displayName"], "user 3");
    for (name, _) in reserved {
        assert_eq!(server.seen.header(name), None, "{name} reached the server");
    }
    assert_eq!(server.seen.header("grpc-timeout").as_deref(), Some("2S"), "shorter than the route's 5000m");
    assert_eq!(server.seen.header("content-type").as_deref(), Some("application/grpc"));
}

/// gRPC reads a header ending in `-bin` as base64 binary metadata: a REST client's that is not
/// base64 is a 400 naming it, not sent (before: sent on, and the server failed the call);
/// base64 ones, padded or not and listed with commas, go on as metadata.
#[tokio::test]
async fn a_bin_header_that_is_not_base64_is_a_400_naming_it() {
    let server = GrpcServer::start(None).await;
    let gw = gateway(&config(&server, "")).await.unwrap();
    let client = HttpClient::http1();
    let reply = client.request("GET", &gw.url("/v1/users/3"), &[("x-token-bin", "not base64!")], b"").await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert_eq!(reply.json()["code"], 3, "INVALID_ARGUMENT");
    let message = reply.json()["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("header `x-token-bin` ends in `-bin`") && message.contains("`not base64!` is not base64"), "{message}");
    assert_eq!(server.seen.calls(), 0, "the call was not made");
    for good in ["AQID", "AQ", "AQ==, BAUG"] {
        let reply = client.request("GET", &gw.url("/v1/users/3"), &[("x-token-bin", good)], b"").await;
        assert_eq!(reply.status, 200, "{good}: {}", reply.text());
    }
    assert_eq!(server.seen.calls(), 3);
}

/// protojson refuses one field given under both its JSON name and its proto name ("duplicate
/// field"): a 400 naming it (before: accepted, the last one silently winning).
#[tokio::test]
async fn one_field_under_its_json_and_its_proto_name_is_a_400_naming_it() {
    let server = GrpcServer::start(None).await;
    let gw = gateway(&config(&server, "")).await.unwrap();
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "POST",
            "/v1/echo",
            r#"{"maybeText": "a", "maybe_text": "b"}"#,
            "the request does not fit `demo.v1.Everything`: field `maybe_text`: `maybeText` and `maybe_text` both name field `maybe_text` of `demo.v1.Everything`",
        ),
        ("POST", "/v1/echo", r#"{"nested_list": [{"limit": 1}, {"name_prefix": "a", "limit": 2, "namePrefix": "b"}]}"#, "field `nested_list[1].namePrefix`: "),
        ("POST", "/v1/users", r#"{"display_name": "a", "role": 1, "displayName": "b"}"#, "field `user.displayName`: `display_name` and `displayName`"),
        ("PATCH", "/v1/users/3", r#"{"createdAt": "2024-01-01T00:00:00Z", "created_at": "2025-01-01T00:00:00Z"}"#, "field `created_at`: "),
    ];
    assert_400s(&gw, cases).await;
    assert_eq!(server.seen.calls(), 0, "nothing reached the gRPC server");

    // Keys that look like one field's two names in a map or a Struct are two keys of the
    // client's; either name alone is the field.
    let body = r#"{"labels": {"maybe_text": "a", "maybeText": "b"}, "doc": {"name_prefix": 1, "namePrefix": 2}, "maybe_text": "x", "nestedList": [{"namePrefix": "n"}]}"#;
    let (status, reply) = raw_call(&gw, "POST", "/v1/echo", body).await;
    assert_eq!(status, 200, "{reply}");
    let got = server.seen.echo.lock().unwrap().clone().unwrap();
    assert_eq!(got.labels, HashMap::from([("maybe_text".to_owned(), "a".to_owned()), ("maybeText".to_owned(), "b".to_owned())]));
    assert_eq!(got.doc.map(|d| d.fields.len()), Some(2));
    assert_eq!((got.maybe_text.as_deref(), got.nested_list[0].name_prefix.as_str()), (Some("x"), "n"));
}

/// protojson refuses a Duration or Timestamp with more than nine fractional digits: a 400 naming
/// the field or parameter (before: cut to nanoseconds and sent on).
#[tokio::test]
async fn durations_and_timestamps_finer_than_nanoseconds_are_a_400_naming_the_field() {
    let server = GrpcServer::start(None).await;
    let gw = gateway(&config(&server, "")).await.unwrap();
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "POST",
            "/v1/echo",
            r#"{"took": "1.0000000001s"}"#,
            "the request does not fit `demo.v1.Everything`: field `took`: 1.0000000001s has 10 fractional digits: google.protobuf.Duration takes at most 9",
        ),
        ("POST", "/v1/echo", r#"{"took": "-0.1234567890123s"}"#, "field `took`: -0.1234567890123s has 13 fractional digits"),
        ("POST", "/v1/echo", r#"{"at": "2024-01-02T03:04:05.1234567891Z"}"#, "field `at`: 2024-01-02T03:04:05.1234567891Z has 10 fractional digits: google.protobuf.Timestamp"),
        ("POST", "/v1/echo", r#"{"at": "2024-01-02T03:04:05.0000000000+01:00"}"#, "field `at`: "),
        ("POST", "/v1/users", r#"{"createdAt": "2024-01-02T03:04:05.1234567890Z"}"#, "field `user.createdAt`: "),
        ("GET", "/v1/echo/x?took=0.0000000001s", "", "query parameter `took`: field `took`: 0.0000000001s has 10 fractional digits"),
        ("GET", "/v1/echo/x?at=2024-01-02T03:04:05.1234567890Z", "", "query parameter `at`: "),
    ];
    assert_400s(&gw, cases).await;
    assert_eq!(server.seen.calls(), 0, "nothing reached the gRPC server");

    // Nine digits are nanoseconds, exactly.
    let body = r#"{"took": "1.000000001s", "at": "2024-01-02T03:04:05.123456789Z"}"#;
    let (status, reply) = raw_call(&gw, "POST", "/v1/echo", body).await;
    assert_eq!(status, 200, "{reply}");
    let got = server.seen.echo.lock().unwrap().clone().unwrap();
    assert_eq!(got.took, Some(prost_types::Duration { seconds: 1, nanos: 1 }));
    assert_eq!(got.at, Some(prost_types::Timestamp { seconds: 1_704_164_645, nanos: 123_456_789 }));
    let (status, reply) = raw_call(&gw, "GET", "/v1/echo/x?took=-0.000000001s", "").await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(server.seen.echo.lock().unwrap().as_ref().and_then(|e| e.took), Some(prost_types::Duration { seconds: 0, nanos: -1 }));
}

/// proto3 JSON writes a FloatValue or DoubleValue holding NaN or an infinity as it writes a
/// plain float field (before: `null`, as if unset).
#[tokio::test]
async fn non_finite_float_wrappers_are_answered_nan_and_infinity() {
    let server = GrpcServer::start(None).await;
    let gw = gateway(&config(&server, "")).await.unwrap();
    for (flt, dbl) in [("NaN", "-Infinity"), ("Infinity", "NaN")] {
        let body = json!({"maybeFlt": flt, "maybeDbl": dbl, "flt": flt});
        let (status, reply) = json_call(&gw, "POST", "/v1/echo", Some(body.clone())).await;
        assert_eq!((status.as_u16(), reply), (200, body));
    }
    let got = server.seen.echo.lock().unwrap().clone().unwrap();
    assert!(got.maybe_flt == Some(f32::INFINITY) && got.maybe_dbl.is_some_and(f64::is_nan), "{got:?}");
}

/// protojson refuses a Timestamp at second 60 (a 400 naming the field or parameter; before:
/// made :59 and sent on), and will not write a Duration whose seconds and nanos have different
/// signs (a 502, as other malformed answers; before: written with a flipped sign).
#[tokio::test]
async fn a_leap_second_is_a_400_and_a_duration_of_mixed_signs_a_502() {
    let server = GrpcServer::start(None).await;
    let gw = gateway(&config(&server, "")).await.unwrap();
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "POST",
            "/v1/echo",
            r#"{"at": "2024-06-30T12:00:60.5Z"}"#,
            "the request does not fit `demo.v1.Everything`: field `at`: 2024-06-30T12:00:60.5Z is at second 60 (a leap second)",
        ),
        ("POST", "/v1/users", r#"{"createdAt": "2016-12-31T23:59:60Z"}"#, "field `user.createdAt`: 2016-12-31T23:59:60Z is at second 60"),
        ("GET", "/v1/echo/x?at=2024-06-30T12:00:60.5Z", "", "query parameter `at`: field `at`: 2024-06-30T12:00:60.5Z is at second 60"),
    ];
    assert_400s(&gw, cases).await;
    assert_eq!(server.seen.calls(), 0, "nothing reached the gRPC server");
    let (status, reply) = raw_call(&gw, "POST", "/v1/echo", r#"{"at": "2024-06-30T12:00:59.5Z"}"#).await;
    assert_eq!((status.as_u16(), reply["at"].clone()), (200, json!("2024-06-30T12:00:59.500Z")));

    let (status, reply) = raw_call(&gw, "POST", "/v1/echo", r#"{"text": "mixed-signs"}"#).await;
    assert_eq!(status, 502, "{reply}");
    let message = reply["message"].as_str().unwrap();
    assert!(message.contains("field `took` is a google.protobuf.Duration of 1 seconds and -5 nanos: their signs differ"), "{reply}");
}

/// protojson takes an integer field's value in exponent or decimal form when it is integral, as
/// a JSON number or a string, exactly (before: such strings were refused, and numbers went
/// through a float: 9007199254740993.0 arrived rounded, 2^64 as u64::MAX); a value that is not
/// integral or out of range is a 400 naming the field.
#[tokio::test]
async fn integral_numbers_in_exponent_or_decimal_form_are_taken_exactly() {
    let server = GrpcServer::start(None).await;
    let gw = gateway(&config(&server, "")).await.unwrap();
    // Floats of other fields (double, Struct) before and among them: each keeps its own value.
    let body = r#"{"dbl": 1.5, "doc": {"a": 1.0, "b": [2.5e0]}, "i32": "1e3", "i64": 9007199254740993.0,
        "u64": 1.8446744073709551615e19, "s64": "-2.5e1", "f64": "7.0", "maybeI64": 1.2e1, "flt": 0.5,
        "numbers": [1E2, "2e1", 3, -0.0], "role": 2.0, "nested": {"limit": 4.0}, "anyValue": 0.25}"#;
    let (status, reply) = raw_call(&gw, "POST", "/v1/echo", body).await;
    assert_eq!(status, 200, "{reply}");
    let got = server.seen.echo.lock().unwrap().clone().unwrap();
    assert_eq!((got.i32, got.i64, got.u64, got.s64, got.f64), (1000, 9_007_199_254_740_993, u64::MAX, -25, 7));
    assert_eq!((got.maybe_i64, got.numbers.clone(), got.role), (Some(12), vec![100, 20, 3, 0], Role::Admin as i32));
    assert_eq!(got.nested.as_ref().map(|n| n.limit), Some(4));
    assert_eq!((got.dbl, got.flt), (1.5, 0.5));
    let doc = got.doc.unwrap();
    assert_eq!(doc.fields["a"].kind, Some(prost_types::value::Kind::NumberValue(1.0)));
    let Some(prost_types::value::Kind::ListValue(list)) = &doc.fields["b"].kind else { panic!("b is a list: {doc:?}") };
    assert_eq!(list.values[0].kind, Some(prost_types::value::Kind::NumberValue(2.5)));
    assert_eq!(got.any_value.unwrap().kind, Some(prost_types::value::Kind::NumberValue(0.25)));

    // In the query and the path too.
    let (status, reply) = raw_call(&gw, "GET", "/v1/echo/x?i64=1e3&i32=2.0&numbers=1e1&numbers=-3", "").await;
    assert_eq!(status, 200, "{reply}");
    let got = server.seen.echo.lock().unwrap().clone().unwrap();
    assert_eq!((got.i64, got.i32, got.numbers), (1000, 2, vec![10, -3]));
    let (status, reply) = raw_call(&gw, "GET", "/v1/users/4.2e1", "").await;
    assert_eq!((status.as_u16(), reply["id"].clone()), (200, json!("42")));

    let calls = server.seen.calls();
    let cases: &[(&str, &str, &str, &str)] = &[
        ("POST", "/v1/echo", r#"{"i64": 1.5}"#, "the request does not fit `demo.v1.Everything`: field `i64`: 1.5 is not an integer (int64)"),
        ("POST", "/v1/echo", r#"{"i64": "15e-1"}"#, "field `i64`: 15e-1 is not an integer (int64)"),
        ("POST", "/v1/echo", r#"{"i32": "1e10"}"#, "field `i32`: 1e10 is out of range for int32"),
        ("POST", "/v1/echo", r#"{"u64": 18446744073709551616}"#, "field `u64`: 18446744073709551616 is out of range for uint64"),
        ("POST", "/v1/echo", r#"{"i64": 9223372036854775808.0}"#, "field `i64`: 9223372036854775808.0 is out of range for int64"),
        ("POST", "/v1/echo", r#"{"dbl": 0.5, "nestedList": [{}, {"limit": 2.5}]}"#, "field `nestedList[1].limit`: 2.5 is not an integer (uint32)"),
        ("GET", "/v1/echo/x?i64=1.5", "", "query parameter `i64` does not fit field `i64` (int64) of `demo.v1.Everything`: 1.5 is not an integer (int64)"),
        ("GET", "/v1/users/1e19", "", "path variable `id` does not fit field `id` (int64) of `demo.v1.GetUserRequest`: 1e19 is out of range for int64"),
    ];
    assert_400s(&gw, cases).await;
    assert_eq!(server.seen.calls(), calls, "nothing more reached the gRPC server");
}

/// A verb follows the last colon of the last segment, and only a bound verb is one (Envoy's
/// transcoder, grpc-gateway): before, the first colon started the verb, so `/v2/things/a:b:run`
/// and `/v1/echo/urn:isbn:123` matched nothing (404).
#[tokio::test]
async fn the_verb_follows_the_last_colon_and_other_colons_are_part_of_the_segment() {
    let server = GrpcServer::start(None).await;
    let extra = r#"[[routes.plugins.config.mappings]]
method = "demo.v1.Users/Echo"
http = "POST /v2/things/{text}:run"
body = "*""#;
    let gw = gateway(&config(&server, extra)).await.unwrap();
    let (status, body) = json_call(&gw, "POST", "/v2/things/a:b:run", Some(json!({"i32": 1}))).await;
    assert_eq!((status.as_u16(), body), (200, json!({"text": "a:b", "i32": 1})));
    let (status, body) = json_call(&gw, "GET", "/v1/echo/urn:isbn:123", None).await;
    assert_eq!((status.as_u16(), body), (200, json!({"text": "urn:isbn:123"})), "`123` is no bound verb");
    // `run` is: a value ending so writes its colon `%3A`.
    let (status, _) = json_call(&gw, "GET", "/v1/echo/a:run", None).await;
    assert_eq!(status.as_u16(), 404);
    let (status, body) = json_call(&gw, "GET", "/v1/echo/a%3Arun", None).await;
    assert_eq!((status.as_u16(), body), (200, json!({"text": "a:run"})));
}

/// Envoy's transcoder and grpc-gateway prefer the more specific binding: a literal segment over a
/// variable, a variable over `**`, whatever the order the bindings are listed in (before: the
/// first listed that matched, so `/v1/users/{id}` shadowed a later `/v1/users/me`).
#[tokio::test]
async fn a_literal_segment_wins_over_a_variable_and_a_variable_over_a_wildcard_whatever_the_order() {
    let server = GrpcServer::start(None).await;
    // The GetUser annotation `GET /v1/users/{id}` comes before every mapping; the `**` mapping
    // before the `{text}` one.
    let extra = r#"[[routes.plugins.config.mappings]]
method = "demo.v1.Users/Ping"
http = "GET /v1/things/{note=**}"
[[routes.plugins.config.mappings]]
method = "demo.v1.Users/Echo"
http = "GET /v1/things/{text}"
[[routes.plugins.config.mappings]]
method = "demo.v1.Users/Ping"
http = "GET /v1/users/me""#;
    let gw = gateway(&config(&server, extra)).await.unwrap();
    let (status, body) = json_call(&gw, "GET", "/v1/users/me", None).await;
    assert_eq!((status.as_u16(), body), (200, json!({})), "Ping, not GetUser with id `me`");
    assert!(server.seen.get.lock().unwrap().is_none());
    let (status, body) = json_call(&gw, "GET", "/v1/users/42", None).await;
    assert_eq!((status.as_u16(), body["displayName"].clone()), (200, json!("user 42")), "the variable still takes the rest");

    let (status, body) = json_call(&gw, "GET", "/v1/things/x", None).await;
    assert_eq!((status.as_u16(), body), (200, json!({"text": "x"})), "Echo: `{{text}}` before `**`");
    let (status, body) = json_call(&gw, "GET", "/v1/things/x/y", None).await;
    assert_eq!((status.as_u16(), body), (200, json!({"note": "x/y"})), "Ping: only `**` takes two segments");
}

#[tokio::test]
async fn streaming_methods_bad_mappings_and_ungranted_descriptors_are_refused_at_load() {
    let server = GrpcServer::start(None).await;
    let cases = [
        (r#"services = ["demo.v1.Feed"]"#, "method `demo.v1.Feed.Watch` is server-streaming"),
        (r#"services = ["demo.v1.Nope"]"#, "no service `demo.v1.Nope`"),
        (
            "annotations = false\n[[routes.plugins.config.mappings]]\nmethod = \"demo.v1.Users/Nope\"\nhttp = \"GET /x\"",
            "`mappings[0].method`: service `demo.v1.Users` has no method `Nope`",
        ),
        (
            "annotations = false\n[[routes.plugins.config.mappings]]\nmethod = \"demo.v1.Users/GetUser\"\nhttp = \"GET /x/{nope}\"",
            "path variable `nope`",
        ),
        ("annotations = false", "no method is mapped"),
        // Templates no request can match (before: loaded, and every request a 404).
        (
            "annotations = false\n[[routes.plugins.config.mappings]]\nmethod = \"demo.v1.Users/Echo\"\nhttp = \"GET /v1/x?a=b\"",
            "`mappings[0].http`: path template `/v1/x?a=b` never matches: a binding matches the request's path, without the query",
        ),
        (
            "annotations = false\n[[routes.plugins.config.mappings]]\nmethod = \"demo.v1.Users/Echo\"\nhttp = \"GET /v1/x#f\"",
            "`mappings[0].http`: path template `/v1/x#f` never matches: a fragment (`#`) is never sent",
        ),
        (
            "annotations = false\n[[routes.plugins.config.mappings]]\nmethod = \"demo.v1.Users/Echo\"\nhttp = \"GET /v1/x:\"",
            "`mappings[0].http`: path template `/v1/x:` never matches: `:` with no verb after it",
        ),
        // Bindings that load but could never work: refused at load, naming why.
        (
            "annotations = false\n[[routes.plugins.config.mappings]]\nmethod = \"demo.v1.Users/GetUser\"\nhttp = \"GET /x/{filter}\"",
            "path variable `filter` names a field of message type `demo.v1.Filter`",
        ),
        (
            "annotations = false\n[[routes.plugins.config.mappings]]\nmethod = \"demo.v1.Users/GetUser\"\nhttp = \"GET /x/{view}/{view}\"",
            "path variable `view` is used twice",
        ),
        // Two members of one oneof (before: loaded, and every request a 400).
        (
            "annotations = false\n[[routes.plugins.config.mappings]]\nmethod = \"demo.v1.Users/GetUser\"\nhttp = \"GET /x/{email}/{handle}\"",
            "`mappings[0].http`: path variables `email` and `handle` set two members of oneof `demo.v1.GetUserRequest.lookup`, which holds one",
        ),
        (
            "annotations = false\n[[routes.plugins.config.mappings]]\nmethod = \"demo.v1.Users/GetUser\"\nhttp = \"POST /x/{email}\"\nbody = \"handle\"",
            "`mappings[0].body`: `handle` and path variable `email` are two members of oneof `demo.v1.GetUserRequest.lookup`",
        ),
        (
            "annotations = false\n[[routes.plugins.config.mappings]]\nmethod = \"demo.v1.Users/GetUser\"\nhttp = \"GET /x/{view}\"\n\
             [[routes.plugins.config.mappings]]\nmethod = \"demo.v1.Users/Echo\"\nhttp = \"GET /x/{text}\"",
            "`demo.v1.Users.GetUser` and `demo.v1.Users.Echo` are bound to the same GET path",
        ),
        // The same paths, the variables drawn otherwise: `/v1/users/{id}` of the annotation.
        (
            "[[routes.plugins.config.mappings]]\nmethod = \"demo.v1.Users/Echo\"\nhttp = \"GET /v1/{text=users/*}\"",
            "`demo.v1.Users.GetUser` and `demo.v1.Users.Echo` are bound to the same GET path",
        ),
    ];
    for (extra, expected) in cases {
        let error = gateway(&config(&server, extra)).await.err().unwrap_or_else(|| panic!("{extra} loaded")).to_string();
        assert!(error.contains(expected), "{extra}: {error}");
    }
    let ungranted = config(&server, "").replace("capabilities = [\"files\"]\n", "").replace("files = { dir = \"protos\" }\n", "");
    let error = gateway(&ungranted).await.err().expect("no files grant").to_string();
    assert!(error.contains("files"), "{error}");
}

// ---------------------------------------------------------------------------------------------
// Upstream protocols

/// A test CA and a server certificate for `grpc.test` it signed, made by rcgen.
struct TestPki {
    ca_pem: String,
    acceptor: TlsAcceptor,
}

fn test_pki() -> TestPki {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "Airlock test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["grpc.test".to_owned()]).unwrap().signed_by(&key, &*ca).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    TestPki { ca_pem: ca.pem(), acceptor: TlsAcceptor::from(Arc::new(config)) }
}

#[tokio::test]
async fn h2_over_tls_upstream_with_a_configured_ca_and_server_name() {
    let pki = test_pki();
    let server = GrpcServer::start(Some(pki.acceptor.clone())).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let tls = format!("[upstreams.grpc.tls]\nca_file = \"{}\"\nserver_name = \"grpc.test\"\n", ca_file.display());
    let toml = config(&server, "").replace("protocol = \"h2c\"\n", &format!("protocol = \"h2\"\n{tls}"));
    let gw = gateway(&toml).await.unwrap();
    let (status, body) = json_call(&gw, "GET", "/v1/users/5", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["displayName"], "user 5");
    assert_eq!(server.seen.get.lock().unwrap().as_ref().map(|r| r.id), Some(5));

    // The certificate is checked: the system's roots do not know the test CA, and the name must fit.
    let untrusted = config(&server, "").replace("protocol = \"h2c\"\n", "protocol = \"h2\"\n");
    let gw = gateway(&untrusted).await.unwrap();
    let (status, _) = json_call(&gw, "GET", "/v1/users/5", None).await;
    assert_eq!(status, 502);
    let wrong_name = toml.replace("server_name = \"grpc.test\"", "server_name = \"other.test\"");
    let gw = gateway(&wrong_name).await.unwrap();
    let (status, _) = json_call(&gw, "GET", "/v1/users/5", None).await;
    assert_eq!(status, 502);
    assert_eq!(server.seen.calls(), 1);
}

#[tokio::test]
async fn upstream_protocol_errors_name_file_line_and_key() {
    let cases = [
        ("targets = [\"https://127.0.0.1:1\"]\nprotocol = \"h2c\"", "upstreams.u.protocol", 3, "use protocol = \"h2\""),
        ("targets = [\"http://127.0.0.1:1\"]\nprotocol = \"h2\"", "upstreams.u.protocol", 3, "use protocol = \"h2c\""),
        ("targets = [\"https://127.0.0.1:1\", \"127.0.0.1:2\"]", "upstreams.u.targets", 2, "same scheme"),
        ("targets = [\"127.0.0.1:1\"]\ntls = { server_name = \"x\" }", "upstreams.u.tls", 3, "cleartext upstream"),
        ("targets = [\"127.0.0.1:1\"]\nprotocol = \"h3\"", "upstreams.u.protocol", 3, "h3"),
        ("targets = [\"https://127.0.0.1:1\"]\ntls = { ca_file = \"missing.pem\" }", "upstreams.u.tls", 3, "missing.pem"),
    ];
    for (upstream, key, line, text) in cases {
        let toml = format!("[upstreams.u]\n{upstream}\n");
        let error = Gateway::try_start(&toml, None).await.err().unwrap_or_else(|| panic!("{upstream} loaded")).to_string();
        assert!(error.contains(key), "{upstream}: {error}");
        // The harness puts a 3-line [[listeners]] table first.
        assert!(error.contains(&format!("airlock.toml:{}:", line + 3)), "{upstream}: line {line}: {error}");
        assert!(error.contains(text), "{upstream}: {error}");
    }
}

#[tokio::test]
async fn native_grpc_clients_pass_through_with_their_trailers() {
    let server = GrpcServer::start(None).await;
    let toml = format!(
        "[access_log]\nenabled = true\npath = \"access.log\"\n\n[upstreams.grpc]\ntargets = [\"{}\"]\nprotocol = \"h2c\"\n\n[[routes]]\npath_prefix = \"/demo.v1.Users\"\nupstream = \"grpc\"\ntimeout_ms = 3000\n",
        server.addr
    );
    let gw = Gateway::start(&toml, None).await;
    let mut client = UsersClient::connect(gw.url("")).await.unwrap();
    fn with_id<T>(id: &str, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("x-request-id", id.parse().unwrap());
        request
    }
    let user = client.get_user(with_id("grpc-ok", GetUserRequest { id: 3, ..Default::default() })).await.unwrap().into_inner();
    assert_eq!(user.display_name, "user 3");
    // The status lives in the trailers (or a trailers-only answer): it reaches the client.
    let error = client.fail(with_id("grpc-denied", FailRequest { code: 7, message: "denied".into() })).await.unwrap_err();
    assert_eq!((error.code(), error.message()), (Code::PermissionDenied, "denied"));
    assert_eq!(server.seen.header("grpc-timeout").as_deref(), Some("3000m"), "the route's timeout, sent on");
    assert_eq!(server.seen.header("te").as_deref(), Some("trailers"));
    // Both are HTTP 200s: the access log says which call failed, from the trailers of one and
    // the trailers-only head of the other.
    let log = gw.dir.path().join("access.log");
    let ok = airlock_tests::access_log_line(&log, "grpc-ok").await;
    assert_eq!((ok["status"].as_u64(), ok["grpc_status"].as_u64()), (Some(200), Some(0)), "{ok}");
    let denied = airlock_tests::access_log_line(&log, "grpc-denied").await;
    assert_eq!((denied["status"].as_u64(), denied["grpc_status"].as_u64()), (Some(200), Some(7)), "{denied}");
}

/// A gRPC client's call the gateway refuses (no upstream answering) or a plugin refuses (a rate
/// limit) reaches the client as gRPC: a trailers-only answer whose `grpc-status` is what the
/// HTTP status maps to and whose `grpc-message` says why, not an HTTP error with a JSON body the
/// client cannot read. Metrics and the access log keep the HTTP status the gateway decided.
#[tokio::test]
async fn a_refused_grpc_call_is_answered_in_grpc() {
    let server = GrpcServer::start(None).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let toml = format!(
        r#"[access_log]
enabled = true
path = "access.log"

[upstreams.grpc]
targets = ["{server}"]
protocol = "h2c"

[upstreams.gone]
targets = ["{dead}"]
protocol = "h2c"

[[routes]]
path = "/demo.v1.Users/GetUser"
upstream = "gone"

[[routes]]
path = "/demo.v1.Users/Ping"
upstream = "grpc"
[[routes.plugins]]
plugin = "builtin:rate-limit"
config = {{ by = ["route"], limits = [{{ limit = 1, window = "minute" }}] }}
"#,
        server = server.addr
    );
    let gw = Gateway::start(&toml, None).await;
    let mut client = UsersClient::connect(gw.url("")).await.unwrap();
    let mut request = tonic::Request::new(GetUserRequest { id: 3, ..Default::default() });
    request.metadata_mut().insert("x-request-id", "grpc-gone".parse().unwrap());
    let error = client.get_user(request).await.unwrap_err();
    assert_eq!((error.code(), error.message()), (Code::Unavailable, "the upstream is unavailable"), "{error:?}");
    assert!(error.metadata().get("x-request-id").is_some(), "the gateway's headers are kept: {error:?}");

    client.ping(PingRequest::default()).await.expect("the first call is within the limit");
    let error = client.ping(PingRequest::default()).await.unwrap_err();
    assert_eq!(error.code(), Code::Unavailable, "429 maps to UNAVAILABLE: {error:?}");
    assert!(!error.message().is_empty() && !error.message().contains('{'), "the limiter's message, not its JSON: {error:?}");
    assert!(error.metadata().get("retry-after").is_some(), "{error:?}");

    let line = airlock_tests::access_log_line(&gw.dir.path().join("access.log"), "grpc-gone").await;
    assert_eq!((line["status"].as_u64(), line["grpc_status"].as_u64()), (Some(502), Some(14)), "{line}");
}

// ---------------------------------------------------------------------------------------------
// Trailers

/// A body of one data frame followed by trailers.
struct TrailerBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl TrailerBody {
    fn new(data: Bytes, trailers: HeaderMap) -> Self {
        Self { data: Some(data), trailers: Some(trailers) }
    }
}

impl Body for TrailerBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }
}

/// An h2c upstream that answers with the request trailers it received as JSON, and with the
/// response trailers `x-upstream-trailer: done` and `x-secret: s`.
async fn trailer_upstream() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (addr, spawn_h2(listener, None, service_fn(trailer_answer)))
}

/// The same answers over HTTP/1.1, where a sender declares its trailers (`Trailer`) first.
async fn trailer_upstream_http1() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let service = service_fn(|req: Request<Incoming>| async move {
                    let mut response = trailer_answer(req).await?;
                    response.headers_mut().insert("trailer", HeaderValue::from_static("x-upstream-trailer, x-secret"));
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await;
            });
        }
    });
    (addr, task)
}

/// Answers with the request's version, body and trailers as JSON, followed by two trailers.
async fn trailer_answer(req: Request<Incoming>) -> Result<Response<TrailerBody>, Infallible> {
    let version = format!("{:?}", req.version());
    let collected = req.into_body().collect().await.unwrap();
    let got: HashMap<String, String> = collected
        .trailers()
        .map(|t| t.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned())).collect())
        .unwrap_or_default();
    let body = json!({"version": version, "body": String::from_utf8_lossy(&collected.to_bytes()), "trailers": got});
    let mut trailers = HeaderMap::new();
    trailers.insert("x-upstream-trailer", HeaderValue::from_static("done"));
    trailers.insert("x-secret", HeaderValue::from_static("s"));
    Ok(Response::new(TrailerBody::new(Bytes::from(body.to_string()), trailers)))
}

/// Sends `body` followed by the trailer `x-client-trailer: sum` over HTTP/2; returns the
/// response's status, headers, JSON body (without the `!` body-upper appends) and trailers.
async fn send_with_trailers(url: &str, body: &'static str) -> (StatusCode, HeaderMap, Value, HeaderMap) {
    send_with_trailers_over(true, url, body).await
}

/// [`send_with_trailers`] over HTTP/2, or over HTTP/1.1 (declaring its trailer with `Trailer`).
async fn send_with_trailers_over(http2: bool, url: &str, body: &'static str) -> (StatusCode, HeaderMap, Value, HeaderMap) {
    send_these_trailers_over(http2, url, body, &[("x-client-trailer", "sum")]).await
}

/// [`send_with_trailers_over`] with these request trailers (declared in `Trailer`).
async fn send_these_trailers_over(http2: bool, url: &str, body: &'static str, sent: &[(&str, &str)]) -> (StatusCode, HeaderMap, Value, HeaderMap) {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(http2)
        .build_http::<TrailerBody>();
    let mut trailers = HeaderMap::new();
    for (name, value) in sent {
        trailers.append(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
    }
    let declared: Vec<&str> = sent.iter().map(|(name, _)| *name).collect();
    let request = Request::post(url)
        .header("te", "trailers")
        .header("trailer", declared.join(", "))
        .body(TrailerBody::new(Bytes::from_static(body.as_bytes()), trailers))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let (parts, incoming) = response.into_parts();
    let collected = incoming.collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let bytes = collected.to_bytes();
    let json = serde_json::from_str(String::from_utf8_lossy(&bytes).trim_end_matches('!')).unwrap();
    (parts.status, parts.headers, json, trailers)
}

#[tokio::test]
async fn trailers_are_carried_both_ways_over_http1() {
    // HTTP/1.1 on both hops: each sender declares its trailers in `Trailer`, an end-to-end
    // header (RFC 9110 6.6.2) the gateway passes on, so hyper on the next hop sends them.
    let (addr, _task) = trailer_upstream_http1().await;
    let toml = format!(
        r#"
[upstreams.h1]
targets = ["{addr}"]

[[routes]]
path = "/stream"
upstream = "h1"
"#
    );
    let gw = Gateway::start(&toml, None).await;
    let (status, _, body, trailers) = send_with_trailers_over(false, &gw.url("/stream"), "hello").await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"version": "HTTP/1.1", "body": "hello", "trailers": {"x-client-trailer": "sum"}}));
    assert_eq!(trailers.get("x-upstream-trailer").map(HeaderValue::as_bytes), Some(&b"done"[..]), "{trailers:?}");
    assert_eq!(trailers.get("x-secret").map(HeaderValue::as_bytes), Some(&b"s"[..]));
    gw.stop().await;
}

/// `/h1` to an HTTP/1.1 upstream at `h1`, `/h2` to an h2c upstream at `h2`.
fn h1_and_h2_routes(h1: &impl std::fmt::Display, h2: &impl std::fmt::Display) -> String {
    format!(
        r#"
[upstreams.h1]
targets = ["{h1}"]
[upstreams.h2]
targets = ["{h2}"]
protocol = "h2c"
[[routes]]
path = "/h1"
upstream = "h1"
[[routes]]
path = "/h2"
upstream = "h2"
"#
    )
}

/// A client's request trailers reach the upstream without the fields it could take for ones the
/// gateway vouched for or that frame, route or authenticate the request (an upstream that merges
/// trailers into the headers would read `x-consumer-id: admin` after an auth plugin's), over
/// HTTP/1.1 and HTTP/2, streamed and buffered; the application's own trailer goes on.
#[tokio::test]
async fn request_trailers_cannot_pose_as_gateway_headers() {
    let (h1, _t1) = trailer_upstream_http1().await;
    let (h2, _t2) = trailer_upstream().await;
    let toml = h1_and_h2_routes(&h1, &h2)
        + "[[routes]]\npath = \"/buffered\"\nupstream = \"h2\"\n[[routes.plugins]]\nplugin = \"{plugin:body-upper}\"\n";
    let gw = Gateway::start(&toml, None).await;
    let sent = [
        ("x-client-trailer", "sum"),
        ("x-consumer-id", "admin"),
        ("x_consumer_id", "admin"),
        ("authorization", "Bearer forged"),
        ("x-forwarded-for", "10.0.0.1"),
        ("content-length", "5"),
        ("if-match", "*"),
        ("x-http-method-override", "DELETE"),
        ("true-client-ip", "1.1.1.1"),
        ("x-api-key", "k2"),
    ];
    for (http2, path) in [(false, "/h1"), (true, "/h1"), (true, "/h2"), (false, "/h2"), (true, "/buffered")] {
        let (status, _, body, _) = send_these_trailers_over(http2, &gw.url(path), "hello", &sent).await;
        assert_eq!(status, 200, "{path} over h2 {http2}: {body}");
        assert_eq!(body["trailers"], json!({"x-client-trailer": "sum"}), "{path} over h2 {http2}");
    }
    gw.stop().await;

    // Nor as a header a plugin set: a trailer repeating one of the header fields the request
    // went upstream with is dropped, streamed and buffered. Nor one a plugin removed (an auth
    // plugin removes a client's `x-user-id`, and may set none).
    let set = "[[routes.plugins]]\nplugin = \"builtin:headers\"\nconfig = { request = { set = { \"x-gateway-auth\" = \"gw-secret\" }, remove = [\"x-user-id\"] } }\n";
    let toml = format!("{}[[routes]]\npath = \"/set\"\nupstream = \"h2\"\n{set}[[routes]]\npath = \"/set-buffered\"\nupstream = \"h2\"\n{set}[[routes.plugins]]\nplugin = \"{{plugin:body-upper}}\"\n", h1_and_h2_routes(&h1, &h2));
    let gw = Gateway::start(&toml, None).await;
    for (http2, path) in [(true, "/set"), (false, "/set"), (true, "/set-buffered"), (false, "/set-buffered")] {
        let sent = [("x-client-trailer", "sum"), ("x-gateway-auth", "forged"), ("x-user-id", "root")];
        let (status, _, body, _) = send_these_trailers_over(http2, &gw.url(path), "hello", &sent).await;
        assert_eq!(status, 200, "{path} over h2 {http2}: {body}");
        assert_eq!(body["trailers"], json!({"x-client-trailer": "sum"}), "{path} over h2 {http2}");
    }
    gw.stop().await;
}

/// Answers with the `Trailer` header lines and the trailers the request brought, as JSON.
async fn announced_answer(req: Request<Incoming>) -> Result<Response<TrailerBody>, Infallible> {
    let announced: Vec<String> = req.headers().get_all("trailer").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    let collected = req.into_body().collect().await.unwrap();
    let got: HashMap<String, String> = collected
        .trailers()
        .map(|t| t.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned())).collect())
        .unwrap_or_default();
    let body = json!({"announced": announced, "trailers": got});
    Ok(Response::new(TrailerBody::new(Bytes::from(body.to_string()), HeaderMap::new())))
}

/// An upstream answering [`announced_answer`]'s JSON, over h2c or HTTP/1.1.
async fn announcing_upstream(http2: bool) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    if http2 {
        return (addr, spawn_h2(listener, None, service_fn(announced_answer)));
    }
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service_fn(announced_answer)).await;
            });
        }
    });
    (addr, task)
}

/// The request's `Trailer` header, which announces its trailer fields, announces to the upstream
/// only those the gateway lets through: the names of the fields it strips are taken out of it,
/// and a `Trailer` that announced nothing else goes, over HTTP/1.1 and HTTP/2 on both hops.
#[tokio::test]
async fn the_trailer_header_announces_only_the_trailers_passed_on() {
    let (h1, _t1) = announcing_upstream(false).await;
    let (h2, _t2) = announcing_upstream(true).await;
    let toml = h1_and_h2_routes(&h1, &h2);
    let gw = Gateway::start(&toml, None).await;
    let mixed = [("x-client-trailer", "sum"), ("X-Consumer-Id", "admin"), ("authorization", "Bearer forged"), ("x-checksum", "c")];
    let forbidden_only = [("x-api-key", "k2"), ("x_consumer_id", "admin")];
    for (http2, path) in [(false, "/h1"), (true, "/h1"), (true, "/h2"), (false, "/h2")] {
        let (status, _, body, _) = send_these_trailers_over(http2, &gw.url(path), "hello", &mixed).await;
        assert_eq!(status, 200, "{path} over h2 {http2}: {body}");
        assert_eq!(body["announced"], json!(["x-client-trailer, x-checksum"]), "{path} over h2 {http2}");
        assert_eq!(body["trailers"], json!({"x-client-trailer": "sum", "x-checksum": "c"}), "{path} over h2 {http2}");

        let (status, _, body, _) = send_these_trailers_over(http2, &gw.url(path), "hello", &forbidden_only).await;
        assert_eq!(status, 200, "{path} over h2 {http2}: {body}");
        assert_eq!(body, json!({"announced": [], "trailers": {}}), "{path} over h2 {http2}: no `Trailer` left");
    }
    gw.stop().await;
}

/// An upstream's response trailers reach the client without the fields no trailer may carry
/// (RFC 9110 6.5.1) or that are connection-specific (RFC 9113 8.2.2): an HTTP/2 client given a
/// `connection` trailer must reject the whole answer, which was lost after its body. Streamed and
/// buffered (a plugin reads the body), to HTTP/2 and HTTP/1.1 clients; the application's own
/// trailers go on.
#[tokio::test]
async fn response_trailers_lose_the_fields_no_trailer_may_carry() {
    let (addr, _task) = airlock_tests::raw_upstream(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum, connection, content-length\r\n\r\n\
          2\r\nhi\r\n0\r\nx-checksum: c1\r\ngrpc-status: 0\r\nconnection: v1\r\ncontent-length: 2\r\n\
          transfer-encoding: chunked\r\nkeep-alive: 5\r\nupgrade: h2c\r\nte: trailers\r\nhost: evil.example\r\n\
          set-cookie: s=1\r\nx-request-id: forged\r\n\r\n",
    )
    .await;
    let toml = format!(
        r#"
[upstreams.raw]
targets = ["{addr}"]
[[routes]]
path = "/stream"
upstream = "raw"
[[routes]]
path = "/buffered"
upstream = "raw"
[[routes.plugins]]
plugin = "{{plugin:body-upper}}"
"#
    );
    let gw = Gateway::start(&toml, None).await;
    let kept = ["x-checksum", "grpc-status"];
    for (http2, path, body) in [(true, "/stream", "hi"), (false, "/stream", "hi"), (true, "/buffered", "hi!"), (false, "/buffered", "hi!")] {
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .http2_only(http2)
            .build_http::<http_body_util::Empty<Bytes>>();
        let request = Request::get(gw.url(path)).header("te", "trailers").body(http_body_util::Empty::new()).unwrap();
        let response = client.request(request).await.unwrap_or_else(|e| panic!("{path} over h2 {http2}: {e}"));
        assert_eq!(response.status(), 200, "{path} over h2 {http2}");
        let collected = response.into_body().collect().await.unwrap_or_else(|e| panic!("{path} over h2 {http2}: the answer was lost: {e}"));
        let trailers = collected.trailers().cloned().unwrap_or_default();
        assert_eq!(collected.to_bytes(), body.as_bytes(), "{path} over h2 {http2}");
        let names: Vec<&str> = trailers.keys().map(|n| n.as_str()).collect();
        assert!(names.iter().all(|n| kept.contains(n)), "{path} over h2 {http2}: {names:?}");
        if http2 {
            assert_eq!(trailers.get("x-checksum").map(HeaderValue::as_bytes), Some(&b"c1"[..]), "{path}: {trailers:?}");
            assert_eq!(trailers.get("grpc-status").map(HeaderValue::as_bytes), Some(&b"0"[..]), "{path}: {trailers:?}");
        } else if path == "/stream" {
            // HTTP/1.1 sends only the trailers its `Trailer` header announced.
            assert_eq!(trailers.get("x-checksum").map(HeaderValue::as_bytes), Some(&b"c1"[..]), "{trailers:?}");
        }
    }
    gw.stop().await;
}

#[tokio::test]
async fn trailers_are_carried_both_ways_for_http2_clients() {
    let (addr, _task) = trailer_upstream().await;
    let toml = format!(
        r#"
[upstreams.h2]
targets = ["{addr}"]
protocol = "h2c"

[[routes]]
path = "/stream"
upstream = "h2"

[[routes]]
path = "/buffered"
upstream = "h2"
[[routes.plugins]]
plugin = "{{plugin:body-upper}}"
[[routes.plugins]]
plugin = "{{plugin:trailers}}"
"#
    );
    let gw = Gateway::start(&toml, None).await;

    // Streamed both ways: the bodies are never buffered, the trailers travel with them.
    let (status, _, body, trailers) = send_with_trailers(&gw.url("/stream"), "hello").await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"version": "HTTP/2.0", "body": "hello", "trailers": {"x-client-trailer": "sum"}}));
    assert_eq!(trailers.get("x-upstream-trailer").unwrap(), "done");
    assert_eq!(trailers.get("x-secret").unwrap(), "s");

    // Buffered both ways (body-upper reads both bodies): the request trailers still reach the
    // upstream, and the response phase sees the upstream's trailers and changes them.
    let (status, headers, body, trailers) = send_with_trailers(&gw.url("/buffered"), "hello").await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"version": "HTTP/2.0", "body": "HELLO", "trailers": {"x-client-trailer": "sum"}}));
    assert_eq!(headers.get("x-seen-trailer").unwrap(), "done");
    assert_eq!(headers.get("x-trailer-names").unwrap(), "x-secret,x-upstream-trailer");
    assert_eq!(trailers.get("x-upstream-trailer").unwrap(), "done");
    assert_eq!(trailers.get("x-added").unwrap(), "1");
    assert!(trailers.get("x-secret").is_none(), "removed by the plugin: {trailers:?}");
    let client = HttpClient::http2();
    let reply = client.request("POST", &gw.url("/buffered"), &[], b"abc").await;
    // body-upper appended `!` to the JSON: strip it to read what the upstream saw.
    let text = reply.text();
    let seen: Value = serde_json::from_str(text.trim_end_matches('!')).unwrap();
    assert_eq!(seen["body"], "ABC");
}

// ---------------------------------------------------------------------------------------------
// gRPC-web

/// A gateway serving `demo.v1.Users` through `builtin:grpc-web` to `server` (h2c).
async fn grpc_web_gateway(server: &GrpcServer) -> Gateway {
    let toml = format!(
        "[upstreams.grpc]\ntargets = [\"{}\"]\nprotocol = \"h2c\"\n\n[[routes]]\npath_prefix = \"/demo.v1.Users/\"\nupstream = \"grpc\"\ntimeout_ms = 3000\n[[routes.plugins]]\nplugin = \"builtin:grpc-web\"\n",
        server.addr
    );
    Gateway::start(&toml, None).await
}

/// One length-prefixed gRPC message frame.
fn frame(message: &impl prost::Message) -> Vec<u8> {
    let bytes = message.encode_to_vec();
    let mut out = vec![0];
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(&bytes);
    out
}

/// A gRPC-web body split into its frames: (flag, payload) each.
fn frames(mut body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while !body.is_empty() {
        assert!(body.len() >= 5, "a cut frame: {body:?}");
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        out.push((body[0], body[5..5 + len].to_vec()));
        body = &body[5 + len..];
    }
    out
}

#[tokio::test]
async fn grpc_web_clients_call_a_grpc_server_in_binary_and_text() {
    let server = GrpcServer::start(None).await;
    let gw = grpc_web_gateway(&server).await;
    let url = gw.url("/demo.v1.Users/GetUser");
    let request = frame(&GetUserRequest { id: 3, ..Default::default() });
    // Binary, over HTTP/1.1 as a browser sends it.
    let client = HttpClient::http1();
    let headers = [("content-type", "application/grpc-web+proto"), ("x-grpc-web", "1")];
    let reply = client.request("POST", &url, &headers, &request).await;
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.text());
    assert_eq!(reply.header("content-type").as_deref(), Some("application/grpc-web+proto"));
    let got = frames(&reply.body);
    assert_eq!(got.len(), 2, "the message, then the trailers: {got:?}");
    assert_eq!(got[0].0, 0);
    assert_eq!(User::decode(got[0].1.as_slice()).unwrap().display_name, "user 3");
    assert_eq!(got[1].0, 0x80);
    assert!(String::from_utf8_lossy(&got[1].1).contains("grpc-status: 0\r\n"), "{:?}", String::from_utf8_lossy(&got[1].1));
    assert_eq!(server.seen.header("content-type").as_deref(), Some("application/grpc+proto"), "the server got gRPC");
    assert_eq!(server.seen.header("te").as_deref(), Some("trailers"));

    // Text (base64), over HTTP/2.
    let client = HttpClient::http2();
    let body = base64::engine::general_purpose::STANDARD.encode(&request);
    let reply = client.request("POST", &url, &[("content-type", "application/grpc-web-text")], body.as_bytes()).await;
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.text());
    assert_eq!(reply.header("content-type").as_deref(), Some("application/grpc-web-text"));
    let decoded = base64::engine::general_purpose::STANDARD.decode(&reply.body).expect("a base64 answer");
    let got = frames(&decoded);
    assert_eq!(User::decode(got[0].1.as_slice()).unwrap().display_name, "user 3");
    assert_eq!(got[1].0, 0x80);
}

#[tokio::test]
async fn grpc_web_errors_keep_their_grpc_status_and_native_grpc_passes_through() {
    let server = GrpcServer::start(None).await;
    let gw = grpc_web_gateway(&server).await;
    let client = HttpClient::http1();
    let headers = [("content-type", "application/grpc-web+proto")];
    // A failed call: trailers-only, the status in the headers.
    let fail = frame(&FailRequest { code: 5, message: "no such user".into() });
    let reply = client.request("POST", &gw.url("/demo.v1.Users/Fail"), &headers, &fail).await;
    assert_eq!(reply.status.as_u16(), 200);
    let status_in = |r: &Reply| {
        r.header("grpc-status")
            .or_else(|| frames(&r.body).iter().find(|(flag, _)| *flag == 0x80).and_then(|(_, t)| {
                String::from_utf8_lossy(t).lines().find_map(|l| l.strip_prefix("grpc-status: ").map(str::to_owned))
            }))
    };
    assert_eq!(status_in(&reply).as_deref(), Some("5"), "{:?} {:?}", reply.headers, reply.body);
    assert_eq!(reply.header("content-type").as_deref(), Some("application/grpc-web+proto"));
    // A text body that is not base64: refused before the server is called.
    let calls = *server.seen.calls.lock().unwrap();
    let reply = client.request("POST", &gw.url("/demo.v1.Users/GetUser"), &[("content-type", "application/grpc-web-text")], b"not base64!").await;
    assert_eq!((reply.status.as_u16(), reply.header("grpc-status").as_deref()), (400, Some("3")));
    assert_eq!(*server.seen.calls.lock().unwrap(), calls);
    // Neither gRPC-web nor gRPC: refused here, never reaching (and failing on) the server.
    for (method, headers) in [("GET", &[][..]), ("POST", &[("content-type", "application/json")][..])] {
        let reply = client.request(method, &gw.url("/demo.v1.Users/GetUser"), headers, b"").await;
        assert_eq!((reply.status.as_u16(), reply.json()["error"].as_str()), (415, Some("unsupported_media_type")), "{method}");
    }
    assert_eq!(*server.seen.calls.lock().unwrap(), calls);
    // A native gRPC client on the same route: untouched.
    let mut native = UsersClient::connect(gw.url("")).await.unwrap();
    let user = native.get_user(GetUserRequest { id: 4, ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(user.display_name, "user 4");
    let error = native.fail(FailRequest { code: 7, message: "denied".into() }).await.unwrap_err();
    assert_eq!((error.code(), error.message()), (Code::PermissionDenied, "denied"));
}

/// gRPC metadata may repeat a name in the trailers: a grpc-web client gets every value.
#[tokio::test]
async fn grpc_web_keeps_every_value_of_a_repeated_trailer() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = service_fn(|req: Request<Incoming>| async move {
        let _ = req.into_body().collect().await;
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        trailers.append("x-multi", HeaderValue::from_static("a"));
        trailers.append("x-multi", HeaderValue::from_static("b"));
        let mut response = Response::new(TrailerBody::new(Bytes::from(frame(&PingReply { note: "pong".into() })), trailers));
        response.headers_mut().insert("content-type", HeaderValue::from_static("application/grpc"));
        Ok::<_, Infallible>(response)
    });
    let _server = spawn_h2(listener, None, service);
    let toml = format!("[upstreams.grpc]\ntargets = [\"{addr}\"]\nprotocol = \"h2c\"\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"grpc\"\n[[routes.plugins]]\nplugin = \"builtin:grpc-web\"\n");
    let gw = Gateway::start(&toml, None).await;
    let reply = HttpClient::http1()
        .request("POST", &gw.url("/demo.v1.Users/Ping"), &[("content-type", "application/grpc-web")], &frame(&PingRequest { note: "ping".into() }))
        .await;
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.text());
    let got = frames(&reply.body);
    assert_eq!(PingReply::decode(got[0].1.as_slice()).unwrap().note, "pong");
    let trailers = String::from_utf8_lossy(&got[1].1).into_owned();
    assert_eq!(trailers, "grpc-status: 0\r\nx-multi: a\r\nx-multi: b\r\n");
}

/// Bad input from the upstream side: something between the gateway and the gRPC server (a
/// proxy's HTML error page) answers instead of gRPC. grpc-web leaves it as it is, and the
/// gateway serves on.
#[tokio::test]
async fn grpc_web_passes_an_answer_that_is_not_grpc_on_unchanged() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = service_fn(|req: Request<Incoming>| async move {
        let _ = req.into_body().collect().await;
        let mut response = Response::new(TrailerBody::new(Bytes::from_static(b"<h1>503 Service Unavailable</h1>"), HeaderMap::new()));
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        response.headers_mut().insert("content-type", HeaderValue::from_static("text/html"));
        Ok::<_, Infallible>(response)
    });
    let _server = spawn_h2(listener, None, service);
    let toml = format!("[upstreams.grpc]\ntargets = [\"{addr}\"]\nprotocol = \"h2c\"\nmax_fails = 0\n\n[[routes]]\npath_prefix = \"/\"\nupstream = \"grpc\"\n[[routes.plugins]]\nplugin = \"builtin:grpc-web\"\n");
    let gw = Gateway::start(&toml, None).await;
    let client = HttpClient::http1();
    for _ in 0..2 {
        let reply = client
            .request("POST", &gw.url("/demo.v1.Users/Ping"), &[("content-type", "application/grpc-web")], &frame(&PingRequest { note: "ping".into() }))
            .await;
        assert_eq!(reply.status.as_u16(), 503);
        assert_eq!(reply.header("content-type").as_deref(), Some("text/html"));
        assert_eq!(reply.text(), "<h1>503 Service Unavailable</h1>");
    }
}
