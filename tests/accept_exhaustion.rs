//! Running out of file descriptors, with the real binary under a low `RLIMIT_NOFILE`:
//! accepting backs off instead of spinning, the failures are counted by reason, and
//! service resumes by itself once descriptors are free again.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream as StdStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// Descriptors the router may open: about 20 go to its runtime, listeners and log, the
/// rest to connections.
const NOFILE: u32 = 48;

/// CPU time (user + system) of process `pid` so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 of `rest`.
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

fn echo(mut s: &StdStream) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"ping\n")?;
    let mut answer = [0u8; 5];
    s.read_exact(&mut answer)?;
    assert_eq!(&answer, b"ping\n");
    Ok(())
}

fn scrape(port: u16) -> String {
    let mut s = StdStream::connect(("127.0.0.1", port)).expect("connect to metrics");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}

#[test]
fn out_of_descriptors_backs_off_counts_and_recovers() {
    let dir = temp_dir("accept-exhaustion");
    let (web, traefik) = (free_port(), free_port());
    let static_path = dir.join("static.yml");
    std::fs::write(
        &static_path,
        static_config(
            &dir,
            &[("web", web), ("traefik", traefik)],
            "metrics:\n  prometheus: {}\n",
        ),
    )
    .expect("static");
    std::fs::write(
        dir.join("dynamic.yml"),
        "tcp:\n  routers:\n    echo: {rule: \"HostSNI(`*`)\", entryPoints: [web], service: echo@internal}\n",
    )
    .expect("dynamic");
    let log_path = dir.join("router.log");
    let log = std::fs::File::create(&log_path).expect("log");
    // prlimit execs the router: the child's pid is the router's.
    let child = Command::new("prlimit")
        .arg(format!("--nofile={NOFILE}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_sallyport"))
        .arg("--config")
        .arg(&static_path)
        .env("SALLYPORT_WORKERS", "2")
        .stdout(Stdio::from(log.try_clone().expect("dup log")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start prlimit");
    let router = Router {
        dir: dir.clone(),
        dynamic_path: dir.join("dynamic.yml"),
        child: Some(child),
        log_path,
    };
    let pid = router.pid();
    let start = Instant::now();
    let first = loop {
        match StdStream::connect(("127.0.0.1", web)) {
            Ok(s) if echo(&s).is_ok() => break s,
            _ if start.elapsed() < Duration::from_secs(20) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            _ => panic!("the router never served:\n{}", router.log()),
        }
    };

    // Idle connections until the router runs out of descriptors; the ones beyond wait in
    // the listen queue.
    let mut idle: Vec<StdStream> = (0..NOFILE * 2)
        .map(|_| StdStream::connect(("127.0.0.1", web)).expect("connect (queued)"))
        .collect();
    idle.push(StdStream::connect(("127.0.0.1", web)).expect("connect"));
    router.wait_log("cannot accept new connections");
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let spent = cpu_ticks(pid) - before;
    // A spinning accept loop burns a whole core: about 200 ticks in 2 s.
    assert!(
        spent < 40,
        "{spent} ticks of CPU in 2 s while out of descriptors"
    );
    // One line per entrypoint per 10 s, however many failures.
    let lines = router
        .log()
        .lines()
        .filter(|l| l.contains("cannot accept new connections") && l.contains("entrypoint=web"))
        .count();
    assert_eq!(lines, 1);

    drop(idle);
    echo(&first).expect("the open connection is still served");
    drop(first);
    // Served again as soon as descriptors are free (the backoff is at most 1 s).
    let start = Instant::now();
    loop {
        let served = StdStream::connect(("127.0.0.1", web))
            .and_then(|s| echo(&s))
            .is_ok();
        if served {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never served again"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let metrics = scrape(traefik);
    let count = metrics
        .lines()
        .find(|l| {
            l.starts_with("sallyport_entrypoint_accept_errors_total{")
                && l.contains("entrypoint=\"web\"")
                && l.contains("reason=\"emfile\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok());
    assert!(
        count.is_some_and(|c| c >= 1.0),
        "no emfile count in:\n{metrics}"
    );
}
