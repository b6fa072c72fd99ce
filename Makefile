# Hangar: `make run` starts the service on its embedded defaults, `make test`
# runs every check. Both install what they need (Debian packages, as root).

GO        ?= go
BIN       := bin/hangar
DATA      ?= hangar-data
HTTP      ?= 127.0.0.1:8080
# More `hangar server` flags for `make run`, e.g. SERVER_FLAGS=--sandbox-egress=off
SERVER_FLAGS ?=
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
# Debian packages: the sandbox driver (runc, iptables, iproute2) and
# mmdebstrap for its default image, git for repositories, curl for `make run`
# and the one-line SSH command, OpenSSH's client; for the tests also netcat,
# tmux, rsync, Chromium, python3 (the seccomp tests call syscalls through
# it), ssh-audit (the SSH servers' algorithm tests run it), PostgreSQL (the
# store's tests and an e2e test start their own server from its binaries),
# docker-registry (a real registry to pull images from) and busybox-static (a
# tiny image to push to it).
RUN_PACKAGES  := git runc sudo iptables iproute2 curl procps openssh-client rsync ca-certificates mmdebstrap
TEST_PACKAGES := $(RUN_PACKAGES) netcat-openbsd tmux chromium fonts-dejavu-core python3 ssh-audit postgresql docker-registry busybox-static

.PHONY: all build run test deps testdeps vet staticcheck gotest uideps kubebins ui bench clean

all: build

# Static (no cgo): the binary is also the builder inside machines, whose
# images may have another C library than the host's, or none.
build:
	CGO_ENABLED=0 $(GO) build -o $(BIN) ./cmd/hangar

deps:
	@scripts/install-deps.sh $(RUN_PACKAGES)

testdeps:
	@scripts/install-deps.sh $(TEST_PACKAGES)

run: deps build
	@BIN=$(BIN) DATA=$(DATA) HTTP=$(HTTP) SERVER_FLAGS="$(SERVER_FLAGS)" scripts/run.sh

vet:
	$(GO) vet ./...

staticcheck:
	$(GO) run $(STATICCHECK) ./...

# The browser test drives Debian's Chromium with playwright-core from npm.
uideps:
	cd e2e/ui && npm ci --no-audit --no-fund

# etcd and kube-apiserver for the kube driver's tests (a real API server),
# built from the Go module proxy once into /var/cache/hangar/k8s, keyed by
# version: several minutes cold, nothing afterwards (docs/kubernetes.md).
kubebins:
	@scripts/kube/build.sh >/dev/null

# HANGAR_TEST_POSTGRES=require: a test that needs PostgreSQL fails, rather
# than skips, where its binaries are missing; HANGAR_TEST_KUBE=require
# likewise for the kube driver's etcd and kube-apiserver.
gotest: uideps kubebins
	HANGAR_TEST_POSTGRES=require HANGAR_TEST_KUBE=require $(GO) test -race -timeout 25m ./...

# Rebuild the committed web UI bundle from web/src (go build alone serves it).
ui:
	web/build.sh

test: testdeps vet staticcheck gotest

# Benchmarks (not tests; see docs/benchmarks.md). The SSH one compares with
# Debian's own sshd as a ProxyJump chain; the logs one times a step that
# prints 1,000,000 lines against the same command writing to a file.
bench: testdeps
	@scripts/install-deps.sh openssh-server
	$(GO) run ./bench -driver both
	$(GO) run ./bench -mode ssh
	$(GO) run ./bench -mode logs

clean:
	rm -rf bin
