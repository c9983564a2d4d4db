//! Validation: what Traefik's API would report for every router, service and middleware of
//! a dynamic configuration, given the static entrypoints.
//!
//! Traefik checks objects when it builds them, per router and per entrypoint, and records
//! errors on the objects ("critical" errors disable, others only warn). This module
//! reproduces that walk without building anything: entrypoint resolution (defaults, unknown
//! entrypoints), TLS-option conflicts between routers serving the same host (which rename
//! routers `<entrypoint>-conflicted-<router>`), TLS options, services (recursively),
//! middlewares (recursively), servers transports, rules (through [`RuleChecker`]) and the
//! files some options name. As in Traefik, services and middlewares are only checked when
//! a router uses them: an unused bad middleware stays enabled.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use super::ConfigError;
use super::de::Located;
use super::dynamic::{
    DEFAULT_TLS_NAME, DynamicConfig, HttpMiddleware, HttpRouter, HttpService, TcpMiddleware,
    TcpService, TlsOptions, UdpService,
};
use super::source::Location;
use super::static_cfg::{Protocol, StaticConfig};

/// The highest priority a user may give a router (Traefik reserves the rest).
pub const MAX_USER_PRIORITY: i64 = i64::MAX - 1000;

/// A router's, service's or middleware's state, as Traefik's API reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Enabled,
    /// Usable, with problems worth reporting.
    Warning(Vec<String>),
    /// Not used: the reasons.
    Disabled(Vec<String>),
}

/// Compiles rules; the real compilers live in `l4` (TCP) and `l7` (HTTP).
pub trait RuleChecker {
    /// Checks a TCP rule; `tls` says whether the router has a `tls` section (a `HostSNI`
    /// other than `*` needs one).
    fn tcp(&self, rule: &str, tls: bool) -> Result<(), String>;
    /// Checks an HTTP rule.
    fn http(&self, rule: &str) -> Result<(), String>;
    /// The host names an HTTP rule's `Host` matchers name, lower-cased (Traefik's
    /// `ParseDomains`), or `None` when the rule does not compile. Used to detect TLS-option
    /// conflicts. The default reads the `Host(...)` arguments after checking the rule.
    fn http_domains(&self, rule: &str) -> Option<Vec<String>> {
        self.http(rule).ok()?;
        Some(host_arguments(rule))
    }
}

/// The arguments of every `Host(...)` call in `rule`, lower-cased.
pub fn host_arguments(rule: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = rule;
    while let Some(pos) = rest.find("Host(") {
        let preceded_by_ident = rest[..pos]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let args = &rest[pos + 5..];
        rest = args;
        if preceded_by_ident {
            continue;
        }
        let mut chars = args.char_indices();
        while let Some((_, c)) = chars.next() {
            match c {
                ')' => break,
                '`' | '"' | '\'' => {
                    let start = chars.clone().next().map_or(args.len(), |(i, _)| i);
                    let end = chars
                        .by_ref()
                        .find(|(_, d)| *d == c)
                        .map_or(args.len(), |(i, _)| i);
                    out.push(args[start..end].to_ascii_lowercase());
                }
                _ => {}
            }
        }
    }
    out
}

/// One object's outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectStatus {
    pub status: Status,
    /// The reasons, each pointing at the value it concerns where known.
    pub errors: Vec<ConfigError>,
    /// Where the object is defined.
    pub location: Option<Location>,
}

/// What a router became after entrypoint and TLS-option resolution.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedRouter {
    /// The name in the configuration (differs for `<ep>-conflicted-<name>` copies).
    pub origin: String,
    /// Entrypoints the router is attached to (existing ones only).
    pub entry_points: Vec<String>,
    /// The TLS option actually applied (`None` without TLS).
    pub tls_options: Option<String>,
}

/// Statuses for every object, plus log-level problems that are not statuses.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub http_routers: BTreeMap<String, ObjectStatus>,
    pub tcp_routers: BTreeMap<String, ObjectStatus>,
    pub udp_routers: BTreeMap<String, ObjectStatus>,
    pub http_services: BTreeMap<String, ObjectStatus>,
    pub tcp_services: BTreeMap<String, ObjectStatus>,
    pub udp_services: BTreeMap<String, ObjectStatus>,
    pub http_middlewares: BTreeMap<String, ObjectStatus>,
    pub tcp_middlewares: BTreeMap<String, ObjectStatus>,
    /// HTTP routers after TLS-option conflict resolution, by their reported name.
    pub resolved_http_routers: BTreeMap<String, ResolvedRouter>,
    /// Problems Traefik logs without changing a status (TLS-option conflicts, UDP routers
    /// shadowed on their entrypoint, loading warnings).
    pub warnings: Vec<ConfigError>,
}

impl Report {
    /// Whether HTTP router `name` (as reported, after TLS-option conflicts) is to be served.
    pub fn http_router_enabled(&self, name: &str) -> bool {
        self.http_routers
            .get(name)
            .is_some_and(|o| !matches!(o.status, Status::Disabled(_)))
    }

    /// Whether UDP router `name` is to be served (enabled, or enabled with warnings).
    pub fn udp_router_enabled(&self, name: &str) -> bool {
        self.udp_routers
            .get(name)
            .is_some_and(|o| !matches!(o.status, Status::Disabled(_)))
    }

    /// Whether TCP router `name` is to be served (enabled, or enabled with warnings).
    pub fn tcp_router_enabled(&self, name: &str) -> bool {
        self.tcp_routers
            .get(name)
            .is_some_and(|o| !matches!(o.status, Status::Disabled(_)))
    }

    /// Every disabled object's reasons, as located errors naming the object; what
    /// `sallyport check` prints as errors.
    pub fn errors(&self) -> Vec<ConfigError> {
        self.located(|s| matches!(s, Status::Disabled(_)))
    }

    /// Problems that leave an object usable (status `warning`), then the problems
    /// Traefik only logs; `sallyport check` prints them without failing.
    pub fn all_warnings(&self) -> Vec<ConfigError> {
        let mut out = self.located(|s| matches!(s, Status::Warning(_)));
        out.extend(self.warnings.iter().cloned());
        out
    }

    fn located(&self, wanted: impl Fn(&Status) -> bool) -> Vec<ConfigError> {
        let groups = [
            ("HTTP router", &self.http_routers),
            ("TCP router", &self.tcp_routers),
            ("UDP router", &self.udp_routers),
            ("HTTP service", &self.http_services),
            ("TCP service", &self.tcp_services),
            ("UDP service", &self.udp_services),
            ("HTTP middleware", &self.http_middlewares),
            ("TCP middleware", &self.tcp_middlewares),
        ];
        let mut out = Vec::new();
        for (what, objects) in groups {
            for (name, object) in objects {
                if !wanted(&object.status) {
                    continue;
                }
                for error in &object.errors {
                    out.push(ConfigError {
                        location: error.location.clone().or_else(|| object.location.clone()),
                        message: format!("{what} \"{name}\": {}", error.message),
                    });
                }
            }
        }
        out
    }
}

