# Coordinator. `make run` starts a local trial; `make test` runs every test.
SHELL := /bin/bash
GO ?= go
BIN := bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

# Development secrets for the local trial only; set your own in production.
export LMS_CLIENT_SECRET ?= dev-client-secret
export JWT_SECRET_KEY ?= dev-jwt-secret-change-me

.PHONY: all build setup run test lint fuzz bench clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/coordinator ./cmd/coordinator
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/fakelms ./cmd/fakelms

# Installs and starts what the tests and the trial need (Redis, PostgreSQL,
# memcached; for `make test` also Debian's Chromium and the deployment tools:
# kubectl, promtool, systemd-analyze, so that no deployment test skips).
setup:
	./deploy/dev/services.sh $(SERVICES_FLAGS)
	$(GO) mod download

# A local trial: the fake LMS on $(FAKELMS_ADDR) and `coordinator all` on
# $(COORDINATOR_ADDR) with configs/coordinator.yaml (its http.addr, lms.url
# and JWT issuer follow both). A port already taken stops it with the
# variable to set, e.g. `make run FAKELMS_ADDR=127.0.0.1:18010` next to a
# devstack. memcached is started only when the config uses it. Ctrl-C stops
# both. COORDINATOR_DEV=1 lets it accept the development JWT secret above,
# which it refuses otherwise.
export COORDINATOR_ADDR ?= 127.0.0.1:8140
export FAKELMS_ADDR ?= 127.0.0.1:18000
RUN_CONFIG ?= configs/coordinator.yaml
export RUN_CONFIG
run: SERVICES_FLAGS = $(if $(shell grep -Es '^[[:space:]]*memcached:' $(RUN_CONFIG)),,--no-memcached)
run: setup build
	@./deploy/dev/trial.sh

# Every test, with the race detector, plus vet, staticcheck, gofmt and a
# short fuzz run of the fulfill and return endpoints.
test: SERVICES_FLAGS = --browser --tools
test: setup lint
	$(GO) test -race -count=1 -timeout 20m ./...
	$(MAKE) fuzz

lint:
	@test -z "$$(gofmt -l cmd internal)" || (gofmt -l cmd internal; echo "gofmt needed"; exit 1)
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

# A count of executions, not a duration: with a duration, Go 1.26's fuzzing
# coordinator can fail a clean run with "context deadline exceeded" at the
# deadline (golang/go#75804, fixed in Go 1.27). 20000x takes 5-60 s here.
FUZZTIME ?= 20000x
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzFulfill$$' -fuzztime $(FUZZTIME) ./internal/httpapi
	$(GO) test -run '^$$' -fuzz '^FuzzWebhook$$' -fuzztime $(FUZZTIME) ./internal/httpapi

# The load benchmark (docs/performance.md): the real binary against this
# machine's Redis and an in-process fake LMS — the API against the bare
# handler and the durable ceiling of the same session, three alternating runs
# each; the drain at LMS 0 ms and 50 ms with worker.servers 1 and 4, three
# alternating runs; the together run at the default concurrency and at 600,
# each with worker.servers 1 and 4 — then the hot-path Go benchmarks. About
# 8 minutes on a quiet machine.
bench: setup build
	$(GO) build -o $(BIN)/loadgen ./cmd/loadgen
	$(BIN)/loadgen -bin $(BIN)/coordinator -repeat 3 -conns 32 -worker-servers 1,4
	$(GO) test -run '^$$' -bench . -benchmem ./internal/fulfillment ./internal/lms ./internal/httpapi ./internal/queue

clean:
	rm -rf $(BIN)
