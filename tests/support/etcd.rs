//! A real `etcd` for the etcd provider's tests: one member on free loopback ports, its data
//! in a temporary directory so that a stop (SIGKILL, by PID) and a restart keep the keys.
//! Keys are written with the `etcd-client` crate the provider uses.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use super::programs::{Running, installed, port_open_within};
use super::{WAIT, free_port, temp_dir};

pub struct EtcdServer {
    pub port: u16,
    peer_port: u16,
    dir: PathBuf,
    server: Option<Running>,
}

impl EtcdServer {
    /// Starts a member, or says why not and returns `None` (the test is then skipped).
    pub async fn start(tag: &str) -> Option<EtcdServer> {
        if !installed(&["etcd"]) {
            return None;
        }
        let mut server = EtcdServer {
            port: free_port(),
            peer_port: free_port(),
            dir: temp_dir(tag),
            server: None,
        };
        server.restart().await;
        Some(server)
    }

    pub fn stop(&mut self) {
        self.server = None;
    }

    /// Starts the member again on the same ports and data; returns once it takes writes.
    pub async fn restart(&mut self) {
        self.stop();
        let client_url = format!("http://127.0.0.1:{}", self.port);
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        self.server = Some(Running::start(
            Command::new("etcd")
                .args(["--name", "test"])
                .arg("--data-dir")
                .arg(self.dir.join("data"))
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &format!("test={peer_url}")])
                .args(["--log-level", "error"]),
        ));
        assert!(
            port_open_within(self.port, WAIT),
            "etcd never listened on {}",
            self.port
        );
        let start = Instant::now();
        while start.elapsed() < WAIT {
            if let Ok(mut client) = self.client().await
                && client.put("sallyport-test/ready", "1", None).await.is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("etcd on port {} never took a write", self.port);
    }

    async fn client(&self) -> Result<etcd_client::Client, etcd_client::Error> {
        etcd_client::Client::connect([format!("http://127.0.0.1:{}", self.port)], None).await
    }

    pub async fn put(&self, key: &str, value: &str) {
        let mut client = self.client().await.expect("connect to etcd");
        client.put(key, value, None).await.expect("put");
    }

    pub async fn delete(&self, key: &str) {
        let mut client = self.client().await.expect("connect to etcd");
        client.delete(key, None).await.expect("delete");
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
