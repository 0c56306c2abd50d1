"""The component's OSC sync over real UDP: parameter changes leave as the right OSC messages,
feedback from the real vacelive OSC server lands in parameters and status without being sent
back (Parameter Execute callbacks both deferred to the frame end and immediate)."""
import socket
import time

import pytest
import td_standin as T
from pythonosc.osc_packet import OscPacket
from pythonosc.udp_client import SimpleUDPClient

from vacelive.bridge.osc.server import OscConfig, OscServer
from vacelive.bridge.presets import PresetLibrary
from vacelive.bridge.schema import build_schema
from vacelive.bridge.store import ParamStore
from vacelive.touchdesigner import build_tox, osc_sync

HANDSHAKE = {"/vace/hello", "/vace/describe", "/vace/preset/list", "/vace/get"}


def free_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def component(prj, port, **pars):
    comp = build_tox.build(prj.op("/project1"), td=T.td, schema=pars.pop("schema", None))
    comp.par.Port.val = port
    comp.par.Feedbackport.val = free_port()
    for k, v in pars.items():
        getattr(comp.par, k).val = v
    return comp


def param_sends(comp, since=0):
    return [(a, args) for a, args in comp.op("oscout").sent[since:] if a not in HANDSHAKE]


# --------------------------------------------------------------------------------------------
# outgoing, captured on a plain UDP socket standing in for the engine

def test_parameter_changes_send_the_right_messages():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)
    prj = T.Project()
    try:
        comp = component(prj, sock.getsockname()[1], Pushonconnect=False)
        prj.frame()
        prj.frame()

        def received():
            out = []
            sock.settimeout(0.3)
            try:
                while True:
                    data, _ = sock.recvfrom(65535)
                    out += [(m.message.address, m.message.params)
                            for m in OscPacket(data).messages]
            except socket.timeout:
                pass
            return [(a, p) for a, p in out if a not in HANDSHAKE]

        received()  # the connection handshake
        comp.par.Contextscale.val = 0.75
        comp.par.Steps.val = 2
        comp.par.Pause.val = True
        comp.par.Annotator.val = "depth"
        comp.par.Prompt.val = "a forest at dawn"
        prj.frame()
        got = received()
        assert ("/vace/context_scale", [0.75]) in got
        assert ("/vace/steps", [2]) in got and isinstance(dict(got)["/vace/steps"][0], int)
        assert ("/vace/pause", [1]) in got
        assert ("/vace/annotator", ["depth"]) in got
        assert ("/vace/prompt", ["a forest at dawn"]) in got
        assert len(got) == 5  # one message per change, nothing else

        comp.par.Promptstext1.val = "a forest"
        prj.frame()
        comp.par.Promptstext2.val = "neon city"
        comp.par.Promptsweight2.val = 0.5
        comp.par.Refs2.val = "C:/refs/face.png"
        prj.frame()
        got = received()
        assert got[-2][0] == "/vace/prompts"
        assert got[-2][1] == pytest.approx(["a forest", 1.0, "neon city", 0.5])
        assert got[-1] == ("/vace/refs", ["C:/refs/face.png"])

        comp.par.Reset.pulse()
        comp.par.Presetname.val = "neon-city"
        comp.par.Morphchunks.val = 6
        comp.par.Presetload.pulse()
        comp.par.Presetsavename.val = "mine"
        comp.par.Presetsave.pulse()
        comp.par.Tap.pulse()
        comp.par.Recordside.val = True
        comp.par.Record.val = True
        prj.frame()
        comp.par.Record.val = False
        prj.frame()
        sock.settimeout(0.3)
        raw = []
        try:
            while True:
                data, _ = sock.recvfrom(65535)
                raw += [(m.message.address, m.message.params) for m in OscPacket(data).messages]
        except socket.timeout:
            pass
        assert ("/vace/reset", [1]) in raw
        assert ("/vace/preset/load", ["neon-city", 6]) in raw
        assert ("/vace/preset/save", ["mine"]) in raw
        assert ("/vace/tap", []) in raw
        assert raw.index(("/vace/record/start", ["", 1])) < raw.index(("/vace/record/stop", []))

        comp.par.Active.val = False  # Connect off: nothing leaves
        prj.frame()
        received()
        comp.par.Seed.val = 99
        prj.frame()
        assert received() == []
    finally:
        prj.close()
        sock.close()


