//! `builtin:graphql`, end to end: REST routes through the real gateway to a real GraphQL server
//! (async-graphql), with queries, a mutation, typed variables from every source, and errors.

use std::sync::{Arc, Mutex};

use airlock_tests::{Gateway, HttpClient, Upstream};
use async_graphql::{Context, EmptySubscription, Error, ErrorExtensions, ID, InputObject, Object, Schema, SimpleObject};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{Value, json};

#[derive(SimpleObject, Clone)]
struct User {
    id: ID,
    name: String,
    age: i32,
    score: f64,
    tags: Vec<String>,
}

fn user(id: &str) -> User {
    User { id: ID(id.to_owned()), name: format!("user {id}"), age: 30, score: 4.5, tags: vec![] }
}

struct Query;

#[Object]
impl Query {
    /// One user; id `404` does not exist.
    async fn user(&self, id: ID) -> Result<User, Error> {
        if id.as_str() == "404" {
            return Err(Error::new(format!("no user {}", id.as_str())).extend_with(|_, e| e.set("code", "NOT_FOUND")));
        }
        Ok(user(id.as_str()))
    }

    /// One user or null, the usual GraphQL "not found": id `404` is
    /// `{"data": {"findUser": null}, "errors": [...]}` with a `NOT_FOUND` error at its path, id
    /// `500` the same with an error without code. (A resolver's `Err` would leave the field out
    /// of `data`, here `data: null`: the error is added beside the null instead.)
    async fn find_user(&self, ctx: &Context<'_>, id: ID) -> Option<User> {
        let error = match id.as_str() {
            "404" => Error::new("no such user").extend_with(|_, e| e.set("code", "NOT_FOUND")),
            "500" => Error::new("user store unreachable"),
            _ => return Some(user(id.as_str())),
        };
        ctx.add_error(ctx.set_error_path(error.into_server_error(ctx.item.pos)));
        None
    }

    /// The first users, optionally only active ones (even ids).
    async fn users(&self, first: i32, active: Option<bool>) -> Vec<User> {
        (1..=first).filter(|i| active != Some(true) || i % 2 == 0).map(|i| user(&i.to_string())).collect()
    }

    /// Always fails, nullable: partial data.
    async fn flaky(&self) -> Result<Option<i32>, Error> {
        Err(Error::new("flaky failed"))
    }

    /// Always fails, non-null: no data at all.
    async fn boom(&self) -> Result<i32, Error> {
        Err(Error::new("internal failure"))
    }

    /// Always null, without errors.
    async fn nobody(&self) -> Option<User> {
        None
    }
}

#[derive(InputObject)]
struct NewUser {
    name: String,
    age: i32,
    tags: Vec<String>,
}

struct Mutation;

#[Object]
impl Mutation {
    async fn create_user(&self, input: NewUser, by: String, score: f64) -> Result<User, Error> {
        if input.age < 0 {
            return Err(Error::new("age must not be negative").extend_with(|_, e| e.set("code", "BAD_USER_INPUT")));
        }
        Ok(User { id: ID(format!("new-by-{by}")), name: input.name, age: input.age, score, tags: input.tags })
    }

    /// What the server was given for `bio`: `absent`, `null` (clear it) or `set:TEXT`.
    async fn set_bio(&self, bio: async_graphql::MaybeUndefined<String>) -> String {
        match bio {
            async_graphql::MaybeUndefined::Undefined => "absent".to_owned(),
            async_graphql::MaybeUndefined::Null => "null".to_owned(),
            async_graphql::MaybeUndefined::Value(text) => format!("set:{text}"),
        }
    }
}

type AppSchema = Schema<Query, Mutation, EmptySubscription>;

/// A GraphQL server on `POST /graphql` only; it keeps every request body it received.
async fn graphql_server() -> (Upstream, Arc<Mutex<Vec<Value>>>) {
    let schema: AppSchema = Schema::build(Query, Mutation, EmptySubscription).finish();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let upstream = Upstream::with_handler(move |req: Request<Incoming>| {
        let schema = schema.clone();
        let log = log.clone();
        async move { serve(schema, log, req).await }
    })
    .await;
    (upstream, seen)
}

