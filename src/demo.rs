//! `intercom demo`: an offline walk-through on 127.0.0.1. Two peers with their own Ed25519
//! identities connect over TCP, run the Noise XX handshake of secret-stream, open the
//! `sidechannel/0000intercom` protomux channel and exchange JSON messages.
//!
//! This is the wire layer only; the demo grows with the stack (DHT discovery, the
//! sidechannel plane and the SC-Bridge replace the direct TCP connection as they land).

use std::time::Duration;

use anyhow::{bail, Context};
use intercom_encoding::{Reader, Writer};
use intercom_protomux::{Channel, ChannelEvent, ChannelOptions, Mux, MuxConfig};
use intercom_secret_stream::{KeyPair, SecretStream, SecretStreamConfig};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

/// Options of `intercom demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Messages each peer sends.
    #[arg(long, default_value_t = 3)]
    messages: usize,
}

const CHANNEL: &str = "sidechannel/0000intercom";
const WAIT: Duration = Duration::from_secs(10);

fn json_message(v: &serde_json::Value) -> Vec<u8> {
    let mut w = Writer::new();
    w.json(v);
    w.into_vec()
}

async fn open(
    stream_kp: KeyPair,
    sock: TcpStream,
    initiator: bool,
) -> anyhow::Result<(Mux, Channel, [u8; 32])> {
    let (r, w) = sock.into_split();
    let cfg = SecretStreamConfig::default();
    let stream = if initiator {
        SecretStream::initiator(r, w, stream_kp, cfg).await?
    } else {
        SecretStream::responder(r, w, stream_kp, cfg).await?
    };
    let remote = stream.remote_public_key();
    let (reader, writer) = stream.split();
    let (mux, _events) = Mux::new(reader, writer, MuxConfig::default());
    let channel = mux.open_channel(ChannelOptions::new(CHANNEL)).await?;
    if !channel.fully_opened().await {
        bail!("the remote did not open {CHANNEL}");
    }
    Ok((mux, channel, remote))
}

/// Sends `count` messages and prints the `count` the other side sends.
async fn talk(
    name: &str,
    kp: &KeyPair,
    channel: &mut Channel,
    remote: [u8; 32],
    count: usize,
) -> anyhow::Result<()> {
    let from = hex::encode(kp.public_key);
    for n in 1..=count {
        let msg = json!({"type": "sidechannel", "channel": "0000intercom", "from": from, "message": format!("hello #{n} from {name}")});
        channel.send(0, &json_message(&msg)).await?;
    }
    let mut got = 0;
    while got < count {
        let event = tokio::time::timeout(WAIT, channel.recv())
            .await
            .context("waiting for a message")?;
        match event {
            Some(ChannelEvent::Message { payload, .. }) => {
                let v = Reader::new(&payload).json()?;
                println!(
                    "{name} <- {}…: {}",
                    &hex::encode(remote)[..16],
                    v["message"].as_str().unwrap_or_default()
                );
                got += 1;
            }
            Some(ChannelEvent::Opened { .. }) => {}
            Some(ChannelEvent::Closed { .. }) | None => bail!("{name}: channel closed early"),
        }
    }
    Ok(())
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let alice = KeyPair::generate();
    let bob = KeyPair::generate();
    println!("alice {}", hex::encode(alice.public_key));
    println!("bob   {}", hex::encode(bob.public_key));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    println!("alice listens on {addr}; bob connects");

    let alice_kp = alice.clone();
    let count = args.messages;
    let alice_side = tokio::spawn(async move {
        let (sock, _) = listener.accept().await?;
        let (mux, mut channel, remote) = open(alice_kp.clone(), sock, false).await?;
        talk("alice", &alice_kp, &mut channel, remote, count).await?;
        mux.close().await;
        anyhow::Ok(remote)
    });
    let sock = TcpStream::connect(addr).await?;
    let (mux, mut channel, remote) = open(bob.clone(), sock, true).await?;
    println!("encrypted channel {CHANNEL} open (Noise XX + secretstream)");
    talk("bob", &bob, &mut channel, remote, count).await?;
    let seen_by_alice = alice_side.await??;
    mux.close().await;
    if seen_by_alice != bob.public_key || remote != alice.public_key {
        bail!("peers authenticated the wrong keys");
    }
    println!(
        "done: both peers authenticated each other's keys and exchanged {count} messages each"
    );
    Ok(())
}