/// Validates `dy` against the entrypoints of `st`.
pub fn validate(st: &StaticConfig, dy: &DynamicConfig, rules: &dyn RuleChecker) -> Report {
    let mut v = Validator {
        st,
        dy,
        rules,
        tcp_eps: st
            .entry_points
            .iter()
            .filter(|(_, ep)| ep.address.protocol == Protocol::Tcp)
            .map(|(n, _)| n.clone())
            .collect(),
        udp_eps: st.udp_capable_entry_points().map(str::to_owned).collect(),
        http_eps: st.http_capable_entry_points().map(str::to_owned).collect(),
        http_services: HashMap::new(),
        tcp_services: HashMap::new(),
        udp_services: HashMap::new(),
        http_middlewares: HashMap::new(),
        tcp_middlewares: HashMap::new(),
        tls_options: HashMap::new(),
        report: Report {
            warnings: dy.warnings.clone(),
            ..Report::default()
        },
    };
    v.http_routers();
    v.tcp_routers();
    v.udp_routers();
    v.finish_objects();
    v.report
}

/// An error being accumulated on an object.
#[derive(Clone, Debug)]
struct Problem {
    error: ConfigError,
    critical: bool,
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    /// Adds an error (once: Traefik does not repeat an error on an object).
    fn add(&mut self, error: ConfigError, critical: bool) {
        if let Some(existing) = self.0.iter_mut().find(|p| p.error.message == error.message) {
            existing.critical |= critical;
            return;
        }
        self.0.push(Problem { error, critical });
    }

    fn into_status(self, location: Option<Location>) -> ObjectStatus {
        let messages: Vec<String> = self.0.iter().map(|p| p.error.message.clone()).collect();
        let status = if self.0.iter().any(|p| p.critical) {
            Status::Disabled(messages)
        } else if messages.is_empty() {
            Status::Enabled
        } else {
            Status::Warning(messages)
        };
        ObjectStatus {
            status,
            errors: self.0.into_iter().map(|p| p.error).collect(),
            location,
        }
    }
}

/// A build result: Ok, or the error a router using the object gets.
type Built = Result<(), ConfigError>;

struct Validator<'a> {
    st: &'a StaticConfig,
    dy: &'a DynamicConfig,
    rules: &'a dyn RuleChecker,
    tcp_eps: BTreeSet<String>,
    /// UDP entrypoints, and TCP entrypoints with `http3` (whose UDP socket UDP routers
    /// may share).
    udp_eps: BTreeSet<String>,
    /// TCP entrypoints, and UDP entrypoints with `http3`: where HTTP routers can be served.
    http_eps: BTreeSet<String>,
    http_services: HashMap<String, Built>,
    tcp_services: HashMap<String, Built>,
    udp_services: HashMap<String, Built>,
    http_middlewares: HashMap<String, Built>,
    tcp_middlewares: HashMap<String, Built>,
    tls_options: HashMap<String, Built>,
    report: Report,
}

fn err(location: &Option<Location>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        location: location.clone(),
        message: message.into(),
    }
}

/// A service that refers back to itself through `stack` (weighted, mirroring…) is
/// an error, as in Traefik.
fn no_cycle(reference: &Located<String>, stack: &[String]) -> Built {
    let name = reference.value.as_str();
    if stack.iter().any(|s| s == name) {
        return Err(err(
            &reference.location,
            format!(
                "could not instantiate service {name}: recursion detected in {}->{name}",
                stack.join("->")
            ),
        ));
    }
    Ok(())
}

/// TCP services built into Sallyport (see `runtime::internal`).
pub const INTERNAL_TCP_SERVICES: &[&str] = &["echo@internal"];

/// Internal services Traefik provides (`api@internal`…).
const INTERNAL_SERVICES: &[&str] = &[
    "api@internal",
    "dashboard@internal",
    "noop@internal",
    "ping@internal",
    "prometheus@internal",
    "rest@internal",
];

/// An HTTP router as Traefik handles it after TLS-option resolution.
struct VirtualRouter<'a> {
    name: String,
    router: &'a Located<HttpRouter>,
    entry_points: Vec<String>,
    resolved_tls: Option<String>,
}

impl<'a> Validator<'a> {
    // -----------------------------------------------------------------------------------
    // HTTP routers

    fn http_routers(&mut self) {
        let defaults = self.st.default_entry_points();
        let routers: Vec<VirtualRouter<'a>> = self.resolve_tls_conflicts(&defaults);
        let child_refs = self.child_refs();
        for vr in routers {
            let problems = self.http_router(&vr, &child_refs);
            let valid_eps: Vec<String> = vr
                .entry_points
                .iter()
                .filter(|ep| self.http_eps.contains(*ep))
                .cloned()
                .collect();
            self.report.resolved_http_routers.insert(
                vr.name.clone(),
                ResolvedRouter {
                    origin: vr
                        .name
                        .rsplit_once("-conflicted-")
                        .map_or(vr.name.as_str(), |(_, o)| o)
                        .to_owned(),
                    entry_points: valid_eps,
                    tls_options: vr.resolved_tls.clone(),
                },
            );
            self.report.http_routers.insert(
                vr.name.clone(),
                problems.into_status(vr.router.location.clone()),
            );
        }
    }

    /// Names of routers that list each router in their `parentRefs`.
    fn child_refs(&self) -> HashMap<String, Vec<String>> {
        let mut children: HashMap<String, Vec<String>> = HashMap::new();
        for (name, r) in &self.dy.http.routers {
            for parent in &r.parent_refs {
                children
                    .entry(parent.value.clone())
                    .or_default()
                    .push(name.clone());
            }
        }
        children
    }

    /// Traefik's `resolveHTTPTLSOptions`: on each entrypoint, routers serving the same host
    /// with different TLS options fall back to the default options, in a copy named
    /// `<entrypoint>-conflicted-<router>` attached to that entrypoint only.
    fn resolve_tls_conflicts(&mut self, defaults: &[String]) -> Vec<VirtualRouter<'a>> {
        let dy = self.dy;
        let mut routers: Vec<VirtualRouter<'a>> = dy
            .http
            .routers
            .iter()
            .map(|(name, router)| {
                let entry_points =
                    if router.entry_points.is_empty() && router.parent_refs.is_empty() {
                        defaults.to_vec()
                    } else {
                        router.entry_points.clone()
                    };
                VirtualRouter {
                    name: name.clone(),
                    router,
                    entry_points,
                    resolved_tls: router.tls.as_ref().map(|tls| configured_tls(&tls.options)),
                }
            })
            .collect();

