//! Deployment artifacts: the Kubernetes manifests in `deploy/` and the `Dockerfile`.
//!
//! Each kustomize overlay is rendered with `kubectl kustomize`, its Kubernetes objects
//! validated against the Kubernetes JSON schemas (`kubernetes-validate`), its custom
//! resources (HTTPRoute, SecurityPolicy, AuthorizationPolicy, VirtualService: no offline
//! schema) checked field by field, and the whole checked for the shape `deploy/README.md`
//! describes; the portcullis.toml in its ConfigMap must pass `portcullis check-config`
//! with the environment the pod gives it. The README's copies of deploy files must equal
//! the files. The Dockerfile is
//! parsed: it must build with CI's command and run the binary it copied, as non-root, with
//! the documented config path. No image is built here.
//!
//! Needs `kubectl` (built-in kustomize) and `python3` with PyYAML (to read the rendered
//! YAML). `kubernetes-validate` (`pip install kubernetes-validate==1.37.0`) is required
//! when CI=true and skipped with a note otherwise.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use base64::Engine;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The build command of the README, bench/ and CI; the Dockerfile must use exactly it.
const CI_BUILD: &str = "cargo build --release --locked";
/// Where the binary looks for its config by default (and where the image's CMD points).
const CONFIG_PATH: &str = "/etc/portcullis/portcullis.toml";
/// Kubernetes versions whose schemas the rendered manifests must satisfy.
const K8S_VERSIONS: [&str; 2] = ["1.29.0", "1.37.0"];
/// The gateway's port (server.listen) and the sidecar app's loopback address.
const GATEWAY_PORT: i64 = 4180;
const APP_ADDR: &str = "127.0.0.1:8080";
/// The gRPC ext_authz port (server.ext_authz_grpc_listen) and the HTTP ext_authz prefix.
const GRPC_PORT: i64 = 9191;
const EXT_AUTHZ_PATH: &str = "/oauth2/ext_authz";
/// server.trusted_proxies in deploy/ext-authz: the documented placeholder for the pod CIDR.
const POD_CIDR_PLACEHOLDER: &str = "10.0.0.0/8";
/// Endpoints the browser must reach on portcullis itself, outside any ext_authz check.
const LOGIN_PATHS: [&str; 3] = ["/oauth2/start", "/oauth2/callback", "/oauth2/sign_out"];
/// Endpoints for trusted proxies only: never routed to portcullis from the public side
/// (the proxies are trusted peers, so a relayed client would be believed).
const PROXY_ONLY_PATHS: [&str; 3] = [
    "/oauth2/ext_authz/reports",
    "/oauth2/ext_authz",
    "/oauth2/auth",
];
/// A path of the app: checked by portcullis, then sent to the app.
const APP_PATH: &str = "/reports/2024";
/// The headers an ext_authz 200 answer carries for the upstream.
const UPSTREAM_HEADERS: [&str; 4] = [
    "authorization",
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
];
/// API groups of custom resources, which have no offline schema: the tests check their
/// fields instead.
const CUSTOM_RESOURCE_GROUPS: [&str; 4] = [
    "gateway.networking.k8s.io",
    "gateway.envoyproxy.io",
    "security.istio.io",
    "networking.istio.io",
];

// ---------------------------------------------------------------------------------------
// Sidecar shape

#[test]
fn sidecar_overlay_is_one_pod_with_the_app_behind_portcullis() {
    let docs = Rendered::new("sidecar");

    let deployments = docs.all("Deployment");
    assert_eq!(deployments.len(), 1, "sidecar: exactly one Deployment");
    let deployment = deployments[0];
    let pod = &deployment["spec"]["template"]["spec"];
    let containers = array(&pod["containers"]);
    assert_eq!(
        containers.len(),
        2,
        "sidecar: the pod runs two containers (the app and portcullis)"
    );
    let app = containers
        .iter()
        .find(|c| c["name"] != "portcullis")
        .expect("the app container");

    // The app listens on the pod's loopback only and publishes no port.
    assert_eq!(
        env_value(app, "LISTEN_ADDR").as_deref(),
        Some(APP_ADDR),
        "the app binds to {APP_ADDR} (env LISTEN_ADDR), reachable from inside the pod only"
    );
    assert!(
        app.get("ports").is_none_or(|p| array(p).is_empty()),
        "the app container declares no ports: only portcullis is reachable"
    );
    for c in containers {
        for port in c.get("ports").map(array).unwrap_or_default() {
            assert_ne!(port["containerPort"], 8080, "port 8080 is never published");
        }
    }

    let gateway_checks = check_gateway(&docs, deployment, "sidecar");

    // The Service reaches portcullis only.
    let service = docs.single("Service");
    assert_service_targets_gateway(service, deployment);

    // portcullis forwards everything to the app over the pod's loopback.
    let effective = gateway_checks.effective_config;
    assert!(
        effective.contains(&format!("upstream = \"http://{APP_ADDR}/\"")),
        "the route's upstream is http://{APP_ADDR}:\n{effective}"
    );
    assert_eq!(
        effective.matches("[[route]]").count(),
        1,
        "one route, to the app"
    );
}

// ---------------------------------------------------------------------------------------
// Standalone shape

#[test]
fn standalone_overlay_runs_two_gateways_behind_an_ingress() {
    let docs = Rendered::new("standalone");

    let deployment = docs.named("Deployment", "portcullis");
    assert_eq!(
        deployment["spec"]["replicas"], 2,
        "standalone: two gateway replicas"
    );
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(
        array(&pod["containers"]).len(),
        1,
        "standalone: the gateway pod runs portcullis alone"
    );
    let gateway_checks = check_gateway(&docs, deployment, "standalone");
    let effective = gateway_checks.effective_config;

    // The Service: to portcullis, with no session affinity: the replicas share their
    // sessions in Redis, and stickiness would hide a store that does not.
    let service = docs.named("Service", "portcullis");
    assert_service_targets_gateway(service, deployment);
    assert!(
        service["spec"]["sessionAffinity"].is_null()
            || service["spec"]["sessionAffinity"] == "None",
        "sessions are shared in Redis: the Service needs no session affinity"
    );

    // The Ingress: TLS for the host that server.public_url names, to the portcullis Service.
    let ingress = docs.single("Ingress");
    let host = ingress["spec"]["rules"][0]["host"]
        .as_str()
        .expect("the Ingress rule names a host");
    let tls_hosts: Vec<&Value> = array(&ingress["spec"]["tls"])
        .iter()
        .flat_map(|t| array(&t["hosts"]))
        .collect();
    assert!(
        tls_hosts.iter().any(|h| *h == host),
        "the Ingress serves {host} over TLS"
    );
    assert!(
        effective.contains(&format!("public_url = \"https://{host}/\"")),
        "server.public_url is the Ingress's https://{host}:\n{effective}"
    );
    for path in array(&ingress["spec"]["rules"][0]["http"]["paths"]) {
        assert_eq!(
            path["backend"]["service"]["name"], service["metadata"]["name"],
            "the Ingress sends everything to the portcullis Service"
        );
    }
    assert!(
        ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/affinity"].is_null(),
        "sessions are shared in Redis: the Ingress needs no cookie affinity"
    );

    check_redis_store(&docs, deployment, &effective);

    let pdb = docs.single("PodDisruptionBudget");
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"], deployment["spec"]["selector"]["matchLabels"],
        "the PodDisruptionBudget covers the gateway pods"
    );
}