# --------------------------------------------------------------------------------------------
# both ways, with the real OSC server of `vacelive serve`

class Rig:
    def __init__(self, deferred: bool, schema=None, status=None, tmp=None, comp_schema=None):
        self.schema = schema or build_schema()
        self.store = ParamStore(self.schema)
        self.status = status
        self.server = OscServer(
            self.store, PresetLibrary(self.schema, user_dir=tmp),
            OscConfig(port=0, oscquery_port=None, status_hz=50.0),
            status_provider=(lambda: dict(self.status)) if status is not None else None,
        ).start()
        self.prj = T.Project(deferred=deferred)
        self.comp = component(self.prj, self.server.address[1],
                              schema=comp_schema or self.schema.to_json())
        self.ext = self.comp.ext.VaceLiveExt
        self.client = SimpleUDPClient(*self.server.address)

    def settle(self, seconds=0.25):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.prj.frame()
            time.sleep(0.005)

    def until(self, cond, timeout=3.0):
        assert T.run_until(self.prj, cond, timeout), "condition not reached"

    def close(self):
        self.prj.close()
        self.server.stop()


@pytest.fixture(params=[True, False], ids=["deferred-callbacks", "immediate-callbacks"])
def rig(request, tmp_path):
    r = Rig(deferred=request.param, tmp=tmp_path)
    yield r
    r.close()


def test_connect_pushes_values_registers_feedback_and_links(rig):
    rig.comp.par.Contextscale.val = 1.5
    rig.comp.par.Annotator.val = "pose"
    rig.until(lambda: rig.comp.par.Connected.eval())
    assert rig.store.get("context_scale") == 1.5 and rig.store.get("annotator") == "pose"
    assert rig.comp.par.Presetname.menuNames == rig.server.presets.names()
    assert "neon-city" in rig.comp.par.Presetname.menuNames
    # the echoes of our own push changed nothing and sent nothing back
    assert rig.comp.par.Contextscale.eval() == 1.5


def test_feedback_updates_parameters_without_echoing_back(rig):
    rig.until(lambda: rig.comp.par.Connected.eval())
    rig.settle(0.1)
    mark = len(rig.comp.op("oscout").sent)
    rig.client.send_message("/vace/steps", 2)
    rig.client.send_message("/vace/annotator", "edges")
    rig.client.send_message("/vace/context_scale", 0.25)
    rig.client.send_message("/vace/hint_reuse", 1)
    rig.client.send_message("/vace/prompts", ["a forest", 1.0, "neon city", 0.5])
    rig.until(lambda: rig.comp.par.Promptstext2.eval() == "neon city")
    rig.settle(0.3)
    c = rig.comp.par
    assert (c.Steps.eval(), c.Annotator.eval(), c.Hintreuse.eval()) == (2, "edges", True)
    assert c.Contextscale.eval() == pytest.approx(0.25)
    assert (c.Promptstext1.eval(), c.Promptsweight2.eval()) == ("a forest", 0.5)
    assert c.Prompt.eval() == "a forest"  # the engine's `prompt` echo (dominant text)
    assert param_sends(rig.comp, mark) == []  # nothing went back
    # ...and the performer's next move is sent as usual
    c.Steps.val = 3
    rig.until(lambda: rig.store.get("steps") == 3)
    assert param_sends(rig.comp, mark) == [("/vace/steps", [3])]


