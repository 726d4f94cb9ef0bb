//! The chunked body reader, fed over a real loopback connection (it reads from a `TcpStream`):
//! any bytes decode to a body or an error, never a panic or a hang.

use std::time::Duration;

use keygate_http::wire::Wire;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    afl::fuzz!(|data: &[u8]| {
        rt.block_on(async {
            let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
            let (mut client, (server, _)) = (client.unwrap(), server.unwrap());
            let input = data.to_vec();
            let writer = tokio::spawn(async move {
                let _ = client.write_all(&input).await;
                let _ = client.shutdown().await;
            });
            let mut wire = Wire::new(server, Some(Duration::from_secs(5)), true);
            let _ = wire.read_chunked(1 << 20).await;
            let _ = writer.await;
        });
    });
}
