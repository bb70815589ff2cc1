# Everything runs from a fresh clone with only Go installed: tools go into ./bin.
GO      ?= go
BIN     := $(CURDIR)/bin
RACE    ?= -race

BUF_VERSION                := v1.75.0
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2

.DEFAULT_GOAL := help
.PHONY: help build run test bench proto checkgenerate lint tools clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: ## build bin/personalizer
	$(GO) build -o $(BIN)/personalizer ./cmd/personalizer

run: build ## run everything in one process (gRPC 127.0.0.1:50051, HTTP :8080, Kafka :9092, data in ./data); ARGS adds dev flags
	$(BIN)/personalizer dev $(ARGS)

test: ## run every test with the race detector
	$(GO) vet ./...
	$(GO) test $(RACE) -count=1 ./...

bench: ## run the Go benchmarks
	$(GO) test -run '^$$' -bench . -benchmem ./...

tools: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc ## install code generators into ./bin

$(BIN)/buf:
	GOBIN=$(BIN) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
$(BIN)/protoc-gen-go:
	GOBIN=$(BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
$(BIN)/protoc-gen-go-grpc:
	GOBIN=$(BIN) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

proto: tools ## lint the protos and regenerate the Go code
	$(BIN)/buf lint
	$(BIN)/buf generate

checkgenerate: proto ## fail if the committed generated code is stale
	@git diff --exit-code -- proto || (echo "generated code is stale: run make proto and commit" >&2; exit 1)
	@test -z "$$(git ls-files --others --exclude-standard -- proto)" || (git ls-files --others --exclude-standard -- proto; echo "untracked generated files: run make proto and commit" >&2; exit 1)

lint: tools ## go vet, gofmt and buf lint
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo "gofmt needed" >&2; exit 1)
	$(BIN)/buf lint

clean: ## remove bin and the dev data directory
	rm -rf $(BIN) data
