# The README's commands. `make test` is what CI runs.
GO ?= go

# The build's identity, written into internal/version: `git describe` and
# the commit ("dev" is left only to go run and go test).
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT := $(shell git rev-parse HEAD 2>/dev/null)
VERSION_LDFLAGS := -X github.com/amexd/amexd/internal/version.Version=$(VERSION) \
	-X github.com/amexd/amexd/internal/version.Commit=$(COMMIT)

.PHONY: run test tidy deps vet staticcheck openapi-lint units bench bench-wrk build cluster-test \
	package package-check package-test

run:
	$(GO) run ./cmd/amexd

# The local cluster's tests run last and verbose, so that their figures
# (Redis failover: reads failed, events per key, admitted above the limit,
# seconds to recover) are in the output.
test: deps tidy vet staticcheck units package-check
	$(GO) test -race -count=1 -timeout 12m $$($(GO) list ./... | grep -v '/internal/testkit/cluster$$')
	$(CLUSTER_TEST)

# The tests on a real local cluster (internal/testkit/cluster): three hosts in
# their own network namespaces behind HAProxy, one Redis, one simulator.
# Needs root; `make test` runs them too.
CLUSTER_TEST = $(GO) test -race -count=1 -timeout 5m -v ./internal/testkit/cluster/
cluster-test: deps
	$(CLUSTER_TEST)

# go.mod and go.sum must be what `go mod tidy` makes them.
tidy:
	$(GO) mod tidy -diff

# Installs the Debian packages the tests need (.ci/packages) when root.
deps:
	.ci/deps

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: the files above need formatting"; exit 1; }

# staticcheck at a pinned version, installed from the module proxy when it
# is missing or another version.
STATICCHECK_VERSION := 0.8.2
STATICCHECK := $(or $(shell $(GO) env GOBIN),$(shell $(GO) env GOPATH)/bin)/staticcheck
staticcheck:
	@case "$$($(STATICCHECK) -version 2>/dev/null)" in *"($(STATICCHECK_VERSION))"*) ;; \
	  *) echo "installing staticcheck v$(STATICCHECK_VERSION)"; \
	     $(GO) install honnef.co/go/tools/cmd/staticcheck@v$(STATICCHECK_VERSION);; esac
	$(STATICCHECK) ./...

# Redocly's recommended rules over the OpenAPI document (also a test:
# worker/openapi_lint_test.go); .ci/redocly installs the pinned CLI.
openapi-lint:
	.ci/redocly lint --extends=recommended worker/openapi.json

# The units must verify and rate 2.0 or better in systemd-analyze's exposure
# scale (given as 20 tenths); skipped where systemd-analyze is missing,
# except in CI, where it fails (.ci/packages lists systemd).
units:
	@if command -v systemd-analyze >/dev/null; then \
	  dir=$$(mktemp -d) && $(GO) build -o $$dir/amexd ./cmd/amexd && \
	  sed "s|/usr/bin/amexd|$$dir/amexd|" systemd/amexd.service > $$dir/amexd.service && \
	  cp systemd/amexd.socket $$dir/ && \
	  systemd-analyze verify $$dir/amexd.service $$dir/amexd.socket && \
	  systemd-analyze security --offline=yes --threshold=20 systemd/amexd.service | tail -1 && \
	  rm -rf $$dir; \
	elif [ "$$CI" = true ]; then echo "units: systemd-analyze not found: CI installs it from .ci/packages (systemd)" >&2; exit 1; \
	else echo "units: systemd-analyze not found; skipped"; fi

bench:
	$(GO) test -run x -bench . -benchtime 1x ./worker/
	$(GO) test -run x -bench . -benchmem ./internal/cache/ ./internal/ratelimit/

# amexd (2 workers, access log off and on) against nginx proxy_cache and
# two bare net/http servers with wrk, 3 alternated rounds; prints the
# ratios against the targets. Under 2 minutes; needs wrk and nginx-light.
bench-wrk:
	$(GO) run ./cmd/amexbench wrk

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(VERSION_LDFLAGS)" -o bin/ ./cmd/...

# dist/: the .deb and a tarball of the binaries for amd64 and arm64, and
# SHA256SUMS; the same bytes from every build of one commit (.ci/package).
package:
	VERSION=$(VERSION) COMMIT=$(COMMIT) .ci/package

# The fast package checks (part of `make test`): maintainer scripts'
# shellcheck, actionlint of the workflows, an amd64 .deb's contents and
# lintian (.ci/package-check).
package-check:
	.ci/package-check

# Install and upgrade for real (root, a few minutes): two versions of the
# package in a container booted with systemd (.ci/package-test).
package-test:
	.ci/package-test
