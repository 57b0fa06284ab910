GO ?= go
export PATH := /usr/local/go/bin:$(PATH)

BIN := bin
CMDS := gonbd gonbdinfo gonbd-creds

.PHONY: build test integration fuzz bench robustness vet clean

build:
	@mkdir -p $(BIN)
	@for c in $(CMDS); do if ls cmd/$$c/*.go >/dev/null 2>&1; then CGO_ENABLED=0 $(GO) build -o $(BIN)/$$c ./cmd/$$c; fi; done

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l .)" || (gofmt -l .; echo "gofmt: files above need formatting"; exit 1)

# Unit tests (with the race detector) and the checked-in fuzz seeds.
test: vet
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /integration)

# Tests that drive the built binaries with real peers on loopback and Unix
# sockets. Under CI=true a missing peer tool fails the run.
integration: build
	GONBD_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 40m ./integration/...

# Runs each fuzz target for FUZZTIME (default 10s).
FUZZTIME ?= 10s
fuzz:
	scripts/fuzz $(FUZZTIME)

bench: build
	scripts/bench

# Hostile clients, faults, soak, a -race build and every fuzz target, with
# a summary table; see docs/robustness.md.
robustness:
	scripts/robustness

clean:
	rm -rf $(BIN)
