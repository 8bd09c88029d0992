# syntax=docker/dockerfile:1
# portcullis container image:
#   docker build -t portcullis .
#   docker run -p 4180:4180 -v "$PWD/my.toml:/etc/portcullis/portcullis.toml:ro" portcullis
# The config must listen on 0.0.0.0:4180 (server.listen) to be reachable from outside the
# container; any key can also come from the environment (PORTCULLIS__SECTION__KEY).
# Kubernetes manifests: deploy/ (see deploy/README.md).

# --- build -------------------------------------------------------------------------------
# bookworm, not plain `rust:1.95-slim`: the binary links glibc dynamically, and it must not
# need a newer glibc than the runtime image below (Debian 12, glibc 2.36) has.
FROM rust:1.95-slim-bookworm AS builder
WORKDIR /src
# Only what the build reads (Cargo.toml has no build script and src/ includes no outside
# files); .dockerignore keeps target/, .git and node_modules out of the context anyway.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Dependency caching, kept simple: BuildKit cache mounts keep the crates.io downloads and
# the compiled dependencies between builds, so a source change recompiles only portcullis.
# The cache mount is not part of the image, hence the copy out of target/.
# The cargo command is exactly the one CI and bench/ use (tests/deploy.rs checks this).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && cp target/release/portcullis /usr/local/bin/portcullis

# --- run ---------------------------------------------------------------------------------
# distroless "cc": glibc, libgcc_s (all the binary links dynamically: aws-lc is compiled
# in statically), CA certificates for https identity providers and upstreams (the binary
# also carries Mozilla's roots), tzdata, a nonroot user (65532) and nothing else: no shell
# and no package manager to exploit. The price: no shell for `docker exec`, and no curl
# for a Docker HEALTHCHECK (see below). debian:bookworm-slim + ca-certificates would work
# too, several times larger and with a shell and apt inside.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /usr/local/bin/portcullis /usr/local/bin/portcullis
# 65532 = "nonroot" in distroless; numeric so Kubernetes runAsNonRoot can verify it.
USER 65532:65532
# 4180: the gateway (server.listen). Metrics share it unless server.metrics_listen is set
# (the manifests in deploy/ use 0.0.0.0:9090 so /metrics stays off the public Service).
EXPOSE 4180
# No HEALTHCHECK: the image has no HTTP client to run one. Probe from outside instead:
# GET /healthz (liveness: 200 while serving) and GET /readyz (readiness: 200 once the IdP's
# discovery document is loaded and the session store answers) -- Kubernetes httpGet probes
# in deploy/base/deployment.yaml. SIGTERM (the default stop signal) drains in-flight
# requests for up to server.drain_timeout (30s): give `docker stop -t 35` / the pod's
# terminationGracePeriodSeconds more than that.
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["run", "--config", "/etc/portcullis/portcullis.toml", "--log-format", "json"]
