//! UDX: reliable, multiplexed, congestion-controlled streams over UDP, wire-compatible
//! with the JS [`udx-native`](https://github.com/holepunchto/udx-native) module 1.21.3
//! and its C core [libudx](https://github.com/holepunchto/libudx).
//!
//! HyperDHT connections are UDX streams running on the same UDP socket as the DHT, so the
//! protocol lives in a sans-io core and the socket is pluggable:
//!
//! * [`packet`]: the pure codec (total decoders, [`packet::fuzz_decode`]);
//! * [`stream`]: [`StreamCore`], one stream's whole protocol as a state machine with an
//!   explicit clock (acks, SACK, RACK/TLP/RTO, BBR, pacing, MTU probing, flow control,
//!   END/DESTROY, heartbeats, messages, remote changes); its submodules hold the send
//!   path, the receive path, the timers and the congestion control;
//! * [`socket`]: the tokio layer. A [`UdxSocket`] runs one driver task over a
//!   [`DatagramIo`]: its own UDP port ([`UdpIo`], [`UdxSocket::bind`]), someone else's
//!   socket through channels ([`ChannelIo`]), or any transport of the caller's. It
//!   demultiplexes datagrams to streams by id, hands the others out
//!   ([`UdxSocket::take_unmatched`]), and gives out [`UdxStream`] handles implementing
//!   `AsyncRead + AsyncWrite`.
//!
//! # Wire format
//!
//! Every packet starts with a 20-byte header, integers little endian:
//!
//! ```text
//!  0      1      2      3      4             8             12            16            20
//! +------+------+------+------+-------------+-------------+-------------+-------------+
//! | 0xff | 0x01 | type | doff |  stream id  | recv window |     seq     |     ack     |
//! +------+------+------+------+-------------+-------------+-------------+-------------+
//! | doff bytes of extension (SACK blocks, or zero padding in an MTU probe)           ...
//! +-----------------------------------------------------------------------------------+
//! | payload (stream data, or a message)                                              ...
//! +-----------------------------------------------------------------------------------+
//!
//! type flags: 0x01 DATA  0x02 END  0x04 SACK  0x08 MESSAGE  0x10 DESTROY  0x20 HEARTBEAT
//! stream id:  the receiver's id for the stream (its "local id", our "remote id")
//! recv window: bytes the sender can still buffer;  seq: the packet's sequence number
//!             (packet-numbered, not byte-numbered; non-DATA packets carry the next one)
//! ack:        cumulative, the next sequence number the sender of this packet expects
//! SACK block: [start u32 | end u32], a half-open range of sequence numbers received;
//!             an ack carries up to 50 of them and its doff is 0 (all bytes are blocks)
//! ```
//!
//! DATA and END packets consume a sequence number each; the END flag marks the last one
//! (it may carry data). A DESTROY packet uses the next sequence number and resets the
//! stream. MESSAGE packets are unordered datagrams that do not consume a sequence number.
//! A HEARTBEAT asks for an ack (keepalive and zero-window probe). Packets of a stream
//! carry at most `mtu - 48` payload bytes over IPv4, with the MTU starting at 1200 and
//! probed upwards in steps of 32 to 1500 by padding DATA packets (`doff` > 0).
//!
//! # Using it
//!
//! ```no_run
//! # async fn demo() -> Result<(), intercom_udx::UdxError> {
//! use intercom_udx::{SocketConfig, UdxSocket};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! let socket = UdxSocket::bind("127.0.0.1:0".parse().unwrap(), SocketConfig::default()).await?;
//! // Stream ids are exchanged out of band (HyperDHT puts them in its handshake).
//! let mut stream = socket.connect(1, 2, "127.0.0.1:49737".parse().unwrap())?;
//! stream.write_all(b"hello").await.unwrap();
//! stream.shutdown().await.unwrap(); // END, resolved once the peer acked it
//! let mut reply = Vec::new();
//! stream.read_to_end(&mut reply).await.unwrap(); // until the peer's END
//! stream.send_message(b"unordered datagram")?;
//! # Ok(()) }
//! ```
//!
//! # Differences from libudx
//!
//! None of these changes what goes on the wire in a way a libudx peer can tell apart
//! from normal network behaviour:
//!
//! * Acks are coalesced per burst of input: the tokio layer feeds every datagram of a
//!   read batch before it asks for transmissions, so one ack (or a data packet carrying
//!   the ack) answers several data packets. libudx acks each data packet. Besides saving
//!   our CPU this roughly doubles what a udx-native sender manages towards us.
//! * On Linux, runs of equal-sized datagrams to one peer leave in one `sendmsg` with UDP
//!   segmentation offload; the receiver sees ordinary datagrams.
//! * SACK blocks cover the whole out-of-order buffer (up to 50 blocks); libudx stops
//!   scanning after as many gaps as it holds out-of-order packets.
//! * The receiver sends a window update (a plain ack) when reading opens its window by a
//!   quarter of the maximum; libudx relies on the sender's zero-window probes.
//!   (udx-native never shrinks its window: it does not report its read buffer.)
//! * Memory is bounded: received bytes beyond `recv_buffer_limit` and out-of-order
//!   packets more than 16384 ahead are dropped unacked, at most 256 received messages
//!   wait, and `write` takes no more than the send window plus 256 KiB (libudx queues any
//!   amount and only reports backpressure).
//! * An END attaches to the last data packet even when that packet is full, and a
//!   partially filled packet waits for the window instead of going out regardless.
//! * Transmissions are decided at the same points as in libudx, but when one input both
//!   arms a RACK reorder timer and sends new data, the reorder timer is kept rather than
//!   replaced by a tail-loss probe (libudx arms them in the opposite order there).
//! * A packet's bytes are produced when it is polled, so a retransmission always carries
//!   the current ack and window (libudx refreshes them too since #309).
//! * Relaying (`udx_stream_relay_to`), TTL / multicast options and interface events are
//!   not implemented; the path MTU is not queried from the OS (`mtu_max` is a setting).
//! * Like libudx, a connected stream accepts packets from any source address, and a
//!   stream that closed does not linger to re-ack a lost final ack (no TIME_WAIT).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod filter;
pub mod packet;
pub mod socket;
pub mod stream;

pub use packet::{fuzz_decode, DecodeError, Header, Packet};
pub use socket::{
    set_buffer_sizes, ChannelIo, Datagram, DatagramIo, Firewall, SocketConfig, StreamOptions,
    UdpIo, UdxError, UdxSocket, UdxStream, DEFAULT_BUSY_POLL,
};
pub use stream::{
    BbrState, PacketError, StreamConfig, StreamCore, StreamError, StreamEvent, StreamStats,
};
