//! Slash commands from SC-Bridge clients (`--sc-bridge-cli 1`): no secret key, no `/exit` unless allowed,
//! `@file` only under the store directory and up to the size cap; the terminal keeps the reference's behaviour.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use intercom_crypto::KeyPair;
use intercom_peer::cli::{
    load_credential_within, BridgeCliPolicy, CliContext, Dispatcher, FileError,
    BRIDGE_MAX_FILE_BYTES,
};
use intercom_peer::{NoNetwork, PeerBackend, PeerConfig, PeerRuntime};
use intercom_sc_bridge::Backend;
use serde_json::json;

/// A directory removed on drop (this crate has no tempfile dev-dependency).
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "intercom-bridge-cli-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dispatcher(seed: u8) -> (Dispatcher, KeyPair, Arc<AtomicBool>, PeerBackend) {
    let kp = KeyPair::from_seed(&[seed; 32]);
    let (h, _) = PeerRuntime::spawn(PeerConfig::default(), kp.clone(), NoNetwork).unwrap();
    let exited = Arc::new(AtomicBool::new(false));
    let flag = exited.clone();
    let d = Dispatcher::new(
        h.clone(),
        CliContext {
            keypair: kp.clone(),
            status_lines: Vec::new(),
            on_exit: Some(Box::new(move || flag.store(true, Ordering::SeqCst))),
            subnet: None,
        },
    );
    let backend = PeerBackend::new(h, None);
    (d, kp, exited, backend)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_keys_and_exit() {
    let (tty, kp, exited, backend) = dispatcher(71);
    let secret = hex::encode(kp.secret_key);
    let public = hex::encode(kp.public_key);

    // The terminal: as the reference.
    let r = tty.run("/get_keys").await;
    assert!(
        r.ok && r.output.iter().any(|l| l.contains(&secret)),
        "{r:?}"
    );

    // The bridge, through the backend as `intercom run` wires it (a terminal dispatcher is restricted).
    let remote = backend.with_cli(tty.clone());
    let r = remote.cli("/get_keys".into()).await;
    assert!(r.ok, "{r:?}");
    let all = format!("{r:?}");
    assert!(!all.contains(&secret), "secret key over the bridge: {all}");
    assert!(all.contains(&public));
    assert_eq!(r.result, json!({ "publicKey": public }));

    let r = remote.cli("/exit".into()).await;
    assert!(!r.ok);
    assert!(
        r.error.as_deref().unwrap().contains("--sc-bridge-cli-exit"),
        "{r:?}"
    );
    assert!(!exited.load(Ordering::SeqCst));

    // Allowed explicitly.
    let allowed = tty.for_bridge(BridgeCliPolicy {
        allow_exit: true,
        ..BridgeCliPolicy::default()
    });
    let r = allowed.run("/get_keys").await;
    assert!(!format!("{r:?}").contains(&secret));
    assert!(allowed.run("/exit").await.ok);
    assert!(exited.load(Ordering::SeqCst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_arguments_stay_in_the_store() {
    let (tty, _, _, _) = dispatcher(72);
    let store = TempDir::new("store");
    let elsewhere = TempDir::new("elsewhere");
    let welcome = tty.run("/sc_welcome --channel room --text hi").await;
    assert!(welcome.ok, "{welcome:?}");
    let text = welcome.output[0].clone();
    std::fs::write(store.path().join("welcome.json"), &text).unwrap();
    std::fs::create_dir(store.path().join("db")).unwrap();
    std::fs::write(store.path().join("db/keypair.json"), &text).unwrap();
    std::fs::write(elsewhere.path().join("welcome.json"), &text).unwrap();
    std::fs::write(
        store.path().join("big.json"),
        " ".repeat(BRIDGE_MAX_FILE_BYTES as usize + 1),
    )
    .unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(
        elsewhere.path().join("welcome.json"),
        store.path().join("link.json"),
    )
    .unwrap();

    let policy = BridgeCliPolicy {
        file_root: Some(store.path().to_owned()),
        ..BridgeCliPolicy::default()
    };
    // Under the store, relative or absolute.
    assert!(load_credential_within("@welcome.json", &policy).is_ok());
    let abs = format!("@{}", store.path().join("welcome.json").display());
    assert!(load_credential_within(&abs, &policy).is_ok());
    // Inline forms are unaffected.
    assert!(load_credential_within(&text, &policy).is_ok());
    // Outside, through `..`, through a link, in db/, missing, a directory, too large.
    let outside = format!("@{}", elsewhere.path().join("welcome.json").display());
    for bad in [
        outside.as_str(),
        "@../welcome.json",
        "@link.json",
        "@db/keypair.json",
        "@db/../db/keypair.json",
        "@missing.json",
    ] {
        match load_credential_within(bad, &policy) {
            Err(FileError::Outside(_)) => {}
            #[cfg(not(unix))]
            Ok(_) if bad == "@link.json" => {}
            other => panic!("{bad}: {other:?}"),
        }
    }
    assert!(matches!(
        load_credential_within("@.", &policy),
        Err(FileError::NotAFile)
    ));
    assert!(matches!(
        load_credential_within("@big.json", &policy),
        Err(FileError::TooLarge(BRIDGE_MAX_FILE_BYTES))
    ));
    // No file root: every @file refused.
    assert!(matches!(
        load_credential_within("@welcome.json", &BridgeCliPolicy::default()),
        Err(FileError::NoFiles)
    ));

    // Through the dispatcher: the bridge's refusal names the rule; the terminal reads any file.
    let remote = tty.for_bridge(policy);
    let r = remote
        .run(&format!("/sc_join --channel room --welcome {outside}"))
        .await;
    assert!(!r.ok);
    assert!(
        r.error.as_deref().unwrap().contains("under the peer store"),
        "{r:?}"
    );
    let r = remote
        .run("/sc_join --channel room --welcome @welcome.json")
        .await;
    // Read and parsed (whether the runtime then takes the welcome is another matter).
    assert!(
        !r.error.as_deref().unwrap_or("").contains("Invalid welcome"),
        "{r:?}"
    );
    let r = tty
        .run(&format!("/sc_join --channel room2 --welcome {outside}"))
        .await;
    assert!(
        !r.error
            .as_deref()
            .unwrap_or("")
            .contains("under the peer store"),
        "{r:?}"
    );
}
