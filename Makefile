# mcp-ssh-gateway: build, demo, test, lint, fuzz.
#
#   make demo   build, then start a throw-away gateway and edge on loopback and call the tools
#   make test   the whole test suite (what .ci/run runs)
#   make package        static binaries (linux amd64/arm64/armv7/armv6) and edge deb/rpm in dist/
#   make package-tools  only fetch and build the pinned goreleaser (then `make package` runs offline)
#   make package-test   install/upgrade/remove/purge the edge deb here (root), check the rpm
#   make image          the gateway container image (podman, else docker), offline
#   make image-test     check the image's config and run its binary from the mounted image

VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo 0.0.0-dev)
BIN_DIR  := $(CURDIR)/bin
GO       ?= go
LDFLAGS  := -s -w -X main.version=$(VERSION)

# Fuzz targets as package:FuzzFunc; each runs for FUZZTIME.
FUZZTIME     ?= 60s
FUZZ_TARGETS := ./shared/protocol/:FuzzDecode ./shared/protocol/:FuzzParseEnrollment ./agent/gateway/:FuzzAuthorizedKeys

# Packaging (goreleaser v2 with nfpm; podman or docker for the image). goreleaser is pinned:
# the one on PATH if it is this version, else `go run` builds this version (downloaded from the
# module proxy once, then cached by Go), so `make package` needs only Go. GORELEASER=… overrides.
# `go run mod@version` asks the proxy for the module's latest version (deprecations, retractions)
# on every run: Go's module cache, read as a proxy, answers first, so that a run is offline once
# the cache holds goreleaser; the configured GOPROXY answers what the cache does not hold.
GORELEASER_VERSION := v2.15.1
GORELEASER_RUN = GOPROXY='file://$(shell $(GO) env GOMODCACHE)/cache/download|$(shell $(GO) env GOPROXY)' \
	$(GO) run github.com/goreleaser/goreleaser/v2@$(GORELEASER_VERSION)
GORELEASER   ?= $(if $(shell goreleaser --version 2>/dev/null | grep -Eq '^GitVersion: +v?$(subst .,\.,$(GORELEASER_VERSION:v%=%))$$' && echo y),goreleaser,$(GORELEASER_RUN))
# deb/rpm versions must start with a digit; a timestamp makes every rebuild an upgrade.
PKG_VERSION  ?= 0.0.0-dev.$(shell date -u +%Y%m%d%H%M%S)
CONTAINER    ?= $(shell command -v podman 2>/dev/null || command -v docker 2>/dev/null)
IMAGE        ?= localhost/mcp-ssh-gateway:dev
IMAGE_BINARY ?= $(BIN_DIR)/mcp-ssh-gateway
IMAGE_CTX    := $(BIN_DIR)/image-context

.PHONY: all build demo test lint fuzz clean bench bench-scale package package-tools package-test image image-test

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN_DIR)/mcp-ssh-gateway ./agent
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN_DIR)/mcp-ssh-edge ./edge

demo: build
	BIN_DIR=$(BIN_DIR) $(GO) run ./test/demo

# bench: latency, throughput and memory next to OpenSSH (needs openssh-server; not part of test).
BENCH_FLAGS ?=
bench: build
	BIN_DIR=$(BIN_DIR) $(GO) run ./bench/rpcbench $(BENCH_FLAGS)

test: build
	cd test/node && npm ci --no-audit --no-fund
	BIN_DIR=$(BIN_DIR) $(GO) test -race -count=1 -timeout 20m ./...

lint:
	@unformatted="$$(gofmt -l .)"; \
	if [ -n "$$unformatted" ]; then echo "gofmt -w needed on:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	@# the release builds 32-bit ARM and macOS too: an int overflow or a Linux-only call fails here
	GOOS=linux GOARCH=arm $(GO) vet ./...
	GOOS=darwin GOARCH=arm64 $(GO) vet ./...

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "fuzz $$fn in $$pkg for $(FUZZTIME)"; \
		$(GO) test -run='^$$' -fuzz="^$$fn$$" -fuzztime=$(FUZZTIME) $$pkg; \
	done

package:
	PKG_VERSION=$(PKG_VERSION) $(GORELEASER) release --snapshot --clean --skip=docker,publish,sign,sbom -f goreleaser.yaml
	@echo "edge binary sizes (static, stripped; SPEC budget 8 MiB on amd64):"
	@for f in dist/edge_linux_*/mcp-ssh-edge; do printf '  %-40s %s bytes\n' "$$f" "$$(stat -c %s $$f)"; done

package-tools:
	$(GORELEASER) --version

package-test:
	@ls dist/mcp-ssh-edge_*.deb >/dev/null 2>&1 || $(MAKE) package
	MAKE="$(MAKE)" packaging/test/package-test.sh

# The build context holds only the binary and the volume directories (nothing to pull).
image: build
	@test -n "$(CONTAINER)" || { echo "make image: neither podman nor docker found"; exit 1; }
	rm -rf $(IMAGE_CTX)
	mkdir -p $(IMAGE_CTX)/rootfs/var/lib $(IMAGE_CTX)/keys/keys $(IMAGE_CTX)/state/mcp-ssh-gateway
	chmod 0755 $(IMAGE_CTX)/rootfs/var $(IMAGE_CTX)/rootfs/var/lib
	chmod 0700 $(IMAGE_CTX)/keys/keys $(IMAGE_CTX)/state/mcp-ssh-gateway
	install -m 0755 $(IMAGE_BINARY) $(IMAGE_CTX)/mcp-ssh-gateway
	$(CONTAINER) build $(if $(findstring podman,$(CONTAINER)),--format docker) --build-arg VERSION=$(VERSION) \
		-f packaging/Dockerfile -t $(IMAGE) $(IMAGE_CTX)

image-test: image
	CONTAINER=$(CONTAINER) packaging/test/image-test.sh $(IMAGE)

clean:
	rm -rf $(BIN_DIR) dist test/node/node_modules

# Scale benchmarks (docs/BENCHMARKS-SCALE.md): the real gateway binary against simulated edges
# (bench/edgesim). Not a test: it prints figures against their targets. Bounded by EDGES and
# the tool's own time limits; BIG_EDGES runs the largest fleet as two simulator processes.
EDGES     ?= 10000
BIG_EDGES ?= 19000
# Three gateways sharing the fleet through NATS (edgesim cluster), 10,000 edges each
# (docs/BENCHMARKS-SCALE.md, "Several gateways").
CLUSTER_EDGES ?= 30000
bench-scale: build
	$(GO) build -o $(BIN_DIR)/edgesim ./bench/edgesim
	$(BIN_DIR)/edgesim cost -edges 1000
	$(BIN_DIR)/edgesim cost -bare -edges 1000
	$(BIN_DIR)/edgesim bench -gateway-bin $(BIN_DIR)/mcp-ssh-gateway -edges 1000 -settle 10s
	$(BIN_DIR)/edgesim bench -gateway-bin $(BIN_DIR)/mcp-ssh-gateway -edges $(EDGES) -procs 2 -scenarios idle,fanout,restart
	$(BIN_DIR)/edgesim bench -gateway-bin $(BIN_DIR)/mcp-ssh-gateway -edges $(BIG_EDGES) -procs 2 -scenarios idle
	$(BIN_DIR)/edgesim cluster -gateway-bin $(BIN_DIR)/mcp-ssh-gateway -edges $(CLUSTER_EDGES)