        let mut by_ep: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, vr) in routers.iter().enumerate() {
            if vr.resolved_tls.is_some() {
                for ep in &vr.entry_points {
                    let list = by_ep.entry(ep.as_str()).or_default();
                    if !list.contains(&i) {
                        list.push(i);
                    }
                }
            }
        }
        let mut conflicts: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
        for (ep, indices) in &by_ep {
            let mut per_host: BTreeMap<String, BTreeMap<String, Vec<usize>>> = BTreeMap::new();
            for &i in indices {
                let vr = &routers[i];
                let option = vr.resolved_tls.clone().unwrap_or_default();
                let Some(domains) = self.rules.http_domains(&vr.router.rule.value) else {
                    continue;
                };
                if domains.is_empty() && option != DEFAULT_TLS_NAME {
                    conflicts.entry((*ep).to_owned()).or_default().insert(i);
                    continue;
                }
                for domain in domains {
                    per_host
                        .entry(domain)
                        .or_default()
                        .entry(option.clone())
                        .or_default()
                        .push(i);
                }
            }
            for (host, options) in per_host {
                if options.len() < 2 {
                    continue;
                }
                let names: Vec<&str> = options
                    .values()
                    .flatten()
                    .map(|&i| routers[i].name.as_str())
                    .collect();
                self.report.warnings.push(ConfigError::unlocated(format!(
                    "On entrypoint \"{ep}\", host \"{host}\" is served by multiple routers with different TLS options, default TLS options will be applied for the following routers: {}",
                    names.join(", ")
                )));
                conflicts
                    .entry((*ep).to_owned())
                    .or_default()
                    .extend(options.into_values().flatten());
            }
        }
        if conflicts.is_empty() {
            return routers;
        }
        let mut out = Vec::with_capacity(routers.len());
        for (i, mut vr) in routers.drain(..).enumerate() {
            let mut kept = Vec::new();
            for ep in &vr.entry_points {
                if conflicts.get(ep).is_some_and(|set| set.contains(&i)) {
                    out.push(VirtualRouter {
                        name: format!("{ep}-conflicted-{}", vr.name),
                        router: vr.router,
                        entry_points: vec![ep.clone()],
                        resolved_tls: Some(DEFAULT_TLS_NAME.to_owned()),
                    });
                } else {
                    kept.push(ep.clone());
                }
            }
            if !kept.is_empty() {
                vr.entry_points = kept;
                out.push(vr);
            }
        }
        out
    }

    fn http_router(
        &mut self,
        vr: &VirtualRouter<'a>,
        child_refs: &HashMap<String, Vec<String>>,
    ) -> Problems {
        let mut p = Problems::default();
        let r = &vr.router.value;
        let at = &vr.router.location;
        let children = child_refs
            .get(&vr.router_origin())
            .cloned()
            .unwrap_or_default();

        // Multi-layer routing: a child is built inside its parents.
        if !r.parent_refs.is_empty() {
            for parent in &r.parent_refs {
                if !self.dy.http.routers.contains_key(&parent.value) {
                    p.add(
                        err(
                            &parent.location,
                            format!("parent router \"{}\" does not exist", parent.value),
                        ),
                        true,
                    );
                }
            }
            return p;
        }
        if r.service.value.is_empty() && children.is_empty() {
            p.add(err(at, "router has no service and no child routers"), true);
        }

        let mut valid = 0;
        for ep in &vr.entry_points {
            if self.http_eps.contains(ep) {
                valid += 1;
            } else {
                p.add(err(at, format!("entryPoint \"{ep}\" doesn't exist")), false);
            }
        }
        if valid == 0 {
            p.add(err(at, "no valid entryPoint for this router"), true);
            return p;
        }

        // Building the router's handler (once for all its entrypoints).
        let built = self.build_http_router(r, at, &children);
        if let Err(e) = built {
            p.add(e, true);
        }

        // The TLS pass, which chooses TLS options by SNI.
        if let Some(tls) = &r.tls {
            let configured = configured_tls(&tls.options);
            match self.rules.http_domains(&r.rule.value) {
                None => {
                    let msg = self
                        .rules
                        .http(&r.rule.value)
                        .err()
                        .unwrap_or_else(|| "invalid rule".to_owned());
                    p.add(
                        err(
                            &r.rule.location,
                            format!("invalid rule {}, error: {msg}", r.rule.value),
                        ),
                        true,
                    );
                }
                Some(domains) => {
                    if domains.is_empty() && configured != DEFAULT_TLS_NAME {
                        p.add(
                            err(
                                &tls.options.location,
                                format!(
                                    "no domain found in rule {}, the TLS option {configured} cannot be applied",
                                    r.rule.value
                                ),
                            ),
                            false,
                        );
                    }
                    if !domains.is_empty() && vr.resolved_tls.as_deref() != Some(&configured) {
                        p.add(
                            err(
                                &tls.options.location,
                                "router's TLSOptions configuration is conflicting with other routers on the same entrypoint and host, default TLS options will be used instead",
                            ),
                            false,
                        );
                    }
                }
            }
        }
        p
    }

    fn build_http_router(
        &mut self,
        r: &HttpRouter,
        at: &Option<Location>,
        children: &[String],
    ) -> Built {
        if r.priority > MAX_USER_PRIORITY {
            return Err(err(
                at,
                format!(
                    "the router priority {} exceeds the max user-defined priority {MAX_USER_PRIORITY}",
                    r.priority
                ),
            ));
        }
        if let Some(tls) = &r.tls {
            let name = configured_tls(&tls.options);
            self.tls_option(&name, &tls.options.location)
                .map_err(|e| ConfigError {
                    message: format!("building router handler: {}", e.message),
                    ..e
                })?;
        }
        if children.is_empty() {
            if r.service.value.is_empty() {
                return Err(err(
                    at,
                    "router must have either a service or child routers",
                ));
            }
            self.http_service(&r.service, &mut Vec::new())?;
        }
        for mw in &r.middlewares {
            self.http_middleware(mw, &mut Vec::new())?;
        }
        self.rules
            .http(&r.rule.value)
            .map_err(|msg| err(&r.rule.location, msg))
    }

    // -----------------------------------------------------------------------------------
    // HTTP services

    fn http_service(&mut self, reference: &Located<String>, stack: &mut Vec<String>) -> Built {
        let name = reference.value.as_str();
        if let Some(done) = self.http_services.get(name) {
            return done.clone();
        }
        if INTERNAL_SERVICES.contains(&name) {
            return Ok(());
        }
        let Some(service) = self.dy.http.services.get(name) else {
            return Err(err(
                &reference.location,
                format!("the service \"{name}\" does not exist"),
            ));
        };
        no_cycle(reference, stack)?;
        stack.push(name.to_owned());
        let result = self.build_http_service(name, service, stack);
        stack.pop();
        self.http_services.insert(name.to_owned(), result.clone());
        result
    }

    fn build_http_service(
        &mut self,
        name: &str,
        service: &'a Located<HttpService>,
        stack: &mut Vec<String>,
    ) -> Built {
        let at = &service.location;
        let s = &service.value;
        let kinds = s.kinds();
        if kinds.is_empty() {
            return Err(err(
                at,
                format!("the service \"{name}\" does not have any type defined"),
            ));
        }
        if kinds.len() > 1 {
            return Err(err(
                at,
                "cannot create service: multi-types service not supported, consider declaring two different pieces of service instead",
            ));
        }
        if let Some(lb) = &s.load_balancer {
            let strategy = lb.strategy.value.to_ascii_lowercase();
            if !matches!(strategy.as_str(), "" | "wrr" | "p2c" | "hrw" | "leasttime") {
                return Err(err(
                    &lb.strategy.location,
                    format!("invalid load-balancing strategy {}", lb.strategy.value),
                ));
            }
            for server in &lb.servers {
                check_server_url(&server.url)?;
                let transport = &lb.servers_transport;
                if !transport.value.is_empty()
                    && transport.value != "default@internal"
                    && !self
                        .dy
                        .http
                        .servers_transports
                        .contains_key(&transport.value)
                {
                    return Err(err(
                        &transport.location,
                        format!(
                            "error building proxy for server URL {}: getting RoundTripper: servers transport not found {}",
                            server.url.value, transport.value
                        ),
                    ));
                }
            }
        }
        let mut children: Vec<&'a Located<String>> = Vec::new();
        if let Some(w) = &s.weighted {
            children.extend(w.services.iter().map(|c| &c.name));
        }
        if let Some(h) = &s.highest_random_weight {
            children.extend(h.services.iter().map(|c| &c.name));
        }
        if let Some(m) = &s.mirroring {
            children.push(&m.service);
            children.extend(m.mirrors.iter().map(|c| &c.name));
        }
        if let Some(f) = &s.failover {
            children.push(&f.service);
            if !f.fallback.value.is_empty() {
                children.push(&f.fallback);
            }
        }
        for child in children {
            self.http_service(child, stack)?;
        }
        for mw in &s.middlewares {
            self.http_middleware(mw, &mut Vec::new())?;
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------
    // HTTP middlewares

    fn http_middleware(&mut self, reference: &Located<String>, stack: &mut Vec<String>) -> Built {
        let name = reference.value.as_str();
        if let Some(done) = self.http_middlewares.get(name) {
            return done.clone();
        }
        let Some(middleware) = self.dy.http.middlewares.get(name) else {
            return Err(err(
                &reference.location,
                format!("middleware \"{name}\" does not exist"),
            ));
        };
        if stack.iter().any(|s| s == name) {
            return Err(err(
                &reference.location,
                format!(
                    "could not instantiate middleware {name}: recursion detected in {}->{name}",
                    stack.join("->")
                ),
            ));
        }
        stack.push(name.to_owned());
        let result = self.build_http_middleware(name, middleware, stack);
        stack.pop();
        self.http_middlewares
            .insert(name.to_owned(), result.clone());
        result
    }

    fn build_http_middleware(
        &mut self,
        name: &str,
        middleware: &'a Located<HttpMiddleware>,
        stack: &mut Vec<String>,
    ) -> Built {
        let at = &middleware.location;
        let m = &middleware.value;
        let kinds = m.kinds();
        if kinds.is_empty() {
            return Err(err(
                at,
                format!(
                    "invalid middleware \"{name}\" configuration: invalid middleware type or middleware does not exist"
                ),
            ));
        }
        if kinds.len() > 1 {
            return Err(err(
                at,
                format!(
                    "invalid middleware \"{name}\" configuration: multi-types middleware not supported, consider declaring two different pieces of middleware instead"
                ),
            ));
        }
        if let Some(chain) = &m.chain {
            for child in &chain.middlewares {
                self.http_middleware(child, stack)?;
            }
        }
        if let Some(errors) = &m.errors {
            if errors.service.value.is_empty() {
                return Err(err(at, "errors middleware: the service is missing"));
            }
            self.http_service(&errors.service, &mut Vec::new())?;
            for status in &errors.status {
                check_status_range(status).map_err(|e| err(at, e))?;
            }
        }
        if let Some(auth) = &m.basic_auth {
            check_users_file(&auth.users_file)?;
        }
        if let Some(auth) = &m.digest_auth {
            check_users_file(&auth.users_file)?;
        }
        if let Some(list) = &m.ip_allow_list {
            check_source_ranges(&list.source_range)?;
        }
        if let Some(list) = &m.ip_white_list {
            check_source_ranges(&list.source_range)?;
        }
        if let Some(strip) = &m.strip_prefix_regex {
            for re in &strip.regex {
                check_regex(re)?;
            }
        }
        if let Some(replace) = &m.replace_path_regex {
            check_regex(&replace.regex)?;
        }
        if let Some(redirect) = &m.redirect_regex {
            check_regex(&redirect.regex)?;
        }
        if let Some(headers) = &m.headers {
            for re in &headers.access_control_allow_origin_list_regex {
                check_regex(re)?;
            }
        }
        if let Some(auth) = &m.forward_auth
            && !auth.auth_response_headers_regex.value.is_empty()
        {
            check_regex(&auth.auth_response_headers_regex)?;
        }
        if let Some(plugins) = &m.plugin {
            let names: Vec<&str> = plugins.keys().map(String::as_str).collect();
            return Err(err(
                at,
                format!(
                    "plugin {} is not available: plugins are not supported",
                    names.join(", ")
                ),
            ));
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------
    // TLS options

    /// Checks that a TLS option exists and can be built; `name` is qualified (or
    /// `default`).
    fn tls_option(&mut self, name: &str, at: &Option<Location>) -> Built {
        if let Some(done) = self.tls_options.get(name) {
            return done.clone();
        }
        let result = match self.dy.tls.options.get(name) {
            None if name == DEFAULT_TLS_NAME => Ok(()),
            None => Err(err(at, format!("unknown TLS options: {name}"))),
            Some(options) => build_tls_options(options),
        };
        self.tls_options.insert(name.to_owned(), result.clone());
        result
    }

    // -----------------------------------------------------------------------------------
    // TCP

    fn tcp_routers(&mut self) {
        let defaults = self.st.default_entry_points();
        let dy = self.dy;
        for (name, router) in &dy.tcp.routers {
            let r = &router.value;
            let at = &router.location;
            let mut p = Problems::default();
            let eps = if r.entry_points.is_empty() {
                defaults.clone()
            } else {
                r.entry_points.clone()
            };
            let mut valid = 0;
            for ep in &eps {
                if self.tcp_eps.contains(ep) {
                    valid += 1;
                } else {
                    p.add(err(at, format!("entryPoint \"{ep}\" doesn't exist")), false);
                }
            }
            if valid == 0 {
                p.add(err(at, "no valid entryPoint for this router"), true);
            } else if let Err(e) = self.build_tcp_router(r, at) {
                p.add(e, true);
            }
            self.report
                .tcp_routers
                .insert(name.clone(), p.into_status(at.clone()));
        }
    }

    fn build_tcp_router(
        &mut self,
        r: &'a super::dynamic::TcpRouter,
        at: &Option<Location>,
    ) -> Built {
        if r.service.value.is_empty() {
            return Err(err(at, "the service is missing on the router"));
        }
        if r.rule.value.is_empty() {
            return Err(err(at, "router has no rule"));
        }
        self.rules
            .tcp(&r.rule.value, r.tls.is_some())
            .map_err(|msg| {
                err(
                    &r.rule.location,
                    format!("invalid rule: \"{}\" , {msg}", r.rule.value),
                )
            })?;
        if r.priority > MAX_USER_PRIORITY {
            return Err(err(
                at,
                format!(
                    "the router priority {} exceeds the max user-defined priority {MAX_USER_PRIORITY}",
                    r.priority
                ),
            ));
        }
        if let Some(tls) = &r.tls
            && !tls.passthrough
        {
            let name = configured_tls(&tls.options);
            self.tls_option(&name, &tls.options.location)?;
        }
        self.tcp_service(&r.service, &mut Vec::new())?;
        for mw in &r.middlewares {
            self.tcp_middleware(mw)?;
        }
        Ok(())
    }

    fn tcp_service(&mut self, reference: &Located<String>, stack: &mut Vec<String>) -> Built {
        let name = reference.value.as_str();
        if let Some(done) = self.tcp_services.get(name) {
            return done.clone();
        }
        if INTERNAL_TCP_SERVICES.contains(&name) {
            return Ok(());
        }
        let Some(service) = self.dy.tcp.services.get(name) else {
            return Err(err(
                &reference.location,
                format!("the service \"{name}\" does not exist"),
            ));
        };
        no_cycle(reference, stack)?;
        stack.push(name.to_owned());
        let result = self.build_tcp_service(name, service, stack);
        stack.pop();
        self.tcp_services.insert(name.to_owned(), result.clone());
        result
    }

    fn build_tcp_service(
        &mut self,
        name: &str,
        service: &'a Located<TcpService>,
        stack: &mut Vec<String>,
    ) -> Built {
        let at = &service.location;
        let s = &service.value;
        match (&s.load_balancer, &s.weighted) {
            (None, None) => Err(err(
                at,
                format!("the service \"{name}\" does not have any type defined"),
            )),
            (Some(_), Some(_)) => Err(err(
                at,
                "cannot create service: multi-types service not supported, consider declaring two different pieces of service instead",
            )),
            (Some(lb), None) => {
                let transport = &lb.servers_transport;
                if !transport.value.is_empty()
                    && transport.value != "default@internal"
                    && !self
                        .dy
                        .tcp
                        .servers_transports
                        .contains_key(&transport.value)
                {
                    return Err(err(
                        &transport.location,
                        format!("TCP servers transport not found {}", transport.value),
                    ));
                }
                Ok(())
            }
            (None, Some(w)) => {
                for child in &w.services {
                    self.tcp_service(&child.name, stack)?;
                }
                Ok(())
            }
        }
    }

    fn tcp_middleware(&mut self, reference: &Located<String>) -> Built {
        let name = reference.value.as_str();
        if let Some(done) = self.tcp_middlewares.get(name) {
            return done.clone();
        }
        let Some(middleware) = self.dy.tcp.middlewares.get(name) else {
            return Err(err(
                &reference.location,
                format!("middleware \"{name}\" does not exist"),
            ));
        };
        let result = build_tcp_middleware(name, middleware);
        self.tcp_middlewares.insert(name.to_owned(), result.clone());
        result
    }

    // -----------------------------------------------------------------------------------
    // UDP

    fn udp_routers(&mut self) {
        let dy = self.dy;
        // A router that names no entrypoint is on every UDP entrypoint (not on the UDP side
        // of TCP entrypoints, which a router has to name).
        let all_udp: Vec<String> = self
            .st
            .entry_points
            .iter()
            .filter(|(_, ep)| ep.address.protocol == Protocol::Udp)
            .map(|(name, _)| name.clone())
            .collect();
        // Per entrypoint, the routers whose handler could be built, by name.
        let mut usable: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, router) in &dy.udp.routers {
            let r = &router.value;
            let at = &router.location;
            let mut p = Problems::default();
            let eps = if r.entry_points.is_empty() {
                all_udp.clone()
            } else {
                r.entry_points.clone()
            };
            let mut valid = Vec::new();
            for ep in &eps {
                if self.udp_eps.contains(ep) {
                    valid.push(ep.clone());
                } else {
                    p.add(err(at, format!("entryPoint \"{ep}\" doesn't exist")), false);
                }
            }
            if valid.is_empty() {
                p.add(err(at, "no valid entryPoint for this router"), true);
            } else if r.service.value.is_empty() {
                p.add(err(at, "the service is missing on the udp router"), true);
            } else if let Err(e) = self.udp_rule(r) {
                p.add(e, true);
            } else {
                match self.udp_service(&r.service, &mut Vec::new()) {
                    Err(e) => p.add(e, true),
                    // Only routers without a rule compete for Traefik's one-per-entrypoint.
                    Ok(()) if r.rule.value.is_empty() => {
                        for ep in valid {
                            usable.entry(ep).or_default().push(name.clone());
                        }
                    }
                    Ok(()) => {}
                }
            }
            self.report
                .udp_routers
                .insert(name.clone(), p.into_status(at.clone()));
        }
        // Traefik sorts a UDP entrypoint's routers by name, descending, and uses the first;
        // here that is the choice among the routers without a rule.
        for (ep, mut names) in usable {
            if names.len() < 2 {
                continue;
            }
            names.sort_by(|a, b| b.cmp(a));
            self.report.warnings.push(ConfigError::unlocated(format!(
                "UDP entrypoint \"{ep}\" has several routers; only \"{}\" is used, ignoring {}",
                names[0],
                names[1..].join(", ")
            )));
        }
    }

    /// A UDP router's rule (an extension): the TCP matchers a datagram can be judged by
    /// without TLS, that is `ClientIP` (and ``HostSNI(`*`)``), or for a QUIC passthrough
    /// router every TCP TLS matcher, read on the flow's ClientHello.
    fn udp_rule(&mut self, r: &super::dynamic::UdpRouter) -> Built {
        let quic = match &r.tls {
            None => false,
            Some(tls) if tls.passthrough => true,
            Some(_) => {
                return Err(err(
                    &r.service.location,
                    "a UDP router only passes QUIC through (tls: {passthrough: true}); HTTP/3 is terminated by the entrypoint's http3 option",
                ));
            }
        };
        if r.rule.value.is_empty() {
            if quic {
                return Err(err(
                    &r.service.location,
                    "a QUIC passthrough router needs a rule (HostSNI, HostSNIRegexp or ALPN)",
                ));
            }
            return Ok(());
        }
        self.rules.tcp(&r.rule.value, quic).map_err(|msg| {
            err(
                &r.rule.location,
                format!("invalid rule: \"{}\" , {msg}", r.rule.value),
            )
        })?;
        if r.priority > MAX_USER_PRIORITY {
            return Err(err(
                &r.rule.location,
                format!(
                    "the router priority {} exceeds the max user-defined priority {MAX_USER_PRIORITY}",
                    r.priority
                ),
            ));
        }
        Ok(())
    }

    fn udp_service(&mut self, reference: &Located<String>, stack: &mut Vec<String>) -> Built {
        let name = reference.value.as_str();
        if let Some(done) = self.udp_services.get(name) {
            return done.clone();
        }
        let Some(service) = self.dy.udp.services.get(name) else {
            return Err(err(
                &reference.location,
                format!("the UDP service \"{name}\" does not exist"),
            ));
        };
        no_cycle(reference, stack)?;
        stack.push(name.to_owned());
        let result = self.build_udp_service(name, service, stack);
        stack.pop();
        self.udp_services.insert(name.to_owned(), result.clone());
        result
    }

    fn build_udp_service(
        &mut self,
        name: &str,
        service: &'a Located<UdpService>,
        stack: &mut Vec<String>,
    ) -> Built {
        let at = &service.location;
        match (&service.value.load_balancer, &service.value.weighted) {
            (None, None) => Err(err(
                at,
                format!("the UDP service \"{name}\" does not have any type defined"),
            )),
            (Some(_), Some(_)) => Err(err(
                at,
                "cannot create service: multi-types service not supported, consider declaring two different pieces of service instead",
            )),
            (Some(lb), None) => match lb.strategy.value.as_str() {
                "" | "wrr" | "hrw" => Ok(()),
                other => Err(err(
                    if lb.strategy.location.is_some() {
                        &lb.strategy.location
                    } else {
                        at
                    },
                    format!("unknown UDP load-balancer strategy \"{other}\" (wrr or hrw)"),
                )),
            },
            (None, Some(w)) => {
                for child in &w.services {
                    self.udp_service(&child.name, stack)?;
                }
                Ok(())
            }
        }
    }

    // -----------------------------------------------------------------------------------

    /// Statuses of services and middlewares: their own build result when a router built
    /// them, enabled otherwise.
    fn finish_objects(&mut self) {
        fn collect<T>(
            defined: &BTreeMap<String, Located<T>>,
            built: &HashMap<String, Built>,
        ) -> BTreeMap<String, ObjectStatus> {
            defined
                .iter()
                .map(|(name, object)| {
                    let mut p = Problems::default();
                    if let Some(Err(e)) = built.get(name) {
                        p.add(e.clone(), true);
                    }
                    (name.clone(), p.into_status(object.location.clone()))
                })
                .collect()
        }
        let dy = self.dy;
        self.report.http_services = collect(&dy.http.services, &self.http_services);
        self.report.tcp_services = collect(&dy.tcp.services, &self.tcp_services);
        self.report.udp_services = collect(&dy.udp.services, &self.udp_services);
        self.report.http_middlewares = collect(&dy.http.middlewares, &self.http_middlewares);
        self.report.tcp_middlewares = collect(&dy.tcp.middlewares, &self.tcp_middlewares);
    }
}

impl VirtualRouter<'_> {
    /// The router's configured name (children name their parent by it).
    fn router_origin(&self) -> String {
        self.name
            .rsplit_once("-conflicted-")
            .map_or(self.name.as_str(), |(_, o)| o)
            .to_owned()
    }
}

/// The TLS option name a router asks for: `default` when empty.
fn configured_tls(options: &Located<String>) -> String {
    if options.value.is_empty() {
        DEFAULT_TLS_NAME.to_owned()
    } else {
        options.value.clone()
    }
}

fn build_tcp_middleware(name: &str, middleware: &Located<TcpMiddleware>) -> Built {
    let at = &middleware.location;
    let m = &middleware.value;
    let kinds = m.kinds();
    if kinds.is_empty() {
        return Err(err(
            at,
            format!(
                "invalid middleware \"{name}\" configuration: invalid middleware type or middleware does not exist"
            ),
        ));
    }
    if kinds.len() > 1 {
        return Err(err(
            at,
            format!(
                "invalid middleware \"{name}\" configuration: multi-types middleware not supported, consider declaring two different pieces of middleware instead"
            ),
        ));
    }
    if let Some(list) = &m.ip_allow_list {
        check_source_ranges(&list.source_range)?;
    }
    if let Some(list) = &m.ip_white_list {
        check_source_ranges(&list.source_range)?;
    }
    Ok(())
}

/// TLS client authentication and cipher/curve names, checked as Traefik's TLS manager
/// does when it builds the option.
fn build_tls_options(options: &Located<TlsOptions>) -> Built {
    let o = &options.value;
    let at = &options.location;
    let building = |location: &Option<Location>, msg: String| {
        err(
            if location.is_some() { location } else { at },
            format!("building TLS config: {msg}"),
        )
    };
    let auth = &o.client_auth;
    for ca in &auth.ca_files {
        let content = match std::fs::read(&ca.value) {
            Ok(bytes) => bytes,
            // Traefik reads the value as PEM content when it is not a readable file.
            Err(_) => ca.value.clone().into_bytes(),
        };
        if !String::from_utf8_lossy(&content).contains("-----BEGIN CERTIFICATE-----") {
            return Err(building(
                &ca.location,
                "invalid certificate(s) content".to_owned(),
            ));
        }
    }
    let kind = auth.client_auth_type.value.as_str();
    match kind {
        "" | "NoClientCert" | "RequestClientCert" | "RequireAnyClientCert" => {}
        "VerifyClientCertIfGiven" | "RequireAndVerifyClientCert" => {
            if auth.ca_files.is_empty() {
                return Err(building(
                    &auth.client_auth_type.location,
                    format!("invalid clientAuthType: {kind}, CAFiles is required"),
                ));
            }
        }
        other => {
            return Err(building(
                &auth.client_auth_type.location,
                format!("unknown client auth type {other:?}"),
            ));
        }
    }
    for suite in &o.cipher_suites {
        if !GO_CIPHER_SUITES.contains(&suite.value.as_str()) {
            return Err(building(
                &suite.location,
                format!("invalid CipherSuite: {}", suite.value),
            ));
        }
    }
    for curve in &o.curve_preferences {
        if !GO_CURVES.contains(&curve.value.as_str()) {
            return Err(building(
                &curve.location,
                format!("invalid CurveID in curvePreferences: {}", curve.value),
            ));
        }
    }
    Ok(())
}

/// Cipher suite names Go (and so Traefik) knows.
const GO_CIPHER_SUITES: &[&str] = &[
    "TLS_RSA_WITH_RC4_128_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
    "TLS_FALLBACK_SCSV",
];

/// Curve names Traefik accepts (Go constant names and their IANA aliases).
const GO_CURVES: &[&str] = &[
    "CurveP256",
    "CurveP384",
    "CurveP521",
    "X25519",
    "X25519MLKEM768",
    "SecP256r1MLKEM768",
    "SecP384r1MLKEM1024",
    "secp256r1",
    "secp384r1",
    "secp521r1",
    "x25519",
    "x25519mlkem768",
];

/// A server URL must parse as Go's `url.Parse` would accept it for a proxy target.
fn check_server_url(url: &Located<String>) -> Built {
    let text = url.value.as_str();
    let fail = |reason: String| {
        Err(err(
            &url.location,
            format!("error parsing server URL {text}: parse \"{text}\": {reason}"),
        ))
    };
    let Some((scheme, rest)) = text.split_once("://") else {
        return fail("missing scheme (expected http://, https:// or h2c://)".to_owned());
    };
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return fail("first path segment in URL cannot contain colon".to_owned());
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(inner) = host_port.strip_prefix('[') {
        match inner.split_once(']') {
            Some((h, p)) => (h, p),
            None => return fail("missing ']' in host".to_owned()),
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((h, _)) => (h, &host_port[h.len()..]),
            None => (host_port, ""),
        }
    };
    if let Some(bad) = host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:%".contains(*c)))
    {
        return fail(format!("invalid character \"{bad}\" in host name"));
    }
    if let Some(p) = port.strip_prefix(':')
        && !p.chars().all(|c| c.is_ascii_digit())
    {
        return fail(format!("invalid port \"{port}\" after host"));
    }
    Ok(())
}

fn check_users_file(file: &Located<String>) -> Built {
    if file.value.is_empty() {
        return Ok(());
    }
    match std::fs::read(Path::new(&file.value)) {
        Ok(_) => Ok(()),
        Err(e) => {
            let reason = match e.kind() {
                std::io::ErrorKind::NotFound => "no such file or directory".to_owned(),
                std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
                _ => e.to_string(),
            };
            Err(err(
                &file.location,
                format!("open {}: {reason}", file.value),
            ))
        }
    }
}

fn check_source_ranges(ranges: &[Located<String>]) -> Built {
    for range in ranges {
        if super::static_cfg::IpOrNet::parse(&range.value).is_err() {
            return Err(err(
                &range.location,
                format!(
                    "parsing CIDR allow list {}: invalid CIDR address: {}",
                    range.value, range.value
                ),
            ));
        }
    }
    Ok(())
}

fn check_regex(re: &Located<String>) -> Built {
    regex::Regex::new(&re.value).map(|_| ()).map_err(|e| {
        err(
            &re.location,
            format!("invalid regular expression {}: {e}", re.value),
        )
    })
}

/// `500`, or a range `500-599`.
fn check_status_range(text: &str) -> Result<(), String> {
    let valid = |s: &str| s.trim().parse::<u16>().is_ok();
    let ok = match text.split_once('-') {
        Some((a, b)) => valid(a) && valid(b),
        None => valid(text),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("invalid status code range {text:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file_provider::parse_dynamic;
    use crate::config::source::Format;
    use crate::config::static_cfg::load_static;

    /// Accepts rules made of known `Name(...)` calls; enough to exercise validation.
    struct Calls;

    fn calls(rule: &str, known: &[&str]) -> Result<(), String> {
        let mut found = false;
        for (i, _) in rule.match_indices('(') {
            let name: String = rule[..i]
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            if name.is_empty() {
                continue;
            }
            if !known.contains(&name.as_str()) {
                return Err(format!("unsupported function: {name}"));
            }
            found = true;
        }
        if found {
            Ok(())
        } else {
            Err(format!("{rule} is not defined"))
        }
    }

    impl RuleChecker for Calls {
        fn tcp(&self, rule: &str, tls: bool) -> Result<(), String> {
            calls(rule, &["HostSNI", "ClientIP", "ALPN"])?;
            if !tls && rule.contains("HostSNI(") && !rule.contains("HostSNI(`*`)") {
                return Err("has HostSNI matcher, but no TLS on router".to_owned());
            }
            Ok(())
        }
        fn http(&self, rule: &str) -> Result<(), String> {
            calls(rule, &["Host", "PathPrefix", "Path"])
        }
    }

    fn check(eps: &[&str], yaml: &str) -> Report {
        let args: Vec<String> = eps.iter().map(|e| format!("--entryPoints.{e}")).collect();
        let st = load_static(&args, &[]).expect("static").config;
        let dy = parse_dynamic(yaml, Format::Yaml, "dyn.yml").expect("dynamic");
        validate(&st, &dy, &Calls)
    }

    fn disabled(status: &ObjectStatus) -> Vec<String> {
        match &status.status {
            Status::Disabled(reasons) => reasons.clone(),
            other => panic!("expected disabled, got {other:?}"),
        }
    }

    #[test]
    fn missing_service_disables_the_router_and_points_at_the_reference() {
        let report = check(
            &["web.address=:80"],
            "http:\n  routers:\n    r:\n      rule: Host(`a`)\n      service: nope\n",
        );
        let reasons = disabled(&report.http_routers["r@file"]);
        assert_eq!(reasons, ["the service \"nope@file\" does not exist"]);
        let errors = report.errors();
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].location.as_ref().map(|l| (l.line, l.column)),
            Some((5, 16))
        );
        assert!(errors[0].message.starts_with("HTTP router \"r@file\": "));
    }

    #[test]
    fn unused_bad_middleware_stays_enabled_and_used_one_is_disabled() {
        let yaml = "http:\n  routers:\n    r:\n      rule: Host(`a`)\n      service: s\n      middlewares: [auth]\n  services:\n    s:\n      loadBalancer:\n        servers: [{url: 'http://127.0.0.1:1'}]\n  middlewares:\n    auth:\n      basicAuth:\n        usersFile: /nonexistent/htpasswd\n    unused:\n      basicAuth:\n        usersFile: /nonexistent/other\n";
        let report = check(&["web.address=:80"], yaml);
        assert_eq!(
            disabled(&report.http_routers["r@file"]),
            ["open /nonexistent/htpasswd: no such file or directory"]
        );
        assert_eq!(
            disabled(&report.http_middlewares["auth@file"]),
            ["open /nonexistent/htpasswd: no such file or directory"]
        );
        assert_eq!(
            report.http_middlewares["unused@file"].status,
            Status::Enabled
        );
        assert_eq!(report.http_services["s@file"].status, Status::Enabled);
    }

    #[test]
    fn unknown_entrypoint_warns_and_no_valid_entrypoint_disables() {
        let yaml = "udp:\n  routers:\n    u:\n      entryPoints: [web, nope]\n      service: s\n  services:\n    s:\n      loadBalancer:\n        servers: [{address: '127.0.0.1:53'}]\n";
        let report = check(&["web.address=:80", "dns.address=:53/udp"], yaml);
        assert_eq!(
            disabled(&report.udp_routers["u@file"]),
            [
                "entryPoint \"web\" doesn't exist",
                "entryPoint \"nope\" doesn't exist",
                "no valid entryPoint for this router"
            ]
        );
    }

    #[test]
    fn conflicting_tls_options_split_routers_per_entrypoint() {
        let yaml = "http:\n  routers:\n    a:\n      rule: Host(`x.test`)\n      service: s\n      tls: {options: foo}\n    b:\n      rule: Host(`x.test`)\n      service: s\n      tls: {options: bar}\n    c:\n      rule: Host(`y.test`)\n      service: s\n      tls: {options: foo}\n  services:\n    s:\n      loadBalancer:\n        servers: [{url: 'http://127.0.0.1:1'}]\ntls:\n  options:\n    foo: {minVersion: VersionTLS12}\n    bar: {minVersion: VersionTLS13}\n";
        let report = check(&["web.address=:80", "websecure.address=:443"], yaml);
        let names: Vec<&str> = report.http_routers.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "c@file",
                "web-conflicted-a@file",
                "web-conflicted-b@file",
                "websecure-conflicted-a@file",
                "websecure-conflicted-b@file"
            ]
        );
        assert!(matches!(
            report.http_routers["web-conflicted-a@file"].status,
            Status::Warning(_)
        ));
        assert_eq!(report.http_routers["c@file"].status, Status::Enabled);
        let resolved = &report.resolved_http_routers["websecure-conflicted-b@file"];
        assert_eq!(resolved.origin, "b@file");
        assert_eq!(resolved.tls_options.as_deref(), Some("default"));
        assert_eq!(resolved.entry_points, ["websecure"]);
        assert_eq!(report.warnings.len(), 2);
    }

    #[test]
    fn client_auth_verification_needs_ca_files() {
        let yaml = "tcp:\n  routers:\n    t:\n      rule: HostSNI(`a.test`)\n      service: s\n      tls: {options: mtls}\n  services:\n    s:\n      loadBalancer:\n        servers: [{address: '127.0.0.1:1'}]\ntls:\n  options:\n    mtls:\n      clientAuth:\n        clientAuthType: RequireAndVerifyClientCert\n";
        let report = check(&["tcp.address=:9000"], yaml);
        assert_eq!(
            disabled(&report.tcp_routers["t@file"]),
            [
                "building TLS config: invalid clientAuthType: RequireAndVerifyClientCert, CAFiles is required"
            ]
        );
    }

    #[test]
    fn tcp_rules_go_through_the_rule_checker() {
        let yaml = "tcp:\n  routers:\n    t:\n      rule: HostSNI(`a.test`)\n      service: s\n  services:\n    s:\n      loadBalancer:\n        servers: [{address: '127.0.0.1:1'}]\n";
        let report = check(&["tcp.address=:9000"], yaml);
        assert_eq!(
            disabled(&report.tcp_routers["t@file"]),
            ["invalid rule: \"HostSNI(`a.test`)\" , has HostSNI matcher, but no TLS on router"]
        );
    }

    #[test]
    fn service_without_type_is_disabled_with_its_router() {
        let yaml = "tcp:\n  routers:\n    t:\n      rule: HostSNI(`*`)\n      service: s\n  services:\n    s: {}\n";
        let report = check(&["tcp.address=:9000"], yaml);
        let reason = ["the service \"s@file\" does not have any type defined"];
        assert_eq!(disabled(&report.tcp_routers["t@file"]), reason);
        assert_eq!(disabled(&report.tcp_services["s@file"]), reason);
    }

    #[test]
    fn weighted_recursion_is_detected() {
        let yaml = "http:\n  routers:\n    r: {rule: 'Host(`a`)', service: a}\n  services:\n    a:\n      weighted:\n        services: [{name: b}]\n    b:\n      weighted:\n        services: [{name: a}]\n";
        let report = check(&["web.address=:80"], yaml);
        let reasons = disabled(&report.http_routers["r@file"]);
        assert!(reasons[0].contains("recursion detected"), "{reasons:?}");
    }

    #[test]
    fn server_url_and_transport_are_checked() {
        let yaml = "http:\n  routers:\n    r: {rule: 'Host(`a`)', service: s}\n    q: {rule: 'Host(`b`)', service: t}\n  services:\n    s:\n      loadBalancer:\n        servers: [{url: 'http://a.${X}:5000'}]\n    t:\n      loadBalancer:\n        serversTransport: missing\n        servers: [{url: 'https://10.0.0.1:443'}]\n";
        let report = check(&["web.address=:80"], yaml);
        assert!(
            disabled(&report.http_routers["r@file"])[0]
                .contains("invalid character \"{\" in host name")
        );
        assert!(
            disabled(&report.http_services["t@file"])[0]
                .contains("servers transport not found missing@file")
        );
    }

    #[test]
    fn router_without_service_is_a_dead_end() {
        let yaml = "http:\n  routers:\n    r: {rule: 'Host(`a`)'}\n";
        let report = check(&["web.address=:80"], yaml);
        assert_eq!(
            disabled(&report.http_routers["r@file"]),
            [
                "router has no service and no child routers",
                "router must have either a service or child routers"
            ]
        );
    }

    #[test]
    fn udp_routers_may_name_tcp_entrypoints_with_http3_and_http_routers_udp_ones_with_it() {
        let eps = [
            "web.address=:80",
            "websecure.address=:443",
            "websecure.http3=true",
            "game.address=:7777/udp",
            "quic.address=:8443/udp",
            "quic.http3=true",
        ];
        let yaml = "http:\n  routers:\n    onquic: {rule: 'Host(`a`)', service: s, entryPoints: [quic], tls: {}}\n    ongame: {rule: 'Host(`a`)', service: s, entryPoints: [game]}\n  services:\n    s:\n      loadBalancer:\n        servers: [{url: 'http://127.0.0.1:1'}]\nudp:\n  routers:\n    shared: {service: u, entryPoints: [websecure]}\n    plainweb: {service: u, entryPoints: [web]}\n    everywhere: {service: u}\n  services:\n    u:\n      loadBalancer:\n        servers: [{address: '127.0.0.1:9'}]\n";
        let report = check(&eps, yaml);
        assert!(report.udp_router_enabled("shared@file"));
        assert_eq!(
            disabled(&report.udp_routers["plainweb@file"]),
            [
                "entryPoint \"web\" doesn't exist",
                "no valid entryPoint for this router"
            ]
        );
        assert!(report.http_routers["onquic@file"].status == Status::Enabled);
        assert_eq!(
            report.resolved_http_routers["onquic@file"].entry_points,
            ["quic"]
        );
        assert_eq!(
            disabled(&report.http_routers["ongame@file"]),
            [
                "entryPoint \"game\" doesn't exist",
                "no valid entryPoint for this router"
            ]
        );
        // A router naming no entrypoint goes on the UDP entrypoints.
        assert!(report.udp_router_enabled("everywhere@file"));
    }

    #[test]
    fn host_arguments_reads_host_matchers_only() {
        assert_eq!(
            host_arguments("Host(`A.test`, `b.test`) && !HostRegexp(`x`) || Host(\"c\")"),
            ["a.test", "b.test", "c"]
        );
        assert!(host_arguments("PathPrefix(`/`)").is_empty());
    }
}
