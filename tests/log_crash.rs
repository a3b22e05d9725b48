//! Crash safety of writer logs: `intercom log append -` appends stdin lines in durable
//! batches and acknowledges each batch on stdout; the writer is killed with SIGKILL 20
//! times at random moments, and after each kill every acknowledged entry must be there,
//! with the right content, and the whole log must verify against its signed head.
//! Every third entry is large enough for the store's blob file.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_intercom");
const KILLS: usize = 20;

fn log_cmd(dir: &Path, args: &[&str]) -> Value {
    let out = Command::new(BIN)
        .args(["log"])
        .args(args)
        .current_dir(dir)
        .env_remove("PEER_STORES_DIRECTORY")
        .output()
        .expect("run intercom log");
    assert!(
        out.status.success(),
        "intercom log {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

/// Entry `i`: mostly short (kept inline in RocksDB), every third one 2 KB (kept in the
/// store's blob file), so both ways of storing a block are killed mid-write.
fn entry(i: u64) -> String {
    if i.is_multiple_of(3) {
        format!("e-{i}-{}", "x".repeat(2000))
    } else {
        format!("e-{i}")
    }
}

/// xorshift: random kill moments without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn acknowledged_entries_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("kill-moment seed {seed}");
    let mut rng = Rng(seed | 1);
    let info_args = ["info", "--store", "crash", "--name", "log", "--verify"];
    let started = Instant::now();
    let mut total_acked = 0;
    for round in 0..KILLS {
        let before = log_cmd(dir.path(), &info_args);
        let start = before["length"].as_u64().unwrap();
        let mut child = Command::new(BIN)
            .args(["log", "append", "--store", "crash", "--name", "log", "-"])
            .current_dir(dir.path())
            .env_remove("PEER_STORES_DIRECTORY")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn writer");
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            // Lines in small bursts until the pipe breaks (the writer was killed).
            let mut i = start;
            loop {
                let mut burst = String::new();
                for _ in 0..20 {
                    burst.push_str(&entry(i));
                    burst.push('\n');
                    i += 1;
                }
                if stdin.write_all(burst.as_bytes()).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let acked = Arc::new(AtomicU64::new(start));
        let reader = {
            let acked = acked.clone();
            let stdout = child.stdout.take().unwrap();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { return };
                    let Ok(v) = serde_json::from_str::<Value>(&line) else {
                        return;
                    };
                    if let Some(len) = v["length"].as_u64() {
                        acked.fetch_max(len, Ordering::SeqCst);
                    }
                }
            })
        };
        std::thread::sleep(Duration::from_millis(20 + rng.next() % 400));
        child.kill().expect("SIGKILL the writer");
        child.wait().unwrap();
        reader.join().unwrap();
        writer.join().unwrap();
        let acked = acked.load(Ordering::SeqCst);

        let after = log_cmd(dir.path(), &info_args);
        let length = after["length"].as_u64().unwrap();
        assert!(
            length >= acked,
            "round {round}: {acked} entries acknowledged, {length} survived"
        );
        assert_eq!(
            after["verifiedBlocks"], length,
            "round {round}: whole log verifies"
        );
        for index in [start, acked.saturating_sub(1), length.saturating_sub(1)] {
            if index < length {
                let got = log_cmd(
                    dir.path(),
                    &[
                        "get",
                        "--store",
                        "crash",
                        "--name",
                        "log",
                        "--index",
                        &index.to_string(),
                    ],
                );
                assert_eq!(got["value"], entry(index), "round {round}: block {index}");
            }
        }
        total_acked = acked;
        eprintln!("round {round}: killed after {acked} acknowledged, {length} present");
    }
    assert!(
        total_acked > 0,
        "the writer acknowledged nothing in {KILLS} rounds"
    );
    eprintln!("{KILLS} kills in {:?}", started.elapsed());
}
