//! `rateLimit.redis` against a real `redis-server` on loopback: the script's bucket
//! arithmetic matches the in-memory limiter's, two router instances enforce one limit,
//! without Redis the limit fails open (counted in the metrics) until Redis is back, and a
//! Redis that stalls holds a request no longer than `readTimeout`.

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::StatusCode;
use l7::middleware::ip_strategy::IpStrategy;
use l7::middleware::rate_limit::{Bucket, RateLimit};
use l7::middleware::source_criterion::SourceCriterion;
use sallyport::config::dynamic;
use sallyport::runtime::redis_buckets::{KEY_PREFIX, RedisLimitStores};
use support::redis::RedisServer;
use support::web::{Conn, HttpBackend};
use support::*;

fn limit(rate: f64, burst: u32) -> RateLimit {
    RateLimit {
        rate,
        burst,
        source: SourceCriterion::Ip(IpStrategy::default()),
    }
}

fn store_settings(port: u16) -> dynamic::Redis {
    dynamic::Redis {
        endpoints: vec![format!("127.0.0.1:{port}")],
        read_timeout: Some(sallyport::config::Duration::from_millis(500)),
        ..dynamic::Redis::default()
    }
}

/// The same requests, at the same times, against the script and the in-memory bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_script_takes_tokens_as_the_in_memory_bucket_does() {
    let Some(redis) = RedisServer::start("rl-script") else {
        return;
    };
    let stores = RedisLimitStores::default();
    let store = stores.store(&store_settings(redis.port)).expect("store");
    let epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let start = Instant::now();
    for (rate, burst) in [(10.0, 3), (0.5, 2), (1000.0, 1)] {
        let limit = limit(rate, burst);
        let max_delay = limit.max_delay();
        let name = format!("arith:{rate}:{burst}");
        let mut reference = Bucket::full(&limit, start);
        // Times in ms: a burst, refusals, held requests, a long idle.
        let times = [
            0, 0, 0, 0, 0, 30, 60, 61, 90, 200, 200, 1_000, 1_000, 1_000, 1_001, 4_000, 4_000,
            4_000, 4_000, 4_002, 60_000, 60_000,
        ];
        for (i, ms) in times.into_iter().enumerate() {
            if i == 12 {
                // Redis forgets the script: the next call sends it whole.
                assert_eq!(redis.cli(&["SCRIPT", "FLUSH"]), "OK");
            }
            let at = Duration::from_millis(ms);
            let want = reference.reserve(start + at, &limit, max_delay);
            let got = store.reserve_at(&name, &limit, max_delay, epoch + at).await;
            let (want_wait, got_wait) = match (want, got) {
                (Ok(w), Ok(g)) | (Err(w), Err(g)) => (w, g),
                _ => {
                    panic!("rate {rate} burst {burst} at {ms} ms: script {got:?}, bucket {want:?}")
                }
            };
            // The script answers in whole microseconds, rounded up.
            assert!(
                got_wait >= want_wait && got_wait - want_wait <= Duration::from_micros(1),
                "rate {rate} burst {burst} at {ms} ms: script {got_wait:?}, bucket {want_wait:?}"
            );
        }
        // The bucket expires once it would be full again (plus a second's margin).
        let ttl: i64 = redis
            .cli(&["PTTL", &format!("{KEY_PREFIX}{name}")])
            .parse()
            .unwrap();
        let refill_ms = (f64::from(burst) - reference.tokens()) / rate * 1000.0;
        assert!(
            ttl > 0 && (ttl as f64) <= refill_ms + 1_001.0,
            "ttl {ttl} ms, refill {refill_ms} ms"
        );
    }
}

