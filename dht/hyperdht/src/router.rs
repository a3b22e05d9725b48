//! How a DHT node routes PEER_HANDSHAKE and PEER_HOLEPUNCH requests (`lib/router.js`), as
//! pure functions from the request and the target's forward to one [`RouteAction`].
//!
//! A peer that announced its own key on this node left a *forward* (its address as the
//! relay, see [`crate::store::Forward`]). A client's handshake or holepunch reaches this
//! node with mode FROM_CLIENT and is relayed to that peer (FROM_RELAY), possibly through
//! a second relay; the server's answer comes back FROM_SERVER and is sent to the client
//! as the REPLY:
//!
//! ```text
//! client --FROM_CLIENT--> relay node --FROM_RELAY--> server
//! client <----REPLY------ relay node <--FROM_SERVER-- server
//! ```
//!
//! This module covers every case of a node *without* a server of its own listening on the
//! target: that is the whole job of a DHT node that only routes. When the forward is a
//! local server ([`Forward::local`]) the request is for that server's handshake or
//! holepunch handling: [`RouteAction::Server`] hands it up to [`crate::server`], whose
//! answer the node sends back (to the requester for FROM_CLIENT, through the relay
//! otherwise).

use std::net::SocketAddrV4;

use intercom_encoding::{decode, encode};

use crate::constants::mode::{FROM_CLIENT, FROM_RELAY, FROM_SECOND_RELAY, FROM_SERVER, REPLY};
use crate::messages::{Handshake, Holepunch};
use crate::store::Forward;

/// What to do with a routed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteAction {
    /// Ignore it (the sender times out).
    Drop,
    /// `req.reply(value, { to, token, closerNodes })`.
    Reply {
        /// Reply value.
        value: Option<Vec<u8>>,
        /// Send to this address instead of the requester.
        to: Option<SocketAddrV4>,
        /// Include a token.
        token: bool,
        /// Include closer nodes.
        closer_nodes: bool,
    },
    /// `req.relay(value, to)`: forward with the same tid, command and target.
    Relay {
        /// New request value.
        value: Vec<u8>,
        /// Next hop.
        to: SocketAddrV4,
    },
    /// The target is a server listening on this node; [`crate::server`] answers.
    Server,
}

/// `onpeerhandshake` for a request from `from` carrying `value`, with the target's
/// forward (if any).
pub fn route_handshake(
    from: SocketAddrV4,
    value: Option<&[u8]>,
    forward: Option<&Forward>,
) -> RouteAction {
    let Some(hs) = value.and_then(|v| decode::<Handshake>(v).ok()) else {
        return RouteAction::Drop;
    };
    if forward.is_some_and(|f| f.local) {
        return match hs.mode {
            FROM_CLIENT | FROM_RELAY | FROM_SECOND_RELAY => RouteAction::Server,
            _ => RouteAction::Drop,
        };
    }
    let relay = forward.and_then(|f| f.relay);
    match hs.mode {
        FROM_CLIENT => match hs.relay_address.or(relay) {
            // Nobody to relay to: help the client route closer instead.
            None => RouteAction::Reply {
                value: None,
                to: None,
                token: false,
                closer_nodes: true,
            },
            Some(to) => RouteAction::Relay {
                value: encode(&Handshake {
                    mode: FROM_RELAY,
                    noise: hs.noise,
                    peer_address: Some(from),
                    relay_address: None,
                }),
                to,
            },
        },
        FROM_RELAY => match relay {
            None => RouteAction::Drop,
            Some(to) => RouteAction::Relay {
                value: encode(&Handshake {
                    mode: FROM_SECOND_RELAY,
                    noise: hs.noise,
                    peer_address: hs.peer_address,
                    relay_address: Some(from),
                }),
                to,
            },
        },
        FROM_SERVER => match hs.peer_address {
            None => RouteAction::Drop,
            Some(client) => RouteAction::Reply {
                value: Some(encode(&Handshake {
                    mode: REPLY,
                    noise: hs.noise,
                    peer_address: Some(from),
                    relay_address: None,
                })),
                to: Some(client),
                token: false,
                closer_nodes: false,
            },
        },
        _ => RouteAction::Drop,
    }
}

