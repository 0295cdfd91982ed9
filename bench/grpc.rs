//! `builtin:grpc-transcode` overhead per request: a unary call to a real tonic server (h2c on
//! loopback) made by a native tonic client, against the same call made by an HTTP/1.1 JSON client
//! through the gateway, which transcodes JSON to protobuf and back (request and response phases
//! on warm pooled instances, an h2c upstream connection shared by the requests). The difference is
//! what the gateway and the plugin add. A third case, the native client through the gateway on a
//! pass-through route (no plugin), splits that into the proxy's share and the transcoding's.
//! Run: `cargo bench -p airlock --bench grpc`.

use std::convert::Infallible;
use std::future::{Ready, ready};

use airlock::config::ConfigSource;
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::uri::PathAndQuery;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// The message both ways (`bench.Say`).
#[derive(Clone, PartialEq, prost::Message)]
struct Say {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(int64, tag = "2")]
    n: i64,
    #[prost(string, repeated, tag = "3")]
    tags: Vec<String>,
}

const PROTO: &str = r#"syntax = "proto3";
package bench;
message Say { string text = 1; int64 n = 2; repeated string tags = 3; }
service Echo { rpc Say(Say) returns (Say); }
"#;

const JSON_BODY: &str = r#"{"text":"hello gateway","n":"42","tags":["a","b","c"]}"#;

/// `bench.Echo/Say`: answers the request.
#[derive(Clone, Copy)]
struct EchoSay;

impl tonic::server::UnaryService<Say> for EchoSay {
    type Response = Say;
    type Future = Ready<Result<tonic::Response<Say>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<Say>) -> Self::Future {
        ready(Ok(tonic::Response::new(request.into_inner())))
    }
}

/// Serves `bench.Echo/Say` over h2c on a free loopback port.
async fn grpc_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<Say, Say>::default());
                    Ok::<_, Infallible>(grpc.unary(EchoSay, req).await)
                });
                let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
            });
        }
    });
    addr
}

/// The descriptor set of [`PROTO`], compiled with protox into `dir/protos/bench.pb`.
fn descriptor_set(dir: &std::path::Path) {
    let protos = dir.join("protos");
    std::fs::create_dir_all(&protos).expect("mkdir");
    std::fs::write(protos.join("bench.proto"), PROTO).expect("write proto");
    let mut compiler = protox::Compiler::new([&protos]).expect("protox");
    compiler.open_files(["bench.proto"]).expect("bench.proto compiles");
    std::fs::write(protos.join("bench.pb"), compiler.encode_file_descriptor_set()).expect("write descriptor set");
}

fn grpc(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    descriptor_set(dir.path());
    let server = rt.block_on(grpc_server());

    // Native: a tonic client on one h2c connection.
    let channel = rt
        .block_on(tonic::transport::Endpoint::from_shared(format!("http://{server}")).expect("endpoint").connect())
        .expect("connect");
    let request = Say { text: "hello gateway".into(), n: 42, tags: vec!["a".into(), "b".into(), "c".into()] };
    let call = |channel: tonic::transport::Channel, request: Say| async move {
        let mut client = tonic::client::Grpc::new(channel);
        client.ready().await.expect("ready");
        let path = PathAndQuery::from_static("/bench.Echo/Say");
        client.unary(tonic::Request::new(request), path, tonic_prost::ProstCodec::<Say, Say>::default()).await.expect("call").into_inner()
    };
    assert_eq!(rt.block_on(call(channel.clone(), request.clone())), request);
    c.bench_function("grpc/native_tonic_client", |b| {
        b.to_async(&rt).iter(|| call(channel.clone(), request.clone()))
    });

    // Through the gateway: HTTP/1.1 + JSON in, gRPC to the same server.
    let config = format!(
        r#"[[listeners]]
address = "127.0.0.1:0"
[admin]
enabled = false
[upstreams.grpc]
targets = ["{server}"]
protocol = "h2c"
[plugins.echo]
source = "builtin:grpc-transcode"
capabilities = ["files"]
files = {{ dir = "protos" }}
[[routes]]
path_prefix = "/bench.Echo"
upstream = "grpc"
[[routes]]
path = "/say"
upstream = "grpc"
[[routes.plugins]]
plugin = "echo"
[routes.plugins.config]
descriptor = "bench.pb"
annotations = false
mappings = [{{ method = "bench.Echo/Say", http = "POST /say", body = "*" }}]
"#
    );
    let source = ConfigSource::inline("airlock.toml", &config, dir.path().to_path_buf());
    let gateway = rt.block_on(airlock::start(&source)).expect("gateway starts");
    let url: http::Uri = format!("http://{}/say", gateway.addr()).parse().expect("url");
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let send = |client: Client<_, Full<Bytes>>, url: http::Uri| async move {
        let request = http::Request::post(url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(JSON_BODY.as_bytes())))
            .expect("request");
        let response = client.request(request).await.expect("response");
        let status = response.status();
        (status, response.into_body().collect().await.expect("body").to_bytes())
    };
    let (status, body) = rt.block_on(send(client.clone(), url.clone()));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(&body[..], JSON_BODY.as_bytes());
    c.bench_function("grpc/json_through_gateway_transcoded", |b| {
        b.to_async(&rt).iter(|| send(client.clone(), url.clone()))
    });

    // The native client through the gateway, passed through untouched (h2c both sides).
    let proxied = rt
        .block_on(tonic::transport::Endpoint::from_shared(format!("http://{}", gateway.addr())).expect("endpoint").connect())
        .expect("connect to the gateway");
    assert_eq!(rt.block_on(call(proxied.clone(), request.clone())), request);
    c.bench_function("grpc/native_tonic_client_through_gateway", |b| {
        b.to_async(&rt).iter(|| call(proxied.clone(), request.clone()))
    });
    rt.block_on(gateway.shutdown());
}

criterion_group!(benches, grpc);
criterion_main!(benches);
