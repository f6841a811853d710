# mcp-ssh-gateway: build, demo, test, lint, fuzz.
#
#   make demo   build, then start a throw-away gateway and edge on loopback and call the tools
#   make test   the whole test suite (what .ci/run runs)

VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo 0.0.0-dev)
BIN_DIR  := $(CURDIR)/bin
GO       ?= go
LDFLAGS  := -s -w -X main.version=$(VERSION)

# Fuzz targets as package:FuzzFunc; each runs for FUZZTIME.
FUZZTIME     ?= 60s
FUZZ_TARGETS := ./shared/protocol/:FuzzDecode

.PHONY: all build demo test lint fuzz clean bench bench-scale

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

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "fuzz $$fn in $$pkg for $(FUZZTIME)"; \
		$(GO) test -run='^$$' -fuzz="^$$fn$$" -fuzztime=$(FUZZTIME) $$pkg; \
	done

clean:
	rm -rf $(BIN_DIR) dist test/node/node_modules

# Scale benchmarks (docs/BENCHMARKS-SCALE.md): the real gateway binary against simulated edges
# (bench/edgesim). Not a test: it prints figures against their targets. Bounded by EDGES and
# the tool's own time limits; BIG_EDGES runs the largest fleet as two simulator processes.
EDGES     ?= 10000
BIG_EDGES ?= 19000
bench-scale: build
	$(GO) build -o $(BIN_DIR)/edgesim ./bench/edgesim
	$(BIN_DIR)/edgesim cost -edges 1000
	$(BIN_DIR)/edgesim bench -gateway-bin $(BIN_DIR)/mcp-ssh-gateway -edges 1000 -settle 10s
	$(BIN_DIR)/edgesim bench -gateway-bin $(BIN_DIR)/mcp-ssh-gateway -edges $(EDGES) -procs 2 -scenarios idle,fanout,restart
	$(BIN_DIR)/edgesim bench -gateway-bin $(BIN_DIR)/mcp-ssh-gateway -edges $(BIG_EDGES) -procs 2 -scenarios idle
