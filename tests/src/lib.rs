//! System tests of tickwire: one integration binary (`e2e/main.rs`), a module
//! per behaviour, each against a real broker on 127.0.0.1:0 through real
//! sockets. Run with `cargo test -p tickwire-e2e`.
