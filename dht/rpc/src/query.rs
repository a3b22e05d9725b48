//! The iterative Kademlia query of `lib/query.js`, as a pure state machine.
//!
//! A [`Query`] keeps the `k` closest successful replies seen so far, a stack of nodes
//! still to visit and a `seen` map (visited, down, or "who told us about it" for DOWN_HINT
//! gossip). Its methods never send anything: they push [`QueryAction`]s (visit this node,
//! send that DOWN_HINT, report this reply, the walk is over) that the node executes.
//! The concurrency, slow-request and slowdown rules are those of the JS module.

use std::collections::HashMap;
use std::net::SocketAddrV4;

use crate::messages::{node_id, NodeId};
use crate::node::{Peer, Reply};
use crate::routing::cmp_distance;

/// Most nodes remembered per query (visited, pending or down); new ones are ignored once
/// the map is full so a hostile peer cannot grow it.
pub const MAX_SEEN: usize = 2048;
/// Most "told us about it" references remembered per node (each gets a DOWN_HINT).
pub const MAX_REFS: usize = 16;
/// Most closer nodes read from a single reply (honest nodes send at most k = 20).
pub const MAX_CLOSER_PER_REPLY: usize = 64;

/// A node to visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub addr: SocketAddrV4,
    pub id: NodeId,
}

impl Candidate {
    pub fn new(addr: SocketAddrV4) -> Self {
        Candidate {
            addr,
            id: node_id(&addr),
        }
    }
}

#[derive(Debug, Clone)]
enum Seen {
    Refs(Vec<Peer>),
    Done,
    Down,
}

/// Something the node must do for a query.
#[derive(Debug, Clone)]
pub(crate) enum QueryAction {
    /// Send the query's command to this node.
    Visit(Candidate),
    /// Tell `to` that `down` (which it gossiped to us) timed out.
    DownHint { to: Peer, down: SocketAddrV4 },
    /// A successful reply (the JS 'data' event).
    Data(Reply),
    /// The walk is over (the JS `_flush`): commit or finish.
    Flush,
}

/// Everything a query reads from its node while it runs.
pub(crate) struct QueryEnv<'a> {
    /// Our table id (nodes with it are skipped).
    pub own_id: &'a NodeId,
    /// Nodes closest to the target from the routing table: `(addr, id)`.
    pub table_closest: &'a dyn Fn(&NodeId, usize) -> Vec<Candidate>,
    /// Bootstrap nodes to start from when the table has too few.
    pub bootstrap: &'a [SocketAddrV4],
    /// The node filter (`filterNode`).
    pub filter: &'a dyn Fn(&SocketAddrV4) -> bool,
    /// New concurrency to apply on each successful reply (background queries yield to
    /// other traffic this way).
    pub data_concurrency: Option<usize>,
    /// Output.
    pub actions: Vec<QueryAction>,
}

/// Iterative lookup state.
#[derive(Debug)]
pub(crate) struct Query {
    pub target: NodeId,
    pub k: usize,
    pub concurrency: usize,
    pub inflight: usize,
    pub successes: usize,
    pub errors: usize,
    pub closest: Vec<Reply>,
    pub committing: bool,
    slow: usize,
    slowdown: bool,
    from_table: bool,
    only_closest: bool,
    seen: HashMap<SocketAddrV4, Seen>,
    pending: Vec<Candidate>,
}

impl Query {
    /// A query with optional start nodes (visited first-to-last).
    pub fn new(
        target: NodeId,
        k: usize,
        concurrency: usize,
        nodes: &[SocketAddrV4],
        only_closest: bool,
    ) -> Self {
        let mut q = Query {
            target,
            k,
            concurrency: concurrency.max(1),
            inflight: 0,
            successes: 0,
            errors: 0,
            closest: Vec::new(),
            committing: false,
            slow: 0,
            slowdown: false,
            from_table: false,
            only_closest: false,
            seen: HashMap::new(),
            pending: Vec::new(),
        };
        let mut noop = Vec::new();
        for addr in nodes.iter().rev() {
            q.add_pending(Candidate::new(*addr), None, &mut noop);
        }
        q.only_closest = only_closest;
        q
    }

