# flashgate container image: a Rust builder stage, then a slim Debian runtime that holds
# only the gateway, the container config and CA certificates. A second runtime stage,
# `demo-store`, holds the demo store (an example, not part of the product) for compose.
#
#   docker build -t flashgate .
#   docker run --rm -p 8080:8080 -e FLASHGATE_JWT_SECRET=... flashgate   # needs Redis: see docker-compose.yml
#
# How this file is checked (docs/operations.md): no Docker engine runs on our build
# machines, so the one step that can break — the Rust build — runs a command that CI
# runs too: scripts/test.sh executes `cargo build --release --locked --bins --examples`, character
# for character, with the same toolchain version pinned below. Keep the two identical.

# Pinned to the toolchain CI builds with (rustc 1.95); bookworm, to match the runtime's glibc.
ARG RUST_IMAGE=rust:1.95-slim-bookworm

FROM ${RUST_IMAGE} AS builder
WORKDIR /src
# The whole context (see .dockerignore): src/, lua/ (embedded with include_str!), and
# tests/ and the like, which cargo needs to resolve the manifest's targets.
COPY . .
# The build command CI verifies (scripts/test.sh): do not change one without the other.
RUN cargo build --release --locked --bins --examples
# [profile.release] keeps line tables (debug = "line-tables-only") so panics name file:line;
# compressing them keeps that and takes the binaries from ~80 MB to ~25 MB.
RUN objcopy --compress-debug-sections=zlib target/release/flashgate \
 && objcopy --compress-debug-sections=zlib target/release/examples/demo_store

# The demo store for docker-compose.yml (`target: demo-store`); never in the product image.
FROM debian:bookworm-slim AS demo-store
# curl for docker-compose.yml's healthcheck of the store.
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin store \
 && install -d -o store -g store /data
COPY --from=builder /src/target/release/examples/demo_store /usr/local/bin/
USER 10001:10001
EXPOSE 3000
ENTRYPOINT ["demo_store"]

# The product image: the gateway only. Last, so a plain `docker build` makes it.
FROM debian:bookworm-slim AS flashgate
# curl only for HEALTHCHECK: flashgate has no health subcommand.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin flashgate \
 && install -d -o flashgate -g flashgate /data
COPY --from=builder /src/target/release/flashgate /usr/local/bin/
# The container config: listeners on 0.0.0.0, Redis and the store by service name.
COPY config/docker/gateway.toml /etc/flashgate/gateway.toml
COPY config/campaigns/ /etc/flashgate/campaigns/
# The Redis scripts are compiled into the binary; this copy is for reading only.
COPY lua/ /usr/share/flashgate/lua/
USER 10001:10001
EXPOSE 8080 9090
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS -o /dev/null http://127.0.0.1:9090/healthz || exit 1
ENTRYPOINT ["flashgate"]
CMD ["serve", "--config", "/etc/flashgate/gateway.toml"]
