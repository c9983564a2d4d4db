//! The API served from configurations parsed and validated as the runtime does it, by
//! calling the handlers directly.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use l7::handler::{Handler, empty_body};
use serde_json::{Value, json};

use super::{ApiHandler, ApiState, ServerHealth, ServerUp};
use crate::config::file_provider::parse_dynamic;
use crate::config::source::Format;
use crate::config::static_cfg::load_static;
use crate::config::validate;
use crate::runtime::rules::Compilers;

const DYNAMIC: &str = r#"
http:
  routers:
    web:
      rule: "Host(`a.example`)"
      service: app
      entryPoints: [web]
      middlewares: [strip]
    broken:
      rule: "Path(`/x`)"
      service: missing
      entryPoints: [web]
    secure:
      rule: "Host(`b.example`)"
      service: app
      tls: {}
  services:
    app:
      loadBalancer:
        servers:
          - url: http://127.0.0.1:8081
          - url: http://127.0.0.1:8082
    spread:
      weighted:
        services:
          - name: app
            weight: 2
  middlewares:
    strip:
      stripPrefix:
        prefixes: [/api]
tcp:
  routers:
    db:
      rule: "HostSNI(`*`)"
      service: pg
      entryPoints: [websecure]
  services:
    pg:
      loadBalancer:
        servers:
          - address: 127.0.0.1:5432
udp:
  routers:
    dns:
      service: resolvers
  services:
    resolvers:
      loadBalancer:
        servers:
          - address: 127.0.0.1:5353
"#;

