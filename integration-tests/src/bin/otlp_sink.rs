//! An OTLP/gRPC trace sink that counts what it receives: the tracing backend of
//! `scripts/bench-tracing.sh`. Prints the span count every 5 s, and at exit.
//!
//!     hangar-otlp-sink 127.0.0.1:4317

use std::time::Duration;

use hangar_integration_tests::otlp::Receiver;

#[tokio::main]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:4317".into());
    let (receiver, endpoint) = Receiver::start_counting(&addr).await;
    println!("receiving OTLP traces at {endpoint}");
    let mut last = 0;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        let n = receiver.count();
        if n != last {
            println!("spans received: {n}");
            last = n;
        }
    }
    println!("spans received: {}", receiver.count());
}
