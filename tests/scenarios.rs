//! The scenarios of `docs/scenarios/`, each run from its very files in `examples/` with real
//! servers and real clients: psql to two PostgreSQL servers, redis-cli to two redis-servers,
//! tonic gRPC clients and servers through passthrough and termination, aioquic (HTTP/3) and
//! curl in front of HTTP/1.1 backends, and 200 UDP players over three game servers. The
//! example is copied as the repository lays it out, its certificates made by
//! `examples/make-certs.sh`, and its fixed loopback ports swapped for free ones
//! ([`support::examples`]). Each test skips, saying why, when a program it needs is missing.

mod support;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::examples::{Example, swap_whole};
use support::grpc::{GrpcBackend, GrpcClient};
use support::mail::{Dovecot, Postfix};
use support::mariadb::MariaDb;
use support::programs::*;
use support::redis_tls::RedisServer;
use support::udp::free_udp_port;
use support::*;

#[test]
fn example_addresses_are_swapped_whole() {
    let text = "a: 127.0.0.1:543\nb: \"127.0.0.1:5433\"\nc: 127.0.0.1:543/udp\n";
    assert_eq!(
        swap_whole(text, "127.0.0.1:543", "127.0.0.1:9"),
        "a: 127.0.0.1:9\nb: \"127.0.0.1:5433\"\nc: 127.0.0.1:9/udp\n"
    );
}

/// The configuration blocks of `docs/scenarios/*.md`: each YAML block introduced by a line
/// naming a file (`` `examples/x/y.yml`: ``), as (page, file, block).
fn shown_configurations() -> Vec<(String, String, String)> {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/scenarios");
    let mut shown = Vec::new();
    for entry in std::fs::read_dir(&docs).expect("docs/scenarios").flatten() {
        let page = entry.file_name().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(entry.path()).expect("read page");
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            let Some(file) = line
                .strip_prefix('`')
                .and_then(|l| l.strip_suffix("`:"))
                .filter(|f| f.starts_with("examples/"))
            else {
                continue;
            };
            let mut block = String::new();
            let mut opened = false;
            for line in lines.by_ref() {
                match (opened, line) {
                    (false, "") => {}
                    (false, "```yaml") => opened = true,
                    (false, other) => panic!("{page}: {file} is followed by {other:?}"),
                    (true, "```") => break,
                    (true, line) => {
                        block.push_str(line);
                        block.push('\n');
                    }
                }
            }
            shown.push((page.clone(), file.to_owned(), block));
        }
    }
    shown
}

/// Every scenario page shows its example files as they are, and every file of the examples
/// the pages are about is shown: the pages cannot drift from what the tests run.
#[test]
fn scenario_pages_show_their_example_files_verbatim() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shown = shown_configurations();
    for (page, file, block) in &shown {
        let actual = std::fs::read_to_string(repo.join(file))
            .unwrap_or_else(|e| panic!("{page} shows {file}, which cannot be read: {e}"));
        assert_eq!(
            block, &actual,
            "{page} shows {file} differently from the file"
        );
    }
    for example in [
        "postgres-sni",
        "mysql-sni",
        "mail",
        "redis-tls",
        "grpc-passthrough",
        "grpc-terminated",
        "http3-edge",
        "udp-game",
    ] {
        for file in ["sallyport.yml", "dynamic.yml"] {
            let file = format!("examples/{example}/{file}");
            assert!(
                shown.iter().any(|(_, f, _)| *f == file),
                "no scenario page shows {file}"
            );
        }
    }
}

// ------------------------------------------------------------------ PostgreSQL by SNI

/// psql as docs/scenarios/postgres.md runs it: to `name` at `127.0.0.1:port`, verifying the
/// server's certificate for `name` against the example's CA. It stores an invoice and reads
/// it back, then prints the port of the server that answered and whether that server sees
/// this session as TLS.
fn psql_invoice(example: &Example, name: &str, port: u16) -> Ran {
    let conn = format!(
        "host={name} hostaddr=127.0.0.1 port={port} user=postgres dbname=postgres \
         sslmode=verify-full sslrootcert={} connect_timeout=5",
        example.path("certs/ca.crt").display()
    );
    run_bounded(
        Command::new("psql")
            .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"])
            .arg(conn)
            .args([
                "-c",
                "CREATE TABLE invoices (id int PRIMARY KEY, total numeric)",
            ])
            .args(["-c", "INSERT INTO invoices VALUES (7, 42.50)"])
            .args(["-c", "SELECT total FROM invoices WHERE id = 7"])
            .args(["-c", "SHOW port"])
            .args([
                "-c",
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            ]),
        b"",
        WAIT,
    )
}

