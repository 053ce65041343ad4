.PHONY: test demo

# fmt, clippy -D warnings, all tests (installs redis-server and PostgreSQL if missing)
test:
	./scripts/test.sh

# run the gateway with the example config against a local store (scripts/demo.sh)
demo:
	./scripts/demo.sh
