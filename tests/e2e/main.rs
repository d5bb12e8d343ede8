//! System tests: a module per behaviour. See `tickwire-testkit` for the harness.

mod auth;
mod backpressure;
mod errors;
mod http_api;
mod protocol;
mod recovery;
mod shutdown;