/// `examples/postgres-sni/`: one port, two databases. `billing` is passed through to a
/// PostgreSQL that runs TLS itself (it sees the session as TLS); `reports` is terminated by
/// the router in front of a PostgreSQL without TLS (it sees plaintext). psql verifies the
/// certificate for the name it asked for either way, and a name no router has is refused.
#[test]
fn postgres_example_routes_psql_by_sni_in_passthrough_and_termination() {
    if !installed(&["psql"]) {
        return;
    }
    let example = Example::copy("postgres-sni");
    if !example.make_certs(&["billing.db.localhost", "reports.db.localhost"]) {
        return;
    }
    let Some(billing) = PgServer::start(
        "scn-pg-billing",
        Some(&example.cert("billing.db.localhost")),
    ) else {
        return;
    };
    let Some(reports) = PgServer::start("scn-pg-reports", None) else {
        return;
    };
    example.swap("127.0.0.1:5433", &format!("127.0.0.1:{}", billing.port));
    example.swap("127.0.0.1:5434", &format!("127.0.0.1:{}", reports.port));
    let port = example.move_port(15432);
    let _router = example.start(&[port]);

    for (name, server, tls_at_server) in [
        ("billing.db.localhost", &billing, "t"),
        ("reports.db.localhost", &reports, "f"),
    ] {
        let ran = psql_invoice(&example, name, port);
        assert!(ran.success(), "psql to {name} failed: {ran:?}");
        let lines: Vec<&str> = ran.stdout.lines().collect();
        assert_eq!(
            lines,
            ["42.50", &server.port.to_string(), tls_at_server],
            "{name}: {ran:?}"
        );
    }

    let unknown = run_bounded(
        Command::new("psql").args(["-X", "-At"]).arg(format!(
            "host=unknown.db.localhost hostaddr=127.0.0.1 port={port} user=postgres \
             sslmode=require connect_timeout=5"
        )),
        b"",
        WAIT,
    );
    assert!(
        !unknown.success(),
        "a name no router has got through: {unknown:?}"
    );
}

// ------------------------------------------------------------------ MySQL by SNI

/// The query of docs/scenarios/mysql-by-sni.md: an order stored and read back, the port of
/// the server that answered, and the TLS version that server sees for this session (empty
/// when the router terminated TLS).
const MYSQL_ORDER_SQL: &str = "CREATE DATABASE IF NOT EXISTS shop; \
    CREATE TABLE IF NOT EXISTS shop.orders (id INT PRIMARY KEY, total DECIMAL(8,2)); \
    REPLACE INTO shop.orders VALUES (7, 42.50); \
    SELECT total, @@port, VARIABLE_VALUE FROM shop.orders, information_schema.SESSION_STATUS \
    WHERE id = 7 AND VARIABLE_NAME = 'SSL_VERSION'";

/// PyMySQL as the page runs it: to `name` (sent as SNI and verified against the example's
/// CA), at 127.0.0.1 since `.localhost` names do not resolve here; prints the answer's row.
fn pymysql_order(example: &Example, name: &str, port: u16) -> Ran {
    let script = format!(
        r#"
import socket, ssl, pymysql
connect = socket.create_connection
socket.create_connection = lambda address, *rest, **kw: connect(("127.0.0.1", address[1]), *rest, **kw)
ctx = ssl.create_default_context(cafile="{ca}")
conn = pymysql.connect(host="{name}", port={port}, user="bob", password="secret", ssl=ctx)
with conn.cursor() as cur:
    for statement in """{sql}""".split("; "):
        cur.execute(statement)
    print(*cur.fetchone(), sep="\t")
conn.commit()
"#,
        ca = example.path("certs/ca.crt").display(),
        sql = MYSQL_ORDER_SQL,
    );
    run_bounded(Command::new("python3").args(["-c", &script]), b"", WAIT)
}

