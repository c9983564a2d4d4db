//! Active TCP health checks, as Traefik runs them for `tcp.services.*.loadBalancer.healthCheck`.
//!
//! Each server of a load balancer gets its own probe loop. A probe passes when the server
//! accepts a connection through the service's transport (TLS included for `tls` servers, no
//! PROXY header), takes `send` if configured, and answers exactly `expect` if configured, all
//! within `timeout`. Servers start healthy, the first probe comes one interval after start,
//! one failure marks a server down and one success marks it up again. Healthy servers are
//! probed every `interval`, unhealthy ones every `unhealthy_interval` (default: `interval`).
//!
//! This module only flips [`Server`] health flags, and tells an [`OnChange`] callback of each
//! change (the metrics); picking servers is `service`'s job.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::{AbortHandle, JoinSet};

use super::service::{LoadBalancer, Server};
use super::transport::{DialError, Transport};

/// `healthCheck` of a TCP load balancer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckSpec {
    /// Probe this port instead of the server's.
    pub port: Option<u16>,
    /// Bytes written after connecting.
    pub send: Option<String>,
    /// Bytes the server must answer with.
    pub expect: Option<String>,
    pub interval: Duration,
    /// Interval for servers that are down; `interval` when `None`.
    pub unhealthy_interval: Option<Duration>,
    /// Limit for one whole probe.
    pub timeout: Duration,
}