/// The standalone gateways use the Redis the overlay carries, for real: the config's
/// `redis_url` names the Redis Service and port, the password reaches both sides from one
/// Secret key, and Redis neither evicts keys (a logout marker or consumed login state
/// must not vanish) nor runs twice during a rollout.
fn check_redis_store(docs: &Rendered, deployment: &Value, effective: &str) {
    assert!(
        effective.lines().any(|l| l == "store = \"redis\""),
        "standalone: the config uses the redis store:\n{effective}"
    );
    let redis_service = docs.named("Service", "redis");
    let port = redis_service["spec"]["ports"][0]["port"]
        .as_i64()
        .expect("the Redis Service's port");
    let url = format!("redis_url = \"redis://redis:{port}/0\"");
    assert!(
        effective.lines().any(|l| l == url),
        "standalone: the config's redis_url is the Redis Service ({url}):\n{effective}"
    );

    let redis = docs.named("Deployment", "redis");
    assert_eq!(
        redis["spec"]["strategy"]["type"], "Recreate",
        "one Redis at a time: two behind the Service would split the sessions"
    );
    let redis_pod = &redis["spec"]["template"]["spec"];
    let server = container(redis_pod, "redis");
    assert!(
        server["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("redis:")),
        "a Redis Deployment"
    );
    assert_eq!(
        resolve_port(server, &redis_service["spec"]["ports"][0]["targetPort"]),
        Some(port),
        "the Redis Service leads to the Redis container"
    );
    let args: Vec<&str> = array(&server["args"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| *a == name)
            .and_then(|i| args.get(i + 1).copied())
    };
    assert_eq!(
        arg("--maxmemory-policy"),
        Some("noeviction"),
        "Redis must not evict keys (logout markers, consumed states): {args:?}"
    );
    assert_eq!(
        arg("--requirepass"),
        Some("$(REDIS_PASSWORD)"),
        "Redis requires a password: {args:?}"
    );

    // One Secret key behind Redis's requirepass and the gateways' redis password.
    let secret_ref = |c: &Value, name: &str| {
        array(&c["env"])
            .iter()
            .find(|v| v["name"] == name)
            .map(|v| v["valueFrom"]["secretKeyRef"].clone())
            .filter(Value::is_object)
            .unwrap_or_else(|| panic!("env {name} comes from a Secret (secretKeyRef)"))
    };
    let gateway = gateway_container(&deployment["spec"]["template"]["spec"]);
    let gateway_ref = secret_ref(gateway, "PORTCULLIS__SESSION__REDIS_PASSWORD");
    assert_eq!(
        gateway_ref,
        secret_ref(server, "REDIS_PASSWORD"),
        "the gateways and Redis read the same password"
    );
    docs.named(
        "Secret",
        gateway_ref["name"].as_str().expect("the Secret's name"),
    );

    let policy = docs.named("NetworkPolicy", "redis");
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"], redis["spec"]["selector"]["matchLabels"],
        "the NetworkPolicy covers the Redis pod"
    );
    assert_eq!(
        policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"],
        "only the gateway pods may reach Redis"
    );
}

// ---------------------------------------------------------------------------------------
// Native-sidecar shape

