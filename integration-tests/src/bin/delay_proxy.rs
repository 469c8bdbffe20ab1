//! `hangar-delay-proxy --listen ADDR --to ADDR --delay-ms N`: a TCP proxy that delivers
//! every byte N milliseconds after it arrived, in both directions, so a request and its
//! answer cross it in 2·N ms. It stands in for network latency where the kernel has no
//! `tc netem`: scripts/bench-round-trips.sh puts one in front of each data node, and the
//! time a request takes, divided by 2·N, counts its sequential internal round trips.
//!
//! Bytes are not held back for each other: what arrives is forwarded at its own time, so
//! throughput stays that of the link (only latency is added). At most `IN_FLIGHT` reads
//! wait per direction; past that the proxy stops reading, so a receiver that does not read
//! slows its sender as TCP would.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Parser)]
#[command(about = "A TCP proxy that adds a fixed delay to every byte, both ways")]
struct Args {
    /// Where to accept connections.
    #[arg(long)]
    listen: SocketAddr,
    /// Where to forward them.
    #[arg(long)]
    to: SocketAddr,
    /// Delay added in each direction, in milliseconds.
    #[arg(long, default_value_t = 5)]
    delay_ms: u64,
}

/// Reads waiting to be delivered, per direction of a connection (each at most 64 KiB).
const IN_FLIGHT: usize = 256;

/// Reads from `from` and writes to `to`, each chunk `delay` after it was read.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Bytes)>(IN_FLIGHT);
    let writer = tokio::spawn(async move {
        while let Some((due, data)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&data).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx.send((Instant::now() + delay, Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

async fn serve(client: TcpStream, to: SocketAddr, delay: Duration) {
    let Ok(server) = TcpStream::connect(to).await else { return };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    tokio::join!(pump(cr, sw, delay), pump(sr, cw, delay));
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen).await?;
    let delay = Duration::from_millis(args.delay_ms);
    loop {
        let (client, _) = listener.accept().await?;
        tokio::spawn(serve(client, args.to, delay));
    }
}
