//! Entrypoint models: what an entrypoint's `http` section does to the HTTP routers on it,
//! applied to the dynamic configuration before validation, as Traefik does when it merges
//! providers.
//!
//! - `http.redirections.entryPoint{to, scheme, permanent, priority}` adds a router
//!   `<ep>-to-<to>@internal` (`HostRegexp(\`^.+$\`)`, priority `MaxInt32 - 1` unless set)
//!   whose `redirectScheme` middleware sends every request to the other entrypoint, and
//!   whose service is `noop@internal`.
//! - `http.tls` makes every router on the entrypoint that has no `tls` section a TLS router
//!   with those settings; `http.middlewares` go before the router's own.
//!
//! A router attached to several entrypoints of which one has a model is copied for that
//! entrypoint as `<ep>-<router>` (the others keep the original), so each copy carries its
//! own entrypoint's model.

use super::Located;
use super::dynamic::{DynamicConfig, HttpMiddleware, HttpRouter, RedirectScheme, RouterTls};
use super::static_cfg::{EntryPoint, StaticConfig};

/// Applies the entrypoint models of `st` to `dy`.
pub fn apply(st: &StaticConfig, dy: &mut DynamicConfig) {
    let models: Vec<(&String, &EntryPoint)> = st
        .entry_points
        .iter()
        .filter(|(_, ep)| has_model(ep))
        .collect();
    if models.is_empty() {
        return;
    }
    let defaults = st.default_entry_points();
    let routers = std::mem::take(&mut dy.http.routers);
    for (name, router) in routers {
        // Children of multi-layer routing take their parents' entrypoints.
        if !router.value.parent_refs.is_empty() {
            dy.http.routers.insert(name, router);
            continue;
        }
        let eps = if router.value.entry_points.is_empty() {
            defaults.clone()
        } else {
            router.value.entry_points.clone()
        };
        let (with_model, without): (Vec<&String>, Vec<&String>) = eps
            .iter()
            .partition(|ep| models.iter().any(|(m, _)| m == ep));
        if with_model.is_empty() {
            dy.http.routers.insert(name, router);
            continue;
        }
        for ep_name in &with_model {
            let Some((_, ep)) = models.iter().find(|(m, _)| m == ep_name) else {
                continue;
            };
            let mut copy = router.clone();
            copy.value.entry_points = vec![(*ep_name).clone()];
            apply_to_router(ep, &mut copy.value);
            let copy_name = if eps.len() > 1 {
                format!("{ep_name}-{name}")
            } else {
                name.clone()
            };
            dy.http.routers.insert(copy_name, copy);
        }
        if !without.is_empty() {
            let mut rest = router;
            rest.value.entry_points = without.into_iter().cloned().collect();
            dy.http.routers.insert(name, rest);
        }
    }
    for (ep_name, ep) in &models {
        add_redirection(st, ep_name, ep, dy);
    }
}

fn has_model(ep: &EntryPoint) -> bool {
    ep.http.tls.is_some() || !ep.http.middlewares.is_empty() || redirect_target(ep).is_some()
}

fn redirect_target(ep: &EntryPoint) -> Option<&super::static_cfg::RedirectEntryPoint> {
    ep.http
        .redirections
        .as_ref()
        .and_then(|r| r.entry_point.as_ref())
        .filter(|r| !r.to.is_empty())
}

fn apply_to_router(ep: &EntryPoint, router: &mut HttpRouter) {
    if router.tls.is_none()
        && let Some(tls) = &ep.http.tls
    {
        router.tls = Some(RouterTls {
            options: Located::new(tls.options.clone()),
            cert_resolver: tls.cert_resolver.clone(),
            domains: tls.domains.clone(),
        });
    }
    if !ep.http.middlewares.is_empty() {
        let mut chain: Vec<Located<String>> = ep
            .http
            .middlewares
            .iter()
            .map(|m| Located::new(qualify(m)))
            .collect();
        chain.append(&mut router.middlewares);
        router.middlewares = chain;
    }
}

/// Entrypoint middlewares are written in the static configuration without a provider;
/// Traefik resolves them against the file provider.
fn qualify(name: &str) -> String {
    if name.contains('@') {
        name.to_owned()
    } else {
        format!("{name}@file")
    }
}