#[test]
fn sidecar_native_overlay_starts_portcullis_as_a_native_sidecar_before_the_app() {
    // Schema-checked for 1.29 too: an initContainer's restartPolicy is in its schema (and
    // not in 1.27's, which rejects the field).
    let docs = Rendered::new("sidecar-native");
    let sidecar = Rendered::new("sidecar");

    let deployment = docs.single("Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let old_pod = &sidecar.single("Deployment")["spec"]["template"]["spec"];

    // The app is the pod's only container, exactly as in deploy/sidecar.
    let containers = array(&pod["containers"]);
    assert_eq!(
        containers.len(),
        1,
        "sidecar-native: the app is the only regular container"
    );
    assert_eq!(
        containers[0],
        *container(old_pod, "app"),
        "sidecar-native: the app container is deploy/sidecar's, unchanged"
    );

    // portcullis is a native sidecar: an init container that keeps running.
    let init = array(&pod["initContainers"]);
    assert_eq!(
        init.len(),
        1,
        "sidecar-native: one init container, portcullis"
    );
    let gateway = &init[0];
    assert_eq!(gateway["name"], "portcullis");
    assert_eq!(
        gateway["restartPolicy"], "Always",
        "sidecar-native: restartPolicy Always makes the init container a sidecar that runs \
         beside the app instead of one that must exit before it starts"
    );
    let startup = &gateway["startupProbe"]["httpGet"];
    assert_eq!(
        startup["path"], "/healthz",
        "sidecar-native: the app starts once GET /healthz passes (not /readyz: an IdP \
         outage must not hold the app back)"
    );
    assert_eq!(
        resolve_port(gateway, &startup["port"]),
        Some(GATEWAY_PORT),
        "sidecar-native: the startupProbe probes port {GATEWAY_PORT}"
    );
    assert_eq!(gateway["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(gateway["livenessProbe"]["httpGet"]["path"], "/healthz");

    // Otherwise it is deploy/sidecar's portcullis container.
    let mut moved = gateway.clone();
    let moved_fields = moved.as_object_mut().expect("a container object");
    moved_fields.remove("restartPolicy");
    moved_fields.remove("startupProbe");
    assert_eq!(
        moved,
        *container(old_pod, "portcullis"),
        "sidecar-native: the portcullis container is deploy/sidecar's, plus restartPolicy \
         and startupProbe"
    );

    let checks = check_gateway(&docs, deployment, "sidecar-native");
    assert_service_targets_gateway(docs.single("Service"), deployment);
    assert!(
        checks
            .effective_config
            .contains(&format!("upstream = \"http://{APP_ADDR}/\"")),
        "sidecar-native: the route's upstream is http://{APP_ADDR}:\n{}",
        checks.effective_config
    );
}

// ---------------------------------------------------------------------------------------
// portcullis as Envoy's external authorization service (deploy/ext-authz)

#[test]
fn ext_authz_shape_answers_http_and_grpc_checks_from_the_pod_cidr() {
    let docs = Rendered::new("ext-authz");
    check_ext_authz(&docs, "ext-authz");
}

/// The ext_authz service every integration uses, as `check_ext_authz` found it.
struct ExtAuthz {
    /// The portcullis Service and its ports for HTTP (to 4180) and gRPC (to 9191).
    service: String,
    http_port: i64,
    grpc_port: i64,
    /// The host of server.public_url.
    public_host: String,
}

/// deploy/ext-authz as rendered inside `docs`: the standalone gateway (replicas, Redis)
/// without an Ingress, listening for gRPC checks on 9191 and answering only the pod CIDR.
fn check_ext_authz(docs: &Rendered, shape: &str) -> ExtAuthz {
    let deployment = docs.named("Deployment", "portcullis");
    assert_eq!(
        deployment["spec"]["replicas"], 2,
        "{shape}: two replicas, as deploy/standalone"
    );
    assert!(
        docs.all("Ingress").is_empty(),
        "{shape}: no Ingress: the proxy routes the browser to portcullis"
    );
    let checks = check_gateway(docs, deployment, shape);
    let effective = &checks.effective_config;
    check_redis_store(docs, deployment, effective);

    // The gRPC listener: in the config, on the container, published by the Service.
    let listen = format!("ext_authz_grpc_listen = \"0.0.0.0:{GRPC_PORT}\"");
    assert!(
        checks.config_file.lines().any(|l| l == listen),
        "{shape}: portcullis.toml sets `{listen}` under [server]:\n{}",
        checks.config_file
    );
    if !checks.grpc_listener_unchecked {
        assert!(
            effective.lines().any(|l| l == listen),
            "{shape}: the effective config has `{listen}`:\n{effective}"
        );
    }
    let gateway = gateway_container(&deployment["spec"]["template"]["spec"]);
    assert_eq!(
        resolve_port(gateway, &Value::from("grpc")),
        Some(GRPC_PORT),
        "{shape}: the container declares the port grpc = {GRPC_PORT}"
    );

    // Only the proxies' addresses get answers: the pod CIDR, not the loopback default.
    let trusted = format!("trusted_proxies = [\"{POD_CIDR_PLACEHOLDER}\"]");
    assert!(
        effective.lines().any(|l| l == trusted),
        "{shape}: `{trusted}` (the pod CIDR placeholder the proxies' pod IPs fall in):\n{effective}"
    );

    let service = docs.named("Service", "portcullis");
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let selector = service["spec"]["selector"].as_object().expect("selector");
    assert!(
        !selector.is_empty() && selector.iter().all(|(k, v)| &labels[k] == v),
        "{shape}: the Service selects the gateway pods"
    );
    let mut http_port = None;
    let mut grpc_port = None;
    for port in array(&service["spec"]["ports"]) {
        let target = resolve_port(gateway, &port["targetPort"]);
        match target {
            Some(GATEWAY_PORT) => http_port = port["port"].as_i64(),
            Some(GRPC_PORT) => grpc_port = port["port"].as_i64(),
            _ => panic!(
                "{shape}: the Service port {port} leads to neither {GATEWAY_PORT} nor {GRPC_PORT}"
            ),
        }
    }
    let public_host = effective
        .lines()
        .find_map(|l| l.strip_prefix("public_url = \"https://"))
        .and_then(|rest| rest.strip_suffix("/\""))
        .unwrap_or_else(|| panic!("{shape}: an https public_url:\n{effective}"))
        .to_string();
    ExtAuthz {
        service: service["metadata"]["name"].as_str().unwrap().to_string(),
        http_port: http_port.unwrap_or_else(|| panic!("{shape}: a Service port to {GATEWAY_PORT}")),
        grpc_port: grpc_port.unwrap_or_else(|| panic!("{shape}: a Service port to {GRPC_PORT}")),
        public_host,
    }
}

// ---------------------------------------------------------------------------------------
// Envoy Gateway (deploy/gateway-api)

#[test]
fn gateway_api_http_overlay_checks_the_app_route_with_http_ext_authz() {
    let docs = Rendered::new("gateway-api/http");
    let authz = check_ext_authz(&docs, "gateway-api/http");
    let policy = check_gateway_api_routes(&docs, &authz, "gateway-api/http");
    let ext_auth = &policy["spec"]["extAuth"];
    assert!(
        ext_auth["grpc"].is_null(),
        "the HTTP variant has no extAuth.grpc"
    );

    let http = &ext_auth["http"];
    assert_backend(
        &http["backendRefs"],
        &authz.service,
        authz.http_port,
        "extAuth.http",
    );
    assert_eq!(
        http["path"], EXT_AUTHZ_PATH,
        "Envoy sends {EXT_AUTHZ_PATH}<original path> to portcullis"
    );
    assert_eq!(
        header_set(&http["headersToBackend"]),
        header_set(&Value::from(UPSTREAM_HEADERS.to_vec())),
        "extAuth.http.headersToBackend copies exactly the identity headers of a 200 upstream"
    );
    let to_auth = header_set(&ext_auth["headersToExtAuth"]);
    for header in ["cookie", "accept", "authorization"] {
        assert!(
            to_auth.contains(header),
            "extAuth.headersToExtAuth sends {header} in the check (unset, an HTTP check \
             carries no cookie): {to_auth:?}"
        );
    }
}

#[test]
fn gateway_api_grpc_overlay_checks_the_app_route_with_grpc_ext_authz() {
    let docs = Rendered::new("gateway-api/grpc");
    let authz = check_ext_authz(&docs, "gateway-api/grpc");
    let policy = check_gateway_api_routes(&docs, &authz, "gateway-api/grpc");
    let ext_auth = &policy["spec"]["extAuth"];
    assert!(
        ext_auth["http"].is_null(),
        "the gRPC variant has no extAuth.http"
    );
    assert_backend(
        &ext_auth["grpc"]["backendRefs"],
        &authz.service,
        authz.grpc_port,
        "extAuth.grpc",
    );
    assert!(
        ext_auth["headersToExtAuth"].is_null(),
        "gRPC checks carry all request headers (the cookie too) when headersToExtAuth is unset"
    );
}

/// The HTTPRoutes and the SecurityPolicy of a gateway-api overlay: the login endpoints
/// lead to portcullis on a route no policy covers; the app's paths, and the endpoints
/// meant for proxies only, lead elsewhere on a route the policy covers. Returns the policy.
fn check_gateway_api_routes<'a>(docs: &'a Rendered, authz: &ExtAuthz, shape: &str) -> &'a Value {
    let routes = docs.all("HTTPRoute");
    assert!(!routes.is_empty(), "{shape}: HTTPRoutes");
    for route in &routes {
        assert_eq!(route["apiVersion"], "gateway.networking.k8s.io/v1");
        assert!(
            array(&route["spec"]["parentRefs"])
                .iter()
                .any(|p| p["name"].is_string()),
            "{shape}: every HTTPRoute attaches to a Gateway"
        );
    }
    let policy = docs.single("SecurityPolicy");
    assert_eq!(policy["apiVersion"], "gateway.envoyproxy.io/v1alpha1");
    let covered: Vec<&str> = array(&policy["spec"]["targetRefs"])
        .iter()
        .map(|t| {
            assert_eq!(
                t["group"], "gateway.networking.k8s.io",
                "{shape}: targetRef group"
            );
            assert_eq!(
                t["kind"], "HTTPRoute",
                "{shape}: the SecurityPolicy targets an HTTPRoute"
            );
            let name = t["name"].as_str().expect("targetRef name");
            docs.named("HTTPRoute", name);
            name
        })
        .collect();
    assert!(
        !covered.is_empty(),
        "{shape}: the SecurityPolicy names its HTTPRoute"
    );
    assert!(
        policy["spec"]["targetRef"].is_null(),
        "{shape}: targetRefs (targetRef is deprecated)"
    );

    let host = &authz.public_host;
    for path in LOGIN_PATHS {
        let (route, backend) = http_route_for(&routes, host, path)
            .unwrap_or_else(|| panic!("{shape}: no HTTPRoute for https://{host}{path}"));
        assert_eq!(
            backend,
            (authz.service.clone(), authz.http_port),
            "{shape}: {path} goes to portcullis's HTTP port (route {route})"
        );
        assert!(
            !covered.contains(&route.as_str()),
            "{shape}: {path} is on route {route}, which the SecurityPolicy covers: the \
             login would be checked and never end"
        );
    }
    for path in PROXY_ONLY_PATHS.iter().chain([&APP_PATH]) {
        let (route, backend) = http_route_for(&routes, host, path)
            .unwrap_or_else(|| panic!("{shape}: no HTTPRoute for https://{host}{path}"));
        assert_ne!(
            backend.0, authz.service,
            "{shape}: {path} must not be routed to portcullis from the public side (route {route})"
        );
        assert!(
            covered.contains(&route.as_str()),
            "{shape}: {path} is on route {route}, which the SecurityPolicy does not cover"
        );
    }
    policy
}

/// Which HTTPRoute, and which backend (Service name, port), Gateway API picks for a request:
/// among the rules whose hostname and path match, an Exact path beats a PathPrefix and a
/// longer prefix beats a shorter one (Gateway API v1 HTTPRouteRule precedence).
fn http_route_for(routes: &[&Value], host: &str, path: &str) -> Option<(String, (String, i64))> {
    let mut best: Option<((u8, usize), String, &Value)> = None;
    for route in routes {
        let hostnames = array(&route["spec"]["hostnames"]);
        if !hostnames.is_empty() && !hostnames.iter().any(|h| h == host) {
            continue;
        }
        for rule in array(&route["spec"]["rules"]) {
            for m in array(&rule["matches"]) {
                let value = m["path"]["value"].as_str().unwrap_or("/");
                let rank = match m["path"]["type"].as_str().unwrap_or("PathPrefix") {
                    "Exact" if value == path => (1, value.len()),
                    "PathPrefix" => {
                        let prefix = value.trim_end_matches('/');
                        if prefix.is_empty()
                            || path == prefix
                            || path.starts_with(&format!("{prefix}/"))
                        {
                            (0, prefix.len())
                        } else {
                            continue;
                        }
                    }
                    "Exact" => continue,
                    other => panic!("path match type {other} not handled by the test"),
                };
                if best.as_ref().is_none_or(|(r, _, _)| rank > *r) {
                    let name = route["metadata"]["name"].as_str().unwrap().to_string();
                    best = Some((rank, name, rule));
                }
            }
        }
    }
    best.map(|(_, name, rule)| {
        let backends = array(&rule["backendRefs"]);
        assert_eq!(backends.len(), 1, "route {name}: one backend per rule");
        let backend = (
            backends[0]["name"].as_str().unwrap().to_string(),
            backends[0]["port"].as_i64().unwrap(),
        );
        (name, backend)
    })
}

/// A SecurityPolicy's backendRefs: exactly the portcullis Service on `port`.
fn assert_backend(refs: &Value, service: &str, port: i64, what: &str) {
    let refs = array(refs);
    assert_eq!(refs.len(), 1, "{what}: one backendRef");
    assert_eq!(refs[0]["name"], service, "{what}: the portcullis Service");
    assert_eq!(refs[0]["port"], port, "{what}: port {port}");
    assert!(
        refs[0]["kind"].is_null() || refs[0]["kind"] == "Service",
        "{what}: a Service"
    );
}

/// Header names, lowercased (header names are case-insensitive).
fn header_set(list: &Value) -> std::collections::BTreeSet<String> {
    array(list)
        .iter()
        .map(|h| h.as_str().expect("a header name").to_ascii_lowercase())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Istio (deploy/istio)

#[test]
fn istio_overlay_checks_gateway_traffic_with_portcullis_except_the_login() {
    let docs = Rendered::new("istio");
    let authz = check_ext_authz(&docs, "istio");
    let fqdn = |service: &str| format!("{service}.default.svc.cluster.local");
    let host = &authz.public_host;

    // portcullis and Redis run without a sidecar: behind one, every check would come from
    // 127.0.0.6 and trusted_proxies could not tell the gateway from anyone.
    for name in ["portcullis", "redis"] {
        let labels = &docs.named("Deployment", name)["spec"]["template"]["metadata"]["labels"];
        assert_eq!(
            labels["sidecar.istio.io/inject"], "false",
            "istio: the {name} pods are kept out of the mesh"
        );
    }

    // The mesh config's providers.
    let mesh = yaml_to_json(&read(
        &Path::new(ROOT).join("deploy/istio/mesh-config.yaml"),
    ));
    assert_eq!(mesh.len(), 1, "mesh-config.yaml: one document");
    assert_eq!(mesh[0]["apiVersion"], "install.istio.io/v1alpha1");
    assert_eq!(mesh[0]["kind"], "IstioOperator");
    let providers = array(&mesh[0]["spec"]["meshConfig"]["extensionProviders"]);
    let provider = |name: &str| {
        providers
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("mesh-config.yaml: no extensionProvider named {name}"))
    };
    let http_provider = providers
        .iter()
        .find(|p| p["envoyExtAuthzHttp"].is_object())
        .expect("mesh-config.yaml: an envoyExtAuthzHttp provider");
    let http = &http_provider["envoyExtAuthzHttp"];
    assert_eq!(
        http["service"],
        fqdn(&authz.service),
        "envoyExtAuthzHttp.service"
    );
    assert_eq!(
        http["port"], authz.http_port,
        "envoyExtAuthzHttp.port: the Service's HTTP port"
    );
    assert_eq!(
        http["pathPrefix"], EXT_AUTHZ_PATH,
        "envoyExtAuthzHttp.pathPrefix"
    );
    assert_eq!(
        http["statusOnError"], "503",
        "envoyExtAuthzHttp.statusOnError: an unreachable portcullis is a 503, not a 403 denial"
    );
    let in_check = header_set(&http["includeRequestHeadersInCheck"]);
    for header in ["cookie", "authorization", "accept"] {
        assert!(
            in_check.contains(header),
            "includeRequestHeadersInCheck has {header}: {in_check:?}"
        );
    }
    assert_eq!(
        header_set(&http["headersToUpstreamOnAllow"]),
        header_set(&Value::from(UPSTREAM_HEADERS.to_vec())),
        "headersToUpstreamOnAllow: exactly the identity headers of a 200"
    );
    let on_deny = header_set(&http["headersToDownstreamOnDeny"]);
    for header in ["location", "set-cookie", "www-authenticate", "content-type"] {
        assert!(
            on_deny.contains(header),
            "headersToDownstreamOnDeny has {header} (the login redirect, the API challenge): {on_deny:?}"
        );
    }
    let grpc = &providers
        .iter()
        .find(|p| p["envoyExtAuthzGrpc"].is_object())
        .expect("mesh-config.yaml: an envoyExtAuthzGrpc provider")["envoyExtAuthzGrpc"];
    assert_eq!(
        grpc["service"],
        fqdn(&authz.service),
        "envoyExtAuthzGrpc.service"
    );
    assert_eq!(
        grpc["port"], authz.grpc_port,
        "envoyExtAuthzGrpc.port: the Service's gRPC port"
    );
    assert_eq!(
        grpc["statusOnError"], "503",
        "envoyExtAuthzGrpc.statusOnError"
    );

    // The CUSTOM policy names a provider of the mesh config and covers the public host.
    let policy = docs.single("AuthorizationPolicy");
    assert_eq!(policy["apiVersion"], "security.istio.io/v1");
    assert_eq!(policy["spec"]["action"], "CUSTOM");
    let provider_name = policy["spec"]["provider"]["name"]
        .as_str()
        .expect("provider.name");
    provider(provider_name);
    assert!(
        policy["spec"]["selector"]["matchLabels"].is_object(),
        "istio: the policy selects the ingress gateway's pods"
    );
    let rules = array(&policy["spec"]["rules"]);
    assert_eq!(rules.len(), 1, "istio: one rule");
    let operations = array(&rules[0]["to"]);
    assert_eq!(operations.len(), 1, "istio: one operation");
    let operation = &operations[0]["operation"];
    assert!(
        array(&operation["hosts"])
            .iter()
            .any(|h| h == host.as_str()),
        "istio: the policy covers {host}"
    );
    assert!(
        operation["paths"].is_null(),
        "istio: every path but the notPaths is checked"
    );
    let not_paths: Vec<&str> = array(&operation["notPaths"])
        .iter()
        .map(|p| p.as_str().expect("a path"))
        .collect();
    let checked = |path: &str| !not_paths.iter().any(|p| istio_path_matches(p, path));

    // Routing: the login endpoints to portcullis, unchecked; everything else to the app,
    // checked. Excluded paths are exactly the ones routed to portcullis.
    let service = docs.single("VirtualService");
    assert_eq!(service["apiVersion"], "networking.istio.io/v1");
    assert!(array(&service["spec"]["hosts"])
        .iter()
        .any(|h| h == host.as_str()));
    let portcullis = (fqdn(&authz.service), authz.http_port);
    for path in LOGIN_PATHS {
        assert_eq!(
            virtual_service_route(service, path),
            portcullis,
            "istio: {path} goes to portcullis's HTTP port"
        );
        assert!(
            !checked(path),
            "istio: {path} is excluded from the CUSTOM check (notPaths), or the login never ends"
        );
    }
    for path in PROXY_ONLY_PATHS.iter().chain([&APP_PATH]) {
        assert_ne!(
            virtual_service_route(service, path).0,
            portcullis.0,
            "istio: {path} must not be routed to portcullis from the public side"
        );
        assert!(checked(path), "istio: {path} is checked by portcullis");
    }
    for pattern in &not_paths {
        assert!(
            !pattern.contains('*'),
            "istio: notPaths names endpoints exactly ({pattern} would also leave other \
             paths unchecked)"
        );
        assert_eq!(
            virtual_service_route(service, pattern),
            portcullis,
            "istio: the unchecked {pattern} goes to portcullis, not to the app"
        );
    }
}

/// Where an Istio VirtualService sends `path` (host, port): its first matching http rule.
fn virtual_service_route(service: &Value, path: &str) -> (String, i64) {
    let rule = array(&service["spec"]["http"])
        .iter()
        .find(|rule| {
            let matches = array(&rule["match"]);
            matches.is_empty()
                || matches.iter().any(|m| {
                    let uri = &m["uri"];
                    if let Some(exact) = uri["exact"].as_str() {
                        exact == path
                    } else if let Some(prefix) = uri["prefix"].as_str() {
                        path.starts_with(prefix)
                    } else {
                        panic!("uri match {uri} not handled by the test")
                    }
                })
        })
        .unwrap_or_else(|| panic!("the VirtualService routes {path} nowhere"));
    let routes = array(&rule["route"]);
    assert_eq!(routes.len(), 1, "one destination per rule");
    let destination = &routes[0]["destination"];
    (
        destination["host"].as_str().unwrap().to_string(),
        destination["port"]["number"].as_i64().unwrap(),
    )
}

/// Istio's path patterns in AuthorizationPolicy: exact, `prefix*`, `*suffix` or `*`.
fn istio_path_matches(pattern: &str, path: &str) -> bool {
    if pattern == "*" {
        true
    } else if let Some(prefix) = pattern.strip_suffix('*') {
        path.starts_with(prefix)
    } else if let Some(suffix) = pattern.strip_prefix('*') {
        path.ends_with(suffix)
    } else {
        pattern == path
    }
}

// ---------------------------------------------------------------------------------------
// Every overlay, and the README's copies of the files

#[test]
fn every_deploy_directory_renders_and_validates() {
    let deploy = Path::new(ROOT).join("deploy");
    let mut dirs = Vec::new();
    let mut stack = vec![deploy.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read deploy/") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "kustomization.yaml") {
                dirs.push(
                    dir.strip_prefix(&deploy)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    dirs.sort();
    for expected in [
        "base",
        "sidecar",
        "sidecar-native",
        "standalone",
        "ext-authz",
        "gateway-api/routes",
        "gateway-api/http",
        "gateway-api/grpc",
        "istio",
    ] {
        assert!(
            dirs.iter().any(|d| d == expected),
            "deploy/{expected}/kustomization.yaml exists: {dirs:?}"
        );
    }
    for dir in &dirs {
        let docs = Rendered::new(dir);
        assert!(!docs.docs.is_empty(), "deploy/{dir} renders objects");
    }
}

/// Files the README's recipes show in full, each after a `<!-- file: PATH -->` line.
const README_FILES: [&str; 3] = [
    "deploy/sidecar-native/native-sidecar.yaml",
    "deploy/gateway-api/http/security-policy.yaml",
    "deploy/istio/mesh-config.yaml",
];

#[test]
fn readme_recipes_show_the_deploy_files_verbatim() {
    let readme = read(&Path::new(ROOT).join("README.md"));
    let lines: Vec<&str> = readme.lines().collect();
    let mut shown = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(file) = line
            .strip_prefix("<!-- file: ")
            .and_then(|rest| rest.strip_suffix(" -->"))
        else {
            continue;
        };
        let fence = lines
            .get(i + 1)
            .filter(|l| l.starts_with("```"))
            .unwrap_or_else(|| panic!("README: a fenced block right after `{line}`"));
        let end = lines[i + 2..]
            .iter()
            .position(|l| *l == "```")
            .unwrap_or_else(|| panic!("README: the block after `{line}` ({fence}) is closed"));
        let block: String = lines[i + 2..i + 2 + end]
            .iter()
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            block,
            read(&Path::new(ROOT).join(file)),
            "README: the block after `{line}` is not {file} as committed; copy the file in"
        );
        shown.push(file);
    }
    for file in README_FILES {
        assert!(
            shown.contains(&file),
            "README shows {file} (after a `<!-- file: {file} -->` line)"
        );
    }
    for dir in [
        "sidecar-native",
        "gateway-api/http",
        "gateway-api/grpc",
        "istio",
    ] {
        let apply = format!("kubectl apply -k deploy/{dir}");
        assert!(readme.contains(&apply), "README: the recipe says `{apply}`");
    }
}

// ---------------------------------------------------------------------------------------
// Dockerfile

#[test]
fn dockerfile_builds_with_ci_command_and_runs_binary_as_non_root() {
    let text = read(&Path::new(ROOT).join("Dockerfile"));
    let stages = dockerfile_stages(&text);
    assert!(stages.len() >= 2, "a multi-stage build");
    let (builder, runtime) = (&stages[0], &stages[stages.len() - 1]);
    assert_eq!(
        builder.name.as_deref(),
        Some("builder"),
        "the first stage is `AS builder`"
    );

    // The builder compiles with exactly CI's command.
    assert!(
        read(&Path::new(ROOT).join("README.md")).contains(CI_BUILD),
        "README.md documents `{CI_BUILD}`"
    );
    let commands: Vec<String> = builder
        .all("RUN")
        .iter()
        .flat_map(|run| shell_commands(run))
        .collect();
    let cargo: Vec<&String> = commands.iter().filter(|c| c.starts_with("cargo")).collect();
    assert_eq!(
        cargo,
        [CI_BUILD],
        "the builder's only cargo command is CI's `{CI_BUILD}` (RUN commands: {commands:?})"
    );

    // Where the builder leaves the binary: copied out of target/ (a cache mount), or
    // target/release under WORKDIR.
    let workdir = builder.last("WORKDIR").unwrap_or("/");
    let built = commands
        .iter()
        .find_map(|c| c.strip_prefix("cp target/release/portcullis "))
        .map(|dst| dst.trim().to_string())
        .unwrap_or_else(|| {
            format!(
                "{}/target/release/portcullis",
                workdir.trim_end_matches('/')
            )
        });

    // The runtime stage copies that binary and runs it.
    let copy = runtime
        .all("COPY")
        .into_iter()
        .find(|c| c.starts_with("--from=builder "))
        .expect("the runtime stage copies the binary from the builder");
    let parts: Vec<&str> = copy.split_whitespace().collect();
    assert_eq!(parts.len(), 3, "COPY --from=builder <src> <dst>: {copy}");
    assert_eq!(
        parts[1], built,
        "the runtime copies the binary the builder made"
    );
    let installed = if parts[2].ends_with('/') {
        format!("{}portcullis", parts[2])
    } else {
        parts[2].to_string()
    };
    let entrypoint = json_array(runtime.last("ENTRYPOINT").expect("an ENTRYPOINT"));
    assert_eq!(
        entrypoint,
        [installed.as_str()],
        "ENTRYPOINT (exec form) is the copied binary"
    );

    // Not root: a numeric uid, so Kubernetes' runAsNonRoot can verify it.
    let user = runtime.last("USER").expect("the runtime stage sets USER");
    let uid: u32 = user
        .split(':')
        .next()
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| panic!("USER {user:?} is a numeric uid"));
    assert_ne!(uid, 0, "the image runs as non-root");

    // The CMD runs the gateway with the documented config path.
    let cmd = json_array(runtime.last("CMD").expect("a CMD"));
    assert_eq!(cmd.first().map(String::as_str), Some("run"));
    let config = cmd
        .iter()
        .position(|a| a == "--config")
        .and_then(|i| cmd.get(i + 1))
        .expect("CMD passes --config <file>");
    assert_eq!(config, CONFIG_PATH, "CMD reads the documented config path");
    assert!(
        runtime
            .all("EXPOSE")
            .iter()
            .any(|e| e.split_whitespace().any(|p| p == format!("{GATEWAY_PORT}"))),
        "EXPOSE {GATEWAY_PORT}"
    );

    // glibc: a binary built on a newer Debian than the runtime's would not start.
    let (build_image, run_image) = (&builder.image, &runtime.image);
    assert!(
        build_image.contains("bookworm")
            && (run_image.contains("debian12") || run_image.contains("bookworm")),
        "builder ({build_image}) and runtime ({run_image}) are both Debian 12 (bookworm)"
    );
}