async fn serve(schema: AppSchema, log: Arc<Mutex<Vec<Value>>>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: Vec<u8>| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert("content-type", "application/json".parse().unwrap());
        r
    };
    if req.method() != "POST" || req.uri().path() != "/graphql" || req.uri().query().is_some() {
        return reply(StatusCode::NOT_FOUND, format!("{} {} is not the GraphQL endpoint", req.method(), req.uri()).into_bytes());
    }
    let body = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    if let Ok(value) = serde_json::from_slice::<Value>(&body) {
        log.lock().unwrap().push(value);
    }
    match serde_json::from_slice::<async_graphql::Request>(&body) {
        Ok(request) => {
            let response = schema.execute(request).await;
            reply(StatusCode::OK, serde_json::to_vec(&response).unwrap())
        }
        Err(e) => reply(StatusCode::BAD_REQUEST, format!("bad GraphQL request: {e}").into_bytes()),
    }
}

const ROUTES: &str = r#"
[upstreams.graphql]
targets = ["{upstream}"]

[[routes]]
path = "/users/{id}"
methods = ["GET"]
upstream = "graphql"
[[routes.plugins]]
plugin = "builtin:graphql"
[routes.plugins.config]
query = "query User($id: ID!) { user(id: $id) { id name age score } }"
operation_name = "User"
result = "user"
variables = { id = { from = "param.id" } }
errors = [{ code = "NOT_FOUND", status = 404 }]

[[routes]]
path = "/people/{id}"
methods = ["GET"]
upstream = "graphql"
[[routes.plugins]]
plugin = "builtin:graphql"
[routes.plugins.config]
query = "query FindUser($id: ID!) { findUser(id: $id) { id name } }"
result = "findUser"
variables = { id = { from = "param.id" } }
errors = [{ code = "NOT_FOUND", status = 404 }]

[[routes]]
path = "/users"
methods = ["GET"]
upstream = "graphql"
[[routes.plugins]]
plugin = "builtin:graphql"
[routes.plugins.config]
query = "query Users($first: Int!, $active: Boolean) { users(first: $first, active: $active) { id name } }"
result = "users"
[routes.plugins.config.variables]
first = { from = "query.first", type = "int", default = 3 }
active = { from = "query.active", type = "bool" }

[[routes]]
path = "/users"
methods = ["POST"]
upstream = "graphql"
[[routes.plugins]]
plugin = "builtin:graphql"
[routes.plugins.config]
query = """
mutation Create($input: NewUser!, $by: String!, $score: Float!) {
  createUser(input: $input, by: $by, score: $score) { id name age score tags }
}
"""
result = "createUser"
[routes.plugins.config.variables]
input = { from = "body.user", type = "json", required = true }
score = { from = "body.score", type = "float", default = 1.5 }
by = { from = "header.x-user", required = true }

[[routes]]
path = "/partial"
upstream = "graphql"
[[routes.plugins]]
plugin = "builtin:graphql"
config = { query = "{ users(first: 1) { id } flaky }", errors_field = "graphql_errors" }

[[routes]]
path = "/boom"
upstream = "graphql"
[[routes.plugins]]
plugin = "builtin:graphql"
config = { query = "{ boom }" }

[[routes]]
path = "/invalid"
upstream = "graphql"
[[routes.plugins]]
plugin = "builtin:graphql"
config = { query = "{ nope }", errors = [{ message = "Unknown field", status = 400 }] }

# Partial data whose result has its own `errors` field (an alias here; a mutation payload's
# `errors` field is common).
[[routes]]
path = "/partial-with-errors-field"
upstream = "graphql"
[[routes.plugins]]
plugin = "builtin:graphql"
config = { query = "{ errors: users(first: 1) { id } flaky }" }

# A mistyped `result` (`usr` for `user`), and a result field present with null.
[[routes]]
path = "/typo/{id}"
upstream = "graphql"
[[routes.plugins]]
plugin = "builtin:graphql"
config = { query = "query User($id: ID!) { user(id: $id) { id } }", result = "usr", variables = { id = { from = "param.id" } } }

# `param.id` on a route whose path captures `uid`: no request can give it.
[[routes]]
path = "/uncaptured/{uid}"
upstream = "graphql"
[[routes.plugins]]
plugin = "builtin:graphql"
config = { query = "query User($id: ID!) { user(id: $id) { id } }", result = "user", variables = { id = { from = "param.id", required = true } } }