/// The `mariadb` client as the page runs it: TLS asked for and the router's certificate
/// verified for `localhost`, the only name it can check since it sends no SNI.
fn mariadb_order(example: &Example, port: u16) -> Ran {
    run_bounded(
        Command::new("mariadb")
            .args(["--no-defaults", "-h", "localhost", "--protocol=tcp"])
            .arg(format!("--port={port}"))
            .args(["-u", "bob", "-psecret", "--ssl", "--ssl-verify-server-cert"])
            .arg(format!(
                "--ssl-ca={}",
                example.path("certs/ca.crt").display()
            ))
            .args(["--batch", "--skip-column-names", "-e", MYSQL_ORDER_SQL]),
        b"",
        WAIT,
    )
}

/// `examples/mysql-sni/`: one port, two MariaDB servers. PyMySQL (which sends SNI) reaches
/// `orders` passed through (the server sees TLS) and `reports` terminated by the router
/// (the server sees plaintext); the `mariadb` client, which sends no SNI, reaches `reports`
/// through the catch-all router with the default certificate. Each stores and reads an
/// order on the server its name routes to.
#[test]
fn mysql_example_routes_by_sni_and_takes_clients_without_sni() {
    if !installed(&["mariadb", "python3"]) {
        return;
    }
    let pymysql = run_bounded(
        Command::new("python3").args(["-c", "import pymysql"]),
        b"",
        WAIT,
    );
    if !pymysql.success() {
        eprintln!("skipped: Python module pymysql not installed (pip install PyMySQL)");
        return;
    }
    let example = Example::copy("mysql-sni");
    let names = ["orders.db.localhost", "reports.db.localhost", "localhost"];
    if !example.make_certs(&names) {
        return;
    }
    let Some(orders) = MariaDb::start("scn-mysql-orders", &example.cert("orders.db.localhost"))
    else {
        return;
    };
    let Some(reports) = MariaDb::start("scn-mysql-reports", &example.cert("reports.db.localhost"))
    else {
        return;
    };
    example.swap("127.0.0.1:3307", &format!("127.0.0.1:{}", orders.port));
    example.swap("127.0.0.1:3308", &format!("127.0.0.1:{}", reports.port));
    let port = example.move_port(13306);
    let router = example.start(&[port]);

    let ran = pymysql_order(&example, "orders.db.localhost", port);
    assert!(
        ran.success(),
        "PyMySQL to orders: {ran:?}\n{}",
        router.log()
    );
    let row: Vec<&str> = ran.stdout.trim_end().split('\t').collect();
    assert_eq!(row[..2], ["42.50", &orders.port.to_string()], "{ran:?}");
    assert!(row[2].starts_with("TLSv1."), "TLS ends at orders: {ran:?}");

    let ran = pymysql_order(&example, "reports.db.localhost", port);
    assert!(
        ran.success(),
        "PyMySQL to reports: {ran:?}\n{}",
        router.log()
    );
    assert_eq!(
        ran.stdout,
        format!("42.50\t{}\t\n", reports.port),
        "TLS ends at the router"
    );

    let ran = mariadb_order(&example, port);
    assert!(
        ran.success(),
        "mariadb without SNI: {ran:?}\n{}",
        router.log()
    );
    assert_eq!(
        ran.stdout,
        format!("42.50\t{}\t\n", reports.port),
        "{ran:?}"
    );
}

// ------------------------------------------------------------------ Mail

/// The message docs/scenarios/mail.md submits.
const ORDER_MAIL: &str = "From: ada@example.test\r\nTo: bob@shop.localhost\r\n\
    Subject: order 7 shipped\r\n\r\nYour order 7 is on its way.\r\n";

/// curl as the page runs it: submits [`ORDER_MAIL`] to `bob@shop.localhost` through the
/// router's submission port, with STARTTLS required and the certificate for
/// `smtp.shop.localhost` checked against the example's CA.
fn curl_submit(example: &Example, port: u16) -> Ran {
    let name = "smtp.shop.localhost";
    run_bounded(
        Command::new("curl")
            .args(["-sS", "--max-time", "20", "--ssl-reqd", "--cacert"])
            .arg(example.path("certs/ca.crt"))
            .args(["--resolve", &format!("{name}:{port}:127.0.0.1")])
            .arg(format!("smtp://{name}:{port}"))
            .args(["--mail-from", "ada@example.test"])
            .args(["--mail-rcpt", "bob@shop.localhost"])
            .args(["--upload-file", "-"]),
        ORDER_MAIL.as_bytes(),
        WAIT,
    )
}

