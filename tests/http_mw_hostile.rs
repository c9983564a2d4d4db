//! Hostile input against the middlewares, through the real binary on loopback: malformed and
//! huge credentials, regexes fed inputs that make backtracking engines explode, and header
//! injection attempts through rewritten URLs. Each must get a clear status, and the
//! connection and the router must go on serving.

mod support;

use ::http::StatusCode;
use support::web::{Conn, Site, get};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_or_huge_credentials_get_401_and_the_connection_goes_on() {
    let site = Site::start(
        "mw-hostile-auth",
        r#"  routers:
    basic:
      rule: "Host(`basic.test`)"
      service: app
      middlewares: [basic]
    digest:
      rule: "Host(`digest.test`)"
      service: app
      middlewares: [digest]
  middlewares:
    basic:
      basicAuth: { users: ["sha:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ="] }
    digest:
      digestAuth: { users: ["test:traefik:a2688e031edb4be6a3797f3882655c05"] }
"#,
    )
    .await;
    let mut conn = Conn::h1(site.port).await;
    let huge = format!("Basic {}", "QUFB".repeat(15_000));
    let attempts: [(&str, &str); 9] = [
        ("basic.test", "Basic"),
        ("basic.test", "Basic !!!not-base64!!!"),
        ("basic.test", "Basic bm8tY29sb24="), // "no-colon"
        ("basic.test", "Basic c2hhOg=="),     // "sha:" (empty password)
        ("basic.test", "Bearer c2hhOnNlY3JldA=="),
        ("basic.test", &huge),
        ("digest.test", "Digest"),
        (
            "digest.test",
            "Digest username=\"test\", realm=, nonce=\"\"\"\"",
        ),
        (
            "digest.test",
            "Digest username=\"test\", uri=\"/\", response=\"00\", nonce=\"forged\", nc=zz, cnonce=\"x\", qop=auth",
        ),
    ];
    for (host, authorization) in attempts {
        let mut req = get(host, "/", false);
        req.headers_mut()
            .insert("authorization", authorization.parse().unwrap());
        let answer = conn.send(req).await;
        let shown: String = authorization.chars().take(40).collect();
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{host}: {shown}");
        assert_eq!(answer.header("x-backend"), "-", "{host}: {shown}");
    }
    // The same connection still carries a good request.
    let mut good = get("basic.test", "/after", false);
    good.headers_mut()
        .insert("authorization", "Basic c2hhOnNlY3JldA==".parse().unwrap());
    let answer = conn.send(good).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "app /after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regexes_that_backtracking_engines_choke_on_answer_at_once() {
    // `(a+)+$` and `(a|aa)+b` take exponential time in a backtracking engine on a long run
    // of `a` that fails at its end; the `regex` crate is linear. The tests' wait bounds the
    // answer (seconds), far below what a backtracking engine would need for 30,000 letters.
    let site = Site::start(
        "mw-hostile-regex",
        r#"  routers:
    replace:
      rule: "Host(`replace.test`)"
      service: app
      middlewares: [replace]
    redirect:
      rule: "Host(`redirect.test`)"
      service: app
      middlewares: [redirect]
    strip:
      rule: "Host(`strip.test`)"
      service: app
      middlewares: [strip]
  middlewares:
    replace:
      replacePathRegex: { regex: "^/(a+)+$", replacement: "/matched" }
    redirect:
      redirectRegex: { regex: "^http://redirect.test/(a|aa)+b$", replacement: "http://elsewhere.test/" }
    strip:
      stripPrefixRegex: { regex: ["/(a|aa)+b"] }
"#,
    )
    .await;
    let mut conn = Conn::h1(site.port).await;
    let long = format!("/{}!", "a".repeat(30_000));
    for host in ["replace.test", "redirect.test", "strip.test"] {
        let answer = conn.get(host, &long).await;
        assert_eq!(answer.status, StatusCode::OK, "{host}");
        assert_eq!(
            answer.body,
            format!("app {long}"),
            "{host}: no match, path kept"
        );
    }
    let answer = conn.get("replace.test", "/aaaa").await;
    assert_eq!(answer.body, "app /matched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_line_breaks_in_a_rewritten_url_stay_encoded() {
    let site = Site::start(
        "mw-hostile-inject",
        r#"  routers:
    go:
      rule: "Host(`go.test`)"
      service: app
      middlewares: [go]
    path:
      rule: "Host(`path.test`)"
      service: app
      middlewares: [path]
  middlewares:
    go:
      redirectRegex: { regex: "^http://go.test/go/(.*)", replacement: "http://other.test/${1}" }
    path:
      replacePathRegex: { regex: "^/in/(.*)", replacement: "/out/$1" }
"#,
    )
    .await;
    let mut conn = Conn::h1(site.port).await;
    let answer = conn
        .get("go.test", "/go/x%0d%0aSet-Cookie:%20stolen=1")
        .await;
    assert_eq!(answer.status, StatusCode::FOUND);
    assert_eq!(
        answer.header("location"),
        "http://other.test/x%0d%0aSet-Cookie:%20stolen=1"
    );
    assert_eq!(answer.header("set-cookie"), "-");

    let answer = conn.get("path.test", "/in/x%0d%0aX-Evil:%201").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "app /out/x%0d%0aX-Evil:%201");
    assert_eq!(answer.header("x-seen-replaced"), "/in/x%0d%0aX-Evil:%201");
}
