//! The NBD frontend: fixed newstyle handshake, export name = volume name,
//! over TCP and unix sockets, many connections per export.

use std::sync::Arc;

use tokio::net::{TcpListener, UnixListener};

use crate::device::ExportCatalog;

/// Serves every export of `catalog` on a TCP listener until dropped.
#[allow(unused_variables)]
pub async fn serve_tcp<C: ExportCatalog>(listener: TcpListener, catalog: Arc<C>) -> std::io::Result<()> {
    unimplemented!("nbd in progress")
}

/// Serves every export of `catalog` on a unix-socket listener until dropped.
#[allow(unused_variables)]
pub async fn serve_unix<C: ExportCatalog>(listener: UnixListener, catalog: Arc<C>) -> std::io::Result<()> {
    unimplemented!("nbd in progress")
}
