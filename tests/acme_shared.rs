//! A fleet sharing its ACME storage (`acme.sharedStorage`, an extension): two real router
//! processes on one real Redis (and one real etcd) and one real ACME CA (Debian's
//! `pebble`), all on loopback. Exactly one of them orders, both serve the same certificate;
//! a holder killed mid-order is replaced once its lock expires; a store that goes away
//! stops orders, not serving; a malformed stored certificate is reported by its key.
//!
//! Pebble validates HTTP-01 on one port: a forwarder there plays the fleet's load
//! balancer, passing each connection to the first instance that accepts it, so the CA
//! often asks the instance that did not order (which answers from the shared storage).

mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};
use support::etcd::EtcdServer;
use support::pebble::Pebble;
use support::redis::RedisServer;
use support::*;
use tokio::net::{TcpListener, TcpStream};

/// Ordering and validating take a few seconds with pebble; a generous bound for CI.
const ISSUE_WAIT: Duration = Duration::from_secs(60);
const DOMAIN: &str = "site.fleet.test";

/// The fleet's balancer in front of the HTTP-01 port: forwards to the first of `targets`
/// that accepts; with `None`, connections are accepted and left hanging (a fleet whose
/// answers never reach the CA).
struct Forwarder {
    port: u16,
    targets: Arc<Mutex<Option<Vec<u16>>>>,
}

