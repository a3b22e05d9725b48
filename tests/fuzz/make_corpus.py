#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into tests/fuzz/corpus/<target>/.

Seeds are the golden vectors the JS modules wrote (tests/golden/*.json: compact-encoding
values, hyperdht and hypercore messages, Noise handshake messages, sidechannel payloads)
plus a few hand-made inputs in each target's own input format (see the comments in
tests/fuzz/fuzz_targets/). Deterministic: running it again rewrites the same files. The
fuzz runs of scripts/fuzz.sh read these directories and never write into them.

    python3 tests/fuzz/make_corpus.py
"""

import hashlib
import json
import os
import shutil
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GOLDEN = os.path.join(ROOT, "tests", "golden")
OUT = os.path.join(ROOT, "tests", "fuzz", "corpus")
MAX_SEED = 4096  # bytes; longer vectors are skipped to keep the repository small


def golden(name):
    with open(os.path.join(GOLDEN, name)) as f:
        return json.load(f)


def uint(n):
    """compact-encoding uint."""
    if n <= 0xFC:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + struct.pack("<H", n)
    if n <= 0xFFFFFFFF:
        return b"\xfe" + struct.pack("<I", n)
    return b"\xff" + struct.pack("<Q", n)


def cbuf(b):
    return uint(len(b)) + b


def ipv4(a, b, c, d, port):
    return bytes([a, b, c, d]) + struct.pack("<H", port)


def xorshift_bytes(seed, n):
    x = seed
    out = bytearray()
    for _ in range(n):
        x ^= (x << 13) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 7
        x ^= (x << 17) & 0xFFFFFFFFFFFFFFFF
        out.append(x & 0xFF)
    return bytes(out)


class Corpus:
    def __init__(self):
        self.seeds = {}

    def add(self, target, data):
        if isinstance(data, str):
            data = data.encode()
        if len(data) > MAX_SEED:
            return
        self.seeds.setdefault(target, {})[hashlib.sha1(data).hexdigest()[:16]] = data

    def write(self):
        if os.path.isdir(OUT):
            shutil.rmtree(OUT)
        total = 0
        for target, seeds in sorted(self.seeds.items()):
            d = os.path.join(OUT, target)
            os.makedirs(d)
            for name, data in sorted(seeds.items()):
                with open(os.path.join(d, name), "wb") as f:
                    f.write(data)
                total += len(data)
            print(f"{target}: {len(seeds)} seeds")
        print(f"total {total} bytes")


def compact_encoding(c):
    # fuzz_targets/compact_encoding.rs: a selector byte (% 16) picks the decoder.
    selector = {
        "uint": 0, "int": 1, "buffer": 2, "string": 3, "json": 4, "bool": 5,
        "array_uint": 6, "array_buffer": 7, "ipAddress": 8, "ipv4Address": 9,
        "ipv6Address": 10, "optionalBuffer": 11, "fixed32": 12, "uint24": 13,
        "float64": 14, "array_string": 15,
    }
    g = golden("compact-encoding.json")
    for v in g["vectors"] + g["invalid"]:
        if v["type"] in selector:
            c.add("compact_encoding", bytes([selector[v["type"]]]) + bytes.fromhex(v["hex"]))


def dht(c):
    g = golden("hyperdht-messages.json")
    for m in g["messages"]:
        data = bytes.fromhex(m["encoded"])
        c.add("dht_messages", data)
        if m["type"] in ("handshake", "noisePayload"):
            c.add("peer_handshake", data)
        if m["type"] in ("holepunch", "holepunchPayload"):
            c.add("peer_holepunch", data)
    for m in g["invalid"]:
        c.add("dht_messages", bytes.fromhex(m["hex"]))
    # dht-rpc datagrams (dht/rpc/src/messages.rs): a ping, a full request, a response.
    to = ipv4(10, 0, 0, 1, 49737)
    c.add("dht_messages", b"\x03\x04" + struct.pack("<H", 0x1234) + to + uint(0))
    c.add(
        "dht_messages",
        b"\x03" + uint(1 | 2 | 8 | 16) + struct.pack("<H", 7) + to
        + b"\xaa" * 32 + b"\xbb" * 32 + uint(3) + b"\xcc" * 32 + cbuf(b"value"),
    )
    closer = uint(2) + ipv4(1, 2, 3, 4, 258) + ipv4(5, 6, 7, 8, 49737)
    c.add(
        "dht_messages",
        b"\x13" + uint(1 | 2 | 4 | 8 | 16) + struct.pack("<H", 7) + to
        + b"\xaa" * 32 + b"\xbb" * 32 + closer + uint(16) + cbuf(b"reply"),
    )


def hypercore(c):
    g = golden("hypercore-messages.json")
    for m in g["messages"]:
        c.add("hypercore_messages", bytes.fromhex(m["encoded"]))
    for m in g["invalid"][:16]:
        c.add("hypercore_messages", bytes.fromhex(m["hex"]))


def noise(c):
    # secret_stream_frames: raw handshake messages, and the same behind uint24 lengths
    # (the first byte odd: the target starts from a genuine stream header).
    g = golden("noise.json")
    for t in g["transcripts"]:
        for m in t["messages"]:
            data = bytes.fromhex(m["message"])
            c.add("secret_stream_frames", data)
            c.add("secret_stream_frames", struct.pack("<I", len(data))[:3] + data)
            c.add("peer_handshake", data)


def sidechannel(c):
    g = golden("sidechannel.json")
    for p in g["payloads"]:
        c.add("sidechannel_payload", bytes.fromhex(p["wire"]))
        c.add("sidechannel_payload", p["json"])
    for p in g["relayed"]:
        c.add("sidechannel_payload", bytes.fromhex(p["wire"]))
    for key, field in (("welcomes", "welcome"), ("invites", "invite")):
        for w in g[key]:
            c.add("sidechannel_payload", json.dumps(w[field], separators=(",", ":")))
            c.add("sidechannel_payload", w["b64"])
    # sidechannel_dedupe: window byte, cap byte, then 4-byte records (step, key, ts).
    for i, (w, m, n) in enumerate([(14, 3, 40), (255, 63, 200), (0, 0, 60), (100, 10, 400)]):
        c.add("sidechannel_dedupe", bytes([w, m]) + xorshift_bytes(i + 1, n * 4))


def protomux(c):
    # protomux_frames: a setup byte, then `len < 0xf0` + frame, or an op `>= 0xf0` + arg.
    def frame(b):
        return bytes([len(b)]) + b

    open_a = b"\x00\x01" + uint(1) + cbuf(b"a") + uint(0)  # control: open "a", local id 1
    open_b_id = b"\x00\x01" + uint(2) + cbuf(b"b") + cbuf(b"\x00")
    msg = b"\x01\x00" + b"hi"  # channel 1, type 0
    batch = b"\x00\x00" + uint(1) + cbuf(b"\x00" + b"x") + cbuf(b"\x00" + b"y")
    close = b"\x00\x03" + uint(1)
    for setup in (0, 5, 8, 15):
        c.add("protomux_frames", bytes([setup]) + frame(open_a) + frame(msg) + frame(close))
    c.add("protomux_frames", b"\x08" + frame(open_a) + frame(open_b_id) + frame(batch))
    c.add("protomux_frames", b"\x00" + frame(open_a) + b"\xf0\x00\xf2\x01" + frame(msg) + b"\xf5\x10")


def udx(c):
    # udx_packets: the 20-byte header (magic, version, flags, data offset, stream id, window,
    # seq, ack), SACK ranges, payload. The first is what udx-native 1.21.3 wrote.
    c.add("udx_packets", bytes.fromhex("ff0108000200000000004000000000000000000068656c6c6f2d6d7367"))
    head = lambda flags, off: b"\xff\x01" + bytes([flags, off]) + struct.pack("<IIII", 2, 1 << 22, 5, 3)
    c.add("udx_packets", head(0x01, 0) + b"data")
    c.add("udx_packets", head(0x02, 0))
    c.add("udx_packets", head(0x05, 8) + struct.pack("<II", 1, 4) + b"data")
    c.add("udx_packets", head(0x04, 16) + struct.pack("<IIII", 1, 4, 6, 9))
    c.add("udx_packets", head(0x10, 0))


def bridge(c):
    for frame in [
        '{"id":1,"type":"auth","token":"0123456789abcdef0123"}',
        '{"id":2,"type":"send","channel":"c","message":"hi"}',
        '{"id":3,"type":"send","channel":"c","message":{"a":[1,2]},"invite":"e30="}',
        '{"type":"join","channel":"room","welcome":{"payload":{},"sig":"00"}}',
        '{"type":"open","channel":"c","via":"0000intercom"}',
        '{"type":"subscribe","channels":["a",1,null]}',
        '{"type":"set_filter","filter":"alpha|beta gamma"}',
        '{"type":"cli","command":"/sc_stats"}',
        '{"type":"stats"}',
        "b64:eyJhIjoxfQ==",
        "alpha|beta gamma",
    ]:
        c.add("bridge_frames", frame)


def subnet(c):
    # subnet_entries: version 1, timestamp, heads, bodies (tag + fields).
    def entry(heads, bodies):
        out = uint(1) + uint(1_700_000_000_000) + uint(len(heads))
        for key, seq in heads:
            out += key + uint(seq)
        return out + uint(len(bodies)) + b"".join(bodies)

    tx = b"\x03" + cbuf(b'{"op":"put","key":"k","value":1}')
    c.add("subnet_entries", entry([], [b"\x01"]))
    c.add("subnet_entries", entry([(b"\x01" * 32, 3)], [tx]))
    c.add("subnet_entries", entry([], [b"\x00" + b"\x02" * 32 + b"\x09" * 64]))
    c.add("subnet_entries", entry([], [b"\x02\x00" + b"\x02" * 32, b"\x04" + cbuf(b'{"a":1}')]))
    c.add("subnet_entries", entry([], [b"\x05" + cbuf(b"feat") + cbuf(b"[1]")]))
    # The same entries as writer-log blocks for the engine: writer byte, length, block.
    blocks = b"".join(bytes([w, len(e)]) + e for w, e in enumerate(
        [entry([], [b"\x01"]), entry([], [tx]), entry([], [b"\x02\x05" + b"\x02" * 32])]))
    c.add("subnet_entries", blocks)


def signatures(c):
    # signature_batch: 8-byte records (signer, 4 message bytes, mode, two arguments).
    for i, modes in enumerate([range(8), [3, 3, 4, 3], [5, 6, 3, 0, 3], [6] * 4 + [3] * 4]):
        data = b""
        for j, mode in enumerate(modes):
            data += bytes([j % 4]) + xorshift_bytes(i * 16 + j + 1, 4) + bytes([mode, j * 37 % 256, j])
        c.add("signature_batch", data)


def main():
    c = Corpus()
    compact_encoding(c)
    dht(c)
    hypercore(c)
    noise(c)
    sidechannel(c)
    protomux(c)
    udx(c)
    bridge(c)
    subnet(c)
    signatures(c)
    c.write()


if __name__ == "__main__":
    main()