/// A router with `web` and `traefik` (metrics) entrypoints; `site.test` is limited to 6 per
/// minute (burst 6) in the Redis on `redis_port`.
fn start_router(tag: &str, redis_port: u16, backend: &str) -> (Router, u16, u16) {
    let dir = temp_dir(tag);
    let (web, traefik) = (free_port(), free_port());
    let static_yaml = static_config(
        &dir,
        &[("web", web), ("traefik", traefik)],
        "metrics:\n  prometheus: {}\n",
    );
    let dynamic = format!(
        r#"
http:
  routers:
    site:
      rule: "Host(`site.test`)"
      entryPoints: [web]
      middlewares: [limit]
      service: app
  middlewares:
    limit:
      rateLimit:
        average: 6
        period: 1m
        burst: 6
        redis:
          endpoints: ["127.0.0.1:{redis_port}"]
          readTimeout: 500ms
          poolSize: 10
  services:
    app:
      loadBalancer:
        servers:
          - url: "{backend}"
"#
    );
    let router = Router::start(&dir, &static_yaml, &dynamic, &[web, traefik]);
    (router, web, traefik)
}

async fn get(port: u16) -> support::web::Answer {
    Conn::h1(port).await.get("site.test", "/").await
}

/// `sallyport_ratelimit_redis_errors_total` on the router whose metrics are on `port`.
async fn redis_errors(port: u16) -> f64 {
    let scrape = Conn::h1(port).await.get("localhost", "/metrics").await.body;
    scrape
        .lines()
        .find_map(|line| line.strip_prefix("sallyport_ratelimit_redis_errors_total "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no redis errors counter in:\n{scrape}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_enforce_one_limit_and_fail_open_while_redis_is_away() {
    let Some(mut redis) = RedisServer::start("rl-fleet") else {
        return;
    };
    let backend = HttpBackend::start("site").await;
    let (one, one_web, one_traefik) = start_router("rl-one", redis.port, &backend.url());
    let (two, two_web, two_traefik) = start_router("rl-two", redis.port, &backend.url());
    one.wait_log("rateLimit.redis: connected");
    two.wait_log("rateLimit.redis: connected");
    assert!(one.log().contains("poolSize ignored"), "{}", one.log());

    // 12 requests, alternating: 6 tokens in all, whichever instance takes them.
    let mut statuses = Vec::new();
    for i in 0..12 {
        let answer = get(if i % 2 == 0 { one_web } else { two_web }).await;
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            // The next token is 10 s away (6 per minute).
            assert_eq!(answer.headers["retry-after"], "10");
        }
        statuses.push(answer.status);
    }
    let passed = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((passed, refused), (6, 6), "{statuses:?}");
    assert_eq!(redis_errors(one_traefik).await, 0.0);

    // Redis goes away: requests pass unlimited, and each instance counts them.
    redis.stop();
    for port in [one_web, two_web] {
        for _ in 0..4 {
            assert_eq!(get(port).await.status, StatusCode::OK);
        }
    }
    for port in [one_traefik, two_traefik] {
        assert!(redis_errors(port).await >= 4.0);
    }
    one.wait_log("the request passes unlimited (fail open)");

    // Redis is back (with its buckets, still empty): limiting resumes on both.
    redis.restart();
    for (router, port) in [(&one, one_web), (&two, two_web)] {
        let start = Instant::now();
        while get(port).await.status != StatusCode::TOO_MANY_REQUESTS {
            assert!(
                start.elapsed() < WAIT,
                "port {port} never limited again:\n{}",
                router.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_holds_a_request_no_longer_than_read_timeout() {
    let Some(redis) = RedisServer::start("rl-slow") else {
        return;
    };
    let backend = HttpBackend::start("site").await;
    let (router, web, traefik) = start_router("rl-slow-one", redis.port, &backend.url());
    router.wait_log("rateLimit.redis: connected");
    assert_eq!(get(web).await.status, StatusCode::OK);

    // Redis stops answering for 3 s: the request passes after the 500 ms `readTimeout`.
    assert_eq!(redis.cli(&["CLIENT", "PAUSE", "3000", "ALL"]), "OK");
    let started = Instant::now();
    assert_eq!(get(web).await.status, StatusCode::OK);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_millis(1_500),
        "held {waited:?}"
    );
    assert!(redis_errors(traefik).await >= 1.0);

    // Once Redis answers again, so does the limit (on a new connection).
    let start = Instant::now();
    while get(web).await.status != StatusCode::TOO_MANY_REQUESTS {
        assert!(
            start.elapsed() < WAIT,
            "never limited again:\n{}",
            router.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
