//! The Redis provider against a real `redis-server` on loopback: two router instances
//! follow one Redis through writes, deletes and a restart, and malformed keys cost only
//! their own routers.

mod support;

use std::time::{Duration, Instant};

use http::StatusCode;
use support::redis::RedisServer;
use support::web::{Conn, HttpBackend};
use support::*;

/// A router with one entrypoint, an empty file provider and the Redis provider.
fn start(tag: &str, redis_port: u16) -> (Router, u16) {
    let dir = temp_dir(tag);
    let port = free_port();
    let st = format!(
        "entryPoints:\n  web:\n    address: \"127.0.0.1:{port}\"\nproviders:\n  providersThrottleDuration: 100ms\n  file:\n    filename: \"{}\"\n  redis:\n    endpoints: [\"127.0.0.1:{redis_port}\"]\nlog:\n  level: DEBUG\n",
        dir.join("dynamic.yml").display()
    );
    (Router::start(&dir, &st, "", &[port]), port)
}

/// The status and body `host` gets from the router on `port`.
async fn answer(port: u16, host: &str) -> (StatusCode, String) {
    let mut conn = Conn::h1(port).await;
    let a = conn.get(host, "/").await;
    (a.status, a.body)
}

/// Waits until every router answers `host` with a body starting with `want`, or (for an
/// empty `want`) with 404.
async fn all_answer(routers: &[(&Router, u16)], host: &str, want: &str) {
    for (router, port) in routers {
        let start = Instant::now();
        loop {
            let (status, body) = answer(*port, host).await;
            let done = if want.is_empty() {
                status == StatusCode::NOT_FOUND
            } else {
                body.starts_with(want)
            };
            if done {
                break;
            }
            assert!(
                start.elapsed() < WAIT,
                "{host} on port {port}: {status} {body:?}, wanted {want:?}:\n{}",
                router.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn write_route(redis: &RedisServer, name: &str, host: &str, url: &str) {
    redis.set(
        &format!("traefik/http/services/{name}/loadBalancer/servers/0/url"),
        url,
    );
    redis.set(&format!("traefik/http/routers/{name}/service"), name);
    redis.set(
        &format!("traefik/http/routers/{name}/rule"),
        &format!("Host(`{host}`)"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_follow_one_redis_through_writes_deletes_and_a_restart() {
    let Some(mut redis) = RedisServer::start("redis-fleet") else {
        return;
    };
    let (a, b) = (HttpBackend::start("a").await, HttpBackend::start("b").await);
    let (one, one_port) = start("redis-one", redis.port);
    let (two, two_port) = start("redis-two", redis.port);
    let both = [(&one, one_port), (&two, two_port)];

    write_route(&redis, "r", "r.test", &a.url());
    all_answer(&both, "r.test", "a /").await;

    redis.cli(&[
        "DEL",
        "traefik/http/routers/r/rule",
        "traefik/http/routers/r/service",
    ]);
    all_answer(&both, "r.test", "").await;

    write_route(&redis, "kept", "kept.test", &b.url());
    all_answer(&both, "kept.test", "b /").await;

    // Redis goes away: both keep serving what they had.
    redis.stop();
    one.wait_log("keeping the last configuration until Redis answers again");
    two.wait_log("keeping the last configuration until Redis answers again");
    tokio::time::sleep(Duration::from_millis(500)).await;
    all_answer(&both, "kept.test", "b /").await;

    // It comes back (with its keys): changes made after that are picked up.
    redis.restart();
    write_route(&redis, "after", "after.test", &a.url());
    all_answer(&both, "after.test", "a /").await;
    all_answer(&both, "kept.test", "b /").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_keys_are_logged_by_name_and_spare_the_other_routers() {
    let Some(redis) = RedisServer::start("redis-bad") else {
        return;
    };
    let a = HttpBackend::start("a").await;
    let (router, port) = start("redis-bad-router", redis.port);
    redis.set("traefik/http/routers/bad/rule", "Host(`bad.test`)");
    redis.set("traefik/http/routers/bad/priority", "high");
    redis.set("traefik/http/routers/bad/service", "good");
    write_route(&redis, "good", "good.test", &a.url());
    all_answer(&[(&router, port)], "good.test", "a /").await;
    router.wait_log("redis key traefik/http/routers/bad/priority");
    all_answer(&[(&router, port)], "bad.test", "").await;
}