def test_preset_morph_echoes_land_in_the_parameters(rig):
    rig.until(lambda: rig.comp.par.Connected.eval())
    rig.comp.par.Presetname.val = "neon-city"
    rig.comp.par.Morphchunks.val = 2
    rig.comp.par.Presetload.pulse()
    assert rig.comp.op("oscout").sent[-1] == ("/vace/preset/load", ["neon-city", 2])
    rig.until(lambda: "neon-city" in rig.comp.par.Lastnotice.eval())
    mark = len(rig.comp.op("oscout").sent)
    for _ in range(2):  # the run loop's chunk boundaries advance the morph
        rig.store.snapshot()
    rig.until(lambda: rig.comp.par.Blend.eval() == "slerp")
    rig.until(lambda: rig.comp.par.Transitionchunks.eval() == 3)
    assert rig.comp.par.Videoenabled.eval() is False
    assert rig.comp.par.Promptstext2.eval().startswith("volumetric fog")
    rig.settle(0.2)
    assert param_sends(rig.comp, mark) == []


def test_errors_and_notices_are_shown_and_the_kept_value_restored(rig):
    rig.until(lambda: rig.comp.par.Connected.eval())
    mark = len(rig.comp.op("oscout").sent)
    rig.client.send_message("/vace/steps", "lots")
    rig.until(lambda: "/vace/steps" in rig.comp.par.Lasterror.eval())
    assert ("/vace/get", ["/vace/steps"]) in rig.comp.op("oscout").sent[mark:]
    rig.server.notice("snapshot written to /tmp/x.png")
    rig.until(lambda: rig.comp.par.Lastnotice.eval() == "snapshot written to /tmp/x.png")


def test_status_fields_and_engine_restart(tmp_path):
    r = Rig(deferred=True, status={"fps": 12.5, "latency_ms": 80.0, "chunk": 10,
                                   "dropped": 0, "gpu_mem_mb": 9000.0}, tmp=tmp_path)
    try:
        # one datagram per field: wait until the last of them has been applied
        r.until(lambda: (r.comp.par.Statusfps.eval(), r.comp.par.Statuslatencyms.eval(),
                         r.comp.par.Statuschunk.eval()) == (12.5, 80.0, 10))
        r.until(lambda: r.ext.Status.get("gpu_mem_mb") == 9000.0)
        r.until(lambda: r.comp.par.Connected.eval())
        hellos = lambda: sum(a == "/vace/hello" for a, _ in r.comp.op("oscout").sent)  # noqa
        before = hellos()
        r.comp.par.Seed.val = 1234
        r.status["chunk"] = 0  # a new stream: the engine restarted and lost our values
        r.store.set("seed", 42)  # ...e.g. back at its defaults
        r.until(lambda: hellos() > before)
        r.until(lambda: r.store.get("seed") == 1234)  # pushed again
    finally:
        r.close()


def test_a_lora_the_component_lacks_is_added_from_the_engine(tmp_path):
    schema = build_schema([("neon", 0.7)])
    # the component is built from the default schema: no LoRA 'neon' yet
    r = Rig(deferred=True, schema=schema, tmp=tmp_path, comp_schema=build_schema().to_json())
    try:
        r.comp.par.Pushonconnect.val = False  # take the engine's values
        assert getattr(r.comp.par, "Loraneon", None) is None
        r.until(lambda: getattr(r.comp.par, "Loraneon", None) is not None)
        r.until(lambda: r.comp.par.Loraneon.eval() == pytest.approx(0.7))
        assert r.comp.par.Loraneon.page.name == "LoRA"
        r.comp.par.Loraneon.val = 1.25
        r.until(lambda: r.store.get("lora/neon") == pytest.approx(1.25))
    finally:
        r.close()


# --------------------------------------------------------------------------------------------
# the guards on their own

def test_feedback_guard_drops_only_what_feedback_wrote():
    g = osc_sync.FeedbackGuard()
    assert not g.is_echo("Steps", 2)
    g.mark("Steps", 2)
    assert g.is_echo("Steps", 2)
    assert not g.is_echo("Steps", 2)  # consumed: the performer setting it again is sent
    g.mark("Contextscale", 0.1)
    assert g.is_echo("Contextscale", 0.10000000149011612)  # float32 round trip
    g.mark("Steps", 2)
    assert not g.is_echo("Steps", 3)  # the performer moved on: send, and forget the mark
    assert not g.is_echo("Steps", 2)


