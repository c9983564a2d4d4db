//! Load-balancer server health is live in the API and in `/metrics`, through the real binary:
//! a server a health check (active or passive) takes down shows `DOWN` and
//! `service_server_up ... 0` as soon as the check decides, and `UP` / 1 again when it
//! recovers, with no configuration reload in between.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::Value;
use support::web::{Conn, HttpBackend};
use support::*;
use tokio::net::TcpListener;

async fn get(port: u16, path: &str) -> support::web::Answer {
    let mut conn = Conn::h1(port).await;
    let request = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header("host", format!("127.0.0.1:{port}"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    conn.send(request).await
}

/// The `serverStatus` of a service, as the API shows it now.
async fn server_status(traefik: u16, kind: &str, service: &str) -> Value {
    let answer = get(traefik, &format!("/api/{kind}/services/{service}")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let service: Value = serde_json::from_str(&answer.body).expect("json");
    service["serverStatus"].clone()
}

/// The value of `sallyport_service_server_up` for one server, as `/metrics` shows it now.
async fn server_up(traefik: u16, service: &str, server: &str) -> Option<String> {
    let scrape = get(traefik, "/metrics").await;
    let series = format!("sallyport_service_server_up{{service=\"{service}\",url=\"{server}\"}} ");
    scrape
        .body
        .lines()
        .find_map(|line| line.strip_prefix(&series).map(str::to_owned))
}

/// Waits until a server is `status` in the API and `up` in the metrics.
async fn wait_for(traefik: u16, kind: &str, service: &str, server: &str, status: &str, up: &str) {
    let start = Instant::now();
    loop {
        let shown = server_status(traefik, kind, service).await;
        let metric = server_up(traefik, service, server).await;
        if shown[server] == status && metric.as_deref() == Some(up) {
            return;
        }
        assert!(
            start.elapsed() < WAIT,
            "{service} {server}: wanted {status} / {up}, API shows {shown}, metric {metric:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The static configuration: `web` and `tcp` entrypoints, the API and metrics on `traefik`.
fn start(tag: &str, dynamic: &str, web: u16, tcp: u16) -> (Router, u16) {
    let dir = temp_dir(tag);
    let traefik = free_port();
    let static_yaml = static_config(
        &dir,
        &[("web", web), ("tcp", tcp), ("traefik", traefik)],
        "api:\n  insecure: true\nmetrics:\n  prometheus: {}\n",
    );
    let router = Router::start(&dir, &static_yaml, dynamic, &[web, tcp, traefik]);
    (router, traefik)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_servers_go_down_and_up_in_the_api_and_metrics_without_a_reload() {
    let healthy = HttpBackend::start("healthy").await;
    let sick = HttpBackend::start("sick").await;
    let judged = HttpBackend::start("judged").await;
    let plain = HttpBackend::start("plain").await;
    let (web, tcp) = (free_port(), free_port());
    let dynamic = format!(
        r#"
http:
  routers:
    x:
      rule: "Host(`x.test`)"
      entryPoints: [web]
      service: x
    p:
      rule: "Host(`p.test`)"
      entryPoints: [web]
      service: p
    plain:
      rule: "Host(`plain.test`)"
      entryPoints: [web]
      service: plain
  services:
    x:
      loadBalancer:
        servers: [{{url: "{healthy}"}}, {{url: "{sick}"}}]
        healthCheck: {{path: /health, interval: 100ms, timeout: 1s}}
    p:
      loadBalancer:
        servers: [{{url: "{judged}"}}]
        passiveHealthCheck: {{failureWindow: 3s, maxFailedAttempts: 1}}
    plain:
      loadBalancer:
        servers: [{{url: "{plain}"}}]
"#,
        healthy = healthy.url(),
        sick = sick.url(),
        judged = judged.url(),
        plain = plain.url(),
    );
    let (router, traefik) = start("server-health-http", &dynamic, web, tcp);
    let (healthy_url, sick_url) = (healthy.url(), sick.url());
    wait_for(traefik, "http", "x@file", &sick_url, "UP", "1").await;

    sick.set_health(500);
    wait_for(traefik, "http", "x@file", &sick_url, "DOWN", "0").await;
    assert_eq!(
        server_status(traefik, "http", "x@file").await[&healthy_url],
        "UP"
    );
    assert_eq!(
        server_up(traefik, "x@file", &healthy_url).await.as_deref(),
        Some("1")
    );
    let rawdata: Value =
        serde_json::from_str(&get(traefik, "/api/rawdata").await.body).expect("json");
    assert_eq!(
        rawdata["services"]["x@file"]["serverStatus"][&sick_url],
        "DOWN"
    );
    // Traffic avoids it too.
    let mut conn = Conn::h1(web).await;
    for _ in 0..4 {
        let answer = conn.get("x.test", "/").await;
        assert_eq!(answer.body, "healthy /");
    }

    sick.set_health(200);
    wait_for(traefik, "http", "x@file", &sick_url, "UP", "1").await;

    // A passive check: one failed response takes the server down until the window ends.
    let judged_url = judged.url();
    wait_for(traefik, "http", "p@file", &judged_url, "UP", "1").await;
    judged.force_status(Some(502));
    let answer = conn.get("p.test", "/").await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    wait_for(traefik, "http", "p@file", &judged_url, "DOWN", "0").await;
    judged.force_status(None);
    wait_for(traefik, "http", "p@file", &judged_url, "UP", "1").await;

    // Without a health check the server is always up and not exported, as in Traefik.
    let plain_status = server_status(traefik, "http", "plain@file").await;
    assert_eq!(plain_status[plain.url()], "UP");
    assert_eq!(server_up(traefik, "plain@file", &plain.url()).await, None);
    assert_eq!(router.count_log("dynamic configuration applied"), 1);
}

/// Accepts (and closes) connections on `addr` once it can bind it again.
async fn listen_again(addr: SocketAddr) -> tokio::task::JoinHandle<()> {
    let start = Instant::now();
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => break listener,
            Err(e) => {
                assert!(start.elapsed() < WAIT, "cannot bind {addr} again: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    tokio::spawn(async move { while listener.accept().await.is_ok() {} })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_servers_go_down_and_up_in_the_api_and_metrics_and_reloads_drop_their_series() {
    let steady = Backend::echo(None).await;
    let stopping = Backend::echo(None).await;
    let (web, tcp) = (free_port(), free_port());
    let dynamic = |servers: &str| {
        format!(
            r#"
tcp:
  routers:
    db:
      rule: "HostSNI(`*`)"
      entryPoints: [tcp]
      service: db
  services:
    db:
      loadBalancer:
        servers: [{servers}]
        healthCheck: {{interval: 100ms, timeout: 1s}}
"#
        )
    };
    let (steady_addr, stopping_addr) = (steady.addr.to_string(), stopping.addr.to_string());
    let both = format!(r#"{{address: "{steady_addr}"}}, {{address: "{stopping_addr}"}}"#);
    let (router, traefik) = start("server-health-tcp", &dynamic(&both), web, tcp);
    wait_for(traefik, "tcp", "db@file", &stopping_addr, "UP", "1").await;

    let addr = stopping.addr;
    drop(stopping);
    wait_for(traefik, "tcp", "db@file", &stopping_addr, "DOWN", "0").await;
    assert_eq!(
        server_status(traefik, "tcp", "db@file").await[&steady_addr],
        "UP"
    );
    assert_eq!(
        server_up(traefik, "db@file", &steady_addr).await.as_deref(),
        Some("1")
    );

    let back = listen_again(addr).await;
    wait_for(traefik, "tcp", "db@file", &stopping_addr, "UP", "1").await;
    assert_eq!(router.count_log("dynamic configuration applied"), 1);

    // A reload that drops the server drops its series.
    router.rewrite_dynamic(&dynamic(&format!(r#"{{address: "{steady_addr}"}}"#)));
    let start = Instant::now();
    while router.count_log("dynamic configuration applied") < 2 {
        assert!(start.elapsed() < WAIT, "the reload never happened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server_up(traefik, "db@file", &stopping_addr).await, None);
    assert_eq!(
        server_up(traefik, "db@file", &steady_addr).await.as_deref(),
        Some("1")
    );
    back.abort();
}