# The same with a default: the request goes on with it.
[[routes]]
path = "/defaulted/{uid}"
upstream = "graphql"
[[routes.plugins]]
plugin = "builtin:graphql"
config = { query = "query User($id: ID!) { user(id: $id) { id } }", result = "user", variables = { id = { from = "param.id", default = "1" } } }

# A nullable argument: an explicit null clears it, absent leaves it alone.
[[routes]]
path = "/bio"
methods = ["PATCH"]
upstream = "graphql"
[[routes.plugins]]
plugin = "builtin:graphql"
config = { query = "mutation Bio($bio: String) { setBio(bio: $bio) }", result = "setBio", variables = { bio = { from = "body.bio", default = "unchanged" } } }

[[routes]]
path = "/nobody"
upstream = "graphql"
[[routes.plugins]]
plugin = "builtin:graphql"
config = { query = "{ nobody { id } }", result = "nobody" }
"#;

#[tokio::test]
async fn a_get_route_runs_a_query_with_a_path_variable() {
    let (upstream, seen) = graphql_server().await;
    let gw = Gateway::start(ROUTES, Some(&upstream)).await;
    let r = HttpClient::http1().get(&gw.url("/users/7?ignored=1")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"id": "7", "name": "user 7", "age": 30, "score": 4.5}));
    assert_eq!(r.header("content-length"), Some(r.body.len().to_string()));
    let sent = seen.lock().unwrap().pop().unwrap();
    assert_eq!(sent["variables"], json!({"id": "7"}));
    assert_eq!(sent["operationName"], "User");
    assert_eq!(sent["query"], "query User($id: ID!) { user(id: $id) { id name age score } }");
    gw.stop().await;
}

#[tokio::test]
async fn query_string_variables_are_typed_and_defaulted() {
    let (upstream, seen) = graphql_server().await;
    let gw = Gateway::start(ROUTES, Some(&upstream)).await;
    let client = HttpClient::http1();
    let r = client.get(&gw.url("/users?first=4&active=true")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!([{"id": "2", "name": "user 2"}, {"id": "4", "name": "user 4"}]));
    assert_eq!(seen.lock().unwrap().pop().unwrap()["variables"], json!({"first": 4, "active": true}));

    let r = client.get(&gw.url("/users")).await;
    assert_eq!(r.json().as_array().map(Vec::len), Some(3), "default first = 3");
    assert_eq!(seen.lock().unwrap().pop().unwrap()["variables"], json!({"first": 3}), "absent `active` is left out");

    let hits = upstream.hits();
    let r = client.get(&gw.url("/users?first=many")).await;
    assert_eq!(r.status, 400);
    let err = r.json();
    assert_eq!(err["error"], "invalid_variable");
    assert_eq!(err["message"], "variable `first` from query parameter `first`: `many` is not a 32-bit integer (GraphQL's `Int`)");
    assert_eq!(upstream.hits(), hits, "a bad variable never reaches the GraphQL server");
    // GraphQL's Int is 32 bits: a wider number is the client's error, not the server's.
    let r = client.get(&gw.url("/users?first=99999999999")).await;
    assert_eq!((r.status.as_u16(), r.json()["error"].as_str()), (400, Some("invalid_variable")), "{}", r.text());
    assert_eq!(upstream.hits(), hits);
    gw.stop().await;
}

/// A `param.NAME` the route's path does not capture is the config's mistake: a 500 whose log
/// names the key (before: a 400 blaming the client on every request). `configure` is not given
/// the route, so it cannot be refused at load.
#[tokio::test]
async fn a_param_the_route_does_not_capture_is_a_500_not_the_clients_400() {
    let (upstream, _) = graphql_server().await;
    let gw = Gateway::start(ROUTES, Some(&upstream)).await;
    let r = HttpClient::http1().get(&gw.url("/uncaptured/7")).await;
    assert_eq!((r.status.as_u16(), r.json()["error"].as_str()), (500, Some("config_error")), "{}", r.text());
    assert!(r.json()["message"].as_str().unwrap_or_default().contains("reads a route parameter its path does not capture"), "{}", r.text());
    assert_eq!(upstream.hits(), 0, "never sent upstream");
    // With a default (a definition shared by routes with and without the param): as before.
    let r = HttpClient::http1().get(&gw.url("/defaulted/7")).await;
    assert_ne!(r.status.as_u16(), 500, "{}", r.text());
    assert_eq!(upstream.hits(), 1, "sent upstream with the default");
    gw.stop().await;
}