fn add_redirection(st: &StaticConfig, ep_name: &str, ep: &EntryPoint, dy: &mut DynamicConfig) {
    let Some(redirect) = redirect_target(ep) else {
        return;
    };
    // `to` names an entrypoint (its port is used) or is a `:port`.
    let port = match st.entry_points.get(&redirect.to) {
        Some(target) => target.address.port.to_string(),
        None => redirect.to.trim_start_matches(':').to_owned(),
    };
    let scheme = if redirect.scheme.is_empty() {
        "https".to_owned()
    } else {
        redirect.scheme.clone()
    };
    let target_name = redirect.to.trim_start_matches(':');
    let middleware = format!("redirect-{ep_name}-to-{target_name}@internal");
    dy.http.middlewares.insert(
        middleware.clone(),
        Located::new(HttpMiddleware {
            redirect_scheme: Some(RedirectScheme {
                scheme,
                port,
                permanent: redirect.permanent,
            }),
            ..HttpMiddleware::default()
        }),
    );
    let priority = redirect.priority;
    dy.http.routers.insert(
        format!("{ep_name}-to-{target_name}@internal"),
        Located::new(HttpRouter {
            entry_points: vec![ep_name.to_owned()],
            middlewares: vec![Located::new(middleware)],
            service: Located::new("noop@internal".to_owned()),
            rule: Located::new("HostRegexp(`^.+$`)".to_owned()),
            priority,
            ..HttpRouter::default()
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::static_cfg::{EntryPointTls, RedirectEntryPoint, Redirections};

    fn static_with(eps: &[(&str, u16)]) -> StaticConfig {
        let mut st = StaticConfig::default();
        for (name, port) in eps {
            let mut ep = EntryPoint::default();
            ep.address.port = *port;
            st.entry_points.insert((*name).to_owned(), ep);
        }
        st
    }

    fn router(eps: &[&str]) -> Located<HttpRouter> {
        Located::new(HttpRouter {
            entry_points: eps.iter().map(|e| (*e).to_owned()).collect(),
            middlewares: vec![Located::new("own@file".to_owned())],
            service: Located::new("s@file".to_owned()),
            rule: Located::new("Host(`a.test`)".to_owned()),
            ..HttpRouter::default()
        })
    }

    #[test]
    fn redirection_adds_an_internal_router_and_middleware() {
        let mut st = static_with(&[("web", 80), ("websecure", 443)]);
        st.entry_points.get_mut("web").unwrap().http.redirections = Some(Redirections {
            entry_point: Some(RedirectEntryPoint {
                to: "websecure".into(),
                ..RedirectEntryPoint::default()
            }),
        });
        let mut dy = DynamicConfig::default();
        apply(&st, &mut dy);
        let r = &dy.http.routers["web-to-websecure@internal"].value;
        assert_eq!(r.entry_points, ["web"]);
        assert_eq!(r.priority, i64::from(i32::MAX) - 1);
        assert_eq!(r.service.value, "noop@internal");
        let m = &dy.http.middlewares["redirect-web-to-websecure@internal"].value;
        let scheme = m.redirect_scheme.as_ref().unwrap();
        assert_eq!(
            (scheme.scheme.as_str(), scheme.port.as_str()),
            ("https", "443")
        );
        assert!(scheme.permanent);
    }

    #[test]
    fn entrypoint_tls_and_middlewares_apply_to_a_copy_per_model_entrypoint() {
        let mut st = static_with(&[("web", 80), ("websecure", 443)]);
        let secure = st.entry_points.get_mut("websecure").unwrap();
        secure.http.tls = Some(EntryPointTls {
            options: "modern@file".into(),
            ..EntryPointTls::default()
        });
        secure.http.middlewares = vec!["hsts".into()];
        let mut dy = DynamicConfig::default();
        dy.http.routers.insert("r@file".into(), router(&[]));
        dy.http
            .routers
            .insert("only@file".into(), router(&["websecure"]));
        apply(&st, &mut dy);

        let plain = &dy.http.routers["r@file"].value;
        assert_eq!(plain.entry_points, ["web"]);
        assert!(plain.tls.is_none());
        let copy = &dy.http.routers["websecure-r@file"].value;
        assert_eq!(copy.entry_points, ["websecure"]);
        assert_eq!(copy.tls.as_ref().unwrap().options.value, "modern@file");
        let chain: Vec<&str> = copy.middlewares.iter().map(|m| m.value.as_str()).collect();
        assert_eq!(chain, ["hsts@file", "own@file"]);
        // A router on the model entrypoint alone keeps its name.
        assert!(dy.http.routers["only@file"].value.tls.is_some());
    }

    #[test]
    fn routers_keep_their_own_tls_section() {
        let mut st = static_with(&[("websecure", 443)]);
        st.entry_points.get_mut("websecure").unwrap().http.tls = Some(EntryPointTls {
            options: "modern@file".into(),
            ..EntryPointTls::default()
        });
        let mut dy = DynamicConfig::default();
        let mut r = router(&["websecure"]);
        r.value.tls = Some(RouterTls::default());
        dy.http.routers.insert("r@file".into(), r);
        apply(&st, &mut dy);
        assert_eq!(
            dy.http.routers["r@file"].value.tls,
            Some(RouterTls::default())
        );
    }
}
