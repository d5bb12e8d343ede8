#!/usr/bin/env bash
# Starts the uWS peer with the command line compare-builds.sh gives a broker
# binary, so it can stand beside tickwire builds there:
#   benches/compare-builds.sh OUT 3 tickwire=target/release/tickwire uws=benches/peers/uws/run.sh
# Install once: npm ci --prefix benches/peers/uws
exec node "$(dirname "$0")/server.mjs" "$@"
