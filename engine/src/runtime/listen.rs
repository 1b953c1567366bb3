//! `SO_REUSEPORT` listeners: every shard binds its own socket to each listen address and the
//! kernel spreads incoming connections across them.

use std::{
    io,
    net::{SocketAddr, TcpListener},
};

use socket2::{Domain, Protocol, Socket, Type};

fn reuse_socket(addr: SocketAddr) -> io::Result<Socket> {
    // socket2 creates sockets close-on-exec.
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    Ok(socket)
}

/// A listening TCP socket on `addr` with `SO_REUSEADDR` and `SO_REUSEPORT` (`IPV6_V6ONLY` for
/// IPv6 addresses), non-blocking, listening with `backlog` (capped by `net.core.somaxconn`).
///
/// Non-blocking is what the epoll driver requires (a blocking socket there would stall the whole
/// shard in `accept`). Under io_uring monoio keeps its own sockets blocking and lets the ring
/// wait; [`shard_listener`] follows that convention for whichever driver is running.
pub fn bind_listener(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = reuse_socket(addr)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(socket.into())
}

/// This shard's own listener on `addr`: [`bind_listener`], the blocking mode monoio uses for the
/// running driver (blocking under io_uring, non-blocking under epoll), then
/// `monoio::net::TcpListener::from_std`.
///
/// # Panics
/// Outside a monoio runtime (call it from a shard's future).
pub fn shard_listener(addr: SocketAddr, backlog: u32) -> io::Result<monoio::net::TcpListener> {
    let listener = bind_listener(addr, backlog)?;
    listener.set_nonblocking(monoio::utils::is_legacy())?;
    monoio::net::TcpListener::from_std(listener)
}

/// Socket options for an accepted downstream connection: `TCP_NODELAY` (a proxy writes whole
/// heads and body chunks; Nagle would only add latency).
pub fn tune_accepted(stream: &monoio::net::TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)
}

/// Resolves port 0 in `addr` to a concrete free port, so that several shards can bind the same
/// address with `SO_REUSEPORT` (each binding port 0 would get a different port). Other
/// addresses are returned unchanged.
///
/// The port is found by binding (not listening) a socket and closing it again; another process
/// could take the port in between, which is fine for tests and demos.
pub fn reserve_addr(addr: SocketAddr) -> io::Result<SocketAddr> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    let socket = reuse_socket(addr)?;
    socket.bind(&addr.into())?;
    socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bound socket has no IP address"))
}