// ---------------------------------------------------------------------------------------
// The gateway container, common to all shapes

/// What `check_gateway` found, for the shape-specific assertions.
struct GatewayChecks {
    /// `portcullis check-config` output with the pod's environment (valid secrets).
    effective_config: String,
    /// The ConfigMap's portcullis.toml as committed.
    config_file: String,
    /// This binary does not know `server.ext_authz_grpc_listen` yet, so check-config ran
    /// on the file without that line (see `config_this_binary_reads`).
    grpc_listener_unchecked: bool,
}

/// Checks the portcullis container of `deployment` (probes, hardening, secrets, config
/// mount, metrics) and runs `check-config` on its ConfigMap's portcullis.toml.
fn check_gateway(docs: &Rendered, deployment: &Value, shape: &str) -> GatewayChecks {
    let pod = &deployment["spec"]["template"]["spec"];
    let gateway = gateway_container(pod);

    assert!(
        array(&gateway["ports"])
            .iter()
            .any(|p| p["containerPort"] == GATEWAY_PORT),
        "{shape}: portcullis declares its port {GATEWAY_PORT}"
    );

    // Probes: liveness /healthz, readiness /readyz, on the gateway's port.
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &gateway[probe]["httpGet"];
        assert_eq!(get["path"], path, "{shape}: {probe} is GET {path}");
        assert_eq!(
            resolve_port(gateway, &get["port"]),
            Some(GATEWAY_PORT),
            "{shape}: {probe} probes port {GATEWAY_PORT}"
        );
    }

    // Hardening, for every container of the pod (the container's setting or the pod's).
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
        "{shape}: seccompProfile RuntimeDefault"
    );
    for c in pod_containers(pod) {
        let name = c["name"].as_str().unwrap_or("?");
        let effective = |key: &str| {
            let own = &c["securityContext"][key];
            if own.is_null() {
                pod["securityContext"][key].clone()
            } else {
                own.clone()
            }
        };
        assert_eq!(
            effective("runAsNonRoot"),
            true,
            "{shape}/{name}: runAsNonRoot"
        );
        let sc = &c["securityContext"];
        assert_eq!(
            sc["readOnlyRootFilesystem"], true,
            "{shape}/{name}: read-only root"
        );
        assert_eq!(
            sc["allowPrivilegeEscalation"], false,
            "{shape}/{name}: allowPrivilegeEscalation false"
        );
        assert!(
            array(&sc["capabilities"]["drop"])
                .iter()
                .any(|c| *c == "ALL"),
            "{shape}/{name}: capabilities drop ALL"
        );
        assert!(
            c["resources"]["requests"].is_object() && c["resources"]["limits"].is_object(),
            "{shape}/{name}: resource requests and limits"
        );
    }
    let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap_or(30);
    assert!(
        grace > 30,
        "{shape}: terminationGracePeriodSeconds ({grace}) exceeds drain_timeout (30s)"
    );

    // The config file: --config points into the mounted ConfigMap.
    let args: Vec<String> = array(&gateway["args"])
        .iter()
        .map(|a| a.as_str().expect("string args").to_string())
        .collect();
    let config_path = args
        .iter()
        .position(|a| a == "--config")
        .and_then(|i| args.get(i + 1))
        .unwrap_or_else(|| panic!("{shape}: portcullis args pass --config: {args:?}"));
    assert_eq!(
        config_path, CONFIG_PATH,
        "{shape}: the documented config path"
    );
    let (dir, file) = config_path.rsplit_once('/').expect("an absolute path");
    let mount = array(&gateway["volumeMounts"])
        .iter()
        .find(|m| m["mountPath"] == dir)
        .unwrap_or_else(|| panic!("{shape}: a volume is mounted at {dir}"));
    let volume = array(&pod["volumes"])
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    let config_map_name = volume["configMap"]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("{shape}: {dir} is a ConfigMap volume"));
    let config_map = docs.named("ConfigMap", config_map_name);
    let toml = config_map["data"][file]
        .as_str()
        .unwrap_or_else(|| panic!("{shape}: ConfigMap {config_map_name} has {file}"));

    // Secrets come from a Secret, as environment variables the pod resolves.
    let mut pod_env = BTreeMap::new();
    for var in array(&gateway["env"]) {
        let name = var["name"].as_str().expect("env name").to_string();
        let value = if let Some(v) = var["value"].as_str() {
            v.to_string()
        } else if var["valueFrom"]["secretKeyRef"].is_object() {
            let r = &var["valueFrom"]["secretKeyRef"];
            secret_value(
                docs,
                r["name"].as_str().unwrap(),
                r["key"].as_str().unwrap(),
            )
        } else {
            panic!("{shape}: env {name} is a value or a secretKeyRef");
        };
        pod_env.insert(name, value);
    }
    for name in [
        "PORTCULLIS__OIDC__CLIENT_SECRET",
        "PORTCULLIS__SESSION__SECRET",
    ] {
        let var = array(&gateway["env"])
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("{shape}: portcullis gets {name}"));
        assert!(
            var["valueFrom"]["secretKeyRef"].is_object(),
            "{shape}: {name} comes from a Secret (secretKeyRef), not a literal"
        );
    }

    // The metrics port the pod annotations name is the one the config listens on.
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    let metrics_port: i64 = annotations["prometheus.io/port"]
        .as_str()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{shape}: the pod names its metrics port"));
    assert!(
        array(&gateway["ports"])
            .iter()
            .any(|p| p["containerPort"] == metrics_port),
        "{shape}: portcullis declares the metrics port {metrics_port}"
    );

    // check-config on the ConfigMap's portcullis.toml.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join(file);
    let (checked_toml, grpc_listener_unchecked) = config_this_binary_reads(toml, shape);
    std::fs::write(&config, checked_toml).expect("write config");

    // The committed Secret holds a placeholder the gateway refuses, so nobody runs with a
    // session secret published in git.
    let placeholder = check_config(&config, &pod_env);
    assert!(
        !placeholder.status.success() && stderr(&placeholder).contains("session.secret"),
        "{shape}: with the committed placeholder Secret, check-config must refuse \
         session.secret (keep the placeholder shorter than 32 bytes); it said: {}{}",
        stdout(&placeholder),
        stderr(&placeholder)
    );

    // No secret is in the ConfigMap: without the env, the session secret is missing...
    let bare = check_config(&config, &BTreeMap::new());
    assert!(
        !bare.status.success() && stderr(&bare).contains("session.secret: missing"),
        "{shape}: the ConfigMap must not hold the session secret, but check-config \
         without PORTCULLIS__SESSION__SECRET said: {}{}",
        stdout(&bare),
        stderr(&bare)
    );
    // ...and the client secret too.
    let mut env = pod_env.clone();
    env.remove("PORTCULLIS__OIDC__CLIENT_SECRET");
    env.insert("PORTCULLIS__SESSION__SECRET".into(), "s".repeat(48));
    let without_client_secret = check_config(&config, &env);
    assert!(
        without_client_secret.status.success(),
        "{shape}: check-config: {}",
        stderr(&without_client_secret)
    );
    assert!(
        !stdout(&without_client_secret).contains("client_secret ="),
        "{shape}: the ConfigMap must not hold the OIDC client secret"
    );

    // With the pod's environment and a real session secret in the Secret: valid.
    let mut env = pod_env;
    env.insert(
        "PORTCULLIS__SESSION__SECRET".into(),
        base64::engine::general_purpose::STANDARD.encode([7u8; 36]),
    );
    let ok = check_config(&config, &env);
    assert!(
        ok.status.success(),
        "{shape}: portcullis check-config rejects the ConfigMap's {file}: {}",
        stderr(&ok)
    );
    let effective = stdout(&ok);
    for line in [
        format!("listen = \"0.0.0.0:{GATEWAY_PORT}\""),
        format!("metrics_listen = \"0.0.0.0:{metrics_port}\""),
        "client_secret = \"[redacted]\"".to_string(),
        "secret = [\"[redacted]\"]".to_string(),
        "cookie_secure = true".to_string(),
    ] {
        assert!(
            effective.lines().any(|l| l == line),
            "{shape}: effective config has `{line}`:\n{effective}"
        );
    }
    GatewayChecks {
        effective_config: effective,
        config_file: toml.to_string(),
        grpc_listener_unchecked,
    }
}

