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
test: tools ## run every test (as root the tests also use real loop devices)
	$(GO) vet ./...
	$(GO) test $(GOFLAGS_TEST) ./...
	$(GO) test $(GOFLAGS_TEST) -race -short ./...
	@# The Grafana dashboard's PromQL check: a module of its own (the Prometheus parser stays out of go.mod).
	cd deploy/grafana && $(GO) test $(GOFLAGS_TEST) ./...

.PHONY: bench
bench: ## run the benchmarks recorded in docs/benchmarks.md
	$(GO) test -run '^$$' -bench . -benchmem ./...

.PHONY: bench-soak
bench-soak: ## soak: 10,000 prepare/unprepare cycles, 1,000 hotplug events; fails unless files, goroutines, memory stay flat
	@# Skipped in `make test` (PDP_SOAK unset); one package at a time (-p 1) so they do not share the CPUs.
	@# As root it uses real loop devices. Figures: docs/benchmarks.md.
	PDP_SOAK=1 $(GO) test -count=1 -p 1 -v -timeout 10m -run '^TestSoak' ./pkg/driver ./pkg/discovery

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

# --- e2e cluster ---
# A real single-node Kubernetes (v1.37.2, containerd 2 with CDI) on 127.0.0.1 for the end-to-end
# tests; needs root. Binaries are cached outside the repo. See test/e2e/cluster/README.md.
E2E_CLUSTER := test/e2e/cluster

.PHONY: e2e-build e2e-up e2e-down e2e-status
e2e-build: ## build the e2e cluster (kubernetes, containerd, etcd; cold ~10 min, then seconds)
	$(E2E_CLUSTER)/build.sh

e2e-up: e2e-build ## start the single-node e2e cluster (idempotent); prints the KUBECONFIG to use
	$(E2E_CLUSTER)/up.sh

e2e-down: ## stop the e2e cluster and remove everything it put on the machine
	$(E2E_CLUSTER)/down.sh

e2e-status: ## the e2e cluster's processes, nodes and pods
	$(E2E_CLUSTER)/status.sh

# --- deploy ---
# The manifests under deploy/ (kustomize overlays, Helm chart; see deploy/README.md). Their tests
# (go test ./deploy/...) render them with helm and kustomize built from the Go module proxy into
# bin/tools. They are tools, not go.mod dependencies: the Helm and kustomize libraries would raise
# modules the plugin itself links (grpc, protobuf, golang.org/x/net, OpenTelemetry).
TOOLS_DIR         := $(abspath $(BIN_DIR)/tools)
HELM_VERSION      ?= v4.3.1
KUSTOMIZE_VERSION ?= v5.8.2
HELM              := $(TOOLS_DIR)/helm
KUSTOMIZE         := $(TOOLS_DIR)/kustomize
DEPLOY_OUT        := _output/deploy

.PHONY: tools manifests helm-template helm-lint deploy-test
tools: $(TOOLS_DIR)/.helm-$(HELM_VERSION) $(TOOLS_DIR)/.kustomize-$(KUSTOMIZE_VERSION) ## build helm and kustomize into bin/tools (cold: ~4 min, then nothing)

# A stamp per version: changing HELM_VERSION or KUSTOMIZE_VERSION rebuilds the tool.
$(TOOLS_DIR)/.helm-$(HELM_VERSION):
	@mkdir -p $(TOOLS_DIR)
	GOBIN=$(TOOLS_DIR) $(GO) install helm.sh/helm/v4/cmd/helm@$(HELM_VERSION)
	@rm -f $(TOOLS_DIR)/.helm-* && touch $@

$(TOOLS_DIR)/.kustomize-$(KUSTOMIZE_VERSION):
	@mkdir -p $(TOOLS_DIR)
	GOBIN=$(TOOLS_DIR) $(GO) install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)
	@rm -f $(TOOLS_DIR)/.kustomize-* && touch $@

manifests: tools ## render every install path into _output/deploy/*.yaml for review
	@mkdir -p $(DEPLOY_OUT)
	@for o in dra legacy openshift; do \
		$(KUSTOMIZE) build deploy/kustomize/overlays/$$o > $(DEPLOY_OUT)/kustomize-$$o.yaml || exit 1; \
		echo "$(DEPLOY_OUT)/kustomize-$$o.yaml"; \
	done
	@$(HELM) template power-dev-plugin deploy/helm/power-dev-plugin -n power-dev-plugin > $(DEPLOY_OUT)/helm-default.yaml
	@echo "$(DEPLOY_OUT)/helm-default.yaml"

