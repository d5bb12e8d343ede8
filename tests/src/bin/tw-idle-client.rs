//! A WebSocket client process for heartbeat tests: connects to the address in
//! its first argument, completes the upgrade, prints `ready`, then blocks
//! reading. The test stops it with SIGSTOP, so it answers nothing, although
//! its kernel still acknowledges TCP.

use std::io::{Read, Write};
use std::net::TcpStream;

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .expect("usage: tw-idle-client HOST:PORT");
    let mut s = TcpStream::connect(&addr)?;
    write!(
        s,
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(std::io::Error::other("closed during the handshake"));
        }
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(std::io::Error::other("upgrade refused"));
    }
    println!("ready");
    std::io::stdout().flush()?;
    let mut buf = [0u8; 4096];
    while s.read(&mut buf)? > 0 {}
    Ok(())
}