/// Python's imaplib through the router: STARTTLS on `imap_port`, implicit TLS on
/// `imaps_port`, both for `imap.shop.localhost` (sent as SNI and verified; dialled at
/// 127.0.0.1 since `.localhost` names do not resolve here). Each session logs in as bob,
/// selects INBOX and fetches the first message's subject; prints one line per answer.
fn imap_sessions(example: &Example, imap_port: u16, imaps_port: u16) -> Ran {
    let script = format!(
        r#"
import imaplib, socket, ssl
connect = socket.create_connection
socket.create_connection = lambda address, *rest, **kw: connect(("127.0.0.1", address[1]), *rest, **kw)
ctx = ssl.create_default_context(cafile="{ca}")
name = "imap.shop.localhost"
starttls = imaplib.IMAP4(name, {imap_port})
starttls.starttls(ssl_context=ctx)
implicit = imaplib.IMAP4_SSL(name, {imaps_port}, ssl_context=ctx)
for how, imap in (("starttls", starttls), ("implicit", implicit)):
    login = imap.login("bob", "secret")
    select = imap.select("INBOX")
    fetch = imap.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    subject = fetch[1][0][1].decode().strip()
    print(how, login[0], select[0], select[1][0].decode(), subject, sep="|")
    imap.logout()
"#,
        ca = example.path("certs/ca.crt").display(),
    );
    run_bounded(Command::new("python3").args(["-c", &script]), b"", WAIT)
}