    /// `_open`: seed from the table, then the bootstrap nodes if that was not enough.
    pub fn open(&mut self, env: &mut QueryEnv<'_>) {
        self.add_from_table(env);
        if self.pending.len() >= self.k {
            return;
        }
        for addr in env.bootstrap {
            self.add_pending(Candidate::new(*addr), None, &mut env.actions);
        }
    }

    fn add_from_table(&mut self, env: &mut QueryEnv<'_>) {
        if self.pending.len() >= self.k {
            return;
        }
        self.from_table = true;
        let closest = (env.table_closest)(&self.target, self.k - self.pending.len());
        for c in closest {
            self.add_pending(c, None, &mut env.actions);
        }
    }

    fn is_closer(&self, id: &NodeId) -> bool {
        match self.closest.last() {
            _ if self.closest.len() < self.k => true,
            Some(last) => match &last.from.id {
                Some(last_id) => cmp_distance(&self.target, id, last_id).is_lt(),
                None => true,
            },
            None => true,
        }
    }

    /// `_addPending`: remembers a node (and who told us about it); true when it is closer
    /// than the current k-th reply.
    fn add_pending(
        &mut self,
        node: Candidate,
        by: Option<Peer>,
        actions: &mut Vec<QueryAction>,
    ) -> bool {
        if self.only_closest {
            return false;
        }
        let closer = self.is_closer(&node.id);
        match self.seen.get_mut(&node.addr) {
            Some(Seen::Done) => closer,
            Some(Seen::Down) => {
                if let Some(by) = by {
                    actions.push(QueryAction::DownHint {
                        to: by,
                        down: node.addr,
                    });
                }
                closer
            }
            Some(Seen::Refs(refs)) => {
                if let Some(by) = by {
                    if refs.len() < MAX_REFS {
                        refs.push(by);
                    }
                }
                closer
            }
            None => {
                if !closer || self.seen.len() >= MAX_SEEN {
                    return false;
                }
                self.seen
                    .insert(node.addr, Seen::Refs(by.into_iter().collect()));
                self.pending.push(node);
                true
            }
        }
    }

    /// `_readMore`: starts visits up to the concurrency limit; flushes when done.
    pub fn read_more(&mut self, env: &mut QueryEnv<'_>) {
        if self.committing {
            return;
        }
        let concurrency = if self.slowdown { 3 } else { self.concurrency } + self.slow;
        while self.inflight < concurrency {
            let Some(next) = self.pending.pop() else {
                break;
            };
            if !self.is_closer(&next.id) {
                continue;
            }
            self.inflight += 1;
            env.actions.push(QueryAction::Visit(next));
        }

        if !self.from_table && self.successes == 0 && self.errors == 0 {
            self.slowdown = true;
        }
        if !self.pending.is_empty() {
            return;
        }
        if self.inflight == 0 || (self.slow == self.inflight && self.closest.len() >= self.k) {
            if !self.from_table && self.successes < self.k / 4 {
                self.add_from_table(env);
                self.read_more(env);
                return;
            }
            self.committing = true;
            env.actions.push(QueryAction::Flush);
        }
    }

    fn dec(&mut self, cycled: bool) {
        if cycled {
            self.slow = self.slow.saturating_sub(1);
        }
        self.inflight = self.inflight.saturating_sub(1);
    }

