//! The operations side through the real binary: `/ping`, the API, `/metrics`, the HTTP access
//! log and the dashboard (in headless Chromium when Debian's `chromium` is installed), all on
//! the `traefik` entrypoint as Traefik serves them.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use support::programs::{installed, run_bounded};
use support::web::{Conn, HttpBackend};
use support::*;

struct Ops {
    router: Router,
    web: u16,
    traefik: u16,
    access_log: PathBuf,
    backend_url: String,
    _backend: HttpBackend,
}

/// A router with `web` (one working HTTP router, one broken) and the `traefik` entrypoint
/// (with `traefik_settings` under it) serving the API, dashboard, ping and metrics; access log
/// in json.
async fn start(tag: &str, traefik_settings: &str) -> Ops {
    let backend = HttpBackend::start("site").await;
    let dir = temp_dir(tag);
    let (web, traefik) = (free_port(), free_port());
    let access_log = dir.join("access.log");
    let (cert, key) = TestCert::new(&["site.test"]).write(&dir, "site");
    // A port nothing listens on: every try of `flaky` fails to connect.
    let dead_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = dead_listener.local_addr().expect("address").port();
    drop(dead_listener);
    let static_yaml = static_config(
        &dir,
        &[("web", web), ("traefik", traefik)],
        &format!(
            "api:\n  insecure: true\nping: {{}}\nmetrics:\n  prometheus: {{}}\naccessLog:\n  filePath: \"{}\"\n  format: json\n",
            access_log.display()
        ),
    )
    .replace(
        &format!("    address: \"127.0.0.1:{traefik}\"\n"),
        &format!("    address: \"127.0.0.1:{traefik}\"\n{traefik_settings}"),
    );
    let dynamic = format!(
        r#"
http:
  routers:
    site:
      rule: "Host(`site.test`)"
      entryPoints: [web]
      service: app
    broken:
      rule: "Host(`broken.test`)"
      entryPoints: [web]
      service: missing
    flaky:
      rule: "Host(`flaky.test`)"
      entryPoints: [web]
      service: dead
      middlewares: [retry]
    guarded:
      rule: "Host(`guarded.test`)"
      entryPoints: [web]
      service: app
      middlewares: [auth]
  middlewares:
    retry:
      retry: {{attempts: 3, initialInterval: 1ms}}
    auth:
      basicAuth: {{users: ["sha:{{SHA}}5en6G6MezRroT3XKqkdPOmY/BfQ="]}}
  services:
    dead:
      loadBalancer:
        servers: [{{url: "http://127.0.0.1:{dead}"}}]
    app:
      loadBalancer:
        servers: [{{url: "{}"}}]
tls:
  certificates: [{{certFile: "{}", keyFile: "{}"}}]
"#,
        backend.url(),
        cert.display(),
        key.display()
    );
    let router = Router::start(&dir, &static_yaml, &dynamic, &[web, traefik]);
    Ops {
        router,
        web,
        traefik,
        access_log,
        backend_url: backend.url(),
        _backend: backend,
    }
}

async fn call(port: u16, method: Method, path: &str) -> support::web::Answer {
    let mut conn = Conn::h1(port).await;
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", format!("127.0.0.1:{port}"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    conn.send(request).await
}