/// The config file as this binary can check it. `server.ext_authz_grpc_listen` (the gRPC
/// ext_authz listener) is being added to the gateway alongside these manifests; a binary
/// that rejects exactly that key as unknown predates it. Then check-config runs on the file
/// without that line (with a note) and every other key is still checked; a binary that
/// knows the key checks the whole file, and any other unknown key fails as before.
fn config_this_binary_reads(toml: &str, shape: &str) -> (String, bool) {
    const KEY: &str = "ext_authz_grpc_listen";
    if !toml.lines().any(|l| l.trim_start().starts_with(KEY)) {
        return (toml.to_string(), false);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("probe.toml");
    std::fs::write(&config, toml).expect("write config");
    let env = BTreeMap::from([("PORTCULLIS__SESSION__SECRET".to_string(), "s".repeat(48))]);
    let out = check_config(&config, &env);
    if out.status.success() || !stderr(&out).contains(&format!("server.{KEY}: unknown key")) {
        return (toml.to_string(), false);
    }
    eprintln!(
        "NOTE: {shape}: this portcullis binary does not know server.{KEY} yet; \
         check-config runs on the config without that line"
    );
    let without: Vec<&str> = toml
        .lines()
        .filter(|l| !l.trim_start().starts_with(KEY))
        .collect();
    (without.join("\n") + "\n", true)
}

/// The Service's ports all lead to portcullis's 4180 (never the app's 8080), and its
/// selector picks the gateway's pods.
fn assert_service_targets_gateway(service: &Value, deployment: &Value) {
    let name = &service["metadata"]["name"];
    let gateway = gateway_container(&deployment["spec"]["template"]["spec"]);
    let ports = array(&service["spec"]["ports"]);
    assert!(!ports.is_empty(), "Service {name} has ports");
    for port in ports {
        let target = if port["targetPort"].is_null() {
            &port["port"]
        } else {
            &port["targetPort"]
        };
        assert_eq!(
            resolve_port(gateway, target),
            Some(GATEWAY_PORT),
            "Service {name} targets portcullis's {GATEWAY_PORT} (not the app's 8080), got {target}"
        );
    }
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let selector = service["spec"]["selector"]
        .as_object()
        .expect("Service selector");
    assert!(
        !selector.is_empty() && selector.iter().all(|(k, v)| &labels[k] == v),
        "Service {name} selects the gateway pods"
    );
}

/// A container port given as a number or as the name of one of the container's ports.
fn resolve_port(container: &Value, port: &Value) -> Option<i64> {
    match port {
        Value::Number(n) => n.as_i64(),
        Value::String(name) => array(&container["ports"])
            .iter()
            .find(|p| p["name"] == name.as_str())
            .and_then(|p| p["containerPort"].as_i64()),
        _ => None,
    }
}

/// A key of a Secret in the rendered output (stringData, else base64 data).
fn secret_value(docs: &Rendered, name: &str, key: &str) -> String {
    let secret = docs.named("Secret", name);
    if let Some(v) = secret["stringData"][key].as_str() {
        return v.to_string();
    }
    let encoded = secret["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("Secret {name} has the key {key}"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("base64 Secret data");
    String::from_utf8(bytes).expect("UTF-8 secret")
}

/// `portcullis check-config --config <file>` with exactly `env` as its PORTCULLIS settings.
fn check_config(config: &Path, env: &BTreeMap<String, String>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    cmd.arg("check-config").arg("--config").arg(config);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PORTCULLIS") {
            cmd.env_remove(key);
        }
    }
    cmd.envs(env);
    cmd.output().expect("run portcullis check-config")
}