    /// `_onvisit`: the node at `visited` answered. `cycled` is true when its request had
    /// already been marked slow.
    pub fn on_reply(
        &mut self,
        visited: SocketAddrV4,
        reply: Reply,
        cycled: bool,
        env: &mut QueryEnv<'_>,
    ) {
        self.dec(cycled);
        self.seen.insert(visited, Seen::Done);
        if self.committing {
            return;
        }
        if reply.error == 0 {
            self.successes += 1;
        } else {
            self.errors += 1;
        }
        if reply.error == 0 {
            if let Some(id) = reply.from.id {
                if self.is_closer(&id) {
                    self.push_closest(reply.clone());
                }
            }
        }
        for addr in reply.closer_nodes.iter().take(MAX_CLOSER_PER_REPLY) {
            if !(env.filter)(addr) {
                continue;
            }
            let c = Candidate::new(*addr);
            if &c.id == env.own_id {
                continue;
            }
            if !self.add_pending(c, Some(reply.from), &mut env.actions) {
                break;
            }
        }
        if !self.from_table && self.successes + self.errors >= self.concurrency {
            self.slowdown = false;
        }
        if reply.error == 0 {
            if let Some(c) = env.data_concurrency {
                self.concurrency = c.max(1);
            }
            env.actions.push(QueryAction::Data(reply));
        }
        self.read_more(env);
    }

    /// `_onerror`: a visit failed; on a timeout the node is marked down and everyone who
    /// told us about it gets a DOWN_HINT.
    pub fn on_error(
        &mut self,
        addr: SocketAddrV4,
        timeout: bool,
        cycled: bool,
        env: &mut QueryEnv<'_>,
    ) {
        if timeout {
            if let Some(Seen::Refs(refs)) = self.seen.insert(addr, Seen::Down) {
                for r in refs {
                    env.actions
                        .push(QueryAction::DownHint { to: r, down: addr });
                }
            }
        }
        self.dec(cycled);
        self.errors += 1;
        self.read_more(env);
    }

    /// `_oncycle`: a visit's first send timed out; allow one more parallel request.
    pub fn on_cycle(&mut self, env: &mut QueryEnv<'_>) {
        self.slow += 1;
        self.read_more(env);
    }

    fn push_closest(&mut self, m: Reply) {
        let Some(id) = m.from.id else { return };
        // Position of the first reply farther than (or equal to) the new one.
        let mut pos = self.closest.len();
        while pos > 0 {
            let prev = self.closest[pos - 1].from.id.unwrap_or([0xff; 32]);
            match cmp_distance(&self.target, &prev, &id) {
                std::cmp::Ordering::Less => break,
                std::cmp::Ordering::Equal => return, // duplicate: keep the first
                std::cmp::Ordering::Greater => pos -= 1,
            }
        }
        self.closest.insert(pos, m);
        if self.closest.len() > self.k {
            self.closest.pop();
        }
    }

    /// Number of requests still outstanding.
    #[cfg(test)]
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::SocketKind;

    fn addr(i: u32) -> SocketAddrV4 {
        SocketAddrV4::new((0x0a00_0000 + i).into(), 1000)
    }

    fn reply(from: SocketAddrV4, closer: Vec<SocketAddrV4>) -> Reply {
        Reply {
            from: Peer {
                addr: from,
                id: Some(node_id(&from)),
            },
            to: addr(9999),
            socket: SocketKind::Client,
            tid: 0,
            rtt_ms: 0,
            token: None,
            closer_nodes: closer,
            error: 0,
            value: None,
        }
    }

