#!/usr/bin/env bash
# Runs the Python and Node examples against a live `personalizer dev` on
# ports of its own, with a throwaway data directory: each example ranks on
# the dev's single-slot loop, then makes a multi-slot loop of its own (a
# --ccb_explore_adf policy), ranks on it and deletes it. Needs bin/personalizer
# (make build), Debian's python3-grpcio and python3-protobuf, and Node.js
# with client/node's packages (npm ci); `make deps` installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
data=$(mktemp -d)
grpc=127.0.0.1:50151
./bin/personalizer dev --data-dir "$data" --grpc-addr "$grpc" --http-addr 127.0.0.1:8180 \
  --broker-addr 127.0.0.1:9192 --log-level warn &
dev=$!
trap 'kill $dev 2>/dev/null; wait $dev 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do
  curl -sf http://127.0.0.1:8180/healthz >/dev/null && break
  kill -0 $dev 2>/dev/null || { echo "personalizer dev exited" >&2; exit 1; }
  sleep 0.1
done
(cd client/python && /usr/bin/python3 example.py --addr "$grpc")
(cd client/node && node example.js --addr "$grpc")
(cd client/node && node sdk.js --endpoint http://127.0.0.1:8180)