// ---------------------------------------------------------------------------------------
// Rendering and reading the manifests

/// The resources `kubectl kustomize deploy/<overlay>` renders, as JSON.
struct Rendered {
    overlay: String,
    docs: Vec<Value>,
}

impl Rendered {
    fn new(overlay: &str) -> Rendered {
        let dir = Path::new(ROOT).join("deploy").join(overlay);
        let out = match Command::new("kubectl")
            .arg("kustomize")
            .arg(&dir)
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) => out,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "kubectl not found: the deploy tests render deploy/{overlay} with \
                 `kubectl kustomize` (kubectl 1.21+ has kustomize v4+ built in). Install kubectl."
            ),
            Err(e) => panic!("running kubectl: {e}"),
        };
        assert!(
            out.status.success(),
            "kubectl kustomize deploy/{overlay} failed: {}",
            stderr(&out)
        );
        let yaml = String::from_utf8(out.stdout).expect("UTF-8 YAML");
        validate_schema(overlay, &yaml);
        Rendered {
            overlay: overlay.to_string(),
            docs: yaml_to_json(&yaml),
        }
    }

    fn all(&self, kind: &str) -> Vec<&Value> {
        self.docs.iter().filter(|d| d["kind"] == kind).collect()
    }

    fn single(&self, kind: &str) -> &Value {
        let all = self.all(kind);
        assert_eq!(all.len(), 1, "{}: exactly one {kind}", self.overlay);
        all[0]
    }

    fn named(&self, kind: &str, name: &str) -> &Value {
        self.docs
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{}: no {kind} named {name}", self.overlay))
    }
}

