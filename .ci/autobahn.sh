#!/usr/bin/env bash
# Autobahn conformance of the gateway's frame layer (docs/security.md).
#
# Builds crates/gateway/examples/echo.rs (feature `conformance`: the broker's
# reader, writer and close handshake, echoing messages), starts it on a free
# port, runs the Autobahn cases with kosoku (minus 12.* and 13.*, which test
# permessage-deflate, an extension tickwire does not offer), and fails when
# any case is FAILED (or anything other than OK, NON-STRICT or INFORMATIONAL).
# The HTML/JSON report is left in $AUTOBAHN_REPORT (default: a temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v kosoku >/dev/null 2>&1; then
    python3 -m pip install --quiet kosoku==0.1.0
fi

# --workspace: the dependencies keep the features the test steps built them
# with, so only the gateway and the example are compiled again.
cargo build --quiet --workspace --features tickwire-gateway/conformance --example echo
target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
echo_bin="$target_dir/debug/examples/echo"

report=${AUTOBAHN_REPORT:-$(mktemp -d)}
mkdir -p "$report"
"$echo_bin" 127.0.0.1:0 >"$report/echo.log" 2>&1 &
echo_pid=$!
trap 'kill "$echo_pid" 2>/dev/null || true; wait "$echo_pid" 2>/dev/null || true' EXIT

addr=""
for _ in $(seq 1 100); do
    addr=$(sed -n 's/^listening on //p' "$report/echo.log")
    [ -n "$addr" ] && break
    sleep 0.1
done
if [ -z "$addr" ]; then
    echo "autobahn: the echo server did not start" >&2
    cat "$report/echo.log" >&2
    exit 1
fi

# kosoku's own exit code is not the verdict: the report below is.
kosoku -m fuzzingclient "ws://$addr/ws" -x '12.*' -x '13.*' -o "$report/cases" || true

python3 - "$report/cases/index.json" <<'PY'
import collections, json, sys

try:
    index = json.load(open(sys.argv[1]))
except (OSError, ValueError) as e:
    print(f"autobahn: no report ({e})")
    sys.exit(1)
cases = {k: v for agent in index.values() for k, v in agent.items()}
accepted = {"OK", "NON-STRICT", "INFORMATIONAL"}
counts = collections.Counter(v["behavior"] for v in cases.values())
failed = []
for case, v in sorted(cases.items(), key=lambda kv: [int(p) for p in kv[0].split(".")]):
    verdict = (v["behavior"], v.get("behaviorClose", "OK"))
    if verdict[0] not in accepted or verdict[1] not in accepted:
        failed.append(case)
    if verdict != ("OK", "OK"):
        print(f"  {case}: {verdict[0]} (close: {verdict[1]}, code {v.get('remoteCloseCode')})")
print("autobahn cases by behavior:", dict(counts))
if len(cases) < 250:
    print(f"autobahn: only {len(cases)} cases ran")
    failed.append("too few cases")
print(f"autobahn: {len(cases) - len(failed)} passed, {len(failed)} failed")
sys.exit(1 if failed else 0)
PY
