#!/usr/bin/env bash
# THE test command (README: ./scripts/test.sh; also `make test` and .ci/run).
#
# On a fresh Debian machine with only Rust it first installs what the tests need
# (redis-server, redis-tools, PostgreSQL, rabbitmq-server, chromium; curl, openssl, python3
# and nodejs for the manual's examples; pika from PyPI), then runs in order: rustfmt check, clippy with -D warnings,
# cargo machete and cargo deny (installed from crates.io when missing),
# the Dockerfile's release build, every test target (the unit tests, and the
# integration tests: one binary, tests/integration/main.rs), the doctests. Tests never
# skip: a missing system dependency is installed here, or the test that needs it fails
# loudly.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '\n==> %s\n' "$*" >&2; }

# Runs a command as root: directly, through sudo, or not at all.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    echo "error: need root or sudo to run: $*" >&2
    exit 1
  fi
}

# Debian keeps the PostgreSQL server binaries off PATH, under /usr/lib/postgresql/<v>/bin;
# tests/integration/common/postgres.rs looks in the same places.
have_postgres() {
  command -v initdb >/dev/null 2>&1 ||
    [ -x /usr/local/bin/initdb ] ||
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# redis-cli joins the throwaway Redis Cluster of tests/integration/cluster.rs:
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
have_postgres || missing+=(postgresql)
# The browser test of the admin status page (tests/integration/status_page.rs):
[ -x /usr/lib/chromium/chromium ] || command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# docs/api.md's examples, run by tests/integration/manual_examples.rs (shell, Python,
# JavaScript):
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
# The rabbitmq sink's broker (tests/integration/rabbitmq_sink.rs, the chaos scenario
# rabbitmq-kill), run from where Debian installs it:
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || missing+=(rabbitmq-server)
# pika (the consumer in tests/integration/rabbitmq_sink.rs, a client we did not write)
# comes from PyPI below; pip itself from Debian when it is missing too:
if ! python3 -c 'import pika' >/dev/null 2>&1 && ! python3 -m pip --version >/dev/null 2>&1; then
  missing+=(python3-pip)
fi

if [ "${#missing[@]}" -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: missing ${missing[*]} and no apt-get: install them by hand" >&2
    exit 1
  fi
  log "installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! python3 -c 'import pika' >/dev/null 2>&1; then
  log "installing pika (PyPI)"
  # Debian's own Python refuses pip outside a virtualenv (PEP 668) unless told.
  python3 -m pip install --quiet pika ||
    python3 -m pip install --quiet --break-system-packages pika
fi

# PostgreSQL refuses to run as root; tests running as root run it as `postgres`.
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
  log "creating the postgres system user"
  useradd --system --user-group --no-create-home --shell /usr/sbin/nologin postgres
fi

# rust-toolchain.toml pins 1.95.0; a machine that has only its stable toolchain (and no
# network to fetch another) builds with that instead, and says so.
if command -v rustup >/dev/null 2>&1 && ! rustup run 1.95.0 rustc --version >/dev/null 2>&1; then
  log "toolchain 1.95.0 (rust-toolchain.toml) is not installed: using stable"
  export RUSTUP_TOOLCHAIN=stable
fi

if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  log "installing rustfmt and clippy"
  rustup component add rustfmt clippy
fi

# cargo-deny (licenses, duplicate versions, sources, advisories) and cargo-machete (unused
# dependencies) are built from crates.io when missing: no binary downloads on our machines.
# They are tools, not the product: built without optimisation, which halves their build.
install_tool() {
  if ! cargo "$1" --version >/dev/null 2>&1; then
    log "installing cargo-$1"
    CARGO_PROFILE_RELEASE_OPT_LEVEL=0 CARGO_PROFILE_RELEASE_DEBUG=false \
      CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256 \
      cargo install --locked "cargo-$1"
  fi
}
install_tool deny
install_tool machete

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --all-targets -- -D warnings

log "cargo machete (unused dependencies)"
cargo machete

# Advisories come from the RustSec database on GitHub. Where only the package registries
# are reachable (our CI machines), the rest is still checked and the line below says that
# advisories were not.
log "cargo deny check (licenses, bans, sources)"
cargo deny --log-level error check licenses bans sources
if timeout 10 git ls-remote -q https://github.com/rustsec/advisory-db HEAD >/dev/null 2>&1; then
  log "cargo deny check advisories"
  cargo deny --log-level error check advisories
else
  log "cargo deny check advisories: NOT RUN — the RustSec database (github.com) is unreachable from this machine"
fi

# The Dockerfile's build command, verified here: no Docker engine runs on our machines,
# so CI runs the image's `RUN cargo build ...` line character for character. Keep the
# two identical. The tests below run in the release profile to reuse these artifacts.
log "cargo build --release --locked --bins --examples"
cargo build --release --locked --bins --examples

# Integration tests mostly wait on Redis, PostgreSQL and sockets: run twice as many
# test threads as cores (4 on 2 cores). They are one binary, so this is the number of
# integration tests running at once, whichever tests/integration/ module they are in.
# Override with RUST_TEST_THREADS.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-$(($(nproc) * 2))}"
log "cargo test (RUST_TEST_THREADS=$RUST_TEST_THREADS)"
cargo test --release --locked --all-targets
# No doc examples run today (lib.rs has a `text` block only); kept so new ones do.
cargo test --release --locked --doc

log "all checks passed"
