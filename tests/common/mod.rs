//! Shared helpers for integration tests: spawning the pinned JS peers under tests/node.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long any single wait on a JS peer may take before the test fails.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Directory holding package.json and the node scripts.
pub fn tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests")
}

/// A running node script whose stdout is read as JSON lines; killed when dropped, and
/// its temporary files (`TMPDIR` points into a directory of its own) removed with it.
pub struct NodePeer {
    child: Child,
    stdin: Option<tokio::process::ChildStdin>,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    pub name: String,
    /// Dropped after `child` (fields drop in order): the script's hypercore stores go
    /// even when it is killed before its own cleanup runs.
    _tmp: Option<tempfile::TempDir>,
}

impl NodePeer {
    /// Starts `node tests/node/<script> args...`. Panics with a clear message when the JS
    /// modules are not installed.
    pub fn spawn(script: &str, args: &[&str]) -> NodePeer {
        NodePeer::start(script, args, false)
    }

    /// Like [`NodePeer::spawn`], with stdin kept open for [`NodePeer::send_line`] (such
    /// scripts exit when stdin ends, i.e. when the peer is dropped).
    pub fn spawn_interactive(script: &str, args: &[&str]) -> NodePeer {
        NodePeer::start(script, args, true)
    }

    fn start(script: &str, args: &[&str], interactive: bool) -> NodePeer {
        let dir = tests_dir();
        assert!(
            dir.join("node_modules").join("protomux").exists(),
            "JS modules missing: run `npm ci --prefix tests` (the test command does this)"
        );
        let tmp = tempfile::Builder::new()
            .prefix("intercom-node-peer-")
            .tempdir()
            .expect("temporary directory for a node script");
        let mut cmd = Command::new("node");
        cmd.arg(dir.join("node").join(script))
            .args(args)
            .current_dir(&dir)
            .env("TMPDIR", tmp.path());
        let mut peer =
            NodePeer::from_command(cmd, format!("{script} {}", args.join(" ")), interactive);
        peer._tmp = Some(tmp);
        peer
    }

    /// Runs any command that prints JSON lines (our binary's tools, say) the same way.
    pub fn from_command(mut cmd: Command, name: String, interactive: bool) -> NodePeer {
        let mut child = cmd
            .stdin(if interactive {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        NodePeer {
            stdin: child.stdin.take(),
            child,
            lines: BufReader::new(stdout).lines(),
            name,
            _tmp: None,
        }
    }

    /// Closes stdin (interactive scripts then finish and exit).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The process id, for cleanup and fault injection.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The next JSON line; panics on timeout, exit, or an `error` report.
    pub async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(STEP_TIMEOUT, self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("{}: no output within {:?}", self.name, STEP_TIMEOUT))
            .expect("read stdout")
            .unwrap_or_else(|| panic!("{}: exited without the expected output", self.name));
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("{}: bad line {line:?}: {e}", self.name));
        if let Some(err) = v.get("error") {
            panic!(
                "{} reported: {}",
                self.name,
                err.as_str().unwrap_or_default()
            );
        }
        v
    }

    /// Writes one line to the script's stdin (interactive peers only).
    pub async fn send_line(&mut self, line: &str) {
        use tokio::io::AsyncWriteExt;
        let stdin = self
            .stdin
            .as_mut()
            .expect("peer spawned with spawn_interactive");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write to node stdin");
        stdin.flush().await.expect("flush node stdin");
    }

    /// Reads lines until one satisfies `pred`.
    pub async fn until(&mut self, mut pred: impl FnMut(&Value) -> bool) -> Value {
        loop {
            let v = self.next().await;
            if pred(&v) {
                return v;
            }
        }
    }

    /// The port a `listen` peer reports first.
    pub async fn port(&mut self) -> u16 {
        let v = self.next().await;
        v["port"].as_u64().expect("port line") as u16
    }

    /// Kills the process and waits until it is gone (its files and locks released).
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// Waits for the process to exit and returns whether it succeeded.
    pub async fn wait(mut self) -> bool {
        tokio::time::timeout(STEP_TIMEOUT, self.child.wait())
            .await
            .map(|s| s.map(|s| s.success()).unwrap_or(false))
            .unwrap_or(false)
    }
}

impl Drop for NodePeer {
    fn drop(&mut self) {
        // Reap the script before its temporary directory is removed, so that it cannot
        // write into the directory while it goes.
        if self._tmp.is_some() {
            let _ = self.child.start_kill();
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}