/// Validates rendered manifests against the Kubernetes schemas with kubernetes-validate
/// (strict: unknown fields are errors). Skipped with a note when the package is missing,
/// except in CI.
fn validate_schema(overlay: &str, yaml: &str) {
    let has_validator = Command::new("python3")
        .args(["-c", "import kubernetes_validate"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_validator {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "CI=true but the Python package kubernetes-validate is missing: \
                 pip install kubernetes-validate==1.37.0"
            );
        }
        eprintln!(
            "NOTE: skipping the Kubernetes schema validation of deploy/{overlay}: \
             pip install kubernetes-validate==1.37.0 to run it"
        );
        return;
    }
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(yaml.as_bytes())
        .expect("write rendered YAML");
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "kubernetes_validate", "--strict", "--quiet"]);
    for version in K8S_VERSIONS {
        cmd.args(["-k", version]);
    }
    let out = cmd
        .arg(file.path())
        .output()
        .expect("run kubernetes-validate");
    assert!(
        out.status.success(),
        "deploy/{overlay} does not validate against the Kubernetes schemas {K8S_VERSIONS:?}:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
    // The validator skips, with a warning, any kind it has no schema for: fine for the
    // custom resources (checked field by field by the tests), but a core object with a
    // mistyped apiVersion would go unchecked the same way.
    let output = stdout(&out) + &stderr(&out);
    for line in output
        .lines()
        .filter(|l| l.contains("Couldn't find schema"))
    {
        let api_version = line
            .split("with api version ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("deploy/{overlay}: unexpected validator line: {line}"));
        let group = api_version.split_once('/').map_or("", |(group, _)| group);
        assert!(
            CUSTOM_RESOURCE_GROUPS.contains(&group),
            "deploy/{overlay}: no Kubernetes schema for {api_version} (a mistyped apiVersion? \
             only the custom resources of {CUSTOM_RESOURCE_GROUPS:?} may go unvalidated): {line}"
        );
    }
}

/// Multi-document YAML to JSON values, with python3 and PyYAML.
fn yaml_to_json(yaml: &str) -> Vec<Value> {
    const SCRIPT: &str = "import json, sys, yaml\n\
        docs = [d for d in yaml.safe_load_all(sys.stdin) if d is not None]\n\
        json.dump(docs, sys.stdout)\n";
    let mut child = match Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!("python3 is needed to read the rendered YAML: {e}"),
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(yaml.as_bytes())
        .expect("write YAML to python3");
    let out = child.wait_with_output().expect("python3");
    assert!(
        out.status.success(),
        "python3 could not read the rendered YAML (PyYAML missing? pip install pyyaml; \
         kubernetes-validate brings it): {}",
        stderr(&out)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from python3")
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    array(&pod["containers"])
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("a container named {name}"))
}

/// The portcullis container: one of the pod's containers, or a native sidecar among its
/// initContainers.
fn gateway_container(pod: &Value) -> &Value {
    pod_containers(pod)
        .into_iter()
        .find(|c| c["name"] == "portcullis")
        .expect("a container named portcullis (in containers or initContainers)")
}

/// The pod's containers and init containers.
fn pod_containers(pod: &Value) -> Vec<&Value> {
    array(&pod["containers"])
        .iter()
        .chain(array(&pod["initContainers"]))
        .collect()
}

fn env_value(container: &Value, name: &str) -> Option<String> {
    array(&container["env"])
        .iter()
        .find(|v| v["name"] == name)
        .and_then(|v| v["value"].as_str())
        .map(String::from)
}

/// A JSON array's items; an absent field is empty.
fn array(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or_default()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

// ---------------------------------------------------------------------------------------
// Reading the Dockerfile

/// One `FROM` stage: its image, `AS` name and instructions (keyword, arguments).
struct Stage {
    image: String,
    name: Option<String>,
    instructions: Vec<(String, String)>,
}

impl Stage {
    fn all(&self, keyword: &str) -> Vec<&str> {
        self.instructions
            .iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, args)| args.as_str())
            .collect()
    }

    fn last(&self, keyword: &str) -> Option<&str> {
        self.all(keyword).last().copied()
    }
}

