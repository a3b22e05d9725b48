//! The slash-command dispatcher against live runtimes (two, connected in memory).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use intercom_crypto::KeyPair;
use intercom_peer::cli::{CliContext, Dispatcher};
use intercom_peer::testing::connect;
use intercom_peer::{NoNetwork, PeerConfig, PeerHandle, PeerRuntime};
use intercom_protomux::MuxConfig;
use intercom_sidechannel::SidechannelConfig;
use serde_json::Value;

fn runtime(seed: u8, sc: SidechannelConfig) -> (PeerHandle, Dispatcher, Arc<AtomicBool>) {
    let kp = KeyPair::from_seed(&[seed; 32]);
    let cfg = PeerConfig {
        sidechannel: sc,
        ..PeerConfig::default()
    };
    let (h, _) = PeerRuntime::spawn(cfg, kp.clone(), NoNetwork).unwrap();
    let exited = Arc::new(AtomicBool::new(false));
    let flag = exited.clone();
    let d = Dispatcher::new(
        h.clone(),
        CliContext {
            keypair: kp,
            status_lines: vec!["Peer store: stores/test".into()],
            on_exit: Some(Box::new(move || flag.store(true, Ordering::SeqCst))),
            subnet: None,
        },
    );
    (h, d, exited)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slash_commands() {
    let owner_kp = KeyPair::from_seed(&[51; 32]);
    let owner_hex = hex::encode(owner_kp.public_key);
    let sc = SidechannelConfig {
        owner_keys: [("club".to_owned(), owner_hex.clone())].into(),
        invite_required: true,
        invite_required_channels: Some(["club".to_owned()].into()),
        inviter_keys: vec![owner_hex.clone()],
        ..SidechannelConfig::default()
    };
    let (owner, od, exited) = runtime(51, sc.clone());
    let (guest, gd, _) = runtime(52, sc);
    connect(&owner, &guest, 64, MuxConfig::default())
        .await
        .unwrap();

    let r = od.run("/help").await;
    assert!(r.ok && r.output.iter().any(|l| l.contains("/sc_invite")));

    // Welcome, then an invite that embeds it.
    let r = od
        .run("/sc_welcome --channel club --text \"members only\"")
        .await;
    assert!(r.ok, "{r:?}");
    assert!(r.output[1].starts_with("welcome_b64: "));
    assert_eq!(r.result["payload"]["text"], "members only");
    let r = od.run("/sc_join --channel club").await;
    assert_eq!(r.output, ["Joined sidechannel: club"]);

    let guest_hex = guest.public_key_hex();
    let r = od
        .run(&format!(
            "/sc_invite --channel club --pubkey {guest_hex} --ttl abc"
        ))
        .await;
    assert!(!r.ok);
    assert!(r.error.unwrap().starts_with("Invite TTL is required"));
    let r = od
        .run(&format!(
            "/sc_invite --ch club --invitee {guest_hex} --ttl 3600"
        ))
        .await;
    assert!(r.ok, "{r:?}");
    assert!(r.result.get("welcome").is_some());
    let b64 = r.output[1].strip_prefix("invite_b64: ").unwrap().to_owned();

    // The guest: denied without the invite, joins with it from a file.
    let r = gd.run("/sc_join --channel club").await;
    assert_eq!(
        r.error.as_deref(),
        Some("Join denied (invite required or invalid).")
    );
    let r = gd.run("/sc_join --channel club --invite {nope").await;
    assert_eq!(
        r.error.as_deref(),
        Some("Invalid invite. Pass JSON, base64, or @file.")
    );
    let dir = std::env::temp_dir().join(format!("intercom-peer-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("invite.b64");
    std::fs::write(&file, &b64).unwrap();
    let r = gd
        .run(&format!(
            "/sc_join --channel club --invite @{}",
            file.display()
        ))
        .await;
    assert!(r.ok, "{r:?}");
    std::fs::remove_dir_all(&dir).unwrap();

    // Once the guest proved its invite, the owner's send reaches it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = od
            .run("/sc_send --channel club --message \"hello members\"")
            .await;
        assert!(r.ok, "{r:?}");
        if r.result["peers"] == 1 {
            assert_eq!(r.output, ["Sent to 1 peer(s) on club."]);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "guest never authorised"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let r = gd.run("/sc_stats").await;
    assert_eq!(r.result["connectionCount"], 1);
    assert_eq!(
        r.result["channels"],
        serde_json::json!(["0000intercom", "club"])
    );
    let r = gd.run("/stats").await;
    assert!(r.output.iter().any(|l| l == "swarm.connections.size: 1"));
    assert!(r.output.iter().any(|l| l == "Peer store: stores/test"));
    let r = gd.run("/get_keys").await;
    assert!(r.output[1].ends_with(&guest_hex));
    assert_eq!(r.output[2].len(), "Secret Key:  ".len() + 128);

    let r = gd.run("/sc_open --channel other").await;
    assert!(!r.ok, "no welcome for other: {r:?}");
    let r = gd.run("/sc_send --channel club").await;
    assert!(r.error.unwrap().starts_with("Usage: /sc_send"));
    let r = gd.run("/tx --command ping").await;
    assert!(r.error.unwrap().contains("no subnet plane"));
    // Without a subnet there is no contract either, so its operations are unknown.
    let r = gd.run("/post --message hi").await;
    assert!(r.error.unwrap().starts_with("Unknown command: /post"));
    let r = gd.run("/msb").await;
    assert!(r.error.unwrap().contains("not yet available"));
    let r = gd.run("/sc_joinx").await;
    assert!(r.error.unwrap().starts_with("Unknown command"));
    assert_eq!(gd.run("").await.result, Value::Null);

    assert!(!exited.load(Ordering::SeqCst));
    let r = od.run("/exit").await;
    assert_eq!(r.output, ["Exiting..."]);
    assert!(exited.load(Ordering::SeqCst));
}
