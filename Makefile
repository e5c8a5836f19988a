# ssmtunnel — Kubernetes operator for AWS Session Manager port forwarding.
# `make help` lists the targets.

# Version stamped into binaries and the image tag.
# Evaluated once: a file edited while a long target runs must not change the image tag between the image
# build and the tests that look for it.
ifeq ($(origin VERSION),undefined)
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
endif
# The OCI registry that images and the chart are pushed to; `make cluster-up` runs one on this loopback
# address, and containerd pulls from it. Set it to yours (an ECR or GHCR repository host) to publish.
REGISTRY ?= 127.0.0.1:5000
IMG ?= $(REGISTRY)/ssmtunnel:$(VERSION)
# Platforms of the image index.
PLATFORMS ?= linux/amd64,linux/arm64
# The chart's version: a release tag's SemVer (v0.2.0 -> 0.2.0), else Chart.yaml's version with the commit as
# a pre-release (0.1.0-gb3ac9ce).
CHART_VERSION ?= $(shell hack/chart-version.sh "$(VERSION)")
# A loopback registry speaks plain HTTP; any other is reached over TLS.
PLAIN_HTTP := $(if $(filter 127.0.0.1:% localhost:%,$(REGISTRY)),--plain-http,)
# Kubernetes release matching the k8s.io modules in go.mod (v0.37.2 -> v1.37.2).
KUBE_VERSION ?= $(shell go list -m -f '{{.Version}}' k8s.io/api | sed 's/^v0\./v1./')

LOCALBIN ?= $(CURDIR)/bin
# Kubernetes binaries built from source by hack/build-kube.sh, one folder per version.
KUBE_BIN ?= $(LOCALBIN)/k8s/$(KUBE_VERSION)

GO ?= go
GOTEST ?= $(GO) test -race -count=1 -timeout 40m
# How long each native fuzz target runs in `make test-fuzz`.
# Seed corpora also run in test-unit; this is the exploration budget per target (hack/fuzz.sh finds them).
FUZZTIME ?= 10s

# Tool versions, built from the Go module proxy into bin/.
CONTROLLER_TOOLS_VERSION ?= v0.23.0
GOLANGCI_LINT_VERSION ?= v2.15.0
HELM_VERSION ?= v4.3.2
# v5.8.x needs Go 1.27; this machine has Go 1.26.
KUSTOMIZE_VERSION ?= v5.7.1
# CNCF distribution, the local cluster's registry.
DISTRIBUTION_VERSION ?= v3.1.2

CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION)
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint-$(GOLANGCI_LINT_VERSION)
HELM ?= $(LOCALBIN)/helm-$(HELM_VERSION)
KUSTOMIZE ?= $(LOCALBIN)/kustomize-$(KUSTOMIZE_VERSION)
REGISTRY_BIN ?= $(LOCALBIN)/registry-$(DISTRIBUTION_VERSION)

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: controller-gen ## Generate the CRD and RBAC in config/ and copy the CRDs into the chart.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd:allowDangerousTypes=false paths="./api/..." paths="./controllers/..." output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	@# One line per paragraph in the CRD descriptions, so kubectl explain does not break sentences mid-line.
	$(GO) run ./hack/unwrapdesc config/crd/bases/*.yaml
	mkdir -p charts/ssmtunnel/crds
	cp config/crd/bases/*.yaml charts/ssmtunnel/crds/

.PHONY: generate
generate: controller-gen ## Generate the DeepCopy methods of the API types.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: verify-gen
verify-gen: manifests generate ## Fail when generated files are stale.
	@git diff --exit-code -- api config charts/ssmtunnel/crds || { echo "generated files are stale: run 'make manifests generate' and commit" >&2; exit 1; }

.PHONY: fmt
fmt: ## Run go fmt.
	$(GO) fmt ./...

.PHONY: vet
vet: ## Run go vet.
	$(GO) vet ./...

.PHONY: lint
lint: golangci-lint ## Run golangci-lint.
	$(GOLANGCI_LINT) run ./...

##@ Test

.PHONY: test
test: test-unit test-fuzz test-chart test-integration test-e2e ## Run the whole suite: unit, fuzz, chart checks, envtest, end-to-end.

.PHONY: test-unit
test-unit: ## Unit and in-process tests (real loopback sockets, no external processes), race detector on.
	$(GOTEST) ./...

.PHONY: test-fuzz
test-fuzz: ## Run each native fuzz target for FUZZTIME.
	FUZZTIME=$(FUZZTIME) hack/fuzz.sh

.PHONY: test-integration
test-integration: envtest-bins ## envtest suite against kube-apiserver and etcd built from source.
	KUBEBUILDER_ASSETS=$(KUBE_BIN) $(GOTEST) -tags integration ./controllers/... ./test/integration/...

.PHONY: test-chart
test-chart: helm kustomize manifests ## helm lint, helm template and kustomize build.
	hack/test-chart.sh "$(HELM)" "$(KUSTOMIZE)"

.PHONY: test-e2e
test-e2e: cluster-up chart-push ## End-to-end suite on the local single-node cluster, installing the chart from the registry.
	KUBECONFIG=$(CURDIR)/_work/cluster/admin.kubeconfig IMG=$(IMG) LDFLAGS='$(LDFLAGS)' PLATFORMS=$(PLATFORMS) REGISTRY=$(REGISTRY) CHART_VERSION=$(CHART_VERSION) \
		HELM=$(HELM) KUBE_BIN=$(KUBE_BIN) $(GOTEST) -tags e2e -timeout 20m -v ./test/e2e/...

.PHONY: bench
bench: ## Benchmarks against direct TCP; writes bench/results/<date>-<commit>.{json,md}.
	$(GO) run ./test/bench $(BENCH_ARGS)

##@ Build

LDFLAGS ?= -s -w -X github.com/ssmtunnel/ssmtunnel/tunnel.Version=$(VERSION)

.PHONY: build
build: ## Build manager, ssmtunnel and ssm-emulator into bin/.
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(LOCALBIN)/ ./cmd/...

# The image is rebuilt only when what goes into it changed: the Go sources, the build script, the tag or the
# platforms (the stamp's name carries the last two).
comma := ,
IMAGE_INPUTS := $(shell git ls-files -- '*.go' go.mod go.sum hack/build-image.sh 2>/dev/null)
IMAGE_STAMP := $(LOCALBIN)/image/.built-$(subst /,_,$(subst :,_,$(IMG)))-$(subst /,_,$(subst $(comma),+,$(PLATFORMS)))

.PHONY: image
image: $(IMAGE_STAMP) ## Build the image index for $(PLATFORMS) as the OCI image layout bin/image (tag $(IMG)).
$(IMAGE_STAMP): $(IMAGE_INPUTS)
	PLATFORMS=$(PLATFORMS) hack/build-image.sh "$(IMG)" "$(LDFLAGS)"
	touch "$@"

.PHONY: push
push: image ## Push the image index to $(REGISTRY) and print its digest (into bin/image.digest).
	$(GO) run ./hack/imagebuild push --layout $(LOCALBIN)/image --to $(IMG) $(PLAIN_HTTP) | tee $(LOCALBIN)/image.ref
	sed 's/.*@//' $(LOCALBIN)/image.ref >$(LOCALBIN)/image.digest

.PHONY: chart-push
chart-push: push helm ## Package the chart as version $(CHART_VERSION), its image pinned to the pushed digest, and push it to oci://$(REGISTRY)/charts.
	HELM=$(HELM) PLAIN_HTTP=$(PLAIN_HTTP) hack/chart-push.sh "$(REGISTRY)" "$(CHART_VERSION)" "$(VERSION)" "$$(cat $(LOCALBIN)/image.digest)"

.PHONY: release
release: ## Build ssmtunnel and ssm-emulator for linux and darwin, amd64 and arm64, and SHA256SUMS, into bin/release/$(VERSION)/.
	GO=$(GO) hack/release.sh "$(VERSION)"

##@ Local cluster

.PHONY: deps
deps: ## Install the Debian packages the local cluster needs (containerd, runc, CNI plugins, iptables, ...).
	hack/install-deps.sh

.PHONY: cluster-up
cluster-up: deps kube-bins registry ## Start the local single-node cluster and its registry (idempotent).
	KUBE_BIN=$(KUBE_BIN) REGISTRY=$(REGISTRY) REGISTRY_BIN=$(REGISTRY_BIN) hack/cluster-up.sh

.PHONY: cluster-down
cluster-down: ## Stop the local cluster and restore the host.
	hack/cluster-down.sh

.PHONY: demo
demo: cluster-up chart-push ## Run the product: cluster, registry, emulator, the chart from oci://, a PortForward, and a request through it.
	KUBE_BIN=$(KUBE_BIN) IMG=$(IMG) REGISTRY=$(REGISTRY) CHART_VERSION=$(CHART_VERSION) HELM=$(HELM) hack/demo.sh

##@ Tools

$(LOCALBIN):
	mkdir -p $(LOCALBIN)

.PHONY: kube-bins
kube-bins: ## Build kube-apiserver, etcd and the node components from source into bin/k8s/<version>.
	hack/build-kube.sh "$(KUBE_VERSION)" "$(KUBE_BIN)"

.PHONY: envtest-bins
envtest-bins: ## Build only what envtest needs (kube-apiserver, etcd) into bin/k8s/<version>.
	hack/build-kube.sh "$(KUBE_VERSION)" "$(KUBE_BIN)" kube-apiserver etcd

.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN)
$(CONTROLLER_GEN): | $(LOCALBIN)
	$(call go-install-tool,$(CONTROLLER_GEN),sigs.k8s.io/controller-tools/cmd/controller-gen,$(CONTROLLER_TOOLS_VERSION),controller-gen)

.PHONY: golangci-lint
golangci-lint: $(GOLANGCI_LINT)
$(GOLANGCI_LINT): | $(LOCALBIN)
	$(call go-install-tool,$(GOLANGCI_LINT),github.com/golangci/golangci-lint/v2/cmd/golangci-lint,$(GOLANGCI_LINT_VERSION),golangci-lint)

.PHONY: helm
helm: $(HELM)
$(HELM): | $(LOCALBIN)
	$(call go-install-tool,$(HELM),helm.sh/helm/v4/cmd/helm,$(HELM_VERSION),helm)

.PHONY: registry
registry: $(REGISTRY_BIN)
$(REGISTRY_BIN): | $(LOCALBIN)
	$(call go-install-tool,$(REGISTRY_BIN),github.com/distribution/distribution/v3/cmd/registry,$(DISTRIBUTION_VERSION),registry)

.PHONY: kustomize
kustomize: $(KUSTOMIZE)
$(KUSTOMIZE): | $(LOCALBIN)
	$(call go-install-tool,$(KUSTOMIZE),sigs.k8s.io/kustomize/kustomize/v5,$(KUSTOMIZE_VERSION),kustomize)

# go-install-tool builds package $(2) at version $(3) from the Go module proxy; the binary $(4) lands at $(1).
define go-install-tool
@[ -f "$(1)" ] || { \
set -e; \
echo "Building $(2)@$(3)"; \
rm -f "$(1)"; \
GOBIN="$(LOCALBIN)" GOFLAGS= hack/heartbeat.sh "building $(4) $(3)" $(GO) install "$(2)@$(3)"; \
mv "$(LOCALBIN)/$(4)" "$(1)"; \
}
endef