impl Default for HealthCheckSpec {
    /// Traefik's defaults: every 30 s, 5 s per probe, connect only.
    fn default() -> Self {
        Self {
            port: None,
            send: None,
            expect: None,
            interval: Duration::from_secs(30),
            unhealthy_interval: None,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Keeps the health checks of one load balancer running; dropping it stops them.
#[derive(Debug)]
pub struct HealthHandle {
    task: AbortHandle,
}

impl Drop for HealthHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Called after a probe changed a server's health; it reads the new health from the server.
pub type OnChange = Arc<dyn Fn(&Server) + Send + Sync>;

/// Starts probing every server of `lb`, telling `on_change` of each change. Must be called
/// within a tokio runtime.
pub fn spawn(
    lb: Arc<LoadBalancer>,
    spec: HealthCheckSpec,
    on_change: Option<OnChange>,
) -> HealthHandle {
    let spec = Arc::new(spec);
    let task = tokio::spawn(async move {
        // Aborting this task drops the set, which aborts every probe loop in it.
        let mut probes = JoinSet::new();
        for server in lb.servers() {
            probes.spawn(watch(
                server.clone(),
                lb.transport().clone(),
                spec.clone(),
                on_change.clone(),
            ));
        }
        while probes.join_next().await.is_some() {}
    });
    HealthHandle {
        task: task.abort_handle(),
    }
}

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error("sending the probe failed: {0}")]
    Send(io::Error),
    #[error("reading the answer failed: {0}")]
    Read(io::Error),
    #[error("unexpected answer {got:?}")]
    Mismatch { got: String },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Probes one server forever, logging each change of its health.
async fn watch(
    server: Arc<Server>,
    transport: Arc<Transport>,
    spec: Arc<HealthCheckSpec>,
    on_change: Option<OnChange>,
) {
    let target = match spec.port {
        Some(port) => with_port(&server.address, port),
        None => server.address.clone(),
    };
    loop {
        let wait = if server.is_healthy() {
            spec.interval
        } else {
            spec.unhealthy_interval.unwrap_or(spec.interval)
        };
        tokio::time::sleep(wait).await;
        let probe = probe(&transport, &target, server.tls, &spec);
        let result = tokio::time::timeout(spec.timeout, probe)
            .await
            .unwrap_or(Err(ProbeError::Timeout(spec.timeout)));
        let changed = match result {
            Ok(()) => {
                let changed = !server.set_healthy(true);
                if changed {
                    tracing::info!(server = %server.address, probe = %target, "TCP server is up");
                }
                changed
            }
            Err(reason) => {
                let changed = server.set_healthy(false);
                if changed {
                    tracing::warn!(server = %server.address, probe = %target, %reason, "TCP server is down");
                }
                changed
            }
        };
        if let (true, Some(on_change)) = (changed, &on_change) {
            on_change(&server);
        }
    }
}

async fn probe(
    transport: &Transport,
    target: &str,
    tls: bool,
    spec: &HealthCheckSpec,
) -> Result<(), ProbeError> {
    let mut stream = transport.connect_without_client(target, tls).await?;
    if let Some(send) = &spec.send {
        stream
            .write_all(send.as_bytes())
            .await
            .map_err(ProbeError::Send)?;
        stream.flush().await.map_err(ProbeError::Send)?;
    }
    if let Some(expect) = &spec.expect {
        let mut answer = vec![0; expect.len()];
        stream
            .read_exact(&mut answer)
            .await
            .map_err(ProbeError::Read)?;
        if answer != expect.as_bytes() {
            return Err(ProbeError::Mismatch {
                got: String::from_utf8_lossy(&answer).into_owned(),
            });
        }
    }
    Ok(())
}

/// `address` (`host:port`) with its port replaced.
fn with_port(address: &str, port: u16) -> String {
    let host = match address.rsplit_once(':') {
        // A bare IPv6 address without brackets has no port to replace.
        Some((host, _)) if !host.contains(':') || host.ends_with(']') => host,
        _ => address,
    };
    format!("{host}:{port}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::testing::{
        LIMIT, closed_port, echo_backend, echo_on, self_signed, server_config, silent_backend,
    };
    use crate::tcp::transport::BackendTls;
    use tokio::net::TcpListener;

    fn fast(spec: HealthCheckSpec) -> HealthCheckSpec {
        HealthCheckSpec {
            interval: Duration::from_millis(30),
            timeout: Duration::from_millis(500),
            ..spec
        }
    }

    fn balancer(address: String, tls: bool, transport: Transport) -> Arc<LoadBalancer> {
        Arc::new(LoadBalancer::new(
            vec![Arc::new(Server::new(address, tls))],
            Arc::new(transport),
        ))
    }

    fn server(lb: &LoadBalancer) -> &Server {
        &lb.servers()[0]
    }

    async fn wait_until(what: &str, condition: impl Fn() -> bool) {
        let polled = async {
            while !condition() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        if tokio::time::timeout(LIMIT, polled).await.is_err() {
            panic!("timed out waiting until {what}");
        }
    }

    #[tokio::test]
    async fn server_that_stops_answering_goes_down_then_back_up_and_each_change_is_told() {
        let backend = echo_backend(None).await;
        let addr = backend.addr;
        let lb = balancer(addr.to_string(), false, Transport::default());
        let told = Arc::new(std::sync::Mutex::new(Vec::new()));
        let on_change: OnChange = {
            let told = told.clone();
            Arc::new(move |server: &Server| {
                told.lock()
                    .unwrap()
                    .push((server.address.clone(), server.is_healthy()));
            })
        };
        let _checks = spawn(
            lb.clone(),
            fast(HealthCheckSpec::default()),
            Some(on_change),
        );

        drop(backend);
        wait_until("down", || !server(&lb).is_healthy()).await;

        // Reopen the same port; the aborted listener may take a moment to close.
        let listener = tokio::time::timeout(LIMIT, async {
            loop {
                match TcpListener::bind(addr).await {
                    Ok(listener) => return listener,
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        })
        .await
        .unwrap();
        let _backend = echo_on(listener, None);
        wait_until("up", || server(&lb).is_healthy()).await;
        let address = addr.to_string();
        assert_eq!(
            *told.lock().unwrap(),
            [(address.clone(), false), (address, true)]
        );
    }

    #[tokio::test]
    async fn first_probe_waits_one_interval() {
        let lb = balancer(closed_port().await.to_string(), false, Transport::default());
        let spec = HealthCheckSpec {
            interval: Duration::from_millis(300),
            ..fast(HealthCheckSpec::default())
        };
        let _checks = spawn(lb.clone(), spec, None);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(server(&lb).is_healthy());
        wait_until("down", || !server(&lb).is_healthy()).await;
    }

    #[tokio::test]
    async fn matching_answer_brings_a_server_up_and_a_mismatch_takes_it_down() {
        let backend = echo_backend(None).await;
        let lb = balancer(backend.addr.to_string(), false, Transport::default());
        server(&lb).set_healthy(false);
        let echoing = HealthCheckSpec {
            send: Some("PING\r\n".into()),
            expect: Some("PING".into()),
            ..fast(HealthCheckSpec::default())
        };
        let checks = spawn(lb.clone(), echoing, None);
        wait_until("up", || server(&lb).is_healthy()).await;
        drop(checks);

        let wrong = HealthCheckSpec {
            send: Some("PING\r\n".into()),
            expect: Some("PONG".into()),
            ..fast(HealthCheckSpec::default())
        };
        let _checks = spawn(lb.clone(), wrong, None);
        wait_until("down", || !server(&lb).is_healthy()).await;
    }

    #[tokio::test]
    async fn a_silent_server_fails_on_the_probe_timeout() {
        let backend = silent_backend().await;
        let lb = balancer(backend.addr.to_string(), false, Transport::default());
        let spec = HealthCheckSpec {
            expect: Some("220".into()),
            timeout: Duration::from_millis(100),
            ..fast(HealthCheckSpec::default())
        };
        let _checks = spawn(lb.clone(), spec, None);
        wait_until("down", || !server(&lb).is_healthy()).await;
    }

    #[tokio::test]
    async fn tls_servers_are_probed_over_tls() {
        let cert = self_signed(&["localhost"]);
        let tls_backend = echo_backend(Some(server_config(&cert))).await;
        let transport = || {
            Transport::default()
                .with_tls(BackendTls {
                    insecure_skip_verify: true,
                    ..BackendTls::default()
                })
                .unwrap()
        };
        let spec = HealthCheckSpec {
            send: Some("hi".into()),
            expect: Some("hi".into()),
            ..fast(HealthCheckSpec::default())
        };
        let lb = balancer(tls_backend.addr.to_string(), true, transport());
        server(&lb).set_healthy(false);
        let _checks = spawn(lb.clone(), spec.clone(), None);
        wait_until("TLS server up", || server(&lb).is_healthy()).await;

        // A plain server marked `tls` fails the handshake.
        let plain_backend = echo_backend(None).await;
        let wrong = balancer(plain_backend.addr.to_string(), true, transport());
        let _checks = spawn(wrong.clone(), spec, None);
        wait_until("plain server down", || !server(&wrong).is_healthy()).await;
    }

    #[tokio::test]
    async fn port_overrides_the_server_port() {
        let backend = echo_backend(None).await;
        let address = closed_port().await.to_string();
        let lb = balancer(address, false, Transport::default());
        server(&lb).set_healthy(false);
        let spec = HealthCheckSpec {
            port: Some(backend.addr.port()),
            ..fast(HealthCheckSpec::default())
        };
        let _checks = spawn(lb.clone(), spec, None);
        wait_until("up", || server(&lb).is_healthy()).await;
    }

    #[tokio::test]
    async fn down_servers_are_probed_at_the_unhealthy_interval() {
        let backend = echo_backend(None).await;
        let lb = balancer(backend.addr.to_string(), false, Transport::default());
        server(&lb).set_healthy(false);
        let spec = HealthCheckSpec {
            interval: Duration::from_secs(3600),
            unhealthy_interval: Some(Duration::from_millis(30)),
            ..fast(HealthCheckSpec::default())
        };
        let _checks = spawn(lb.clone(), spec, None);
        wait_until("up", || server(&lb).is_healthy()).await;
    }

    #[tokio::test]
    async fn dropping_the_handle_stops_the_checks() {
        let lb = balancer(closed_port().await.to_string(), false, Transport::default());
        let checks = spawn(lb.clone(), fast(HealthCheckSpec::default()), None);
        drop(checks);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(server(&lb).is_healthy());
    }

    #[test]
    fn with_port_replaces_the_port() {
        assert_eq!(with_port("db.example:5432", 9000), "db.example:9000");
        assert_eq!(with_port("[::1]:80", 9000), "[::1]:9000");
        assert_eq!(with_port("db.example", 9000), "db.example:9000");
    }
}