fn state(yaml: &str, servers: &ServerHealth) -> ApiState {
    let args: Vec<String> = [
        "--entryPoints.web.address=:80",
        "--entryPoints.websecure.address=:443",
        "--entryPoints.dns.address=:53/udp",
        "--providers.file.filename=dynamic.yml",
        "--metrics.prometheus=true",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let st = load_static(&args, &[]).unwrap().config;
    let dy = parse_dynamic(yaml, Format::Yaml, "dynamic.yml").unwrap();
    let report = validate::validate(&st, &dy, &Compilers);
    ApiState::build(&st, &dy, &report, servers)
}

/// A server's health flag and the handle the API reads it through.
fn flag(up: bool) -> (Arc<AtomicBool>, ServerUp) {
    let flag = Arc::new(AtomicBool::new(up));
    let read = flag.clone();
    (flag, Arc::new(move || read.load(Ordering::Relaxed)))
}

fn handler(base_path: &str) -> ApiHandler {
    let mut health = ServerHealth::new();
    health.insert(
        "app@file".into(),
        BTreeMap::from([("http://127.0.0.1:8082".to_owned(), flag(false).1)]),
    );
    let state = state(DYNAMIC, &health);
    ApiHandler::new(Arc::new(ArcSwap::from_pointee(state)), base_path)
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn call(handler: &ApiHandler, method: Method, uri: &str) -> Answer {
    let mut request = Request::new(empty_body());
    *request.method_mut() = method;
    *request.uri_mut() = uri.parse().unwrap();
    let response = handler.call(request).await;
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    Answer {
        status,
        headers,
        body,
    }
}

async fn get(handler: &ApiHandler, uri: &str) -> Answer {
    let answer = call(handler, Method::GET, uri).await;
    assert_eq!(answer.headers["content-type"], "application/json", "{uri}");
    answer
}

fn names(body: &Value) -> Vec<&str> {
    body.as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn routers_show_status_errors_and_entrypoints() {
    let api = handler("/");
    let answer = get(&api, "/api/http/routers").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers["x-next-page"], "1");
    assert_eq!(
        names(&answer.body),
        ["broken@file", "secure@file", "web@file"]
    );
    let broken = &answer.body[0];
    assert_eq!(broken["status"], "disabled");
    assert_eq!(
        broken["error"],
        json!(["the service \"missing@file\" does not exist"])
    );
    assert_eq!(
        answer.body[2],
        json!({
            "name": "web@file",
            "provider": "file",
            "rule": "Host(`a.example`)",
            "service": "app@file",
            "middlewares": ["strip@file"],
            "entryPoints": ["web"],
            "status": "enabled",
            "using": ["web"],
        })
    );
    let secure = &answer.body[1];
    assert_eq!(secure["tls"], json!({"options": "default"}));
    assert_eq!(secure["using"], json!(["web", "websecure"]));
    assert!(secure.get("error").is_none());
}

#[tokio::test]
async fn one_object_by_its_percent_encoded_name_or_404() {
    let api = handler("/");
    let answer = get(&api, "/api/http/routers/web%40file").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["name"], "web@file");
    let answer = get(&api, "/api/tcp/routers/db@file").await;
    assert_eq!(answer.body["using"], json!(["websecure"]));
    assert_eq!(answer.body["rule"], "HostSNI(`*`)");
    let answer = get(&api, "/api/http/routers/nope@file").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(
        answer.body,
        json!({"message": "router not found: nope@file"})
    );
    let answer = get(&api, "/api/udp/services/nope").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.body["message"], "service not found: nope");
    let answer = get(&api, "/api/nothing").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn services_show_server_status_and_their_routers() {
    let api = handler("/");
    let answer = get(&api, "/api/http/services").await;
    assert_eq!(names(&answer.body), ["app@file", "spread@file"]);
    assert_eq!(
        answer.body[0],
        json!({
            "name": "app@file",
            "provider": "file",
            "type": "loadbalancer",
            "status": "enabled",
            "usedBy": ["secure@file", "web@file"],
            "loadBalancer": {
                "servers": [{"url": "http://127.0.0.1:8081"}, {"url": "http://127.0.0.1:8082"}],
                "passHostHeader": true,
            },
            "serverStatus": {"http://127.0.0.1:8081": "UP", "http://127.0.0.1:8082": "DOWN"},
        })
    );
    assert_eq!(answer.body[1]["type"], "weighted");
    assert_eq!(
        answer.body[1]["weighted"]["services"],
        json!([{"name": "app@file", "weight": 2}])
    );

    let answer = get(&api, "/api/http/middlewares/strip@file").await;
    assert_eq!(answer.body["type"], "stripprefix");
    assert_eq!(answer.body["usedBy"], json!(["web@file"]));
    assert_eq!(answer.body["stripPrefix"], json!({"prefixes": ["/api"]}));

    let answer = get(&api, "/api/tcp/services/pg@file").await;
    assert_eq!(answer.body["serverStatus"], json!({"127.0.0.1:5432": "UP"}));
    assert_eq!(answer.body["usedBy"], json!(["db@file"]));
    let answer = get(&api, "/api/udp/routers").await;
    assert_eq!(answer.body[0]["using"], json!(["dns"]));
    let answer = get(&api, "/api/udp/services/resolvers@file").await;
    assert_eq!(answer.body["usedBy"], json!(["dns@file"]));
    assert!(answer.body.get("serverStatus").is_none());
}

#[tokio::test]
async fn server_status_is_the_health_at_the_time_of_the_request() {
    let (app, app_up) = flag(true);
    let (pg, pg_up) = flag(true);
    let mut health = ServerHealth::new();
    health.insert(
        "app@file".into(),
        BTreeMap::from([("http://127.0.0.1:8081".to_owned(), app_up)]),
    );
    health.insert(
        "pg@file".into(),
        BTreeMap::from([("127.0.0.1:5432".to_owned(), pg_up)]),
    );
    let api = ApiHandler::new(
        Arc::new(ArcSwap::from_pointee(state(DYNAMIC, &health))),
        "/",
    );
    let app_status = json!({"http://127.0.0.1:8081": "UP", "http://127.0.0.1:8082": "UP"});
    let answer = get(&api, "/api/http/services/app@file").await;
    assert_eq!(answer.body["serverStatus"], app_status);

    app.store(false, Ordering::Relaxed);
    pg.store(false, Ordering::Relaxed);
    let down = json!({"http://127.0.0.1:8081": "DOWN", "http://127.0.0.1:8082": "UP"});
    let answer = get(&api, "/api/http/services/app@file").await;
    assert_eq!(answer.body["serverStatus"], down);
    assert_eq!(
        answer.body["status"], "enabled",
        "a down server is not an error"
    );
    assert_eq!(answer.body["usedBy"], json!(["secure@file", "web@file"]));
    let answer = get(&api, "/api/http/services?search=app").await;
    assert_eq!(answer.body[0]["serverStatus"], down);
    let answer = get(&api, "/api/tcp/services/pg@file").await;
    assert_eq!(
        answer.body["serverStatus"],
        json!({"127.0.0.1:5432": "DOWN"})
    );
    let raw = get(&api, "/api/rawdata").await.body;
    assert_eq!(raw["services"]["app@file"]["serverStatus"], down);
    assert_eq!(
        raw["services"]["app@file"]["loadBalancer"]["passHostHeader"],
        true
    );
    assert_eq!(
        raw["tcpServices"]["pg@file"]["serverStatus"],
        json!({"127.0.0.1:5432": "DOWN"})
    );
    assert_eq!(raw["routers"]["web@file"]["service"], "app@file");

    app.store(true, Ordering::Relaxed);
    let answer = get(&api, "/api/http/services/app@file").await;
    assert_eq!(answer.body["serverStatus"], app_status);
}

#[tokio::test]
async fn lists_paginate_with_the_next_page_header() {
    let api = handler("/");
    let answer = get(&api, "/api/http/routers?per_page=2").await;
    assert_eq!(names(&answer.body), ["broken@file", "secure@file"]);
    assert_eq!(answer.headers["x-next-page"], "2");
    let answer = get(&api, "/api/http/routers?per_page=2&page=2").await;
    assert_eq!(names(&answer.body), ["web@file"]);
    assert_eq!(answer.headers["x-next-page"], "1");
    for bad in ["page=3&per_page=2", "per_page=0", "page=-1", "page=x"] {
        let answer = get(&api, &format!("/api/http/routers?{bad}")).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(answer.body["message"].is_string());
    }
    let answer = get(&api, "/api/tcp/middlewares").await;
    assert_eq!(answer.body, json!([]));
    assert_eq!(answer.headers["x-next-page"], "1");
}

#[tokio::test]
async fn lists_filter_by_search_status_service_and_middleware() {
    let api = handler("/");
    let cases = [
        ("status=disabled", vec!["broken@file"]),
        ("status=ENABLED", vec!["secure@file", "web@file"]),
        ("search=WEB", vec!["web@file"]),
        ("search=b.example", vec!["secure@file"]),
        ("serviceName=app", vec!["secure@file", "web@file"]),
        ("serviceName=app%40file&search=sec", vec!["secure@file"]),
        ("middlewareName=strip@file", vec!["web@file"]),
        ("status=warning", vec![]),
    ];
    for (query, expected) in cases {
        let answer = get(&api, &format!("/api/http/routers?{query}")).await;
        assert_eq!(names(&answer.body), expected, "{query}");
    }
    let answer = get(&api, "/api/http/services?search=spr").await;
    assert_eq!(names(&answer.body), ["spread@file"]);
}

#[tokio::test]
async fn entrypoints_overview_rawdata_and_version() {
    let api = handler("/");
    let answer = get(&api, "/api/entrypoints").await;
    // `traefik` is the entrypoint Prometheus asks for.
    assert_eq!(names(&answer.body), ["dns", "traefik", "web", "websecure"]);
    let answer = get(&api, "/api/entrypoints/web").await;
    assert_eq!(answer.body["address"], ":80");
    assert_eq!(
        answer.body["transport"]["respondingTimeouts"]["readTimeout"],
        "60s"
    );
    assert_eq!(answer.body["http2"]["maxConcurrentStreams"], 250);
    let answer = get(&api, "/api/entrypoints/dns").await;
    assert_eq!(answer.body["address"], ":53/udp");
    assert_eq!(answer.body["udp"]["timeout"], "3s");
    assert_eq!(
        get(&api, "/api/entrypoints/nope").await.status,
        StatusCode::NOT_FOUND
    );

    let answer = get(&api, "/api/overview").await;
    assert_eq!(
        answer.body,
        json!({
            "http": {
                "routers": {"total": 3, "warnings": 0, "errors": 1},
                "services": {"total": 2, "warnings": 0, "errors": 0},
                "middlewares": {"total": 1, "warnings": 0, "errors": 0},
            },
            "tcp": {
                "routers": {"total": 1, "warnings": 0, "errors": 0},
                "services": {"total": 1, "warnings": 0, "errors": 0},
                "middlewares": {"total": 0, "warnings": 0, "errors": 0},
            },
            "udp": {
                "routers": {"total": 1, "warnings": 0, "errors": 0},
                "services": {"total": 1, "warnings": 0, "errors": 0},
            },
            "features": {"tracing": "", "metrics": "Prometheus", "accessLog": false},
            "providers": ["File"],
        })
    );

    let answer = get(&api, "/api/rawdata").await;
    let raw = answer.body.as_object().unwrap();
    let keys: Vec<&str> = raw.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "middlewares",
            "routers",
            "services",
            "tcpRouters",
            "tcpServices",
            "udpRouters",
            "udpServices"
        ]
    );
    assert_eq!(raw["routers"]["broken@file"]["status"], "disabled");
    assert!(raw["routers"]["web@file"].get("name").is_none());
    assert_eq!(
        raw["services"]["app@file"]["serverStatus"]["http://127.0.0.1:8082"],
        "DOWN"
    );

    let answer = get(&api, "/api/version").await;
    assert_eq!(answer.body["Version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(answer.body["Codename"], "sallyport");
    let date = answer.body["startDate"].as_str().unwrap();
    assert!(date.len() == 20 && date.ends_with('Z'), "{date}");
}

#[tokio::test]
async fn only_get_and_head_are_allowed() {
    let api = handler("/");
    for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
        let answer = call(&api, method.clone(), "/api/rawdata").await;
        assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(answer.headers["allow"], "GET");
    }
    let answer = call(&api, Method::HEAD, "/api/http/routers?per_page=1").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers["x-next-page"], "2");
    assert_eq!(answer.body, Value::Null);
}

