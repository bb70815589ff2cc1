# Everything runs from a fresh clone with only Go installed: tools go into ./bin.
GO      ?= go
BIN     := $(CURDIR)/bin
RACE    ?= -race
# COMPOSE runs docker-compose.yml for make up, make down and make checkcompose
# alike. The default is Debian's docker-compose, which CI installs and checks
# the file with; COMPOSE='docker compose' uses Docker's Compose plugin.
COMPOSE ?= docker-compose

BUF_VERSION                   := v1.75.0
PROTOC_GEN_GO_VERSION         := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION    := v1.6.2
PROTOC_GEN_GO_VTPROTO_VERSION := v0.6.0
GOTESTSUM_VERSION             := v1.13.0

.DEFAULT_GOAL := help
.PHONY: help build run test bench proto proto-python checkgenerate lint tools deps examples up down checkcompose clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: ## build bin/personalizer
	$(GO) build -o $(BIN)/personalizer ./cmd/personalizer

run: build ## run everything in one process (gRPC 127.0.0.1:50051, HTTP and the dashboard http://127.0.0.1:8080/, Kafka :9092, data in ./data); ARGS adds dev flags
	$(BIN)/personalizer dev $(ARGS)

# gotestsum prints a line for each package and each top-level test as it
# ends, and a failed test's output; the filter leaves out the lines of
# passed and skipped subtests and of packages without tests. bash, for
# pipefail: the status is gotestsum's.
test: $(BIN)/gotestsum ## go vet, then every test with the race detector, a line per test and package as each ends
	$(GO) vet ./...
	bash -o pipefail -c '$(BIN)/gotestsum --format testname --raw-command -- $(GO) test -json $(RACE) -count=1 -timeout 30m ./... | \
		grep --line-buffered -Ev "^(EMPTY |(PASS|SKIP) ([^ .]*\.)?(Test|Fuzz|Example)[^ /]*/)"'

bench: ## run the Go benchmarks
	$(GO) test -run '^$$' -bench . -benchmem ./...

deps: ## install what the polyglot examples and the dashboard's browser tests need (Debian packages, npm packages); needs root
	apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q curl python3-grpcio python3-protobuf protobuf-compiler protobuf-compiler-grpc
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium
	command -v npm >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm
	cd client/node && npm ci --no-audit --no-fund

examples: build ## run the Python and Node examples against a live server (after make deps)
	client/run-examples.sh

up: ## build the image and start Kafka, the topics, a learner, a joiner and two servers (docker-compose.yml)
	$(COMPOSE) up -d --build

down: ## stop and remove what make up started (the data volumes stay)
	$(COMPOSE) down

checkcompose: ## validate docker-compose.yml with the Compose make up uses (COMPOSE: Debian's docker-compose unless set)
	$(COMPOSE) -f docker-compose.yml config -q

tools: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc $(BIN)/protoc-gen-go-vtproto $(BIN)/gotestsum ## install the code generators and gotestsum into ./bin

$(BIN)/buf:
	GOBIN=$(BIN) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
$(BIN)/protoc-gen-go:
	GOBIN=$(BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
$(BIN)/protoc-gen-go-grpc:
	GOBIN=$(BIN) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
$(BIN)/protoc-gen-go-vtproto:
	GOBIN=$(BIN) $(GO) install github.com/planetscale/vtprotobuf/cmd/protoc-gen-go-vtproto@$(PROTOC_GEN_GO_VTPROTO_VERSION)
$(BIN)/gotestsum:
	GOBIN=$(BIN) $(GO) install gotest.tools/gotestsum@$(GOTESTSUM_VERSION)

proto: tools ## lint the protos and regenerate the Go code
	$(BIN)/buf lint
	$(BIN)/buf generate

proto-python: tools ## regenerate the Python stubs in client/python (needs Debian's protoc and grpc_python_plugin: make deps)
	$(BIN)/buf generate --template buf.gen.python.yaml

checkgenerate: proto ## fail if the committed generated code is stale
	@git diff --exit-code -- proto || (echo "generated code is stale: run make proto and commit" >&2; exit 1)
	@test -z "$$(git ls-files --others --exclude-standard -- proto)" || (git ls-files --others --exclude-standard -- proto; echo "untracked generated files: run make proto and commit" >&2; exit 1)

lint: tools ## go vet, gofmt and buf lint
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo "gofmt needed" >&2; exit 1)
	$(BIN)/buf lint

clean: ## remove bin and the dev data directory
	rm -rf $(BIN) data