/// `examples/mail/`: curl submits a message through the router to Postfix (STARTTLS
/// passed through: Postfix's own TLS, recorded in its `Received` header), Postfix delivers
/// it into bob's Maildir, and curl and Python's imaplib read it back through the router from
/// Dovecot, over STARTTLS and over implicit TLS (both terminated by the router).
#[test]
fn mail_example_submits_to_postfix_and_reads_from_dovecot_by_sni() {
    if !installed(&["curl", "python3"]) {
        return;
    }
    let example = Example::copy("mail");
    if !example.make_certs(&["smtp.shop.localhost", "imap.shop.localhost"]) {
        return;
    }
    let Some(dovecot) = Dovecot::start("scn-mail-dovecot", &example.cert("imap.shop.localhost"))
    else {
        return;
    };
    let Some(postfix) = Postfix::start(
        "scn-mail-postfix",
        &example.cert("smtp.shop.localhost"),
        "shop.localhost",
        &dovecot.homes(),
    ) else {
        return;
    };
    example.swap("127.0.0.1:2587", &format!("127.0.0.1:{}", postfix.port));
    example.swap(
        "127.0.0.1:2143",
        &format!("127.0.0.1:{}", dovecot.imap_port),
    );
    let submission = example.move_port(10587);
    let (imap, imaps) = (example.move_port(10143), example.move_port(10993));
    let router = example.start(&[submission, imap, imaps]);

    let ran = curl_submit(&example, submission);
    assert!(ran.success(), "curl: {ran:?}\n{}", router.log());

    // Postfix delivers on its own schedule (a few milliseconds): wait for the file.
    let new = dovecot.homes().join("bob/Maildir/new");
    let deadline = std::time::Instant::now() + WAIT;
    let delivered = loop {
        let files: Vec<_> = std::fs::read_dir(&new)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        if let [file] = &files[..] {
            break std::fs::read_to_string(file).expect("read the delivered message");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing delivered to {}: {files:?}\n{}",
            new.display(),
            postfix.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        delivered.contains("Subject: order 7 shipped"),
        "{delivered}"
    );
    // TLS ended at Postfix (passthrough): it records the session's TLS in its header.
    assert!(
        delivered.contains("with ESMTPS") && delivered.contains("(using TLSv1."),
        "{delivered}"
    );

    // curl as the page shows it: STARTTLS and implicit TLS, the subject of message 1.
    for (scheme, port) in [("imap", imap), ("imaps", imaps)] {
        let name = "imap.shop.localhost";
        let ran = run_bounded(
            Command::new("curl")
                .args(["-sS", "--max-time", "20", "--ssl-reqd", "--cacert"])
                .arg(example.path("certs/ca.crt"))
                .args(["--resolve", &format!("{name}:{port}:127.0.0.1")])
                .args(["-u", "bob:secret"])
                .arg(format!(
                    "{scheme}://{name}:{port}/INBOX;UID=1;SECTION=HEADER.FIELDS%20(SUBJECT)"
                )),
            b"",
            WAIT,
        );
        assert!(ran.success(), "curl {scheme}: {ran:?}\n{}", router.log());
        assert_eq!(ran.stdout.trim_end(), "Subject: order 7 shipped", "{ran:?}");
    }

    let ran = imap_sessions(&example, imap, imaps);
    assert!(ran.success(), "imaplib: {ran:?}\n{}", router.log());
    assert_eq!(
        ran.stdout,
        "starttls|OK|OK|1|Subject: order 7 shipped\nimplicit|OK|OK|1|Subject: order 7 shipped\n",
        "{ran:?}"
    );
}

// ------------------------------------------------------------------ Redis with TLS by SNI

/// `redis-cli --tls --sni <name> --cacert <ca>` through the router, one command.
fn redis_cli_by_sni(example: &Example, name: &str, port: u16, args: &[&str]) -> String {
    let ran = run_bounded(
        Command::new("redis-cli")
            .args(["--tls", "--sni", name, "--cacert"])
            .arg(example.path("certs/ca.crt"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "--raw"])
            .args(args),
        b"",
        WAIT,
    );
    assert!(ran.success(), "redis-cli {name} {args:?}: {ran:?}");
    ran.stdout.trim_end().to_owned()
}

/// `examples/redis-tls/`: `cache.localhost` is passed through to a redis-server that runs
/// TLS itself, `sessions.localhost` terminated by the router in front of a plaintext
/// redis-server. Each key lands on the server its name routes to (checked on the servers
/// directly) and comes back on a new connection.
#[test]
fn redis_example_stores_keys_on_the_server_each_name_routes_to() {
    let example = Example::copy("redis-tls");
    if !example.make_certs(&["cache.localhost", "sessions.localhost"]) {
        return;
    }
    let cache_cert = example.path("certs/cache.localhost.crt");
    let cache_key = example.path("certs/cache.localhost.key");
    let Some(cache) = RedisServer::start("scn-redis-cache", Some((&cache_cert, &cache_key))) else {
        return;
    };
    let Some(sessions) = RedisServer::start("scn-redis-sessions", None) else {
        return;
    };
    example.swap("127.0.0.1:6380", &format!("127.0.0.1:{}", cache.port));
    example.swap("127.0.0.1:6381", &format!("127.0.0.1:{}", sessions.port));
    let port = example.move_port(16379);
    let _router = example.start(&[port]);
    let ca = example.path("certs/ca.crt");

    let cache_name = "cache.localhost";
    assert_eq!(
        redis_cli_by_sni(&example, cache_name, port, &["PING"]),
        "PONG"
    );
    assert_eq!(
        redis_cli_by_sni(&example, cache_name, port, &["SET", "player:7", "ada"]),
        "OK"
    );
    assert_eq!(
        redis_cli_by_sni(&example, cache_name, port, &["GET", "player:7"]),
        "ada"
    );
    let session_name = "sessions.localhost";
    assert_eq!(
        redis_cli_by_sni(&example, session_name, port, &["SET", "session:9", "t0k3n"]),
        "OK"
    );
    assert_eq!(
        redis_cli_by_sni(&example, session_name, port, &["GET", "session:9"]),
        "t0k3n"
    );

    let direct = |server: &RedisServer, key: &str| {
        let ran = server.cli(Some(&ca), &["GET", key]);
        assert!(ran.success(), "redis-cli direct: {ran:?}");
        ran.stdout.trim_end().to_owned()
    };
    assert_eq!(direct(&cache, "player:7"), "ada");
    assert_eq!(direct(&cache, "session:9"), "");
    assert_eq!(direct(&sessions, "session:9"), "t0k3n");
    assert_eq!(direct(&sessions, "player:7"), "");
}

// ------------------------------------------------------------------ gRPC

/// `examples/grpc-passthrough/`: TLS and HTTP/2 end at the gRPC servers (the client trusts
/// only the CA that signed their certificate; the router holds none). Unary, server-streaming
/// and bidirectional calls work; every call of one connection reaches the same server, and
/// new connections take the servers in turn. A client that does not offer h2 is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_passthrough_example_carries_calls_to_the_servers_tls() {
    let example = Example::copy("grpc-passthrough");
    if !example.make_certs(&["grpc.localhost"]) {
        return;
    }
    let server_cert = example.cert("grpc.localhost");
    let (a, b) = (
        GrpcBackend::tls("a", &server_cert).await,
        GrpcBackend::tls("b", &server_cert).await,
    );
    example.swap("127.0.0.1:50051", &a.addr.to_string());
    example.swap("127.0.0.1:50052", &b.addr.to_string());
    let port = example.move_port(18443);
    let _router = example.start(&[port]);
    let ca = example.cert("ca");

    let mut servers = Vec::new();
    for connection in 0..2 {
        let mut client = GrpcClient::tls(port, "grpc.localhost", &ca).await;
        let first = client.say("ada").await.expect("Say").text;
        let server = first.split(' ').next().unwrap_or("").to_owned();
        assert_eq!(first, format!("{server} greets ada"));
        let (counted, end) = client.count("ada", 3).await;
        end.expect("Count ends with OK");
        assert_eq!(
            counted.iter().map(|g| g.text.as_str()).collect::<Vec<_>>(),
            (1..=3)
                .map(|n| format!("{server} counts {n} for ada"))
                .collect::<Vec<_>>(),
            "connection {connection}: every call on one server"
        );
        let (answers, end) = client.chat(&["x", "y"]).await;
        end.expect("Chat ends with OK");
        assert_eq!(
            answers,
            [format!("{server} answers x"), format!("{server} answers y")]
        );
        servers.push(server);
    }
    servers.sort();
    assert_eq!(
        servers,
        ["a", "b"],
        "new connections take the servers in turn"
    );

    let refused = tls_connect(
        ([127, 0, 0, 1], port).into(),
        "grpc.localhost",
        &[&ca],
        &["http/1.1"],
    )
    .await;
    assert!(
        refused.is_err(),
        "a client without h2 reached a gRPC server"
    );
}