#[tokio::test]
async fn the_base_path_prefixes_every_endpoint() {
    let api = handler("/traefik/");
    assert_eq!(
        get(&api, "/traefik/api/version").await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(&api, "/api/version").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_swapped_state_is_served_on_the_next_request() {
    let shared = Arc::new(ArcSwap::from_pointee(state(DYNAMIC, &ServerHealth::new())));
    let api = ApiHandler::new(shared.clone(), "/");
    assert_eq!(names(&get(&api, "/api/http/routers").await.body).len(), 3);
    shared.store(Arc::new(state("http: {}", &ServerHealth::new())));
    assert_eq!(get(&api, "/api/http/routers").await.body, json!([]));
    assert_eq!(get(&api, "/api/rawdata").await.body, json!({}));
}

#[tokio::test]
async fn ten_thousand_routers_are_listed_page_by_page() {
    let mut yaml = String::from("http:\n  routers:\n");
    for i in 0..10_000 {
        let _ = writeln!(
            yaml,
            "    r{i:05}:\n      rule: \"Host(`h{i}.example`)\"\n      service: app\n      entryPoints: [web]"
        );
    }
    yaml.push_str("  services:\n    app:\n      loadBalancer:\n        servers:\n          - url: http://127.0.0.1:8081\n");
    let state = state(&yaml, &ServerHealth::new());
    let api = ApiHandler::new(Arc::new(ArcSwap::from_pointee(state)), "/");
    let answer = get(&api, "/api/http/routers?page=100&per_page=100").await;
    let listed = names(&answer.body);
    assert_eq!(listed.len(), 100);
    assert_eq!(listed[0], "r09900@file");
    assert_eq!(listed[99], "r09999@file");
    assert_eq!(answer.headers["x-next-page"], "1");
    let answer = get(&api, "/api/http/routers?search=r04242").await;
    assert_eq!(names(&answer.body), ["r04242@file"]);
    let answer = get(&api, "/api/http/services/app@file").await;
    assert_eq!(answer.body["usedBy"].as_array().unwrap().len(), 10_000);
}

#[tokio::test]
async fn a_router_with_a_missing_entrypoint_among_others_is_a_warning() {
    let yaml = r#"
http:
  routers:
    half:
      rule: "Path(`/`)"
      service: app
      entryPoints: [web, nope]
  services:
    app:
      loadBalancer:
        servers:
          - url: http://127.0.0.1:8081
"#;
    let state = state(yaml, &ServerHealth::new());
    let api = ApiHandler::new(Arc::new(ArcSwap::from_pointee(state)), "/");
    let answer = get(&api, "/api/http/routers?status=warning").await;
    assert_eq!(names(&answer.body), ["half@file"]);
    assert_eq!(
        answer.body[0]["error"],
        json!(["entryPoint \"nope\" doesn't exist"])
    );
    assert_eq!(answer.body[0]["using"], json!(["web"]));
    let answer = get(&api, "/api/overview").await;
    assert_eq!(
        answer.body["http"]["routers"],
        json!({"total": 1, "warnings": 1, "errors": 0})
    );
}

#[tokio::test]
async fn odd_requests_get_client_errors() {
    let api = handler("/");
    let cases = [
        ("/api/http/routers/%", StatusCode::NOT_FOUND),
        ("/api/http/routers/%E2%82", StatusCode::NOT_FOUND),
        ("/api//", StatusCode::NOT_FOUND),
        ("/api/http", StatusCode::NOT_FOUND),
        ("/api", StatusCode::NOT_FOUND),
        ("/", StatusCode::NOT_FOUND),
        (
            "/api/http/routers?page=99999999999999999999",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/http/routers?per_page=9223372036854775807&page=9223372036854775807",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/http/routers?per_page=9223372036854775807",
            StatusCode::OK,
        ),
        (
            "/api/http/routers?%%%&&==&page=%31&search=%",
            StatusCode::OK,
        ),
    ];
    for (uri, expected) in cases {
        let answer = get(&api, uri).await;
        assert_eq!(answer.status, expected, "{uri}");
    }
}
