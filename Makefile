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
FUZZ_TARGETS := ./shared/protocol/:FuzzDecode ./shared/protocol/:FuzzParseEnrollment ./agent/gateway/:FuzzAuthorizedKeys

.PHONY: all build demo test lint fuzz clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN_DIR)/mcp-ssh-gateway ./agent
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN_DIR)/mcp-ssh-edge ./edge

demo: build
	BIN_DIR=$(BIN_DIR) $(GO) run ./test/demo

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