/// `?first=1&first=2` is ambiguous (no variable type takes a list): refused, naming the
/// parameter, however the name is written (before: the first value was taken silently).
#[tokio::test]
async fn a_query_parameter_given_twice_is_refused() {
    let (upstream, _) = graphql_server().await;
    let gw = Gateway::start(ROUTES, Some(&upstream)).await;
    let client = HttpClient::http1();
    let hits = upstream.hits();
    for query in ["first=1&first=2", "first=2&active=true&first=2", "f%69rst=1&first=1"] {
        let r = client.get(&gw.url(&format!("/users?{query}"))).await;
        assert_eq!(r.status, 400, "{query}: {}", r.text());
        let err = r.json();
        assert_eq!(err["error"], "invalid_variable", "{query}");
        assert_eq!(err["message"], "variable `first` from query parameter `first`: given more than once; send one value", "{query}");
    }
    assert_eq!(upstream.hits(), hits, "an ambiguous variable never reaches the GraphQL server");
    // Once (with other parameters repeated, which no variable reads): as before.
    let r = client.get(&gw.url("/users?first=2&x=1&x=2")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json().as_array().map(Vec::len), Some(2));
    gw.stop().await;
}

#[tokio::test]
async fn a_post_route_runs_a_mutation_with_body_and_header_variables() {
    let (upstream, seen) = graphql_server().await;
    let gw = Gateway::start(ROUTES, Some(&upstream)).await;
    let client = HttpClient::http1();
    let body = json!({"user": {"name": "Ada", "age": 36, "tags": ["math"]}, "score": 9.25});
    let r = client
        .request("POST", &gw.url("/users"), &[("content-type", "application/json"), ("x-user", "admin")], body.to_string().as_bytes())
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"id": "new-by-admin", "name": "Ada", "age": 36, "score": 9.25, "tags": ["math"]}));
    let sent = seen.lock().unwrap().pop().unwrap();
    assert_eq!(sent["variables"], json!({"by": "admin", "input": {"name": "Ada", "age": 36, "tags": ["math"]}, "score": 9.25}));

    // BAD_USER_INPUT with no data: 400 by default, the GraphQL errors kept.
    let bad = json!({"user": {"name": "Neg", "age": -1, "tags": []}});
    let r = client
        .request("POST", &gw.url("/users"), &[("x-user", "admin")], bad.to_string().as_bytes())
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let err = r.json();
    assert_eq!(err["error"], "graphql_error");
    assert_eq!(err["message"], "age must not be negative");
    assert_eq!(err["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");

    // Missing required variables and invalid JSON never reach the server.
    let hits = upstream.hits();
    let r = client.request("POST", &gw.url("/users"), &[], bad.to_string().as_bytes()).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["message"], "variable `by` is required: send header `x-user`");
    let r = client.request("POST", &gw.url("/users"), &[("x-user", "a")], b"{\"user\":").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_json");
    // A header given twice is as ambiguous as a query parameter (the first was taken silently).
    let r = client.request("POST", &gw.url("/users"), &[("x-user", "admin"), ("x-user", "eve")], body.to_string().as_bytes()).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["message"], "variable `by` from header `x-user`: given more than once; send one value");
    assert_eq!(upstream.hits(), hits);
    gw.stop().await;
}

/// A body's explicit `null` reaches the server as null, over the variable's default (a mutation
/// can clear a field); absent takes the default. Before, null was taken for absent.
#[tokio::test]
async fn an_explicit_null_in_the_body_is_sent_as_null() {
    let (upstream, seen) = graphql_server().await;
    let gw = Gateway::start(ROUTES, Some(&upstream)).await;
    let client = HttpClient::http1();
    for (body, answer, sent) in [
        (json!({"bio": null}), "null", json!({"bio": null})),
        (json!({}), "set:unchanged", json!({"bio": "unchanged"})),
        (json!({"bio": "hi"}), "set:hi", json!({"bio": "hi"})),
    ] {
        let r = client.request("PATCH", &gw.url("/bio"), &[("content-type", "application/json")], body.to_string().as_bytes()).await;
        assert_eq!((r.status.as_u16(), r.json()), (200, json!(answer)), "{body}");
        assert_eq!(seen.lock().unwrap().pop().unwrap()["variables"], sent, "{body}");
    }
    gw.stop().await;
}

