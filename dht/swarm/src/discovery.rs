//! One joined topic (`lib/peer-discovery.js`): a task that announces (server) or looks
//! up (client only) the topic, reports the peers it finds, and refreshes every 10
//! minutes plus up to 2 minutes of jitter. Leaving unannounces.
//!
//! Unlike JS Hyperswarm, a peer found here that failed all its retries brings the next
//! refresh forward to [`REDISCOVER_AFTER`], once per regular refresh: a mesh that lost a
//! pair to a burst of timeouts heals in about a minute instead of ten.

use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::Duration;

use intercom_crypto::KeyPair;
use intercom_hyperdht::messages::Peer;
use intercom_hyperdht::{AnnounceOptions, HyperDht};
use tokio::sync::{mpsc, oneshot, watch, Notify};

/// Time between refreshes (`REFRESH_INTERVAL`).
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(600);
/// Random extra time per refresh (`RANDOM_JITTER`).
pub const RANDOM_JITTER: Duration = Duration::from_secs(120);
/// How soon a topic is looked up again after one of its peers failed every retry.
pub const REDISCOVER_AFTER: Duration = Duration::from_secs(30);

/// How a topic is joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinOptions {
    /// Announce ourselves so others connect to us.
    pub server: bool,
    /// Look peers up and connect to them.
    pub client: bool,
}

impl Default for JoinOptions {
    fn default() -> Self {
        JoinOptions {
            server: true,
            client: true,
        }
    }
}

/// A peer found under a topic.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub topic: [u8; 32],
    pub peer: Peer,
}

/// Asks the driver to listen (for the first server topic); answers our relay addresses.
pub(crate) type ListenRequest = oneshot::Sender<Vec<SocketAddrV4>>;

/// The control side of a topic task.
pub(crate) struct Topic {
    mode: watch::Sender<JoinOptions>,
    refresh: Arc<Notify>,
    rediscover: Arc<Notify>,
    refreshing: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Topic {
    pub fn spawn(
        dht: HyperDht,
        key_pair: KeyPair,
        topic: [u8; 32],
        opts: JoinOptions,
        found: mpsc::Sender<Found>,
        listen: mpsc::Sender<ListenRequest>,
    ) -> Topic {
        let (mode, mode_rx) = watch::channel(opts);
        let refresh = Arc::new(Notify::new());
        let rediscover = Arc::new(Notify::new());
        let (refreshing_tx, refreshing) = watch::channel(true);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(
            Ctx {
                dht,
                key_pair,
                topic,
                found,
                listen,
            },
            mode_rx,
            Wakeups {
                refresh: refresh.clone(),
                rediscover: rediscover.clone(),
            },
            refreshing_tx,
            stop_rx,
        ));
        Topic {
            mode,
            refresh,
            rediscover,
            refreshing,
            stop,
            task,
        }
    }

    /// Changes the mode and refreshes now.
    pub fn update(&self, opts: JoinOptions) {
        self.mode.send_replace(opts);
        self.refresh.notify_one();
    }

    /// A peer found here failed every retry: refresh within [`REDISCOVER_AFTER`] (once
    /// per regular refresh).
    pub fn rediscover(&self) {
        self.rediscover.notify_one();
    }

    /// A receiver that is `false` whenever no refresh runs.
    pub fn refreshing(&self) -> watch::Receiver<bool> {
        self.refreshing.clone()
    }

    /// Stops, unannounces if we announced, and waits for that.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
    }
}

struct Ctx {
    dht: HyperDht,
    key_pair: KeyPair,
    topic: [u8; 32],
    found: mpsc::Sender<Found>,
    listen: mpsc::Sender<ListenRequest>,
}

fn jitter() -> Duration {
    let r = u64::from_le_bytes(intercom_crypto::random_array());
    Duration::from_millis(r % (RANDOM_JITTER.as_millis() as u64 + 1))
}

/// What wakes a topic task before its refresh timer.
struct Wakeups {
    /// Refresh now (mode change, user refresh).
    refresh: Arc<Notify>,
    /// Refresh within [`REDISCOVER_AFTER`].
    rediscover: Arc<Notify>,
}

async fn run(
    ctx: Ctx,
    mode: watch::Receiver<JoinOptions>,
    wake: Wakeups,
    refreshing: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut first_announce = true;
    let mut announced = false;
    // An early refresh was already granted since the last regular one.
    let mut rediscovered = false;
    'refreshes: loop {
        refreshing.send_replace(true);
        let opts = *mode.borrow();
        if !opts.server && announced {
            // No longer a server on this topic (`lookupAndUnannounce`).
            let _ = ctx.dht.unannounce(ctx.topic, &ctx.key_pair).await;
            announced = false;
        }
        let once = refresh_once(&ctx, opts, first_announce);
        tokio::select! {
            r = once => {
                if opts.server {
                    first_announce = false;
                    announced |= r;
                }
            }
            _ = stop.wait_for(|s| *s) => break,
        }
        refreshing.send_replace(false);
        let next = tokio::time::sleep(REFRESH_INTERVAL + jitter());
        tokio::pin!(next);
        let mut early = false;
        loop {
            tokio::select! {
                _ = &mut next => break,
                _ = wake.refresh.notified() => break,
                _ = wake.rediscover.notified(), if !rediscovered => {
                    let soon = tokio::time::Instant::now() + REDISCOVER_AFTER;
                    if soon < next.deadline() {
                        next.as_mut().reset(soon);
                        early = true;
                        rediscovered = true;
                    }
                }
                _ = stop.wait_for(|s| *s) => break 'refreshes,
            }
        }
        if !early {
            rediscovered = false;
        }
    }
    if announced {
        let _ = ctx.dht.unannounce(ctx.topic, &ctx.key_pair).await;
    }
    refreshing.send_replace(false);
}

/// One refresh; true when we announced.
async fn refresh_once(ctx: &Ctx, opts: JoinOptions, first: bool) -> bool {
    if opts.server {
        let (tx, rx) = oneshot::channel();
        if ctx.listen.send(tx).await.is_err() {
            return false;
        }
        let Ok(relays) = rx.await else { return false };
        let ann = AnnounceOptions {
            clear: first,
            ..AnnounceOptions::default()
        };
        match ctx
            .dht
            .announce(ctx.topic, &ctx.key_pair, &relays, ann)
            .await
        {
            Ok(res) => {
                if opts.client {
                    for r in res.replies {
                        report(ctx, r.peers).await;
                    }
                }
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "announce failed");
                false
            }
        }
    } else {
        let Ok(mut q) = ctx.dht.lookup(ctx.topic).await else {
            return false;
        };
        while let Some(r) = q.next().await {
            if opts.client {
                report(ctx, r.peers).await;
            }
        }
        let _ = q.finish().await;
        false
    }
}

async fn report(ctx: &Ctx, peers: Vec<Peer>) {
    for peer in peers {
        let _ = ctx
            .found
            .send(Found {
                topic: ctx.topic,
                peer,
            })
            .await;
    }
}
