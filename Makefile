.PHONY: test demo demo-smoke bench

# fmt, clippy -D warnings, all tests (installs redis-server and PostgreSQL if missing)
test:
	./scripts/test.sh

# the whole flash sale in one command: Redis, demo store, gateway, a k6 flash crowd of
# 2000 users, payments, expiry, and a checked summary (scripts/demo.sh)
demo:
	./scripts/demo.sh

# the same, short (300 users, 4 s payment window): a smoke test CI may run
demo-smoke:
	DEMO_SMOKE=1 ./scripts/demo.sh

# the benchmark against this machine's ceilings (HTTP, Redis); writes BENCHMARKS.md
# (loadtest/bench.sh). Takes about 3 minutes; not for CI.
bench:
	./loadtest/bench.sh