/// The servers that answered `n` `Say` calls on `client`, sorted.
async fn say_servers(client: &mut GrpcClient, n: usize) -> Vec<String> {
    let mut seen = Vec::new();
    for call in 0..n {
        let reply = client.say(&format!("call{call}")).await.expect("Say");
        seen.push(reply.text.split(' ').next().unwrap_or("").to_owned());
    }
    seen.sort();
    seen
}

/// `examples/grpc-terminated/`: the router holds api.localhost's certificate, ends HTTP/2 and
/// sends each call on its own to h2c gRPC servers: one client connection spreads its calls
/// over both. Streams (server-streaming and bidirectional) keep their order and end with OK.
/// A server whose gRPC health service says NOT_SERVING gets no more calls (the test shortens
/// the example's 10 s check interval).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_terminated_example_balances_calls_of_one_connection() {
    let example = Example::copy("grpc-terminated");
    if !example.make_certs(&["api.localhost"]) {
        return;
    }
    let (a, b) = (GrpcBackend::h2c("a").await, GrpcBackend::h2c("b").await);
    example.swap("127.0.0.1:50061", &a.addr.to_string());
    example.swap("127.0.0.1:50062", &b.addr.to_string());
    example.swap("interval: 10s", "interval: 100ms");
    let port = example.move_port(18444);
    let _router = example.start(&[port]);

    let mut client = GrpcClient::tls(port, "api.localhost", &example.cert("ca")).await;
    assert_eq!(
        say_servers(&mut client, 4).await,
        ["a", "a", "b", "b"],
        "one connection, calls balanced"
    );

    let (counted, end) = client.count("ada", 3).await;
    end.expect("Count ends with OK");
    let server = counted
        .first()
        .and_then(|g| g.text.split(' ').next())
        .unwrap_or("")
        .to_owned();
    assert_eq!(
        counted.iter().map(|g| g.text.as_str()).collect::<Vec<_>>(),
        (1..=3)
            .map(|n| format!("{server} counts {n} for ada"))
            .collect::<Vec<_>>()
    );
    let (answers, end) = client.chat(&["x", "y", "z"]).await;
    end.expect("Chat ends with OK");
    assert_eq!(answers.len(), 3, "{answers:?}");

    b.set_serving(false);
    // Two more probes: at least one of them after the change.
    let probes = b.health_checks();
    let deadline = tokio::time::Instant::now() + WAIT;
    while b.health_checks() < probes + 2 {
        assert!(tokio::time::Instant::now() < deadline, "b is not probed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(say_servers(&mut client, 4).await, ["a", "a", "a", "a"]);
}

// ------------------------------------------------------------------ HTTP/3 edge

/// True if `python3` can import aioquic; otherwise says why the calling test is skipped.
fn aioquic_installed() -> bool {
    if !installed(&["python3"]) {
        return false;
    }
    let ran = run_bounded(
        Command::new("python3").args(["-c", "import aioquic"]),
        b"",
        WAIT,
    );
    if !ran.success() {
        eprintln!("skipped: python3 cannot import aioquic (pip install aioquic)");
    }
    ran.success()
}

/// `tests/e2e/h3_client.py` as docs/scenarios/http3-edge.md runs it: its JSON answer.
fn h3_get(example: &Example, port: u16, path: &str) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/h3_client.py");
    let ran = run_bounded(
        Command::new("python3")
            .arg(script)
            .arg(format!("https://127.0.0.1:{port}{path}"))
            .args(["--sni", "app.localhost", "--ca"])
            .arg(example.path("certs/ca.crt")),
        b"",
        WAIT,
    );
    assert!(ran.success(), "h3_client.py failed: {ran:?}");
    serde_json::from_str(&ran.stdout).unwrap_or_else(|e| panic!("{e}: {ran:?}"))
}

