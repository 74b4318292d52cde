//! Serves in-memory exports over NBD, for trying clients and measuring the
//! frontend without replicas behind it.
//!
//! ```text
//! cargo run -p vigil-engine --example nbd_memory -- [--tcp ADDR] [--unix PATH] [--size MIB] [NAME...]
//! nbdinfo nbd://127.0.0.1:10809/vol
//! fio --ioengine=nbd --uri=nbd://127.0.0.1:10809/vol --rw=randrw --bs=4k --iodepth=32 --size=256M --name=t
//! ```
//! Defaults: `--tcp 127.0.0.1:10809 --size 256 vol`. `RUST_LOG=debug` shows
//! connections.

use std::sync::Arc;

use vigil_engine::nbd::memory::{MemoryCatalog, MemoryDevice};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let mut tcp = None;
    let mut unix = None;
    let mut size_mib: u64 = 256;
    let mut names = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--tcp" => tcp = args.next(),
            "--unix" => unix = args.next(),
            "--size" => size_mib = args.next().ok_or("--size needs a value")?.parse()?,
            "-h" | "--help" => {
                eprintln!("usage: nbd_memory [--tcp ADDR] [--unix PATH] [--size MIB] [NAME...]");
                return Ok(());
            }
            _ => names.push(a),
        }
    }
    if names.is_empty() {
        names.push("vol".to_owned());
    }
    if tcp.is_none() && unix.is_none() {
        tcp = Some("127.0.0.1:10809".to_owned());
    }

    let mut catalog = MemoryCatalog::new();
    for n in &names {
        catalog.insert(n.clone(), Arc::new(MemoryDevice::new(size_mib << 20)));
    }
    let catalog = Arc::new(catalog);

    let mut servers = tokio::task::JoinSet::new();
    if let Some(addr) = tcp {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        tracing::info!(
            "serving {names:?} ({size_mib} MiB each) on nbd://{}",
            listener.local_addr()?
        );
        servers.spawn(vigil_engine::nbd::serve_tcp(listener, catalog.clone()));
    }
    if let Some(path) = unix {
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path)?;
        tracing::info!("serving {names:?} ({size_mib} MiB each) on nbd+unix:///?socket={path}");
        servers.spawn(vigil_engine::nbd::serve_unix(listener, catalog.clone()));
    }
    if let Some(done) = servers.join_next().await {
        done??;
    }
    Ok(())
}