def test_pending_echoes_tell_our_moves_from_news():
    p = osc_sync.PendingEchoes(hold_s=0.5)
    for i, v in enumerate((0.1, 0.2, 0.3)):
        p.sent("context_scale", v, now=i * 0.01)
    assert p.classify("context_scale", 0.1, now=0.05) == p.STALE  # would jump back
    assert p.classify("context_scale", 0.9, now=0.05) == p.STALE  # someone else, ours in flight
    assert p.classify("context_scale", 0.3, now=0.06) == p.OURS  # our newest: confirmed
    assert p.classify("context_scale", 0.9, now=0.07) == p.FOREIGN  # nothing in flight
    p.sent("seed", 5, now=1.0)
    assert p.classify("seed", 6, now=2.0) == p.FOREIGN  # ours expired (refused): take theirs


def test_stale_echo_does_not_move_the_parameter_back(tmp_path):
    r = Rig(deferred=False, tmp=tmp_path)
    try:
        r.until(lambda: r.comp.par.Connected.eval())
        ext = r.ext
        ext.clock = lambda: 100.0
        r.comp.par.Contextscale.val = 0.2
        r.comp.par.Contextscale.val = 0.3
        ext.OnReceiveOSC("/vace/context_scale", [0.2])  # late echo of the first move
        assert r.comp.par.Contextscale.eval() == pytest.approx(0.3)
        # once our moves settle, the component asks for the engine's value (echoes coalesce)
        ext.clock = lambda: 100.6
        r.prj.frame()
        assert r.comp.op("oscout").sent[-1] == ("/vace/get", ["/vace/context_scale"])
        ext.clock = lambda: 100.0
        # deferred callbacks: the performer has moved on to 0.5 but its change is not sent
        # yet when the echo of 0.3 (our newest) arrives: that echo must not overwrite 0.5
        r.comp.par.Contextscale._val = 0.5  # a UI move whose callback has not run
        ext.OnReceiveOSC("/vace/context_scale", [0.3])
        ext.OnReceiveOSC("/vace/context_scale", [0.7])  # nor anyone else's value
        assert r.comp.par.Contextscale.eval() == pytest.approx(0.5)
        ext.OnParValueChange(r.comp.par.Contextscale)  # the callback runs: 0.5 is sent
        assert r.comp.op("oscout").sent[-1] == ("/vace/context_scale", [0.5])
        ext.clock = lambda: 101.0
        ext.OnReceiveOSC("/vace/context_scale", [0.6])  # another surface, later
        assert r.comp.par.Contextscale.eval() == pytest.approx(0.6)
    finally:
        r.close()


def test_decode_and_classify():
    p = build_schema().to_json()["params"]
    prompts = next(x for x in p if x["name"] == "prompts")
    from vacelive.touchdesigner import td_params
    specs = td_params.param_specs(prompts)
    value, writes = osc_sync.decode(prompts, specs, ["a", 1.0, "b", 0.5])
    assert value == (("a", 1.0), ("b", 0.5))
    assert writes["Promptstext3"] == "" and writes["Promptsweight2"] == 0.5
    known = {x["name"] for x in p if x["live"]}
    assert osc_sync.classify("/vace/steps/norm", [0.5], known) == ("derived",)
    assert osc_sync.classify("/vace/status/fps", [3.0], known) == ("status", "fps", 3.0)
    assert osc_sync.classify("/vace/lora/x", [1.0], known) == ("unknown", "lora/x")
    assert osc_sync.classify("/other", [], known) == ("ignore",)
    assert osc_sync.error_address("/vace/steps: expected a number") == "/vace/steps"
    assert osc_sync.error_address("malformed OSC packet: x") is None