/// Splits a Dockerfile into stages: comments dropped, `\` continuations joined.
fn dockerfile_stages(text: &str) -> Vec<Stage> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part.trim());
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<Stage> = Vec::new();
    for line in logical {
        let (keyword, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let (keyword, args) = (keyword.to_ascii_uppercase(), args.trim().to_string());
        if keyword == "FROM" {
            let words: Vec<&str> = args.split_whitespace().collect();
            let image = words
                .iter()
                .find(|w| !w.starts_with("--"))
                .expect("FROM <image>")
                .to_string();
            let name = words
                .iter()
                .position(|w| w.eq_ignore_ascii_case("as"))
                .and_then(|i| words.get(i + 1))
                .map(|n| n.to_string());
            stages.push(Stage {
                image,
                name,
                instructions: Vec::new(),
            });
        } else {
            stages
                .last_mut()
                .expect("an instruction before the first FROM")
                .instructions
                .push((keyword, args));
        }
    }
    stages
}

/// The shell commands of a `RUN` (its `--mount=`/`--network=` flags dropped), split at
/// `&&` and `;`, whitespace normalized.
fn shell_commands(run: &str) -> Vec<String> {
    let mut rest = run.trim();
    while rest.starts_with("--") {
        rest = rest
            .split_once(char::is_whitespace)
            .map_or("", |(_, r)| r)
            .trim_start();
    }
    rest.split("&&")
        .flat_map(|c| c.split(';'))
        .map(|c| c.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|c| !c.is_empty())
        .collect()
}

/// An exec-form (JSON array) ENTRYPOINT or CMD.
fn json_array(text: &str) -> Vec<String> {
    serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("exec form (a JSON array of strings) expected: {text}: {e}"))
}