impl Forwarder {
    async fn start(targets: Option<Vec<u16>>) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let targets = Arc::new(Mutex::new(targets));
        let shared = targets.clone();
        tokio::spawn(async move {
            let mut hanging = Vec::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let now = shared.lock().unwrap().clone();
                let Some(now) = now else {
                    hanging.push(inbound);
                    continue;
                };
                tokio::spawn(async move {
                    for port in now {
                        if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", port)).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                });
            }
        });
        Forwarder { port, targets }
    }

    fn forward_to(&self, targets: Vec<u16>) {
        *self.targets.lock().unwrap() = Some(targets);
    }
}

/// One instance: its ports and the router process.
struct Instance {
    web: u16,
    websecure: u16,
    /// The `traefik` entrypoint: API and metrics.
    ops: u16,
    router: Router,
}

/// The `sharedStorage` YAML for a store (under `acme`).
fn redis_storage(port: u16) -> String {
    format!(
        "      sharedStorage:\n        lockTTL: 3s\n        redis:\n          endpoints: [\"127.0.0.1:{port}\"]\n"
    )
}

fn etcd_storage(port: u16) -> String {
    format!(
        "      sharedStorage:\n        lockTTL: 3s\n        etcd:\n          endpoints: [\"127.0.0.1:{port}\"]\n"
    )
}

/// The dynamic configuration: a TCP router on `websecure` per domain, each asking resolver
/// `pebble` for a certificate.
fn dynamic(domains: &[&str]) -> String {
    let mut out = String::from("tcp:\n  routers:\n");
    for (i, domain) in domains.iter().enumerate() {
        out.push_str(&format!(
            "    r{i}:\n      rule: \"HostSNI(`{domain}`)\"\n      entryPoints: [websecure]\n      service: echo@internal\n      tls: {{certResolver: pebble}}\n"
        ));
    }
    out
}

/// Starts an instance in `dir` with resolver `pebble` (HTTP-01 on port `web`) on the shared
/// `storage`.
fn start_instance(dir: &Path, pebble: &Pebble, storage: &str, web: u16) -> Instance {
    std::fs::create_dir_all(dir).expect("instance dir");
    let (websecure, ops) = (free_port(), free_port());
    let static_yaml = static_config(
        dir,
        &[("web", web), ("websecure", websecure), ("traefik", ops)],
        &format!(
            "api:\n  insecure: true\nmetrics:\n  prometheus: {{}}\ncertificatesResolvers:\n  pebble:\n    acme:\n      email: ops@sallyport.test\n      caServer: \"{}\"\n      caCertificates: [\"{}\"]\n      storage: \"{}\"\n      keyType: EC256\n      httpChallenge:\n        entryPoint: web\n{storage}",
            pebble.directory,
            pebble.tls_ca_file.display(),
            dir.join("acme.json").display(),
        ),
    );
    let router = Router::start(
        dir,
        &static_yaml,
        &dynamic(&[DOMAIN]),
        &[web, websecure, ops],
    );
    Instance {
        web,
        websecure,
        ops,
        router,
    }
}

/// The leaf certificate `port` serves for `sni`, verified against pebble's root; retried
/// until `within` (a certificate is served once the snapshot that holds it is built).
async fn served_leaf(
    port: u16,
    sni: &str,
    config: &Arc<rustls::ClientConfig>,
    within: Duration,
) -> CertificateDer<'static> {
    let start = Instant::now();
    loop {
        let attempt = async {
            let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
            let name = ServerName::try_from(sni.to_owned()).map_err(std::io::Error::other)?;
            let tls = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await?;
            tls.get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first().cloned())
                .ok_or_else(|| std::io::Error::other("no certificate"))
        };
        match tokio::time::timeout(WAIT, attempt).await {
            Ok(Ok(leaf)) => return leaf,
            other => assert!(
                start.elapsed() < within,
                "port {port} never served a certificate for {sni} verified by pebble: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A plaintext GET on `port`; the whole answer.
async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {DOMAIN}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("request");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, tcp.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

fn wait_until(what: &str, within: Duration, done: impl Fn() -> bool, logs: &[&Router]) {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > within {
            let logs: Vec<String> = logs.iter().map(|r| r.log()).collect();
            panic!("{what} never happened:\n{}", logs.join("\n-----\n"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn orders(fleet: &[&Instance]) -> usize {
    fleet
        .iter()
        .map(|i| i.router.count_log("obtaining an ACME certificate"))
        .sum()
}

/// Two instances on one store order once (one account, one certificate) and serve the
/// same certificate; none writes a storage file.
async fn fleet_orders_once_and_serves_one_certificate(
    dir: &Path,
    pebble: &Pebble,
    forwarder: &Forwarder,
    storage: &str,
) -> (Instance, Instance) {
    let (web_a, web_b) = (free_port(), free_port());
    forwarder.forward_to(vec![web_a, web_b]);
    let a = start_instance(&dir.join("a"), pebble, storage, web_a);
    let b = start_instance(&dir.join("b"), pebble, storage, web_b);
    let fleet = [&a, &b];
    wait_until(
        "a certificate obtained",
        ISSUE_WAIT,
        || {
            fleet
                .iter()
                .any(|i| i.router.log().contains("ACME certificate obtained"))
        },
        &[&a.router, &b.router],
    );
    let client = pebble.client(&[]).await;
    let leaf_a = served_leaf(a.websecure, DOMAIN, &client, ISSUE_WAIT).await;
    let leaf_b = served_leaf(b.websecure, DOMAIN, &client, ISSUE_WAIT).await;
    assert_eq!(leaf_a, leaf_b, "both instances serve the same certificate");
    let logs = format!("{}\n-----\n{}", a.router.log(), b.router.log());
    assert_eq!(orders(&fleet), 1, "exactly one order:\n{logs}");
    assert_eq!(
        a.router.count_log("ACME account registered")
            + b.router.count_log("ACME account registered"),
        1,
        "one account for the fleet:\n{logs}"
    );
    assert_eq!(
        a.router.count_log("ACME lock acquired") + b.router.count_log("ACME lock acquired"),
        1,
        "{logs}"
    );
    assert!(logs.contains("ACME lock released"), "{logs}");
    assert!(
        logs.contains("ACME certificates loaded from the shared storage"),
        "the other instance loads it from the store:\n{logs}"
    );
    assert!(!dir.join("a/acme.json").exists() && !dir.join("b/acme.json").exists());
    // The certificate-expiry metric covers the certificate on both.
    for instance in [&a, &b] {
        let scrape = http_get(instance.ops, "/metrics").await;
        assert!(
            scrape
                .lines()
                .any(|l| l.starts_with(&format!("sallyport_tls_certs_not_after{{cn=\"{DOMAIN}\""))),
            "{scrape}"
        );
    }
    (a, b)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_on_one_redis_order_once_serve_one_certificate_and_survive_its_absence() {
    if !Pebble::available() {
        return;
    }
    let Some(mut redis) = RedisServer::start("acme-shared-redis") else {
        eprintln!("skipped: redis-server is not installed");
        return;
    };
    let dir = temp_dir("acme-shared-redis");
    // A malformed certificate already in the store: reported by its key, not served, and
    // no obstacle to the others.
    let bad_key = "traefik/acme/pebble/certificates/bad.fleet.test";
    redis.set(
        bad_key,
        "{\"domain\": {\"main\": \"bad.fleet.test\"}, \"certificate\": \"!!\"}",
    );
    let forwarder = Forwarder::start(None).await;
    let pebble = Pebble::start(&dir, forwarder.port, free_port());
    let (a, b) = fleet_orders_once_and_serves_one_certificate(
        &dir,
        &pebble,
        &forwarder,
        &redis_storage(redis.port),
    )
    .await;
    for instance in [&a, &b] {
        let log = instance.router.log();
        assert!(
            log.contains("stored certificate not served") && log.contains(bad_key),
            "{log}"
        );
    }
    let stored = redis.cli(&["GET", &format!("traefik/acme/pebble/certificates/{DOMAIN}")]);
    assert!(stored.contains("\"certificate\""), "{stored}");
    // An HTTP-01 answer posted by another instance is served by this one; a token that
    // would name another key is not looked up.
    redis.set("traefik/acme/pebble/challenges/tok-9", "tok-9.thumb");
    let answer = http_get(a.web, "/.well-known/acme-challenge/tok-9").await;
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("tok-9.thumb"),
        "{answer}"
    );
    let answer = http_get(a.web, "/.well-known/acme-challenge/..%2Faccount").await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");

    // Redis goes away: both keep serving, and a new domain is not ordered (and says why).
    redis.stop();
    let client = pebble.client(&[]).await;
    let before = served_leaf(a.websecure, DOMAIN, &client, WAIT).await;
    a.router
        .rewrite_dynamic(&dynamic(&[DOMAIN, "new.fleet.test"]));
    wait_until(
        "an order refused for want of the store",
        WAIT,
        || {
            a.router
                .log()
                .contains("shared ACME storage unreachable, not ordering")
        },
        &[&a.router],
    );
    assert_eq!(orders(&[&a, &b]), 1, "{}", a.router.log());
    assert_eq!(
        served_leaf(b.websecure, DOMAIN, &client, WAIT).await,
        before
    );

    // Back: the new domain is ordered (with the backoff capped at 30 s), by `a` alone.
    redis.restart();
    wait_until(
        "the new domain ordered once Redis is back",
        ISSUE_WAIT,
        || {
            a.router.count_log("ACME certificate obtained")
                + b.router.count_log("ACME certificate obtained")
                >= 2
        },
        &[&a.router, &b.router],
    );
    served_leaf(a.websecure, "new.fleet.test", &client, ISSUE_WAIT).await;
    assert_eq!(orders(&[&a, &b]), 2);
    drop((a, b));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lock_holder_killed_mid_order_is_replaced_once_its_redis_lock_expires() {
    if !Pebble::available() {
        return;
    }
    let Some(redis) = RedisServer::start("acme-shared-kill") else {
        eprintln!("skipped: redis-server is not installed");
        return;
    };
    holder_killed_mid_order_is_replaced(&temp_dir("acme-shared-kill"), &redis_storage(redis.port))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lock_holder_killed_mid_order_is_replaced_once_its_etcd_lease_expires() {
    if !Pebble::available() {
        return;
    }
    let Some(etcd) = EtcdServer::start("acme-shared-kill-etcd").await else {
        eprintln!("skipped: etcd is not installed");
        return;
    };
    holder_killed_mid_order_is_replaced(
        &temp_dir("acme-shared-kill-etcd"),
        &etcd_storage(etcd.port),
    )
    .await;
}

/// The instance holding the lock is killed while the CA cannot reach the fleet; the other
/// takes the lock once it expires, and orders.
async fn holder_killed_mid_order_is_replaced(dir: &Path, storage: &str) {
    // Nothing reaches the fleet at first: the first order stays in progress.
    let forwarder = Forwarder::start(None).await;
    let pebble = Pebble::start(dir, forwarder.port, free_port());
    let mut a = start_instance(&dir.join("a"), &pebble, storage, free_port());
    let mut b = start_instance(&dir.join("b"), &pebble, storage, free_port());
    wait_until(
        "a challenge posted by the lock holder",
        ISSUE_WAIT,
        || {
            [&a, &b]
                .iter()
                .any(|i| i.router.log().contains("ACME challenge ready"))
        },
        &[&a.router, &b.router],
    );
    let a_holds = a.router.log().contains("ACME lock acquired");
    let (holder, survivor) = if a_holds {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    // Renewed while the order runs: longer than its TTL, the lock stays with the holder.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(survivor.router.count_log("ACME lock acquired"), 0);
    assert!(
        !holder.router.log().contains("order abandoned"),
        "{}",
        holder.router.log()
    );
    holder.router.signal("KILL");
    holder.router.wait_exit(WAIT).expect("the holder is dead");
    let killed = Instant::now();
    forwarder.forward_to(vec![survivor.web]);
    wait_until(
        "the survivor takes the lock",
        ISSUE_WAIT,
        || survivor.router.log().contains("ACME lock acquired"),
        &[&survivor.router],
    );
    // The lock was renewed at most a third of its 3 s TTL before the kill.
    assert!(
        killed.elapsed() >= Duration::from_millis(1500),
        "taken after {:?}, before the lock could expire",
        killed.elapsed()
    );
    let client = pebble.client(&[]).await;
    served_leaf(survivor.websecure, DOMAIN, &client, ISSUE_WAIT).await;
    assert_eq!(
        survivor.router.count_log("obtaining an ACME certificate"),
        1,
        "{}",
        survivor.router.log()
    );
    drop((a, b));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_order_holds_the_whole_fleet_back_until_its_retry() {
    if !Pebble::available() {
        return;
    }
    let Some(redis) = RedisServer::start("acme-shared-failure") else {
        eprintln!("skipped: redis-server is not installed");
        return;
    };
    let dir = temp_dir("acme-shared-failure");
    // The CA's validation connections are closed at once: every order fails.
    let forwarder = Forwarder::start(Some(Vec::new())).await;
    let pebble = Pebble::start(&dir, forwarder.port, free_port());
    let storage = redis_storage(redis.port);
    let a = start_instance(&dir.join("a"), &pebble, &storage, free_port());
    let b = start_instance(&dir.join("b"), &pebble, &storage, free_port());
    let fleet = [&a, &b];
    wait_until(
        "the second instance holding back",
        ISSUE_WAIT,
        || {
            fleet.iter().any(|i| {
                i.router
                    .log()
                    .contains("another instance's order failed, not ordering again yet")
            })
        },
        &[&a.router, &b.router],
    );
    let marker = format!("traefik/acme/pebble/failures/{DOMAIN}");
    let ttl: i64 = redis.cli(&["PTTL", &marker]).parse().expect("PTTL");
    assert!(
        ttl > 0 && ttl <= 30_000,
        "{marker} expires with the retry: {ttl}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        orders(&fleet),
        1,
        "{}\n-----\n{}",
        a.router.log(),
        b.router.log()
    );
    drop((a, b));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_on_one_etcd_order_once_and_serve_one_certificate() {
    if !Pebble::available() {
        return;
    }
    let Some(etcd) = EtcdServer::start("acme-shared-etcd").await else {
        eprintln!("skipped: etcd is not installed");
        return;
    };
    let dir = temp_dir("acme-shared-etcd");
    let forwarder = Forwarder::start(None).await;
    let pebble = Pebble::start(&dir, forwarder.port, free_port());
    let (a, b) = fleet_orders_once_and_serves_one_certificate(
        &dir,
        &pebble,
        &forwarder,
        &etcd_storage(etcd.port),
    )
    .await;
    drop((a, b));
    let _ = std::fs::remove_dir_all(&dir);
}
