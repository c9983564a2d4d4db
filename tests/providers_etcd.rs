//! The etcd provider against a real etcd on loopback: two router instances follow one
//! etcd through writes, deletes and a restart; an etcd router and a file router with one
//! priority are ordered by `providers.precedence`.

mod support;

use std::time::{Duration, Instant};

use http::StatusCode;
use support::etcd::EtcdServer;
use support::web::{Conn, HttpBackend};
use support::*;

/// A router with one entrypoint, the file provider on `dynamic` and the etcd provider.
fn start(tag: &str, etcd_port: u16, dynamic: &str) -> (Router, u16) {
    let dir = temp_dir(tag);
    let port = free_port();
    let st = format!(
        "entryPoints:\n  web:\n    address: \"127.0.0.1:{port}\"\nproviders:\n  providersThrottleDuration: 100ms\n  file:\n    filename: \"{}\"\n  etcd:\n    endpoints: [\"127.0.0.1:{etcd_port}\"]\nlog:\n  level: DEBUG\n",
        dir.join("dynamic.yml").display()
    );
    (Router::start(&dir, &st, dynamic, &[port]), port)
}

/// Waits until every router answers `host` with a body starting with `want`, or (for an
/// empty `want`) with 404.
async fn all_answer(routers: &[(&Router, u16)], host: &str, want: &str) {
    for (router, port) in routers {
        let start = Instant::now();
        loop {
            let mut conn = Conn::h1(*port).await;
            let answer = conn.get(host, "/").await;
            let done = if want.is_empty() {
                answer.status == StatusCode::NOT_FOUND
            } else {
                answer.body.starts_with(want)
            };
            if done {
                break;
            }
            assert!(
                start.elapsed() < WAIT,
                "{host} on port {port}: {} {:?}, wanted {want:?}:\n{}",
                answer.status,
                answer.body,
                router.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn write_route(etcd: &EtcdServer, name: &str, host: &str, url: &str, priority: &str) {
    etcd.put(
        &format!("traefik/http/services/{name}/loadBalancer/servers/0/url"),
        url,
    )
    .await;
    etcd.put(&format!("traefik/http/routers/{name}/service"), name)
        .await;
    etcd.put(&format!("traefik/http/routers/{name}/priority"), priority)
        .await;
    etcd.put(
        &format!("traefik/http/routers/{name}/rule"),
        &format!("Host(`{host}`)"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_follow_one_etcd_through_writes_deletes_and_a_restart() {
    let Some(mut etcd) = EtcdServer::start("etcd-fleet").await else {
        return;
    };
    let (a, b) = (HttpBackend::start("a").await, HttpBackend::start("b").await);
    let (one, one_port) = start("etcd-one", etcd.port, "");
    let (two, two_port) = start("etcd-two", etcd.port, "");
    let both = [(&one, one_port), (&two, two_port)];

    write_route(&etcd, "r", "r.test", &a.url(), "0").await;
    all_answer(&both, "r.test", "a /").await;

    etcd.delete("traefik/http/routers/r/rule").await;
    all_answer(&both, "r.test", "").await;

    write_route(&etcd, "kept", "kept.test", &b.url(), "0").await;
    all_answer(&both, "kept.test", "b /").await;

    etcd.stop();
    one.wait_log("keeping the last configuration until etcd answers again");
    two.wait_log("keeping the last configuration until etcd answers again");
    all_answer(&both, "kept.test", "b /").await;

    etcd.restart().await;
    write_route(&etcd, "after", "after.test", &a.url(), "0").await;
    all_answer(&both, "after.test", "a /").await;
    all_answer(&both, "kept.test", "b /").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_router_precedes_an_etcd_router_of_equal_priority() {
    let Some(etcd) = EtcdServer::start("etcd-precedence").await else {
        return;
    };
    let (a, b) = (HttpBackend::start("a").await, HttpBackend::start("b").await);
    let dynamic = format!(
        "http:\n  routers:\n    tie:\n      rule: \"Host(`tie.test`)\"\n      priority: 5\n      service: a\n  services:\n    a:\n      loadBalancer:\n        servers: [{{url: \"{}\"}}]\n",
        a.url()
    );
    let (router, port) = start("etcd-precedence-router", etcd.port, &dynamic);
    write_route(&etcd, "tie", "tie.test", &b.url(), "5").await;
    write_route(&etcd, "marker", "marker.test", &b.url(), "0").await;
    all_answer(&[(&router, port)], "marker.test", "b /").await;
    all_answer(&[(&router, port)], "tie.test", "a /").await;
}