    fn run(q: &mut Query, f: impl FnOnce(&mut Query, &mut QueryEnv<'_>)) -> Vec<QueryAction> {
        let own = [0u8; 32];
        let closest = |_: &NodeId, _: usize| Vec::new();
        let boot = [addr(1)];
        let mut env = QueryEnv {
            own_id: &own,
            table_closest: &closest,
            bootstrap: &boot,
            filter: &|_| true,
            data_concurrency: None,
            actions: Vec::new(),
        };
        f(q, &mut env);
        env.actions
    }

    fn visits(actions: &[QueryAction]) -> Vec<SocketAddrV4> {
        actions
            .iter()
            .filter_map(|a| match a {
                QueryAction::Visit(c) => Some(c.addr),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn walks_to_the_closest_nodes_and_flushes() {
        let target = [0x42; 32];
        let mut q = Query::new(target, 20, 10, &[], false);
        let a = run(&mut q, |q, env| {
            q.open(env);
            q.read_more(env);
        });
        assert_eq!(visits(&a), vec![addr(1)], "bootstrap node first");
        let others: Vec<_> = (2..30).map(addr).collect();
        let a = run(&mut q, |q, env| {
            q.on_reply(addr(1), reply(addr(1), others.clone()), false, env)
        });
        // `_addFromTable` ran in open (even with an empty table), so no slowdown: the full
        // concurrency of 10 is used.
        assert_eq!(visits(&a).len(), 10);
        assert!(a.iter().any(|x| matches!(x, QueryAction::Data(_))));
        let mut inflight = visits(&a);
        let mut all_actions = Vec::new();
        while let Some(next) = inflight.pop() {
            let a = run(&mut q, |q, env| {
                q.on_reply(next, reply(next, vec![]), false, env)
            });
            inflight.extend(visits(&a));
            all_actions.extend(a);
        }
        assert!(all_actions.iter().any(|x| matches!(x, QueryAction::Flush)));
        assert!(q.committing);
        assert_eq!(q.closest.len(), 20);
        // Sorted by distance to the target.
        for w in q.closest.windows(2) {
            let (x, y) = (w[0].from.id.unwrap(), w[1].from.id.unwrap());
            assert!(cmp_distance(&target, &x, &y).is_lt());
        }
        assert_eq!(q.pending_len(), 0);
    }

    #[test]
    fn timeouts_send_down_hints_to_referrers() {
        let mut q = Query::new([0; 32], 20, 10, &[addr(1), addr(5)], false);
        let a = run(&mut q, |q, env| q.read_more(env));
        assert_eq!(visits(&a), vec![addr(1), addr(5)]);
        let a = run(&mut q, |q, env| {
            q.on_reply(addr(1), reply(addr(1), vec![addr(2)]), false, env)
        });
        assert_eq!(visits(&a), vec![addr(2)]);
        let a = run(&mut q, |q, env| q.on_error(addr(2), true, false, env));
        let hints: Vec<_> = a
            .iter()
            .filter_map(|x| match x {
                QueryAction::DownHint { to, down } => Some((to.addr, *down)),
                _ => None,
            })
            .collect();
        assert_eq!(hints, vec![(addr(1), addr(2))]);
        // Another node gossiping the dead one also gets a hint.
        let a = run(&mut q, |q, env| {
            q.on_reply(addr(5), reply(addr(5), vec![addr(2)]), false, env)
        });
        assert!(a
            .iter()
            .any(|x| matches!(x, QueryAction::DownHint { to, down } if to.addr == addr(5) && *down == addr(2))));
    }

    #[test]
    fn slow_requests_widen_the_window() {
        let nodes: Vec<_> = (1..=12).map(addr).collect();
        let mut q = Query::new([0; 32], 20, 2, &nodes, false);
        let a = run(&mut q, |q, env| q.read_more(env));
        assert_eq!(visits(&a).len(), 2);
        // Started from explicit nodes with no answer yet: slowdown (3) plus one slow.
        let a = run(&mut q, |q, env| q.on_cycle(env));
        assert_eq!(visits(&a).len(), 2);
        let a = run(&mut q, |q, env| q.on_error(addr(1), true, true, env));
        assert_eq!(visits(&a).len(), 0);
        assert_eq!(q.inflight, 3);
    }

    #[test]
    fn seen_map_is_bounded() {
        let mut q = Query::new([0; 32], 20, 10, &[addr(1)], false);
        run(&mut q, |q, env| q.read_more(env));
        let many: Vec<_> = (2..5000).map(addr).collect();
        run(&mut q, |q, env| {
            q.on_reply(addr(1), reply(addr(1), many), false, env)
        });
        assert!(q.seen.len() <= MAX_CLOSER_PER_REPLY + 1);
    }
}