helm-template: tools ## print the Helm chart rendered with its default values
	$(HELM) template power-dev-plugin deploy/helm/power-dev-plugin -n power-dev-plugin

helm-lint: tools ## helm lint the chart
	$(HELM) lint deploy/helm/power-dev-plugin

deploy-test: tools ## the deploy/ tests alone
	$(GO) test $(GOFLAGS_TEST) ./deploy/...

# --- image ---
# The multi-arch image (linux/amd64, linux/ppc64le, linux/s390x) of the static binary, built without Docker or
# any container engine by hack/mkimage (go-containerregistry): per platform one layer with
# /usr/bin/power-dev-plugin (root, 0755) on an empty base, an OCI index over them, written as an OCI archive
# whose index.json names $(IMAGE) (org.opencontainers.image.ref.name):
#   ctr -n k8s.io image import $(IMAGE_ARCHIVE)
#   podman load -i $(IMAGE_ARCHIVE)
#   skopeo copy --all oci-archive:$(IMAGE_ARCHIVE) docker://registry.example/power-dev-plugin:<tag>
# Reproducible: the files and the image config carry the last commit's time (SOURCE_DATE_EPOCH), so the same
# commit and Go toolchain give the same digests. `go test ./hack/mkimage` tests the builder itself.
IMAGE             ?= ghcr.io/power-dev-plugin/power-dev-plugin:$(VERSION)
IMAGE_PLATFORMS   ?= linux/amd64 linux/ppc64le linux/s390x
IMAGE_ARCHIVE     ?= _output/$(BINARY)-$(VERSION).oci.tar
IMAGE_BUILD_DIR   := _output/image
IMAGE_REVISION    ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
IMAGE_SOURCE      ?= https://github.com/power-dev-plugin/power-dev-plugin
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)

.PHONY: image image-verify
image: ## build the multi-arch OCI image archive _output/power-dev-plugin-<version>.oci.tar (no Docker needed)
	@set -e; for p in $(IMAGE_PLATFORMS); do \
		os=$${p%%/*}; arch=$${p##*/}; \
		echo "CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build ... ./cmd/kubelet-plugin"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -ldflags "$(LDFLAGS)" \
			-o $(IMAGE_BUILD_DIR)/$${os}_$${arch}/$(BINARY) ./cmd/kubelet-plugin; \
	done
	$(GO) run ./hack/mkimage build -o $(IMAGE_ARCHIVE) -tag $(IMAGE) -version $(VERSION) \
		-revision $(IMAGE_REVISION) -source $(IMAGE_SOURCE) -mtime $(SOURCE_DATE_EPOCH) \
		$(foreach p,$(IMAGE_PLATFORMS),-binary $(p)=$(IMAGE_BUILD_DIR)/$(subst /,_,$(p))/$(BINARY))
	@$(MAKE) --no-print-directory image-verify

image-verify: ## check the image archive: platforms, configs, a root-owned 0755 static binary per arch, ref name
	@test -f $(IMAGE_ARCHIVE) || { echo "$(IMAGE_ARCHIVE) does not exist: run make image"; exit 1; }
	$(GO) run ./hack/mkimage verify -elf -tag $(IMAGE) -version $(VERSION) -platforms "$(IMAGE_PLATFORMS)" $(IMAGE_ARCHIVE)

# --- e2e suite ---
# The cluster tests (test/e2e/README.md): the image from `make image` (this machine's architecture only),
# the cluster above, the driver installed with the shipped kustomize overlay (patched by test/e2e/overlay),
# loop devices for the node, then the eighteen scenarios. Needs root. The cluster stays up afterwards (a second run
# takes a few minutes) unless E2E_DOWN=1. E2E_ONLY=REGEXP runs some scenarios only.
.PHONY: e2e demo
e2e: ## run the cluster test suite (builds and starts the e2e cluster if needed)
	test/e2e/run.sh

demo: ## a local cluster with the driver, and the first example using its device (then: make e2e-down)
	test/e2e/demo.sh

# --- fault injection ---
# The real binary through its DRA socket, against the e2e cluster's API server (started if needed), while it is
# killed, its directories fill up or turn read-only, the API server stops, its config breaks, devices go; and the
# legacy mode against a test kubelet. Needs root. test/faults/README.md; .ci/run runs it after make e2e.
.PHONY: test-faults
test-faults: ## the fault-injection suite (FAULTS_SEED=N reproduces a run, FAULTS_ONLY=REGEXP some faults)
	test/faults/run.sh
