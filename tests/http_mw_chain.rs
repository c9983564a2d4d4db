//! Middlewares composed: entry-point, router and service middlewares, and `chain`, through
//! the real binary on loopback. Each test is built so that another order would give another
//! answer: path rewrites that only match after the previous step, and guards whose status
//! says which one ran first.

mod support;

use ::http::StatusCode;
use support::web::{Conn, HttpBackend, Site, get};
use support::*;

/// `sha:secret` in a `Basic` Authorization header (`printf sha:secret | base64`).
const SHA_SECRET: &str = "Basic c2hhOnNlY3JldA==";

/// A static configuration whose `web` entry point runs `ep-strip` before every router.
fn static_with_entrypoint_middleware(dir: &std::path::Path, port: u16) -> String {
    format!(
        "entryPoints:\n  web:\n    address: \"127.0.0.1:{port}\"\n    http:\n      middlewares: [\"ep-strip@file\"]\nproviders:\n  providersThrottleDuration: 100ms\n  file:\n    filename: \"{}\"\n    watch: true\nlog:\n  level: DEBUG\n",
        dir.join("dynamic.yml").display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entrypoint_router_chain_and_service_middlewares_run_in_that_order() {
    let backend = HttpBackend::start("app").await;
    let dir = temp_dir("mw-chain-order");
    let port = free_port();
    // /api/users → entry point strips /api → /users → the router's chain adds /v2 →
    // /v2/users → the service's replacePathRegex only matches /v2/… → /internal/users.
    let dynamic = format!(
        r#"
http:
  routers:
    site:
      rule: "Host(`site.test`)"
      service: app
      middlewares: [five]
  middlewares:
    ep-strip:
      stripPrefix: {{ prefixes: ["/api"] }}
    five:
      chain:
        middlewares: [allow, limit, v2, marks, fine-chars]
    allow:
      ipAllowList: {{ sourceRange: ["127.0.0.1/32"] }}
    limit:
      rateLimit: {{ average: 100000, burst: 100000 }}
    v2:
      addPrefix: {{ prefix: "/v2" }}
    marks:
      headers:
        customRequestHeaders: {{ X-Step: "router" }}
        customResponseHeaders: {{ X-Chain: "ran" }}
    fine-chars:
      encodedCharacters: {{}}
    internal:
      replacePathRegex: {{ regex: "^/v2/(.*)", replacement: "/internal/$1" }}
  services:
    app:
      middlewares: [internal]
      loadBalancer: {{ servers: [{{ url: "{}" }}] }}
"#,
        backend.url()
    );
    let _router = Router::start(
        &dir,
        &static_with_entrypoint_middleware(&dir, port),
        &dynamic,
        &[port],
    );
    let mut conn = Conn::h1(port).await;

    let answer = conn.get("site.test", "/api/users?page=2").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body, "app /internal/users?page=2");
    assert_eq!(answer.header("x-seen-prefix"), "/api");
    assert_eq!(answer.header("x-seen-replaced"), "/v2/users");
    assert_eq!(answer.header("x-chain"), "ran");

    // The last step of the chain still guards: an encoded slash is refused, after the
    // earlier steps let the request through.
    let refused = conn.get("site.test", "/api/a%2Fb").await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        refused.header("x-backend"),
        "-",
        "the backend was not reached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_guard_in_a_chain_answers_before_the_next_one_runs() {
    // Two routers with the same two guards in opposite orders: authentication, then an
    // allow-list that refuses loopback.
    let site = Site::start(
        "mw-chain-guards",
        r#"  routers:
    auth-first:
      rule: "Host(`auth-first.test`)"
      service: app
      middlewares: [auth, nobody]
    list-first:
      rule: "Host(`list-first.test`)"
      service: app
      middlewares: [guarded]
  middlewares:
    guarded:
      chain: { middlewares: [nobody, auth] }
    auth:
      basicAuth: { users: ["sha:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ="] }
    nobody:
      ipAllowList: { sourceRange: ["10.0.0.0/8"] }
"#,
    )
    .await;
    let mut conn = Conn::h1(site.port).await;
    let with_password = |host: &str| {
        let mut req = get(host, "/", false);
        req.headers_mut()
            .insert("authorization", SHA_SECRET.parse().unwrap());
        req
    };

    assert_eq!(
        conn.get("auth-first.test", "/").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        conn.send(with_password("auth-first.test")).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        conn.get("list-first.test", "/").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        conn.send(with_password("list-first.test")).await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_naming_a_missing_middleware_disables_only_its_router() {
    let site = Site::start(
        "mw-chain-missing",
        r#"  routers:
    broken:
      rule: "Host(`broken.test`)"
      service: app
      middlewares: [with-hole]
    fine:
      rule: "Host(`fine.test`)"
      service: app
      middlewares: [v2]
  middlewares:
    with-hole:
      chain: { middlewares: [v2, not-defined] }
    v2:
      addPrefix: { prefix: "/v2" }
"#,
    )
    .await;
    let mut conn = Conn::h1(site.port).await;
    let fine = conn.get("fine.test", "/x").await;
    assert_eq!(fine.status, StatusCode::OK);
    assert_eq!(fine.body, "app /v2/x");
    assert_eq!(
        conn.get("broken.test", "/x").await.status,
        StatusCode::NOT_FOUND
    );
    let log = site.router.log();
    assert!(
        log.contains("not-defined") && log.contains("does not exist"),
        "the log names the missing middleware:\n{log}"
    );
}
