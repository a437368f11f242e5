# power-dev-plugin — build, run and test. `make help` lists the targets.

SHELL        := /usr/bin/env bash
BINARY       := power-dev-plugin
BIN_DIR      := bin
VERSION      ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
GIT_COMMIT   ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS      := -s -w -X main.version=$(VERSION) -X main.gitCommit=$(GIT_COMMIT)
GO           ?= go
GOFLAGS_TEST ?= -count=1
# Arguments for `make run`, e.g. make run RUN_ARGS="--config examples/x.yaml -o json"
RUN_ARGS     ?=
GOLANGCI_LINT_VERSION ?= v2.15.0

.PHONY: help
help: ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

.PHONY: build
build: ## build the static binary bin/power-dev-plugin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN_DIR)/$(BINARY) ./cmd/kubelet-plugin

.PHONY: run
run: build ## show what this machine would publish, and what is left out and why
	$(BIN_DIR)/$(BINARY) discover $(RUN_ARGS)

.PHONY: test
test: ## run every test (as root the tests also use real loop devices)
	$(GO) vet ./...
	$(GO) test $(GOFLAGS_TEST) ./...
	$(GO) test $(GOFLAGS_TEST) -race -short ./...

.PHONY: bench
bench: ## run the benchmarks recorded in docs/benchmarks.md
	$(GO) test -run '^$$' -bench . -benchmem ./...

.PHONY: fmt
fmt: ## format the code
	gofmt -s -w $$(git ls-files '*.go')

.PHONY: lint
lint: ## gofmt check, go vet and golangci-lint (fetched from the Go module proxy)
	@out=$$(gofmt -s -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION) run ./...

.PHONY: clean
clean: ## remove build output
	rm -rf $(BIN_DIR)