fn json_header<'a>(answer: &'a serde_json::Value, name: &str) -> &'a str {
    answer["headers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|pair| pair[0] == name)
        .and_then(|pair| pair[1].as_str())
        .unwrap_or("-")
}

/// `examples/http3-edge/`: aioquic's HTTP/3 requests reach both HTTP/1.1 backends in turn,
/// which see HTTP/1.1 with `X-Forwarded-Proto: https`; over TCP (curl, HTTP/2) the answer
/// carries the `Alt-Svc` that sends browsers to HTTP/3 on the same port.
#[test]
fn http3_edge_example_serves_http1_backends_over_http3() {
    if !aioquic_installed() {
        return;
    }
    let example = Example::copy("http3-edge");
    if !example.make_certs(&["app.localhost"]) {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (one, two) = runtime.block_on(async {
        (
            web::HttpBackend::start("one").await,
            web::HttpBackend::start("two").await,
        )
    });
    example.swap("http://127.0.0.1:9001", &one.url());
    example.swap("http://127.0.0.1:9002", &two.url());
    let port = free_udp_port();
    example.swap("127.0.0.1:8443", &format!("127.0.0.1:{port}"));
    let router = example.start(&[port]);
    router.wait_log("listening (HTTP/3)");

    let mut bodies = Vec::new();
    for _ in 0..2 {
        let answer = h3_get(&example, port, "/scores");
        assert_eq!(answer["status"], 200, "{answer}");
        assert_eq!(json_header(&answer, "x-seen-proto"), "https", "{answer}");
        assert_eq!(
            json_header(&answer, "x-seen-version"),
            "HTTP/1.1",
            "{answer}"
        );
        bodies.push(answer["body"].as_str().unwrap_or("").to_owned());
    }
    bodies.sort();
    assert_eq!(bodies, ["one /scores", "two /scores"]);

    if !installed(&["curl"]) {
        return;
    }
    let ran = run_bounded(
        Command::new("curl")
            .args(["-sS", "--max-time", "5", "-D", "-", "-o", "/dev/null"])
            .args(["--resolve", &format!("app.localhost:{port}:127.0.0.1")])
            .arg("--cacert")
            .arg(example.path("certs/ca.crt"))
            .arg(format!("https://app.localhost:{port}/")),
        b"",
        WAIT,
    );
    assert!(ran.success(), "curl failed: {ran:?}");
    let head = ran.stdout.to_ascii_lowercase();
    assert!(head.starts_with("http/2 200"), "{head}");
    assert!(
        head.contains(&format!("alt-svc: h3=\":{port}\"")),
        "no Alt-Svc for HTTP/3: {head}"
    );
}

// ------------------------------------------------------------------ UDP game fleet

/// A game server: answers every datagram with `<name>:<datagram>` and remembers each peer
/// it heard from (the router's socket of one session).
struct GameServer {
    peers: Arc<Mutex<HashSet<SocketAddr>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GameServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GameServer {
    /// `None` when `addr` is taken (the test then skips).
    async fn bind(name: &'static str, addr: &str) -> Option<GameServer> {
        let socket = match tokio::net::UdpSocket::bind(addr).await {
            Ok(socket) => socket,
            Err(e) => {
                eprintln!("skipped: the example's game server address {addr} is taken: {e}");
                return None;
            }
        };
        let peers = Arc::new(Mutex::new(HashSet::new()));
        let seen = peers.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((len, from)) = socket.recv_from(&mut buf).await {
                if let Ok(mut peers) = seen.lock() {
                    peers.insert(from);
                }
                let mut answer = format!("{name}:").into_bytes();
                answer.extend_from_slice(&buf[..len]);
                let _ = socket.send_to(&answer, from).await;
            }
        });
        Some(GameServer { peers, task })
    }

    fn sessions(&self) -> usize {
        self.peers.lock().map(|p| p.len()).unwrap_or(0)
    }
}

