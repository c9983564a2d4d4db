//! The fleet example of `docs/fleet.md`, run from its very files in `examples/fleet/`: a real
//! etcd and a real Redis, `load.sh` writing the routes with etcdctl and redis-cli, and the
//! two instances' static configurations. Both instances serve the routes of both stores and
//! share one rate limit. Skips, saying why, when a program it needs is missing.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use http::StatusCode;
use support::etcd::EtcdServer;
use support::examples::Example;
use support::programs::{installed, run_bounded};
use support::redis::RedisServer;
use support::web::{Conn, HttpBackend};
use support::*;

/// Waits until the router on `port` answers `host` with 200.
async fn served(router: &Router, port: u16, host: &str) {
    let start = Instant::now();
    loop {
        let answer = Conn::h1(port).await.get(host, "/").await;
        if answer.status == StatusCode::OK {
            return;
        }
        assert!(
            start.elapsed() < WAIT,
            "{host} on {port}: {}\n{}",
            answer.status,
            router.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_example_serves_both_stores_on_both_instances_with_one_limit() {
    if !installed(&["etcdctl", "redis-cli"]) {
        return;
    }
    let Some(etcd) = EtcdServer::start("fleet-etcd").await else {
        return;
    };
    let Some(redis) = RedisServer::start("fleet-redis") else {
        return;
    };
    let backend = HttpBackend::start("backend").await;
    let example = Example::copy("fleet");
    example.swap("127.0.0.1:2379", &format!("127.0.0.1:{}", etcd.port));
    example.swap("127.0.0.1:6379", &format!("127.0.0.1:{}", redis.port));
    example.swap("http://127.0.0.1:9000", &backend.url());
    let ports = [example.move_port(8081), example.move_port(8082)];

    let loaded = run_bounded(
        Command::new("bash")
            .arg("examples/fleet/load.sh")
            .current_dir(&example.root),
        b"",
        WAIT,
    );
    assert!(loaded.success(), "load.sh: {loaded:?}");

    let start = |name: &str, port: u16| {
        let dir = example.root.join(name);
        std::fs::create_dir_all(&dir).expect("log dir");
        Router::start_on(
            &example.root,
            &PathBuf::from(format!("examples/fleet/{name}.yml")),
            &dir,
            &[port],
        )
    };
    let one = start("one", ports[0]);
    let two = start("two", ports[1]);
    for (router, port) in [(&one, ports[0]), (&two, ports[1])] {
        served(router, port, "api.localhost").await;
    }
    // The first request also waits for the rate limit's connection to Redis.
    served(&one, ports[0], "site.localhost").await;
    served(&two, ports[1], "site.localhost").await;

    // 10 at once per client across the fleet (2 taken above), then one a second: of 16
    // requests in quick succession, 8 pass, give or take the token refilled meanwhile.
    let mut passed = 0;
    for i in 0..16 {
        let answer = Conn::h1(ports[i % 2])
            .await
            .get("site.localhost", "/")
            .await;
        match answer.status {
            StatusCode::OK => passed += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("site.localhost: {other}"),
        }
    }
    assert!((8..=10).contains(&passed), "{passed} of 16 passed");
}

/// `docs/fleet.md` shows the example's files as they are: every fenced block introduced by a
/// line naming `examples/fleet/<file>` is that file.
#[test]
fn the_page_shows_the_example_files_as_they_are() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let page = std::fs::read_to_string(repo.join("docs/fleet.md")).expect("docs/fleet.md");
    let mut shown = 0;
    let mut lines = page.lines();
    while let Some(line) = lines.next() {
        let Some(file) = line
            .strip_prefix("`examples/fleet/")
            .and_then(|rest| rest.strip_suffix("`:"))
        else {
            continue;
        };
        let fence = lines.next().unwrap_or_default();
        assert!(fence.starts_with("```"), "{file}: no block after its name");
        let block: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        let on_disk =
            std::fs::read_to_string(repo.join("examples/fleet").join(file)).expect("example");
        assert_eq!(
            block.join("\n") + "\n",
            on_disk,
            "docs/fleet.md shows {file}"
        );
        shown += 1;
    }
    assert_eq!(shown, 3, "one.yml, two.yml and load.sh");
}
