"""10,000 random and malformed datagrams over real UDP: the server never dies and still answers."""
from __future__ import annotations

import socket
import struct
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket

from vacelive.bridge.osc import OscConfig, OscServer
from vacelive.bridge.presets import PresetLibrary
from vacelive.bridge.schema import DEFAULT_SCHEMA
from vacelive.bridge.store import ParamStore

import os
N = int(os.environ.get("FUZZ_N", 10_000))
BATCH = 10
ADDRESSES = [p.address for p in DEFAULT_SCHEMA] + [
    "/vace/get", "/vace/describe", "/vace/hello", "/vace/preset/load", "/vace/preset/save",
    "/vace/preset/list", "/vace/seed/norm", "/vace/annotator/index", "/vace", "/", "//",
    "/vace/*", "/vace/lora/", "/vace/status/fps",
]


def pad(b: bytes) -> bytes:
    return b + b"\x00" * (4 - len(b) % 4)


def osc_string(s: bytes) -> bytes:
    return pad(s)


arg = st.one_of(
    st.integers(-(2**31), 2**31 - 1).map(lambda v: (b"i", struct.pack(">i", v))),
    st.floats(width=32, allow_nan=True, allow_infinity=True).map(lambda v: (b"f", struct.pack(">f", v))),
    st.floats(allow_nan=True).map(lambda v: (b"d", struct.pack(">d", v))),
    st.integers(-(2**63), 2**63 - 1).map(lambda v: (b"h", struct.pack(">q", v))),
    st.text(max_size=40).map(lambda v: (b"s", osc_string(v.encode("utf-8", "replace")))),
    st.binary(max_size=20).map(lambda v: (b"s", osc_string(v.replace(b"\x00", b"")))),  # non-UTF-8
    st.binary(max_size=16).map(lambda v: (b"b", struct.pack(">i", len(v)) + pad(v)[: len(v) + (-len(v)) % 4])),
    st.sampled_from([(b"T", b""), (b"F", b""), (b"N", b""), (b"I", b""), (b"[", b""), (b"]", b""),
                     (b"m", b"\x00\x90\x40\x7f"), (b"r", b"\xff\x00\x00\xff"), (b"t", b"\x00" * 8),
                     (b"Z", b""), (b"c", b"\x00\x00\x00A")]),
)


@st.composite
def message(draw):
    address = draw(st.one_of(st.sampled_from(ADDRESSES),
                             st.text(max_size=30).map(lambda t: "/" + t)))
    args = draw(st.lists(arg, max_size=6))
    tags = b"," + b"".join(t for t, _ in args)
    data = osc_string(address.encode("utf-8", "replace")) + osc_string(tags) + b"".join(v for _, v in args)
    return data


@st.composite
def mutated(draw):
    data = bytearray(draw(message()))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del data[i:]
        else:
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


@st.composite
def bundle(draw, depth=0):
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        inner = draw(st.one_of(message(), mutated(), bundle(depth + 1)) if depth < 2
                     else message())
        size = draw(st.one_of(st.just(len(inner)), st.integers(-8, 200)))  # lying sizes too
        parts.append(struct.pack(">i", size) + inner)
    timetag = draw(st.one_of(st.just(b"\x00" * 7 + b"\x01"), st.binary(min_size=8, max_size=8),
                             st.binary(max_size=7)))
    return b"#bundle\x00" + timetag + b"".join(parts)


@st.composite
def deep_bundle(draw):
    depth = draw(st.integers(500, 3000))  # nesting beyond Python's recursion limit
    data = b"/vace/seed\x00\x00,i\x00\x00\x00\x00\x00\x05"
    for _ in range(depth):
        data = b"#bundle\x00" + b"\x00" * 7 + b"\x01" + struct.pack(">i", len(data)) + data
    return data[:65000]


datagram = st.one_of(
    st.binary(min_size=1, max_size=300),  # (an empty datagram is not sent by the kernel)
    st.binary(max_size=200).map(lambda b: b"/" + b),
    st.binary(max_size=200).map(lambda b: b"#bundle\x00" + b),
    message(), mutated(), bundle(), deep_bundle(),
)


def mutate(data: bytes, rnd) -> bytes:
    """Cheap byte-level damage: flips, cuts, inserts, corrupted size fields, re-wrapping."""
    b = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        op = rnd.randrange(6)
        i = rnd.randrange(len(b) + 1)
        if op == 0 and b:
            b[min(i, len(b) - 1)] ^= rnd.randrange(1, 256)
        elif op == 1:
            del b[i:]
        elif op == 2:
            b[i:i] = rnd.randbytes(rnd.randint(1, 8))
        elif op == 3:
            b[i:i + 4] = struct.pack(">i", rnd.choice([0, -1, 4, 2**31 - 1, rnd.randrange(-99, 999)]))
        elif op == 4:
            b = bytearray(b"#bundle\x00" + rnd.randbytes(8) + struct.pack(">i", len(b)) + b)
        else:
            b = b + b[: rnd.randrange(len(b) + 1)]
    return bytes(b[:65000])


@st.composite
def family(draw):
    """One structured datagram plus BATCH-1 damaged variants of it (hypothesis' per-example
    overhead would otherwise dominate 10,000 datagrams)."""
    base = draw(datagram)
    rnd = draw(st.randoms(use_true_random=False))
    return [base] + [mutate(base, rnd) for _ in range(BATCH - 1)]


def test_ten_thousand_bad_datagrams_do_not_stop_the_server(tmp_path):
    store = ParamStore()
    cfg = OscConfig(port=0, oscquery_port=None, status_hz=0)
    server = OscServer(store, PresetLibrary(user_dir=tmp_path), cfg).start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sent = [0]

    def wait_caught_up():
        deadline = time.monotonic() + 30
        while server.received < sent[0] and time.monotonic() < deadline:
            time.sleep(0.002)

    @settings(max_examples=N // BATCH, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(family())
    def fire(batch):
        for data in batch:
            sock.sendto(data, server.address)
            sent[0] += 1
        if sent[0] % 200 < BATCH:  # stay inside the socket buffer: every datagram is handled
            wait_caught_up()

    try:
        fire()
        wait_caught_up()
        assert sent[0] == N
        assert server.received == sent[0]  # all of them reached the handler
        assert server._thread.is_alive()
        # still answers a valid message
        sock.settimeout(0.2)
        try:
            while sock.recv(65535):
                pass
        except socket.timeout:
            pass
        b = OscMessageBuilder("/vace/get")
        b.add_arg("/vace/steps")
        sock.sendto(b.build().dgram, server.address)
        sock.settimeout(3.0)
        while True:
            m = OscPacket(sock.recv(65535)).messages[0].message
            if m.address == "/vace/steps":
                assert m.params == [store.get("steps")]
                break
        assert server.rejected > 0.5 * N
        store.snapshot()  # the store is still consistent and usable
    finally:
        sock.close()
        server.stop()