/// A key given twice in one object of the body is a 400 naming it, never sent (before: the
/// last one became the variable, and a proxy keeping the first saw another request).
#[tokio::test]
async fn a_body_key_given_twice_is_refused() {
    let (upstream, _) = graphql_server().await;
    let gw = Gateway::start(ROUTES, Some(&upstream)).await;
    let client = HttpClient::http1();
    let hits = upstream.hits();
    let twice = br#"{"user": {"name": "Ada", "age": 36, "age": -1, "tags": []}, "score": 1}"#;
    let r = client.request("POST", &gw.url("/users"), &[("x-user", "admin")], twice).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"], "invalid_json");
    assert_eq!(r.json()["message"], "the request body gives key `age` more than once in the object at `/user`: send it once");
    let r = client.request("POST", &gw.url("/users"), &[("x-user", "admin")], br#"{"score": 1, "score": 2}"#).await;
    assert_eq!(r.json()["message"], "the request body gives key `score` more than once in the body's object: send it once");
    assert_eq!(upstream.hits(), hits, "nothing was sent");
    gw.stop().await;
}

/// The GraphQL endpoint redirecting the gateway's POST is a 502 saying so, whatever the body
/// (before: a 3xx with GraphQL data was answered 200).
#[tokio::test]
async fn a_redirect_from_the_graphql_upstream_is_a_502() {
    let upstream = Upstream::with_handler(|_req: Request<Incoming>| async move {
        let mut r = Response::new(Full::new(Bytes::from_static(br#"{"data": {"boom": 1}}"#)));
        *r.status_mut() = StatusCode::FOUND;
        r.headers_mut().insert("location", "/elsewhere".parse().unwrap());
        r.headers_mut().insert("content-type", "application/json".parse().unwrap());
        r
    })
    .await;
    let config = r#"
[upstreams.graphql]
targets = ["{upstream}"]
[[routes]]
path = "/x"
upstream = "graphql"
[[routes.plugins]]
plugin = "builtin:graphql"
config = { query = "{ boom }" }
"#;
    let gw = Gateway::start(config, Some(&upstream)).await;
    let r = HttpClient::http1().get(&gw.url("/x")).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"], "upstream_not_graphql");
    let message = r.json()["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.starts_with("the GraphQL upstream answered 302, a redirect the gateway does not follow"), "{message}");
    assert_eq!(r.headers.get("location"), None, "the redirect is not passed on");
    gw.stop().await;
}

#[tokio::test]
async fn graphql_errors_map_to_statuses() {
    let (upstream, _) = graphql_server().await;
    let gw = Gateway::start(ROUTES, Some(&upstream)).await;
    let client = HttpClient::http1();

    let r = client.get(&gw.url("/users/404")).await;
    assert_eq!(r.status, 404, "configured rule: NOT_FOUND -> 404");
    assert_eq!(r.json()["message"], "no user 404");

    let r = client.get(&gw.url("/boom")).await;
    assert_eq!(r.status, 502, "no data, no client-class code: the upstream failed");
    assert_eq!(r.json()["errors"][0]["message"], "internal failure");

    let r = client.get(&gw.url("/invalid")).await;
    assert_eq!(r.status, 400, "configured rule on the message: {}", r.text());
    assert!(r.json()["message"].as_str().unwrap().contains("Unknown field \"nope\""), "{}", r.text());

    let r = client.get(&gw.url("/partial")).await;
    assert_eq!(r.status, 200, "partial data is a success");
    let body = r.json();
    assert_eq!(body["users"], json!([{"id": "1"}]));
    assert_eq!(body["flaky"], Value::Null);
    assert_eq!(body["graphql_errors"][0]["message"], "flaky failed");
    assert_eq!(body["graphql_errors"][0]["path"], json!(["flaky"]));
    gw.stop().await;
}

/// Partial data whose result already has a field named like `errors_field`: the GraphQL errors
/// do not overwrite it (before: the result's own `errors` was lost); the answer is the wrapped
/// shape used for results that are not objects.
#[tokio::test]
async fn partial_errors_never_overwrite_a_field_of_the_result() {
    let (upstream, _) = graphql_server().await;
    let gw = Gateway::start(ROUTES, Some(&upstream)).await;
    let r = HttpClient::http1().get(&gw.url("/partial-with-errors-field")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    // (async-graphql leaves a failed field out of `data`.)
    assert_eq!(body["data"], json!({"errors": [{"id": "1"}]}), "{body}");
    assert_eq!(body["errors"][0]["message"], "flaky failed", "{body}");
    assert_eq!(body["errors"][0]["path"], json!(["flaky"]), "{body}");
    assert_eq!(body.as_object().map(|o| o.len()), Some(2), "{body}");
    gw.stop().await;
}

/// A `result` path the response's `data` does not have is the route's mistake, not "not found":
/// a 502 saying so (before: 200 `null`). A field present with null stays a 200 `null`.
#[tokio::test]
async fn a_result_path_not_in_the_response_is_a_502() {
    let (upstream, _) = graphql_server().await;
    let gw = Gateway::start(ROUTES, Some(&upstream)).await;
    let client = HttpClient::http1();
    let r = client.get(&gw.url("/typo/7")).await;
    assert_eq!(r.status, 502, "{}", r.text());
    let err = r.json();
    assert_eq!(err["error"], "graphql_error");
    assert_eq!(err["message"], "the route's `result` path `usr` is not in the GraphQL response's `data`");
    // With errors (a missing user), the errors explain the missing result: the rules, as before.
    let r = client.get(&gw.url("/typo/404")).await;
    assert_eq!((r.status.as_u16(), r.json()["message"].clone()), (502, json!("no user 404")), "{}", r.text());

    let r = client.get(&gw.url("/nobody")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), Value::Null);
    gw.stop().await;
}

#[tokio::test]
async fn a_null_result_with_errors_takes_the_error_rules_like_null_data() {
    let (upstream, _) = graphql_server().await;
    let gw = Gateway::start(ROUTES, Some(&upstream)).await;
    let client = HttpClient::http1();
    let r = client.get(&gw.url("/people/3")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"id": "3", "name": "user 3"}));

    // {"data": {"findUser": null}, "errors": [{"message": "no such user", "path": ["findUser"],
    // "extensions": {"code": "NOT_FOUND"}}]}: the configured rule, as for `data: null`.
    let r = client.get(&gw.url("/people/404")).await;
    assert_eq!(r.status, 404, "{}", r.text());
    let err = r.json();
    assert_eq!(err["error"], "graphql_error");
    assert_eq!(err["message"], "no such user");
    assert_eq!(err["errors"][0]["path"], json!(["findUser"]));
    assert_eq!(err["errors"][0]["extensions"]["code"], "NOT_FOUND");

    // No rule matches and no client-class code: the upstream failed.
    let r = client.get(&gw.url("/people/500")).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["message"], "user store unreachable");
    gw.stop().await;
}

#[tokio::test]
async fn null_data_without_a_list_of_errors_is_a_502_saying_so() {
    // Answers a GraphQL server should not give, by upstream path.
    let upstream = Upstream::with_handler(|req: Request<Incoming>| async move {
        let body = match req.uri().path() {
            "/empty-errors" => r#"{"data": null, "errors": []}"#,
            "/object-errors" => r#"{"data": null, "errors": {"message": "one error, not a list"}}"#,
            "/null-data" => r#"{"data": null}"#,
            _ => r#"{"errors": []}"#,
        };
        let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        r.headers_mut().insert("content-type", "application/json".parse().unwrap());
        r
    })
    .await;
    let mut config = String::from("[upstreams.graphql]\ntargets = [\"{upstream}\"]\n");
    for path in ["/empty-errors", "/object-errors", "/null-data", "/no-data"] {
        config.push_str(&format!(
            "[[routes]]\npath = \"{path}\"\nupstream = \"graphql\"\n[[routes.plugins]]\nplugin = \"builtin:graphql\"\nconfig = {{ query = \"{{ a }}\", path = \"{path}\" }}\n"
        ));
    }
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let cases = [
        ("/empty-errors", "the GraphQL response has `data: null` and no errors"),
        ("/object-errors", "the GraphQL response has `data: null` and its `errors` is not a list"),
        ("/null-data", "the GraphQL response has `data: null` and no errors"),
        ("/no-data", "the GraphQL response has neither data nor errors"),
    ];
    for (path, message) in cases {
        let r = HttpClient::http1().get(&gw.url(path)).await;
        assert_eq!(r.status, 502, "{path}: {}", r.text());
        let err = r.json();
        assert_eq!(err["error"], "graphql_error", "{path}");
        assert_eq!(err["message"], message, "{path}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn answers_that_are_not_graphql_are_a_502_or_passed_through() {
    // A route pointed at a path the server does not serve: its 404 text is passed through.
    let (upstream, _) = graphql_server().await;
    let config = r#"
[upstreams.graphql]
targets = ["{upstream}"]
[[routes]]
path = "/x"
upstream = "graphql"
[[routes.plugins]]
plugin = "builtin:graphql"
config = { query = "{ boom }", path = "/not-graphql" }
"#;
    let gw = Gateway::start(config, Some(&upstream)).await;
    let r = HttpClient::http1().get(&gw.url("/x")).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "POST /not-graphql is not the GraphQL endpoint");
    gw.stop().await;

    let echo = Upstream::start().await;
    let gw = Gateway::start(&config.replace("/not-graphql", "/graphql"), Some(&echo)).await;
    let r = HttpClient::http1().get(&gw.url("/x")).await;
    assert_eq!(r.status, 502, "a 200 that is not a GraphQL response");
    assert_eq!(r.json()["error"], "upstream_not_graphql");
    gw.stop().await;
}

/// GraphQL-over-HTTP (the plugin asks for `application/graphql-response+json`): a request error
/// is a non-2xx status with a GraphQL body, such as Apollo Router's 401 for a missing token. The
/// status reaches the client with the errors in the gateway's format, unless a configured rule
/// matches (before: every such answer was a 502).
#[tokio::test]
async fn an_error_status_with_graphql_errors_reaches_the_client() {
    let upstream = Upstream::with_handler(|req: Request<Incoming>| async move {
        let (status, body) = match req.uri().path() {
            "/http401" => (401, r#"{"errors": [{"message": "unauthenticated", "extensions": {"code": "UNAUTHENTICATED"}}]}"#),
            "/http403" => (403, r#"{"errors": [{"message": "no such user", "extensions": {"code": "NOT_FOUND"}}]}"#),
            "/http400" => (400, r#"{"errors": [{"message": "Cannot query field \"nope\"", "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"}}]}"#),
            "/http503" => (503, r#"{"data": null, "errors": [{"message": "overloaded"}]}"#),
            _ => (500, r#"{"data": null}"#),
        };
        let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        r.headers_mut().insert("content-type", "application/graphql-response+json".parse().unwrap());
        r.headers_mut().insert("www-authenticate", "Bearer".parse().unwrap());
        r
    })
    .await;
    let mut config = String::from("[upstreams.graphql]\ntargets = [\"{upstream}\"]\n");
    for path in ["/http401", "/http403", "/http400", "/http503", "/http500"] {
        config.push_str(&format!(
            "[[routes]]\npath = \"{path}\"\nupstream = \"graphql\"\n[[routes.plugins]]\nplugin = \"builtin:graphql\"\nconfig = {{ query = \"{{ user {{ id }} }}\", result = \"user\", path = \"{path}\", errors = [{{ code = \"NOT_FOUND\", status = 404 }}] }}\n"
        ));
    }
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let client = HttpClient::http1();
    let cases = [
        ("/http401", 401, "unauthenticated"),
        ("/http403", 404, "no such user"),
        ("/http400", 400, "Cannot query field \"nope\""),
        ("/http503", 503, "overloaded"),
    ];
    for (path, status, message) in cases {
        let r = client.get(&gw.url(path)).await;
        assert_eq!(r.status, status, "{path}: {}", r.text());
        let err = r.json();
        assert_eq!(err["error"], "graphql_error", "{path}");
        assert_eq!(err["status"], status, "{path}");
        assert_eq!(err["message"], message, "{path}");
        assert_eq!(err["errors"][0]["message"], message, "{path}");
    }
    let r = client.get(&gw.url("/http401")).await;
    assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"), "the upstream's headers stay");
    assert_eq!(r.json()["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
    // No errors to show: the upstream's answer as it is.
    let r = client.get(&gw.url("/http500")).await;
    assert_eq!((r.status.as_u16(), r.json()), (500, json!({"data": null})));
    gw.stop().await;
}

/// The document can live in a file of the directory granted to the plugin (capability `files`).
#[tokio::test]
async fn the_query_can_be_read_from_a_granted_file() {
    let (upstream, seen) = graphql_server().await;
    let granted = tempfile::tempdir().unwrap();
    let document = "query User($id: ID!) {\n  user(id: $id) { id name }\n}\n";
    std::fs::write(granted.path().join("user.graphql"), document).unwrap();
    let config = format!(
        r#"
[upstreams.graphql]
targets = ["{{upstream}}"]

[plugins.users]
source = "builtin:graphql"
capabilities = ["files"]
files = {{ dir = "{}" }}

[[routes]]
path = "/users/{{id}}"
upstream = "graphql"
[[routes.plugins]]
plugin = "users"
config = {{ query = "file:user.graphql", result = "user", variables = {{ id = {{ from = "param.id" }} }} }}
"#,
        granted.path().display()
    );
    let gw = Gateway::start(&config, Some(&upstream)).await;
    let r = HttpClient::http1().get(&gw.url("/users/3")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"id": "3", "name": "user 3"}));
    assert_eq!(seen.lock().unwrap().pop().unwrap()["query"], document);
    gw.stop().await;
    let missing = config.replace("file:user.graphql", "file:nope.graphql");
    let err = Gateway::try_start(&missing, Some(&upstream)).await.err().unwrap().to_string();
    assert!(err.contains("`query`: cannot read `nope.graphql`"), "{err}");
}

/// The query is parsed at load: a config whose query cannot run is refused with what is wrong
/// and where (before: the GraphQL server answered a parse error to every request).
#[tokio::test]
async fn a_query_that_cannot_run_is_refused_at_load() {
    let (upstream, _) = graphql_server().await;
    let route = |config: &str| {
        let template = r#"
[upstreams.graphql]
targets = ["{upstream}"]
[[routes]]
path = "/users/{id}"
upstream = "graphql"
[[routes.plugins]]
plugin = "builtin:graphql"
[routes.plugins.config]
CONFIG
"#;
        template.replace("CONFIG", config)
    };
    let cases = [
        // A typo: the `}` closing `user` is missing.
        (
            "query = \"\"\"\nquery User($id: ID!) {\n  user(id: $id) { id name\n}\n\"\"\"\nvariables = { id = { from = \"param.id\" } }",
            "`query`: GraphQL syntax error at 4:1 (line:column in the query): expected R_CURLY, got EOF",
        ),
        (
            r#"query = "query User($id: ID!) { user(id: ) { id } }""#,
            "`query`: GraphQL syntax error at 1:33 (line:column in the query): expected a valid Value",
        ),
        (
            r#"query = "query A { users(first: 1) { id } } query B { boom }""#,
            "`query`: the document has 2 operations (`A`, `B`): choose the one sent with `operation_name`",
        ),
        (
            r#"query = "query User($id: ID!) { user(id: $id) { id } }"
operation_name = "user"
variables = { id = { from = "param.id" } }"#,
            "`operation_name`: the query has no operation `user` (its operations: `User`)",
        ),
        (
            r#"query = "query User($id: ID!) { user(id: $id) { id } }"
variables = { id = { from = "param.id" }, posts = { from = "query.posts", type = "int" } }"#,
            "`variables.posts`: the operation `User` declares no `$posts` (it declares: `$id`)",
        ),
        (
            r#"query = "query User($id: ID!) { user(id: $id) { id } }""#,
            r#"`variables`: the operation `User` requires `$id: ID!` (non-null, no default in the query): add `id = { from = "..." }` to `variables`"#,
        ),
    ];
    for (config, message) in cases {
        let err = Gateway::try_start(&route(config), Some(&upstream)).await.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("builtin:graphql") && err.contains(message), "{config}\n=> {err}");
    }
    assert_eq!(upstream.hits(), 0);
    // Several operations with `operation_name`, and a non-null variable with a default in the
    // query (the operation's own default applies): accepted.
    let ok = r#"query = 'query A { users(first: 1) { id } } query B($id: ID! = "5") { user(id: $id) { id } }'
operation_name = "B""#;
    let gw = Gateway::start(&route(ok), Some(&upstream)).await;
    let r = HttpClient::http1().get(&gw.url("/users/1")).await;
    assert_eq!((r.status.as_u16(), r.json()), (200, json!({"user": {"id": "5"}})), "{}", r.text());
    gw.stop().await;
}
