# The README's commands. `make test` is what CI runs.
GO ?= go

.PHONY: run test vet bench build

run:
	$(GO) run ./cmd/amexd

test: vet
	.ci/with-redis $(GO) test -race -count=1 -timeout 12m ./...

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: the files above need formatting"; exit 1; }

bench:
	$(GO) test -run x -bench . -benchtime 1x ./worker/
	$(GO) test -run x -bench . -benchmem ./internal/cache/ ./internal/ratelimit/

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/ ./cmd/...