/// Sends `payload` from `socket` and returns the name of the server that echoed it, trying
/// again (same socket, so same session) if a datagram is lost.
async fn play(socket: &tokio::net::UdpSocket, payload: &str) -> String {
    let mut buf = [0u8; 2048];
    for _ in 0..10 {
        if socket.send(payload.as_bytes()).await.is_err() {
            continue;
        }
        if let Ok(Ok(len)) =
            tokio::time::timeout(Duration::from_millis(500), socket.recv(&mut buf)).await
        {
            let answer = String::from_utf8_lossy(&buf[..len]).into_owned();
            let (server, echoed) = answer.split_once(':').unwrap_or(("", ""));
            assert_eq!(echoed, payload, "the server answers what the player sent");
            return server.to_owned();
        }
    }
    panic!("no answer to {payload}");
}

const PLAYERS: usize = 200;
const MOVES: usize = 5;

/// `examples/udp-game/`: 200 players, each from an address of its own (127.0.1.1 to
/// 127.0.1.200), send five moves 150 ms apart through `hrw` to the three game servers the
/// example names. Every move of a player reaches the same server, a reconnect from a new
/// port (a new session) lands there again, the players spread within 15% of even, and the
/// servers saw exactly one session per player and connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_game_example_keeps_each_player_on_one_server_and_spreads_them() {
    let mut servers = Vec::new();
    for (name, addr) in [
        ("s1", "127.0.0.1:27016"),
        ("s2", "127.0.0.1:27017"),
        ("s3", "127.0.0.1:27018"),
    ] {
        let Some(server) = GameServer::bind(name, addr).await else {
            return;
        };
        servers.push((name, server));
    }
    let example = Example::copy("udp-game");
    let port = free_udp_port();
    example.swap("127.0.0.1:27015", &format!("127.0.0.1:{port}"));
    let router = example.start(&[]);
    router.wait_log("listening (UDP)");

    let mut players = Vec::new();
    for n in 1..=PLAYERS {
        let ip = format!("127.0.1.{n}");
        players.push(tokio::spawn(async move {
            let socket = support::udp::udp_client(&ip, port).await;
            let mut seen = Vec::new();
            for m in 0..MOVES {
                seen.push(play(&socket, &format!("player{n} move{m}")).await);
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            // Reconnecting: a new socket, so a new source port and a new session.
            let again = support::udp::udp_client(&ip, port).await;
            seen.push(play(&again, &format!("player{n} back")).await);
            (ip, seen)
        }));
    }
    let mut per_server: HashMap<String, usize> = HashMap::new();
    for player in players {
        let (ip, seen) = player.await.expect("player task");
        assert!(
            seen.iter().all(|s| *s == seen[0]),
            "{ip} changed servers: {seen:?}"
        );
        *per_server.entry(seen[0].clone()).or_insert(0) += 1;
    }

    let even = PLAYERS as f64 / 3.0;
    for (name, server) in &servers {
        let players = per_server.get(*name).copied().unwrap_or(0);
        assert!(
            (players as f64 - even).abs() <= 0.15 * even,
            "{name} has {players} players, even is {even:.1}: {per_server:?}"
        );
        assert_eq!(
            server.sessions(),
            2 * players,
            "{name}: one session per player and connection"
        );
    }
}
