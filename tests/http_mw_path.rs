//! The path and redirect middlewares end to end: the real binary on loopback between a
//! hyper client and a hyper backend that reports the path, query and `X-Forwarded-Prefix` /
//! `X-Replaced-Path` it received.

mod support;

use ::http::StatusCode;
use support::web::{Conn, Site};

/// A running router whose router `<host>` (rule ``Host(`<host>`)``) uses the middleware
/// of the same name, defined by `middlewares` (YAML under `http.middlewares`), all in front
/// of one backend `app`.
async fn start(tag: &str, hosts: &[&str], middlewares: &str) -> Site {
    let mut routers = String::new();
    for host in hosts {
        routers.push_str(&format!(
            "    {host}:\n      rule: \"Host(`{host}`)\"\n      service: app\n      middlewares: [\"{host}\"]\n"
        ));
    }
    Site::start(
        tag,
        &format!("  routers:\n{routers}  middlewares:\n{middlewares}"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strip_prefix_forwards_the_rest_of_the_path_and_the_prefix() {
    let setup = start(
        "mw-strip-prefix",
        &["strip"],
        "    strip: { stripPrefix: { prefixes: [\"/foo\", \"/api\"] } }\n",
    )
    .await;
    let mut conn = Conn::h1(setup.port).await;
    let answer = conn.get("strip", "/api/users%2Fme?page=2").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "app /users%2Fme?page=2");
    assert_eq!(answer.header("x-seen-prefix"), "/api");
    let answer = conn.get("strip", "/api").await;
    assert_eq!(answer.body, "app /");
    let answer = conn.get("strip", "/other").await;
    assert_eq!(answer.body, "app /other");
    assert_eq!(answer.header("x-seen-prefix"), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_prefix_puts_the_prefix_before_the_path() {
    let setup = start(
        "mw-add-prefix",
        &["add"],
        "    add: { addPrefix: { prefix: \"/v2\" } }\n",
    )
    .await;
    let mut conn = Conn::h1(setup.port).await;
    let answer = conn.get("add", "/users?page=2").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "app /v2/users?page=2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_path_sends_the_new_path_and_the_original_in_a_header() {
    let setup = start(
        "mw-replace-path",
        &["replace"],
        "    replace: { replacePath: { path: \"/fixed\" } }\n",
    )
    .await;
    let mut conn = Conn::h1(setup.port).await;
    let answer = conn.get("replace", "/any/thing?page=2").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "app /fixed?page=2");
    assert_eq!(answer.header("x-seen-replaced"), "/any/thing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strip_prefix_regex_forwards_the_matched_prefix() {
    let setup = start(
        "mw-strip-prefix-regex",
        &["strip", "broken", "fine"],
        "    strip: { stripPrefixRegex: { regex: [\"/api/v[0-9]+\"] } }\n    broken: { stripPrefixRegex: { regex: [\"/(a\"] } }\n    fine: { addPrefix: { prefix: \"/x\" } }\n",
    )
    .await;
    let mut conn = Conn::h1(setup.port).await;
    let answer = conn.get("strip", "/api/v3/users?page=2").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "app /users?page=2");
    assert_eq!(answer.header("x-seen-prefix"), "/api/v3");
    // A router whose middleware cannot be built is not served; the others are.
    assert_eq!(conn.get("broken", "/a").await.status, StatusCode::NOT_FOUND);
    assert_eq!(conn.get("fine", "/a").await.body, "app /x/a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_path_regex_expands_groups_and_forwards_the_original() {
    let setup = start(
        "mw-replace-path-regex",
        &["rewrite"],
        "    rewrite: { replacePathRegex: { regex: \"^/foo/(?P<rest>.*)\", replacement: \"/bar/${rest}\" } }\n",
    )
    .await;
    let mut conn = Conn::h1(setup.port).await;
    let answer = conn.get("rewrite", "/foo/a/b?page=2").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "app /bar/a/b?page=2");
    assert_eq!(answer.header("x-seen-replaced"), "/foo/a/b");
    let answer = conn.get("rewrite", "/other").await;
    assert_eq!(answer.body, "app /other");
    assert_eq!(answer.header("x-seen-replaced"), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_regex_rewrites_the_full_url_into_the_location() {
    let setup = start(
        "mw-redirect-regex",
        &["old.test"],
        "    old.test: { redirectRegex: { regex: \"^http://old\\\\.test(:[0-9]+)?/(.*)\", replacement: \"https://new.test/${2}\", permanent: true } }\n",
    )
    .await;
    let mut conn = Conn::h1(setup.port).await;
    let answer = conn
        .get(&format!("old.test:{}", setup.port), "/docs?page=2")
        .await;
    assert_eq!(answer.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(answer.header("location"), "https://new.test/docs?page=2");
    assert_eq!(answer.header("x-backend"), "-");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_characters_refuses_what_is_not_allowed() {
    let setup = start(
        "mw-encoded-characters",
        &["strict"],
        "    strict: { encodedCharacters: { allowEncodedSlash: true } }\n",
    )
    .await;
    let mut conn = Conn::h1(setup.port).await;
    let answer = conn.get("strict", "/a%2Fb?q=%3B").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "app /a%2Fb?q=%3B");
    let answer = conn.get("strict", "/a%3Bb").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.header("x-backend"), "-");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_type_is_detected_only_through_the_middleware() {
    let setup = start(
        "mw-content-type",
        &["detect", "off"],
        "    detect: { contentType: {} }\n    off: { contentType: { autoDetect: false } }\n",
    )
    .await;
    let mut conn = Conn::h1(setup.port).await;
    // The backend sends its plain-text answers without a Content-Type.
    let answer = conn.get("detect", "/page").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "app /page");
    assert_eq!(answer.header("content-type"), "text/plain; charset=utf-8");
    let answer = conn.get("off", "/page").await;
    assert_eq!(answer.body, "app /page");
    assert_eq!(answer.header("content-type"), "-");
}
