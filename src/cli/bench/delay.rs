//! A TCP relay that holds every byte for a fixed time on its way in each
//! direction, so that a broker on this machine answers the bench as one
//! across a network would. A legacy job against a remote broker waits about 20 ms for each
//! confirmation; on loopback a confirmation takes a millisecond or less,
//! which flatters the one-at-a-time baseline. Through the relay, the
//! baseline, the bare clients and tranche all pay the same round trip.
//!
//! Only latency is added: no bandwidth cap, no loss, no reordering. Each
//! chunk read from one side is written to the other `one_way` after it
//! was read, in order; a side's end of stream is passed on once the bytes
//! before it are.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::BenchError;

/// Chunks held in each direction at once. A reader that gets this far
/// ahead of the delayed writer waits, so the relay's memory stays bounded
/// (at most this many reads of [`READ_BYTES`]) whatever the sender does.
const HELD_CHUNKS: usize = 4096;

/// The largest read from a socket at a time.
const READ_BYTES: usize = 64 * 1024;

/// A listening relay to one upstream `host:port`; every connection made to
/// [`DelayProxy::addr`] is relayed to it with the delay. Dropping it closes
/// the listener and every relayed connection.
pub(crate) struct DelayProxy {
    addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl DelayProxy {
    /// Listens on a free loopback port and relays to `upstream`
    /// (`host:port`), holding each direction's bytes for `one_way`.
    pub(crate) async fn start(upstream: String, one_way: Duration) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let accept = tokio::spawn(async move {
            // Owned here, so aborting this task drops every link with it.
            let mut links = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((client, _)) => {
                            links.spawn(link(client, upstream.clone(), one_way));
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "delay relay: accept failed");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    },
                    Some(_) = links.join_next(), if !links.is_empty() => {}
                }
            }
        });
        Ok(Self { addr, accept })
    }

    /// Where to connect instead of the upstream.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `url` with its `host:port` replaced by the relay's address.
    pub(crate) fn url(&self, url: &str) -> Result<String, BenchError> {
        let (start, end) = authority_host(url)?;
        Ok(format!("{}{}{}", &url[..start], self.addr(), &url[end..]))
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// The `host:port` a broker URL names, with `default_port` when it names
/// none: what a [`DelayProxy`] relays to.
pub(crate) fn upstream(url: &str, default_port: u16) -> Result<String, BenchError> {
    let (start, end) = authority_host(url)?;
    let host = &url[start..end];
    let has_port = match host.rfind(']') {
        // [v6]:port
        Some(i) => host[i..].contains(':'),
        None => host.contains(':'),
    };
    Ok(if has_port {
        host.to_owned()
    } else {
        format!("{host}:{default_port}")
    })
}

/// Where the `host[:port]` of `scheme://[user[:password]@]host[:port][/...]`
/// starts and ends in `url`.
fn authority_host(url: &str) -> Result<(usize, usize), BenchError> {
    let bad = || {
        BenchError::Config(format!(
            "{}: not a scheme://host:port URL",
            tranche::redact::redact_url(url)
        ))
    };
    let start = url.find("://").ok_or_else(bad)? + 3;
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    let host_start = url[start..end].rfind('@').map_or(start, |i| start + i + 1);
    if host_start == end {
        return Err(bad());
    }
    Ok((host_start, end))
}

/// One relayed connection: the upstream is dialled, then both directions
/// run until each has passed on its end of stream or failed.
async fn link(client: TcpStream, upstream: String, one_way: Duration) {
    let server = match TcpStream::connect(&upstream).await {
        Ok(s) => s,
        Err(e) => {
            // Dropping the client closes it: it sees the broker as down.
            tracing::warn!(error = %e, %upstream, "delay relay: cannot reach the upstream");
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let (up, down) = tokio::join!(
        pipe(client_read, server_write, one_way),
        pipe(server_read, client_write, one_way)
    );
    if let Err(e) = up.and(down) {
        tracing::debug!(error = %e, "delay relay: a connection ended with an error");
    }
}

/// Reads `from` and writes each chunk to `to` `delay` after it was read;
/// shuts `to` down after `from`'s end of stream.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) -> io::Result<()> {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(HELD_CHUNKS);
    let read = async move {
        let mut buf = vec![0u8; READ_BYTES];
        loop {
            let n = from.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            let due = Instant::now() + delay;
            if tx.send((due, buf[..n].to_vec())).await.is_err() {
                // The writer failed; it reports why.
                return Ok(());
            }
        }
    };
    let write = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            to.write_all(&chunk).await?;
        }
        to.shutdown().await
    };
    let (r, w): (io::Result<()>, io::Result<()>) = tokio::join!(read, write);
    r.and(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_are_rehosted_and_their_upstream_found() {
        let amqp = "amqp://guest:guest@127.0.0.1:5672/%2f";
        assert_eq!(upstream(amqp, 5672).unwrap(), "127.0.0.1:5672");
        assert_eq!(
            upstream("nats://localhost", 4222).unwrap(),
            "localhost:4222"
        );
        assert_eq!(upstream("nats://[::1]", 4222).unwrap(), "[::1]:4222");
        assert_eq!(upstream("nats://[::1]:4333", 4222).unwrap(), "[::1]:4333");
        assert_eq!(
            upstream("amqp://u:p@rabbit?heartbeat=5", 5672).unwrap(),
            "rabbit:5672"
        );
        let err = upstream("127.0.0.1:5672", 5672).unwrap_err().to_string();
        assert!(err.contains("not a scheme://host:port URL"), "{err}");
        assert!(upstream("amqp://user:secret@/x", 5672).is_err());
        assert!(!upstream("amqp://user:secret@/x", 5672)
            .unwrap_err()
            .to_string()
            .contains("secret"));
    }

    /// A loopback echo server: what it reads, it writes back, until the
    /// end of stream, which it passes on.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn every_round_trip_takes_the_delay_both_ways_and_bytes_pass_intact() {
        let one_way = Duration::from_millis(15);
        let proxy = DelayProxy::start(echo().await.to_string(), one_way)
            .await
            .unwrap();
        let url = proxy.url("amqp://u:p@127.0.0.1:5672/%2f").unwrap();
        assert_eq!(url, format!("amqp://u:p@{}/%2f", proxy.addr()));

        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        s.set_nodelay(true).unwrap();
        // Each ping's answer comes back no sooner than two one-way delays.
        for i in 0..3u8 {
            let sent = Instant::now();
            s.write_all(&[i]).await.unwrap();
            let mut got = [0u8; 1];
            s.read_exact(&mut got).await.unwrap();
            assert_eq!(got[0], i);
            assert!(sent.elapsed() >= 2 * one_way, "{:?}", sent.elapsed());
        }
        // A few MiB in many writes come back whole and in order, then the
        // end of stream follows them.
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let (mut r, mut w) = s.into_split();
        let send = {
            let data = data.clone();
            tokio::spawn(async move {
                for part in data.chunks(7_919) {
                    w.write_all(part).await.unwrap();
                }
                w.shutdown().await.unwrap();
            })
        };
        let mut back = Vec::new();
        r.read_to_end(&mut back).await.unwrap();
        send.await.unwrap();
        assert!(back == data, "{} bytes back of {}", back.len(), data.len());
    }

    #[tokio::test]
    async fn an_upstream_that_is_down_closes_the_client() {
        // A port that was free a moment ago: nothing listens there.
        let free = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let proxy = DelayProxy::start(free.to_string(), Duration::from_millis(1))
            .await
            .unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut buf = Vec::new();
        // End of stream (or a reset), never a hang.
        let n = s.read_to_end(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0);
    }
}