fn json(answer: &support::web::Answer) -> serde_json::Value {
    serde_json::from_str(&answer.body).unwrap_or_else(|e| panic!("{e}: {}", answer.body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_api_metrics_and_access_log_describe_what_the_router_does() {
    let ops = start("ops", "").await;

    let ping = call(ops.traefik, Method::GET, "/ping").await;
    assert_eq!((ping.status, ping.body.as_str()), (StatusCode::OK, "OK"));

    // The API: the broken router is disabled with its error, the other enabled.
    let routers = json(&call(ops.traefik, Method::GET, "/api/http/routers").await);
    let by_name = |name: &str| {
        routers
            .as_array()
            .and_then(|list| list.iter().find(|r| r["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {routers}"))
    };
    assert_eq!(by_name("site@file")["status"], "enabled");
    let broken = by_name("broken@file");
    assert_eq!(broken["status"], "disabled");
    assert!(broken["error"].to_string().contains("missing"), "{broken}");
    let overview = json(&call(ops.traefik, Method::GET, "/api/overview").await);
    assert_eq!(overview["http"]["routers"]["total"], 4);
    assert_eq!(overview["http"]["routers"]["errors"], 1);
    let refused = call(ops.traefik, Method::POST, "/api/rawdata").await;
    assert_eq!(refused.status, StatusCode::METHOD_NOT_ALLOWED);

    // Three requests served, one without a router, one authenticated and one retried, then a
    // scrape.
    let mut client = Conn::h1(ops.web).await;
    for _ in 0..3 {
        assert_eq!(
            client.get("site.test", "/hello").await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        client.get("nobody.test", "/").await.status,
        StatusCode::NOT_FOUND
    );
    // A user admitted by basicAuth (user `sha`, password `secret`).
    let mut guarded = Request::get("/").header("host", "guarded.test");
    guarded = guarded.header("authorization", "Basic c2hhOnNlY3JldA==");
    let answer = client
        .send(guarded.body(Full::new(Bytes::new())).expect("request"))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    // Three tries of a dead server: two retries.
    assert_eq!(
        client.get("flaky.test", "/").await.status,
        StatusCode::BAD_GATEWAY
    );
    let scrape = call(ops.traefik, Method::GET, "/metrics").await;
    assert_eq!(scrape.status, StatusCode::OK);
    let has = |line: &str| {
        assert!(
            scrape.body.lines().any(|l| l == line),
            "no {line:?} in\n{}",
            scrape.body
        )
    };
    has(
        r#"sallyport_entrypoint_requests_total{code="200",method="GET",protocol="http",entrypoint="web"} 4"#,
    );
    has(
        r#"sallyport_entrypoint_requests_total{code="404",method="GET",protocol="http",entrypoint="web"} 1"#,
    );
    has(
        r#"sallyport_service_requests_total{code="200",method="GET",protocol="http",service="app@file"} 4"#,
    );
    has("sallyport_config_reloads_total 1");
    has(r#"sallyport_service_retries_total{service="dead@file"} 2"#);
    // The keep-alive connection of `client` is still open.
    has(r#"sallyport_open_connections{entrypoint="web",protocol="TCP"} 1"#);
    assert!(
        scrape.body.lines().any(|l| l
            .starts_with(r#"sallyport_tls_certs_not_after{cn="site.test",serial=""#)
            && l.contains(r#"sans="site.test"}"#)),
        "no certificate expiry in\n{}",
        scrape.body
    );

    // The access log has a line per request, from the log's own task.
    let start = Instant::now();
    let lines = loop {
        let text = std::fs::read_to_string(&ops.access_log).unwrap_or_default();
        let served: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|l| l["entryPointName"] == "web")
            .collect();
        if served.len() >= 6 {
            break served;
        }
        assert!(start.elapsed() < WAIT, "access log: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let ok = lines
        .iter()
        .find(|l| l["DownstreamStatus"] == 200)
        .expect("a 200 line");
    assert_eq!(ok["RouterName"], "site@file");
    assert_eq!(ok["ServiceName"], "app@file");
    assert_eq!(ok["RequestPath"], "/hello");
    assert_eq!(ok["RequestHost"], "site.test");
    assert_eq!(ok["RequestProtocol"], "HTTP/1.1");
    assert_eq!(ok["ServiceURL"], ops.backend_url.as_str());
    let flaky = lines
        .iter()
        .find(|l| l["RouterName"] == "flaky@file")
        .expect("a line for flaky");
    assert_eq!(flaky["RetryAttempts"], 2);
    assert_eq!(flaky["DownstreamStatus"], 502);
    let guarded = lines
        .iter()
        .find(|l| l["RouterName"] == "guarded@file")
        .expect("a line for guarded");
    assert_eq!(guarded["ClientUsername"], "sha");
    assert!(
        lines
            .iter()
            .any(|l| l["DownstreamStatus"] == 404 && l["RouterName"] == "")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_answers_503_while_shutdown_keeps_accepting() {
    let ops = start(
        "ops-ping-shutdown",
        "    transport:\n      lifeCycle:\n        requestAcceptGraceTimeout: 2s\n",
    )
    .await;
    assert_eq!(
        call(ops.traefik, Method::GET, "/ping").await.status,
        StatusCode::OK
    );
    ops.router.signal("TERM");
    ops.router
        .wait_log("still accepting for requestAcceptGraceTimeout");
    let ping = call(ops.traefik, Method::GET, "/ping").await;
    assert_eq!(ping.status, StatusCode::SERVICE_UNAVAILABLE);
    // Traffic is still served meanwhile.
    let mut client = Conn::h1(ops.web).await;
    assert_eq!(client.get("site.test", "/").await.status, StatusCode::OK);
}

/// The page as Chromium renders it after its scripts ran, and a screenshot kept with the
/// test artifacts (`target/test-artifacts/dashboard.png`).
fn chromium(url: &str, artifacts: &Path) -> String {
    let profile = temp_dir("dashboard-chromium");
    let common = |cmd: &mut Command| {
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--virtual-time-budget=4000", "--window-size=1280,1000"]);
    };
    let mut screenshot = Command::new("chromium");
    common(&mut screenshot);
    screenshot
        .arg(format!(
            "--screenshot={}",
            artifacts.join("dashboard.png").display()
        ))
        .arg(url);
    let _ = run_bounded(&mut screenshot, b"", Duration::from_secs(60));
    let mut dom = Command::new("chromium");
    common(&mut dom);
    dom.arg("--dump-dom").arg(url);
    let ran = run_bounded(&mut dom, b"", Duration::from_secs(60));
    ran.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_renders_routers_services_and_errors_in_chromium() {
    if !installed(&["chromium"]) {
        eprintln!("skipped: Debian's chromium is not installed");
        return;
    }
    let ops = start("ops-dashboard", "").await;
    // Some traffic, for the rates.
    let mut client = Conn::h1(ops.web).await;
    assert_eq!(client.get("site.test", "/").await.status, StatusCode::OK);
    let home = call(ops.traefik, Method::GET, "/").await;
    assert_eq!(home.status, StatusCode::FOUND);
    assert_eq!(home.header("location"), "/dashboard/");

    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .join("test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let url = format!("http://127.0.0.1:{}/dashboard/", ops.traefik);
    let dom = tokio::task::spawn_blocking({
        let artifacts = artifacts.clone();
        move || chromium(&url, &artifacts)
    })
    .await
    .expect("chromium");
    assert!(
        dom.contains(r#"data-loaded="true""#),
        "the page never loaded the API:\n{dom}"
    );
    // Routers, with the broken one highlighted and its error shown.
    assert!(
        dom.contains("site@file") && dom.contains("Host(`site.test`)"),
        "{dom}"
    );
    assert!(dom.contains(r#"<tr class="disabled">"#), "{dom}");
    assert!(dom.contains("missing@file"), "{dom}");
    // The service with its server, up.
    assert!(dom.contains("app@file"), "{dom}");
    assert!(dom.contains(r#"<span class="UP">UP</span>"#), "{dom}");
    // Entrypoints and the overview cards.
    assert!(dom.contains(r#"data-overview="http-routers""#), "{dom}");
    assert!(dom.contains(">web<"), "{dom}");
    // Rates need two scrapes of /metrics: the page takes a second one after a second.
    assert!(
        !dom.contains(r#"<div class="value" id="rate-requests">–</div>"#),
        "no request rate: {dom}"
    );
    let shot = artifacts.join("dashboard.png");
    assert!(
        std::fs::metadata(&shot)
            .map(|m| m.len() > 10_000)
            .unwrap_or(false),
        "no screenshot at {}",
        shot.display()
    );
    drop(ops);
}

/// Without `api.insecure`, the API is reached through a router of one's own that names
/// `api@internal` (here with basic auth in front), and `ping.manualRouting` leaves `/ping`
/// to a router too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routers_of_ones_own_reach_api_and_ping_internal() {
    let dir = temp_dir("ops-own-routers");
    let web = free_port();
    let static_yaml = static_config(
        &dir,
        &[("web", web)],
        "api: {}\nping:\n  entryPoint: web\n  manualRouting: true\n",
    );
    let dynamic = r#"
http:
  routers:
    api:
      rule: "Host(`ops.test`) && PathPrefix(`/api`)"
      service: api@internal
      middlewares: [auth]
    health:
      rule: "Host(`ops.test`) && Path(`/healthz`)"
      service: ping@internal
  middlewares:
    auth:
      basicAuth: {users: ["sha:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ="]}
"#;
    let _router = Router::start(&dir, &static_yaml, dynamic, &[web]);
    let mut client = Conn::h1(web).await;
    assert_eq!(
        client.get("ops.test", "/api/version").await.status,
        StatusCode::UNAUTHORIZED
    );
    let request = Request::get("/api/http/routers")
        .header("host", "ops.test")
        .header("authorization", "Basic c2hhOnNlY3JldA==")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let answer = client.send(request).await;
    assert_eq!(answer.status, StatusCode::OK);
    let routers = json(&answer);
    assert_eq!(routers.as_array().map(Vec::len), Some(2), "{routers}");
    let health = client.get("ops.test", "/healthz").await;
    assert_eq!(
        (health.status, health.body.as_str()),
        (StatusCode::OK, "OK")
    );
    // manualRouting: no `/ping` router of Sallyport's own on `web`.
    assert_eq!(
        client.get("ops.test", "/ping").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_labels_reloads_and_shutdown_keep_metrics_and_access_log_true() {
    let backend = HttpBackend::start("tenant").await;
    let dir = temp_dir("obs-labels");
    let (web, traefik) = (free_port(), free_port());
    let access_log = dir.join("access.log");
    let static_yaml = static_config(
        &dir,
        &[("web", web), ("traefik", traefik)],
        &format!(
            "metrics:\n  prometheus:\n    addRoutersLabels: true\n    headerLabels: {{tenant: X-Tenant}}\naccessLog:\n  filePath: \"{}\"\n  format: common\n",
            access_log.display()
        ),
    );
    let dynamic = |routers: &[&str]| {
        let mut yaml = String::from("http:\n  routers:\n");
        for name in routers {
            yaml.push_str(&format!(
                "    {name}:\n      rule: \"Host(`{name}.test`)\"\n      entryPoints: [web]\n      service: {name}-svc\n"
            ));
        }
        yaml.push_str("  services:\n");
        for name in routers {
            yaml.push_str(&format!(
                "    {name}-svc:\n      loadBalancer:\n        servers: [{{url: \"{}\"}}]\n",
                backend.url()
            ));
        }
        yaml
    };
    let mut router = Router::start(
        &dir,
        &static_yaml,
        &dynamic(&["kept", "gone"]),
        &[web, traefik],
    );
    let mut client = Conn::h1(web).await;
    for host in ["kept.test", "gone.test"] {
        let request = Request::get("/")
            .header("host", host)
            .header("x-tenant", "acme")
            .body(Full::new(Bytes::new()))
            .expect("request");
        assert_eq!(client.send(request).await.status, StatusCode::OK);
    }
    let scrape = call(traefik, Method::GET, "/metrics").await.body;
    for router in ["kept", "gone"] {
        let series = format!(
            r#"sallyport_router_requests_total{{code="200",method="GET",protocol="http",router="{router}@file",service="{router}-svc@file",tenant="acme"}} 1"#
        );
        assert!(
            scrape.lines().any(|l| l == series),
            "no {series} in\n{scrape}"
        );
    }

    // A reload that removes `gone`: its series leave the scrape, `kept`'s stay.
    router.rewrite_dynamic(&dynamic(&["kept"]));
    let start = Instant::now();
    let scrape = loop {
        let scrape = call(traefik, Method::GET, "/metrics").await.body;
        if scrape
            .lines()
            .any(|l| l == "sallyport_config_reloads_total 2")
        {
            break scrape;
        }
        assert!(start.elapsed() < WAIT, "no reload:\n{}", router.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!scrape.contains(r#"router="gone@file""#), "{scrape}");
    assert!(!scrape.contains(r#"service="gone-svc@file""#), "{scrape}");
    assert!(scrape.contains(r#"router="kept@file""#), "{scrape}");
    assert!(
        scrape
            .lines()
            .any(|l| l == "sallyport_accesslog_dropped_lines_total 0"),
        "{scrape}"
    );

    // 200 requests, then SIGTERM at once: the lines still buffered are written before the
    // process exits.
    for _ in 0..200 {
        assert_eq!(client.get("kept.test", "/").await.status, StatusCode::OK);
    }
    drop(client);
    router.signal("TERM");
    assert!(router.wait_exit(WAIT).is_some(), "{}", router.log());
    let text = std::fs::read_to_string(&access_log).unwrap_or_default();
    let served = text
        .lines()
        .filter(|l| l.contains(r#""kept@file""#))
        .count();
    assert_eq!(served, 201, "{text}");
}