/// `onpeerholepunch` for a request from `from` carrying `value`.
pub fn route_holepunch(
    from: SocketAddrV4,
    value: Option<&[u8]>,
    forward: Option<&Forward>,
) -> RouteAction {
    let Some(hp) = value.and_then(|v| decode::<Holepunch>(v).ok()) else {
        return RouteAction::Drop;
    };
    let is_server = forward.is_some_and(|f| f.local);
    let relay = forward.and_then(|f| f.relay);
    match hp.mode {
        FROM_CLIENT => match hp.peer_address.or(relay) {
            None => RouteAction::Drop,
            Some(to) => RouteAction::Relay {
                value: encode(&Holepunch {
                    mode: FROM_RELAY,
                    id: hp.id,
                    payload: hp.payload,
                    peer_address: Some(from),
                }),
                to,
            },
        },
        FROM_RELAY if is_server && hp.peer_address.is_some() => RouteAction::Server,
        FROM_SERVER => RouteAction::Reply {
            value: Some(encode(&Holepunch {
                mode: REPLY,
                id: hp.id,
                payload: hp.payload,
                peer_address: Some(from),
            })),
            to: hp.peer_address,
            token: false,
            closer_nodes: false,
        },
        _ => RouteAction::Drop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn a(port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)
    }

    fn hs(mode: u64, peer: Option<SocketAddrV4>, relay: Option<SocketAddrV4>) -> Vec<u8> {
        encode(&Handshake {
            mode,
            noise: vec![1, 2, 3],
            peer_address: peer,
            relay_address: relay,
        })
    }

    fn fwd(relay: Option<SocketAddrV4>, local: bool) -> Forward {
        Forward {
            relay,
            record: vec![0; 33],
            local,
        }
    }

    #[test]
    fn handshake_from_client_is_relayed_to_the_announcer() {
        let f = fwd(Some(a(3)), false);
        let act = route_handshake(a(1), Some(&hs(FROM_CLIENT, None, None)), Some(&f));
        let RouteAction::Relay { value, to } = act else {
            panic!("{act:?}")
        };
        assert_eq!(to, a(3));
        let out: Handshake = decode(&value).unwrap();
        assert_eq!(
            (out.mode, out.peer_address, out.relay_address),
            (FROM_RELAY, Some(a(1)), None)
        );
        // An explicit relay address wins over the forward.
        let act = route_handshake(a(1), Some(&hs(FROM_CLIENT, None, Some(a(7)))), Some(&f));
        assert!(matches!(act, RouteAction::Relay { to, .. } if to == a(7)));
    }

    #[test]
    fn handshake_without_forward_gets_closer_nodes() {
        let act = route_handshake(a(1), Some(&hs(FROM_CLIENT, None, None)), None);
        assert_eq!(
            act,
            RouteAction::Reply {
                value: None,
                to: None,
                token: false,
                closer_nodes: true
            }
        );
        assert_eq!(
            route_handshake(a(1), Some(&[0xff]), None),
            RouteAction::Drop
        );
        assert_eq!(route_handshake(a(1), None, None), RouteAction::Drop);
        assert_eq!(
            route_handshake(a(1), Some(&hs(FROM_RELAY, Some(a(2)), None)), None),
            RouteAction::Drop
        );
    }

    #[test]
    fn handshake_second_relay_and_server_reply() {
        let f = fwd(Some(a(3)), false);
        let act = route_handshake(a(2), Some(&hs(FROM_RELAY, Some(a(1)), None)), Some(&f));
        let RouteAction::Relay { value, to } = act else {
            panic!("{act:?}")
        };
        let out: Handshake = decode(&value).unwrap();
        assert_eq!(to, a(3));
        assert_eq!(
            (out.mode, out.peer_address, out.relay_address),
            (FROM_SECOND_RELAY, Some(a(1)), Some(a(2)))
        );
        let act = route_handshake(a(3), Some(&hs(FROM_SERVER, Some(a(1)), None)), None);
        let RouteAction::Reply { value, to, .. } = act else {
            panic!("{act:?}")
        };
        let out: Handshake = decode(value.as_deref().unwrap()).unwrap();
        assert_eq!(to, Some(a(1)));
        assert_eq!((out.mode, out.peer_address), (REPLY, Some(a(3))));
        assert_eq!(
            route_handshake(a(3), Some(&hs(FROM_SERVER, None, None)), None),
            RouteAction::Drop
        );
        let local = fwd(None, true);
        assert_eq!(
            route_handshake(a(1), Some(&hs(FROM_CLIENT, None, None)), Some(&local)),
            RouteAction::Server
        );
    }

    #[test]
    fn garbage_never_panics() {
        let forwards = [None, Some(fwd(Some(a(3)), false)), Some(fwd(None, true))];
        for i in 0..4000usize {
            let r: [u8; 48] = intercom_crypto::random_array();
            let mut v = r[..i % 48].to_vec();
            if let Some(b) = v.get_mut(1) {
                *b %= 6; // valid modes more often
            }
            let f = forwards[i % 3].as_ref();
            let _ = route_handshake(a(1), Some(&v), f);
            let _ = route_holepunch(a(1), Some(&v), f);
        }
    }

    #[test]
    fn holepunch_routes() {
        let hp = |mode, peer| {
            encode(&Holepunch {
                mode,
                id: 4,
                payload: vec![9],
                peer_address: peer,
            })
        };
        let f = fwd(Some(a(3)), false);
        let act = route_holepunch(a(1), Some(&hp(FROM_CLIENT, None)), Some(&f));
        let RouteAction::Relay { value, to } = act else {
            panic!("{act:?}")
        };
        let out: Holepunch = decode(&value).unwrap();
        assert_eq!(
            (to, out.mode, out.id, out.peer_address),
            (a(3), FROM_RELAY, 4, Some(a(1)))
        );
        assert_eq!(
            route_holepunch(a(1), Some(&hp(FROM_CLIENT, None)), None),
            RouteAction::Drop
        );
        let act = route_holepunch(a(3), Some(&hp(FROM_SERVER, Some(a(1)))), None);
        let RouteAction::Reply { value, to, .. } = act else {
            panic!("{act:?}")
        };
        let out: Holepunch = decode(value.as_deref().unwrap()).unwrap();
        assert_eq!(
            (to, out.mode, out.peer_address),
            (Some(a(1)), REPLY, Some(a(3)))
        );
        assert_eq!(
            route_holepunch(a(2), Some(&hp(FROM_RELAY, Some(a(1)))), Some(&f)),
            RouteAction::Drop
        );
        assert_eq!(
            route_holepunch(
                a(2),
                Some(&hp(FROM_RELAY, Some(a(1)))),
                Some(&fwd(None, true))
            ),
            RouteAction::Server
        );
    }
}
