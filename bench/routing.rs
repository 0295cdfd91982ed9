//! Route lookup in a table of 1,000 routes (issue 8's micro-benchmark): exact paths with a
//! `{param}`, prefixes, host-restricted and method-restricted routes mixed, as a large
//! gateway's config has them. Measures the first, a middle and the last route, a host match,
//! and a miss. Run: `cargo bench -p airlock --bench routing`.

use std::hint::black_box;

use airlock::router::{PathMatch, RouteSpec, RouteTable};
use criterion::{Criterion, criterion_group, criterion_main};
use http::Method;

const ROUTES: usize = 1000;

/// Route `i`: a quarter each of `/svc<i>/items/{id}` (GET), `/svc<i>/` prefixes, host-bound
/// `/api<i>` on `svc<i>.example.com`, and `/orders<i>/{id}/lines` for POST.
fn spec(i: usize) -> RouteSpec {
    let (path, hosts, methods) = match i % 4 {
        0 => (PathMatch::Exact(format!("/svc{i}/items/{{id}}")), vec![], vec![Method::GET]),
        1 => (PathMatch::Prefix(format!("/svc{i}")), vec![], vec![]),
        2 => (PathMatch::Exact(format!("/api{i}")), vec![format!("svc{i}.example.com")], vec![]),
        _ => (PathMatch::Exact(format!("/orders{i}/{{id}}/lines")), vec![], vec![Method::POST]),
    };
    RouteSpec { id: format!("route-{i}"), hosts, methods, path, headers: Vec::new() }
}

fn routing(c: &mut Criterion) {
    let specs: Vec<RouteSpec> = (0..ROUTES).map(spec).collect();
    let table = RouteTable::build(&specs, (0..ROUTES).collect::<Vec<usize>>()).expect("a valid table");
    // (label, host, method, path, the route it must find)
    type Case = (&'static str, Option<&'static str>, Method, &'static str, Option<usize>);
    let cases: [Case; 5] = [
        ("first_exact_with_param", None, Method::GET, "/svc0/items/42", Some(0)),
        ("middle_prefix", None, Method::GET, "/svc501/deep/path/under/it", Some(501)),
        ("last_exact_post", None, Method::POST, "/orders999/7/lines", Some(999)),
        ("host_bound", Some("svc502.example.com"), Method::GET, "/api502", Some(502)),
        ("miss", None, Method::GET, "/nothing/here", None),
    ];
    let headers = http::HeaderMap::new();
    for (label, host, method, path, expected) in cases {
        // Check the lookup finds what is measured.
        assert_eq!(table.find(host, &method, path, &headers).map(|m| *m.route), expected, "{label}");
        c.bench_function(&format!("routing/1000_routes/{label}"), |b| {
            b.iter(|| table.find(black_box(host), black_box(&method), black_box(path), black_box(&headers)).map(|m| *m.route))
        });
    }
}

criterion_group!(benches, routing);
criterion_main!(benches);
