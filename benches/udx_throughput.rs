//! UDX stream throughput over 127.0.0.1, one way, 256 MB by default (`UDX_BENCH_MB`):
//! udx-native JS <-> JS (two node processes), Rust <-> Rust (two sockets in this
//! process), Rust -> JS and JS -> Rust. Run with `cargo bench --bench udx_throughput`;
//! `UDX_BENCH_ONLY=js-js|rust-rust|rust-rust-shared|rust-js|js-rust` runs one of them
//! (`rust-rust-shared` puts both ends on sockets shared with a stand-in DHT task, the
//! HyperDHT layout).
//! Needs node and the pinned modules (`npm ci --prefix tests`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use intercom_udx::{ChannelIo, Datagram, SocketConfig, UdxSocket, UdxStream};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const LIMIT: Duration = Duration::from_secs(300);

struct Js {
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Js {
    fn spawn(role: &str, local: u32, remote: u32, bytes: u64) -> Js {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests");
        let mut child = Command::new("node")
            .arg(dir.join("node").join("udx-bench.js"))
            .args([
                role,
                &local.to_string(),
                &remote.to_string(),
                &bytes.to_string(),
            ])
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn node");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Js {
            _child: child,
            stdin,
            lines,
        }
    }

    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(LIMIT, self.lines.next_line())
            .await
            .expect("node output in time")
            .unwrap()
            .expect("node exited early");
        serde_json::from_str(&line).unwrap()
    }

    async fn until(&mut self, event: &str) -> Value {
        loop {
            let v = self.next().await;
            if v["event"] == event {
                return v;
            }
            assert_ne!(v["event"], "stream-error", "{v}");
        }
    }

    async fn port(&mut self) -> u16 {
        self.next().await["port"].as_u64().unwrap() as u16
    }

    async fn say(&mut self, line: &str) {
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        self.stdin.write_all(b"\n").await.unwrap();
        self.stdin.flush().await.unwrap();
    }
}

fn lo(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

async fn rust_send(mut s: UdxStream, bytes: u64) -> UdxStream {
    let chunk = vec![0x5au8; 64 * 1024];
    let mut sent = 0u64;
    while sent < bytes {
        let n = ((bytes - sent) as usize).min(chunk.len());
        s.write_all(&chunk[..n]).await.unwrap();
        sent += n as u64;
    }
    s.shutdown().await.unwrap();
    s
}

async fn rust_recv(mut s: UdxStream) -> (u64, UdxStream) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let k = s.read(&mut buf).await.unwrap();
        if k == 0 {
            s.shutdown().await.unwrap();
            return (n, s);
        }
        n += k as u64;
    }
}

async fn js_js(bytes: u64) -> f64 {
    let mut rx = Js::spawn("recv", 2, 1, 0);
    let mut tx = Js::spawn("send", 1, 2, bytes);
    let (rp, tp) = (rx.port().await, tx.port().await);
    rx.say(&tp.to_string()).await;
    tx.say(&rp.to_string()).await;
    rx.until("connected").await;
    tx.until("connected").await;
    let t = Instant::now();
    tx.say("go").await;
    let v = rx.until("end").await;
    let d = t.elapsed();
    assert_eq!(v["bytes"].as_u64(), Some(bytes));
    tx.until("finish").await;
    mbps(bytes, d)
}

async fn rust_rust(bytes: u64) -> (f64, String) {
    let a = UdxSocket::bind(lo(0), SocketConfig::default())
        .await
        .unwrap();
    let b = UdxSocket::bind(lo(0), SocketConfig::default())
        .await
        .unwrap();
    let sa = a.connect(1, 2, b.local_addr()).unwrap();
    let sb = b.connect(2, 1, a.local_addr()).unwrap();
    let t = Instant::now();
    let send = tokio::spawn(rust_send(sa, bytes));
    let (got, sb) = rust_recv(sb).await;
    let d = t.elapsed();
    assert_eq!(got, bytes);
    let sa = send.await.unwrap();
    let st = sa.stats();
    let detail = format!(
        "mtu {}, {} retransmits, {} RTOs, {} data packets, {} acks",
        st.mtu,
        st.retransmits,
        st.rto_count,
        st.packets_tx,
        sb.stats().packets_tx
    );
    let _ = sb.closed().await;
    (mbps(bytes, d), detail)
}

