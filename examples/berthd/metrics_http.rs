//! `GET /metrics` over HTTP/1.1 on an optional TCP address: the Prometheus text exposition
//! (format 0.0.4) of the runtime's containers, read by the metrics crate's
//! [`CgroupCollector`]. One request per connection; the request head is bounded (8 KiB,
//! 5 s); anything but `GET`/`HEAD /metrics` gets 404 or 405.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use berth::metrics::{CgroupCollector, Container, Format, Hierarchy, render};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MAX_HEAD: usize = 8 << 10;

/// Serves until the process ends.
pub async fn serve(listener: TcpListener, runtime_root: PathBuf) -> Result<()> {
    let h = Hierarchy::detect()?;
    let collector = Arc::new(CgroupCollector::new(move || {
        let ids = berth::runtime::state::list(&runtime_root).unwrap_or_default();
        ids.into_iter()
            .filter_map(|id| {
                let st = berth::runtime::read_state(&runtime_root, &id).ok()?;
                Some(Container {
                    cgroup: h.paths_for(&st.cgroup_path).ok()?,
                    id,
                    namespace: "default".to_owned(),
                })
            })
            .collect()
    }));
    loop {
        let (stream, _) = listener.accept().await?;
        let c = collector.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, c).await {
                eprintln!("berthd: /metrics: {e:#}");
            }
        });
    }
}

async fn handle(mut stream: TcpStream, collector: Arc<CgroupCollector>) -> Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    if !matches!(read, Ok(Ok(()))) {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&head);
    let mut parts = text.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            let stats = tokio::task::spawn_blocking(move || collector.scrape()).await?;
            ("200 OK", render(&stats, Format::Prometheus)?)
        }
        (_, "/metrics") => ("405 Method Not Allowed", String::new()),
        _ => ("404 Not Found", String::new()),
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        body.len(),
        if method == "HEAD" { "" } else { body.as_str() }
    );
    stream.write_all(reply.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(())
}
