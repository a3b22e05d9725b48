//! Wire benchmark: streams 256 MB over secret-stream + protomux on loopback TCP, JS<->JS
//! (the pinned npm modules, tests/node/bench-wire.js) and Rust<->Rust, each side in its own
//! process, and prints MB/s for both and the ratio.
//!
//!   cargo bench --bench wire_throughput            (256 MB; `-- --mb N` to change)
//!
//! Both implementations use the same shape: one channel `intercom/bench`, message 0 carries
//! 64 KiB chunks, message 1 the receiver's byte-count acknowledgement.

use std::process::Stdio;
use std::time::Instant;

use intercom_protomux::{ChannelEvent, ChannelOptions, Mux, MuxConfig};
use intercom_secret_stream::{KeyPair, SecretStream, SecretStreamConfig};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;

const CHUNK: usize = 64 * 1024;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn uint(n: u64) -> Vec<u8> {
    let mut w = intercom_encoding::Writer::new();
    w.uint(n);
    w.into_vec()
}

async fn receive() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("{{\"port\":{}}}", listener.local_addr().unwrap().port());
    let (sock, _) = listener.accept().await.unwrap();
    let (r, w) = sock.into_split();
    let stream = SecretStream::responder(r, w, KeyPair::generate(), SecretStreamConfig::default())
        .await
        .unwrap();
    let (reader, writer) = stream.split();
    let (mux, _events) = Mux::new(reader, writer, MuxConfig::default());
    let mut ch = mux
        .open_channel(ChannelOptions::new("intercom/bench"))
        .await
        .unwrap();
    let mut bytes = 0u64;
    let mut expected = u64::MAX;
    while let Some(ev) = ch.recv().await {
        if let ChannelEvent::Message {
            message_type,
            payload,
        } = ev
        {
            match message_type {
                0 => bytes += payload.len() as u64,
                1 => expected = intercom_encoding::Reader::new(&payload).uint().unwrap(),
                _ => {}
            }
            if bytes >= expected {
                ch.send(1, &uint(bytes)).await.unwrap();
                println!("{{\"bytes\":{bytes}}}");
                break;
            }
        }
    }
    // Wait for the sender to hang up.
    while ch.recv().await.is_some() {}
}

async fn send(port: u16, mb: u64) {
    let total = mb * 1024 * 1024;
    let (r, w) = TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap()
        .into_split();
    let stream = SecretStream::initiator(r, w, KeyPair::generate(), SecretStreamConfig::default())
        .await
        .unwrap();
    let (reader, writer) = stream.split();
    let (mux, _events) = Mux::new(reader, writer, MuxConfig::default());
    let mut ch = mux
        .open_channel(ChannelOptions::new("intercom/bench"))
        .await
        .unwrap();
    let chunk = vec![0xabu8; CHUNK];
    let start = Instant::now();
    ch.send(1, &uint(total)).await.unwrap();
    let mut sent = 0u64;
    while sent < total {
        ch.send(0, &chunk).await.unwrap();
        sent += CHUNK as u64;
    }
    loop {
        match ch.recv().await {
            Some(ChannelEvent::Message {
                message_type: 1, ..
            }) => break,
            Some(_) => continue,
            None => panic!("receiver went away before acknowledging"),
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "{{\"bytes\":{total},\"seconds\":{seconds},\"mbPerSec\":{}}}",
        total as f64 / (1024.0 * 1024.0) / seconds
    );
    mux.close().await;
}

/// Starts a receiver and a sender process and returns the sender's MB/s.
async fn pair(receiver: Command, mut sender: impl FnMut(u16) -> Command) -> f64 {
    let mut receiver = receiver;
    let mut rx = receiver
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn receiver");
    let mut lines = BufReader::new(rx.stdout.take().unwrap()).lines();
    let first = lines.next_line().await.unwrap().expect("receiver port");
    let port: serde_json::Value = serde_json::from_str(&first).unwrap();
    let port = port["port"].as_u64().unwrap() as u16;
    let out = sender(port)
        .stderr(Stdio::inherit())
        .output()
        .await
        .expect("run sender");
    assert!(out.status.success(), "sender failed");
    let report: serde_json::Value =
        serde_json::from_slice(out.stdout.trim_ascii()).expect("sender report");
    let _ = rx.wait().await;
    report["mbPerSec"].as_f64().unwrap()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mb: u64 = arg("--mb").and_then(|s| s.parse().ok()).unwrap_or(256);
    match arg("--role").as_deref() {
        Some("receive") => return receive().await,
        Some("send") => return send(arg("--port").unwrap().parse().unwrap(), mb).await,
        _ => {}
    }
    let tests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let script = tests.join("node").join("bench-wire.js");
    let exe = std::env::current_exe().unwrap();
    let mb_s = mb.to_string();

    // Each process is pinned to its own core (receiver on 1, sender on 0) so both stacks
    // get the same CPU and runs are repeatable.
    let pinned = |cpu: &str, program: &std::ffi::OsStr| {
        let mut c = Command::new("taskset");
        c.args(["-c", cpu]).arg(program);
        c
    };
    let mut js_recv = pinned("1", "node".as_ref());
    js_recv.arg(&script).arg("receive").current_dir(&tests);
    let js = pair(js_recv, |port| {
        let mut c = pinned("0", "node".as_ref());
        c.arg(&script)
            .args(["send", &port.to_string(), &mb_s])
            .current_dir(&tests);
        c
    })
    .await;

    let mut rust_recv = pinned("1", exe.as_os_str());
    rust_recv.args(["--role", "receive"]);
    let rust = pair(rust_recv, |port| {
        let mut c = pinned("0", exe.as_os_str());
        c.args(["--role", "send", "--port", &port.to_string(), "--mb", &mb_s]);
        c
    })
    .await;

    println!("wire throughput, {mb} MB over secret-stream + protomux on loopback TCP:");
    println!("  JS   <-> JS   : {js:8.1} MB/s");
    println!("  Rust <-> Rust : {rust:8.1} MB/s");
    println!("  ratio Rust/JS : {:8.2}x", rust / js);
}
