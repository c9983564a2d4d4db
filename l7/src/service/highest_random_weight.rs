//! `highestRandomWeight`: child services chosen by rendezvous hashing on the client IP, so a
//! client keeps its service while that service is up.

use http::{Request, Response};

use super::weighted::children_health;
use super::{BuildError, Child, SharedHealth};
use crate::balance::hrw::Hrw;
use crate::error::ProxyErrorKind;
use crate::handler::{Body, BoxFuture, ClientInfo, Handler, error_response};

/// The `highestRandomWeight` handler.
pub struct HighestRandomWeight {
    children: Vec<Child>,
    hrw: Hrw<usize>,
    health: Option<SharedHealth>,
}

impl HighestRandomWeight {
    /// `children` are the services with their weights (≤ 0: not used); `health_check` is
    /// `healthCheck: {}`.
    pub fn new(
        service: &str,
        health_check: bool,
        children: Vec<(Child, i64)>,
    ) -> Result<Self, BuildError> {
        let declared: Vec<&Child> = children.iter().map(|(child, _)| child).collect();
        let mut hrw = Hrw::new();
        let mut used = Vec::new();
        for (child, weight) in &children {
            if hrw.add(used.len(), child.name.as_str(), *weight) {
                used.push(child.clone());
            }
        }
        let health = children_health(service, health_check, declared, &used)?;
        Ok(Self {
            children: used,
            hrw,
            health,
        })
    }

    /// The health reported to parents: `Some` with `healthCheck: {}`.
    pub fn health(&self) -> Option<SharedHealth> {
        self.health.clone()
    }
}

impl Handler for HighestRandomWeight {
    fn call(&self, request: Request<Body>) -> BoxFuture<'_, Response<Body>> {
        Box::pin(async move {
            let client_ip = request
                .extensions()
                .get::<ClientInfo>()
                .map(|client| client.peer.ip().to_string())
                .unwrap_or_default();
            let follows_health = self.health.is_some();
            let picked = self.hrw.pick_where(&client_ip, |&child| {
                !follows_health || self.children.get(child).is_some_and(Child::is_up)
            });
            let Some(handler) = picked.and_then(|&child| self.children.get(child)) else {
                return error_response(ProxyErrorKind::NoHealthyServer);
            };
            handler.handler.clone().call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::empty_body;
    use crate::service::weighted::tests::{body_of, child, leaf};
    use http::StatusCode;
    use std::net::SocketAddr;
    use std::sync::atomic::Ordering;

    fn from(ip: &str) -> Request<Body> {
        let mut request = Request::new(empty_body());
        request.extensions_mut().insert(ClientInfo {
            peer: SocketAddr::new(ip.parse().unwrap(), 1234),
            local: "127.0.0.1:80".parse().unwrap(),
            tls: false,
            entrypoint: "web".into(),
            notes: None,
        });
        request
    }

    #[tokio::test]
    async fn each_client_ip_keeps_its_service_until_it_goes_down() {
        let (a, b, c) = (leaf("a"), leaf("b"), leaf("c"));
        let hrw = HighestRandomWeight::new(
            "hrw@file",
            true,
            vec![
                (child(&a, true), 1),
                (child(&b, true), 1),
                (child(&c, true), 1),
            ],
        )
        .unwrap();
        let clients: Vec<String> = (0..40).map(|i| format!("192.168.7.{i}")).collect();
        let mut first = Vec::new();
        for ip in &clients {
            let (_, served) = body_of(&hrw, from(ip)).await;
            assert_eq!(body_of(&hrw, from(ip)).await.1, served);
            first.push(served);
        }
        for name in ["a", "b", "c"] {
            assert!(first.iter().any(|s| s == name), "{name} serves someone");
        }
        b.up.store(false, Ordering::SeqCst);
        for (ip, before) in clients.iter().zip(&first) {
            let (_, now) = body_of(&hrw, from(ip)).await;
            if before != "b" {
                assert_eq!(&now, before, "client {ip} moved");
            } else {
                assert_ne!(now, "b");
            }
        }
        a.up.store(false, Ordering::SeqCst);
        c.up.store(false, Ordering::SeqCst);
        assert!(!hrw.health().unwrap().is_up());
        assert_eq!(
            body_of(&hrw, from("192.168.7.1")).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn following_a_child_that_does_not_report_is_a_build_error() {
        let a = leaf("a");
        let error = HighestRandomWeight::new("hrw@file", true, vec![(child(&a, false), 1)]).err();
        assert!(matches!(error, Some(BuildError::CannotRegister { .. })));
        assert!(HighestRandomWeight::new("hrw@file", false, vec![(child(&a, false), 1)]).is_ok());
    }
}
