# The two commands a newcomer needs: `make demo` (the whole path on local servers, with a
# summary) and `make test` (every test). Both bring up local Redis and PostgreSQL first.

CARGO ?= cargo
export GALAXY_REDIS_URL ?= redis://127.0.0.1:6379
export GALAXY_POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/postgres
export GALAXY_TEST_REDIS_URL ?= $(GALAXY_REDIS_URL)
export GALAXY_TEST_POSTGRES_URL ?= $(GALAXY_POSTGRES_URL)

.PHONY: test lint demo bench chaos services build fmt

services:
	@scripts/services.sh

build:
	$(CARGO) build --workspace --bins

## Every test: unit, integration against the real servers, end to end with the binaries.
test: services build
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		$(CARGO) test --workspace --no-fail-fast; \
	fi

## The chaos run of the Game Master at full length (60 s; `make test` runs 30 s of it).
chaos: services build
	GALAXY_CHAOS_SECONDS=$${GALAXY_CHAOS_SECONDS:-60} $(CARGO) test -p e2e --test chaos -- --nocapture

## Formatting and clippy, warnings as errors.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## The whole path on local servers: RTM simulator -> gamemaster -> lobby, with a summary.
demo: services
	@scripts/demo.sh

## The benchmark (release build) against the local servers.
bench: services
	@scripts/bench.sh