/// A socket shared with a stand-in DHT task that owns the receive loop and hands UDX
/// datagrams over a bounded channel (the HyperDHT layout); UDX sends straight through the
/// socket.
async fn shared_socket() -> (UdxSocket, tokio::task::JoinHandle<()>) {
    let udp = std::sync::Arc::new(tokio::net::UdpSocket::bind(lo(0)).await.unwrap());
    if std::env::var("SMALLBUF").is_err() {
        intercom_udx::set_buffer_sizes(&udp, 4 << 20, 1 << 20).unwrap();
    }
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let u = udp.clone();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = u.recv_from(&mut buf).await {
            if buf[0] == 0xff {
                let d = Datagram {
                    addr: from,
                    bytes: buf[..n].to_vec(),
                };
                if tx.send(d).await.is_err() {
                    break;
                }
            }
        }
    });
    let io = ChannelIo::with_socket(rx, udp).unwrap();
    (
        UdxSocket::with_io(io, SocketConfig::default()).unwrap(),
        task,
    )
}

async fn rust_rust_shared(bytes: u64) -> (f64, String) {
    let (a, ta) = shared_socket().await;
    let (b, tb) = shared_socket().await;
    let sa = a.connect(1, 2, b.local_addr()).unwrap();
    let sb = b.connect(2, 1, a.local_addr()).unwrap();
    let t = Instant::now();
    let send = tokio::spawn(rust_send(sa, bytes));
    let (got, _sb) = rust_recv(sb).await;
    let d = t.elapsed();
    assert_eq!(got, bytes);
    let st = send.await.unwrap().stats();
    ta.abort();
    tb.abort();
    (
        mbps(bytes, d),
        format!(
            "both on shared sockets; {} retransmits, {} RTOs",
            st.retransmits, st.rto_count
        ),
    )
}

async fn rust_to_js(bytes: u64) -> (f64, String) {
    let sock = UdxSocket::bind(lo(0), SocketConfig::default())
        .await
        .unwrap();
    let mut js = Js::spawn("recv", 2, 1, 0);
    let port = js.port().await;
    js.say(&sock.local_addr().port().to_string()).await;
    js.until("connected").await;
    let s = sock.connect(1, 2, lo(port)).unwrap();
    let t = Instant::now();
    let send = tokio::spawn(rust_send(s, bytes));
    let v = js.until("end").await;
    let d = t.elapsed();
    assert_eq!(v["bytes"].as_u64(), Some(bytes));
    let st = send.await.unwrap().stats();
    (
        mbps(bytes, d),
        format!(
            "{} retransmits, {} RTOs, {} acks in",
            st.retransmits, st.rto_count, st.packets_rx
        ),
    )
}

async fn js_to_rust(bytes: u64) -> (f64, String) {
    let sock = UdxSocket::bind(lo(0), SocketConfig::default())
        .await
        .unwrap();
    let mut js = Js::spawn("send", 2, 1, bytes);
    let port = js.port().await;
    js.say(&sock.local_addr().port().to_string()).await;
    js.until("connected").await;
    let s = sock.connect(1, 2, lo(port)).unwrap();
    let t = Instant::now();
    js.say("go").await;
    let (got, s) = rust_recv(s).await;
    let d = t.elapsed();
    assert_eq!(got, bytes);
    js.until("finish").await;
    let st = s.stats();
    (
        mbps(bytes, d),
        format!("{} packets in, {} acks", st.packets_rx, st.packets_tx),
    )
}

fn main() {
    let mb: u64 = std::env::var("UDX_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let bytes = mb * 1_000_000;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(LIMIT * 4, async {
            println!("udx throughput, {mb} MB one way over 127.0.0.1");
            let only = std::env::var("UDX_BENCH_ONLY").unwrap_or_default();
            let run = |name: &str| only.is_empty() || only == name;
            if run("js-js") {
                let v = js_js(bytes).await;
                println!("  udx-native JS  -> JS    {v:8.1} MB/s");
            }
            if run("rust-rust") {
                let (v, detail) = rust_rust(bytes).await;
                println!("  intercom  Rust -> Rust  {v:8.1} MB/s   ({detail})");
            }
            if run("rust-rust-shared") {
                let (v, detail) = rust_rust_shared(bytes).await;
                println!("  intercom  Rust -> Rust  {v:8.1} MB/s   ({detail})");
            }
            if run("rust-js") {
                let (v, detail) = rust_to_js(bytes).await;
                println!("  mixed     Rust -> JS    {v:8.1} MB/s   ({detail})");
            }
            if run("js-rust") {
                let (v, detail) = js_to_rust(bytes).await;
                println!("  mixed     JS   -> Rust  {v:8.1} MB/s   ({detail})");
            }
        })
        .await
        .expect("benchmark finished in time");
    });
}
