//! System tests: a module per behaviour. See `tickwire-testkit` for the harness.

mod auth;
mod backpressure;
mod conformance;
mod conformance_audit;
mod edges;
mod errors;
mod heartbeat;
mod http_api;
mod hygiene;
mod protocol;
mod recovery;
mod shutdown;
mod sockets;
mod stale;
mod tls;
