# Hangar: `make run` starts the service on its embedded defaults, `make test`
# runs every check. Both install what they need (Debian packages, as root).

GO        ?= go
BIN       := bin/hangar
DATA      ?= hangar-data
HTTP      ?= 127.0.0.1:8080
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
# Debian packages: the sandbox driver (runc, sudo, iptables, iproute2), git for
# repositories, netcat and OpenSSH's client for tests and builds.
DEB_PACKAGES := git runc sudo iptables iproute2 netcat-openbsd openssh-client curl procps tmux rsync ca-certificates

.PHONY: all build run test deps vet staticcheck gotest bench clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/hangar

deps:
	@scripts/install-deps.sh $(DEB_PACKAGES)

run: deps build
	@BIN=$(BIN) DATA=$(DATA) HTTP=$(HTTP) scripts/run.sh

vet:
	$(GO) vet ./...

staticcheck:
	$(GO) run $(STATICCHECK) ./...

gotest:
	$(GO) test -race -timeout 25m ./...

test: deps vet staticcheck gotest

bench: deps
	$(GO) run ./bench -driver both

clean:
	rm -rf bin
