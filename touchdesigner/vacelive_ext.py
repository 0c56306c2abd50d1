"""VaceLiveExt: the extension of the vacelive Base COMP (built by build_tox.py).

Everything TouchDesigner-specific arrives through the owner COMP (its parameters, its child
operators: `oscout` OSC Out DAT, `oscin` OSC In DAT, `log` and `schema` Text DATs, the Syphon
Spout In/Out TOPs); nothing imports `td`, so the class runs headless against a stand-in of
TouchDesigner's documented API (tests/td_standin.py).

Wiring inside the COMP (build_tox.py creates it):
    parexec (Parameter Execute DAT)  onValueChange -> OnParValueChange, onPulse -> OnParPulse
    oscin_callbacks (OSC In DAT)     onReceiveOSC  -> OnReceiveOSC(address, args)
    frame (Execute DAT)              onFrameStart  -> OnFrame(); onExit -> OnExit()

Sync rules (see osc_sync.py): a parameter change sends one OSC message; feedback (echoes,
/vace/status/*, /vace/error, /vace/notice, preset replies) is written into parameters, and a
value written from feedback is never sent back. Connecting pushes this component's values
(Pushonconnect), registers the OSC In port with `/vace/hello <port>`, asks for the preset list and
confirms the link with a `/vace/describe steps` round trip sent last; an engine restart (silence, or the chunk counter going
back) re-links by itself.
"""

import json
import re
import threading
import time
from typing import Any, Callable

try:  # in the repository / tests
    from vacelive.touchdesigner import engine_process, osc_sync, td_params, textures
except ImportError:  # inside TouchDesigner: sibling Text DATs with these names
    import engine_process  # type: ignore[no-redef]
    import osc_sync  # type: ignore[no-redef]
    import td_params  # type: ignore[no-redef]
    import textures  # type: ignore[no-redef]

HANDSHAKE_PARAM = "steps"  # `/vace/describe steps` answers after our push and hello
_PARAM_NAME = re.compile(r"^[a-z][a-z0-9_]*(/[A-Za-z0-9_][A-Za-z0-9_-]*)*$")


def set_par(op: Any, names: tuple[str, ...], value: Any) -> bool:
    """Set the first parameter of `names` that `op` has (names differ between TouchDesigner
    builds, e.g. the OSC Out DAT's network address). False if it has none."""
    for n in names:
        par = getattr(op.par, n, None)
        if par is not None:
            if par.eval() != value:
                par.val = value
            return True
    return False


def _listening(osc_in: Any) -> list[Any]:
    """The OSC In DAT's port and active values (what it listens on)."""
    pars = (getattr(osc_in.par, n, None) for n in ("port", "active"))
    return [p.eval() for p in pars if p is not None]


class VaceLiveExt:
    LOG_LINES = 500
    PROBE_S = 1.0  # silent this long while linked: ask for one value
    LOST_S = 3.0  # silent this long: the link is lost (re-push and hello)
    RETRY_S = 2.0  # between connection attempts
    SYPHON_SCAN_S = 1.0

    def __init__(self, ownerComp: Any, schema_doc: dict | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 process: Any = None):
        self.owner = ownerComp
        self.clock = clock
        self.guard = osc_sync.FeedbackGuard()
        self.pending = osc_sync.PendingEchoes()
        self.Status: dict[str, Any] = {}
        self.preset_names: list[str] = []
        self._heard: float | None = None
        self._attempt_at: float | None = None
        self._probe_at: float | None = None
        self._syphon_at: float | None = None
        self._linked = False
        self._described: set[str] = set()
        self._known: dict[str, Any] = {}  # td_name -> the value last sent or shown from feedback
        self._recheck: dict[str, float] = {}  # param -> when to ask the engine for its value
        # survives an extension re-init (the engine keeps running; this finds it again)
        fetch = getattr(ownerComp, "fetch", None)
        self.process = process or (fetch("vacelive_process", None) if fetch else None) \
            or engine_process.EngineProcess()
        if hasattr(ownerComp, "store"):
            ownerComp.store("vacelive_process", self.process)
        self._set_schema(schema_doc if schema_doc is not None else self._schema_from_dat())
        self._configure_osc()
        self._wire_textures()

    # -- schema and pages ------------------------------------------------------------------
    def _schema_from_dat(self) -> dict:
        dat = self.owner.op("schema")
        if dat is None:
            raise RuntimeError("vacelive: the component has no 'schema' Text DAT "
                               "(rebuild it with touchdesigner/build_tox.py)")
        return json.loads(dat.text)

    def _set_schema(self, doc: dict) -> None:
        self.schema_doc = doc
        self.params = {p["name"]: p for p in doc["params"] if p.get("live")}
        self.specs = td_params.all_specs(doc)
        self.pars = td_params.build_pages(self.owner, self.specs)
        self.by_td = {s.td_name: s for s in self.specs}
        self.by_param: dict[str, list] = {}
        for s in self.specs:
            if s.param:
                self.by_param.setdefault(s.param, []).append(s)
                if s.role != "action" and s.td_name not in self._known:
                    self._known[s.td_name] = self.pars[s.td_name].eval()

    def _add_param(self, entry: dict) -> None:
        """A live parameter the engine has and this component lacks (a user LoRA): append it
        to its page, keep the schema document in step, then take its current value."""
        doc = dict(self.schema_doc, params=list(self.schema_doc["params"]) + [entry])
        self._set_schema(doc)
        dat = self.owner.op("schema")
        if dat is not None:
            dat.text = json.dumps(doc, indent=1)
        self._notice(f"added parameter {entry['name']} from the engine")
        self.Send(osc_sync.PREFIX + "/get", entry["address"])

    # -- small helpers ---------------------------------------------------------------------
    def _p(self, name: str) -> Any:
        return getattr(self.owner.par, name).eval()

    def _read(self, td_name: str) -> Any:
        return self.pars[td_name].eval()

    def _write(self, td_name: str, value: Any) -> bool:
        """Write a value that came from the engine (guarded: it is not sent back). False when
        the performer changed the parameter and its change callback has not run yet (a
        TouchDesigner that defers Parameter Execute callbacks to the frame end): their move
        wins and is sent when the callback runs."""
        par = self.pars.get(td_name)
        if par is None:
            return True
        current = par.eval()
        if td_name in self._known and not osc_sync.same(current, self._known[td_name]):
            return False
        if osc_sync.same(current, value):
            return True
        names = getattr(par, "menuNames", None)
        if getattr(par, "style", "") == "Menu" and names and value not in names:
            return True  # a choice this component does not know (engine newer than the schema)
        self.guard.mark(td_name, value)
        par.val = value
        self._known[td_name] = par.eval()
        return True

    def _set_status_par(self, td_name: str, value: Any) -> None:
        par = self.pars.get(td_name)
        if par is not None and par.eval() != value:
            par.val = value

    def _error(self, text: str) -> None:
        self._set_status_par("Lasterror", text)

    def _notice(self, text: str) -> None:
        self._set_status_par("Lastnotice", text)

    # -- OSC out ---------------------------------------------------------------------------
    def _configure_osc(self) -> bool:
        """Point the OSC Out/In DATs at the current settings. True when the OSC In DAT's port or
        activity changed: it listens there only from its next cook, so answers sent to it before
        that are lost."""
        out, inp = self.owner.op("oscout"), self.owner.op("oscin")
        active = bool(self._p("Active"))
        if out is not None:
            set_par(out, ("netaddress", "address"), str(self._p("Host")))
            set_par(out, ("port",), int(self._p("Port")))
            set_par(out, ("active",), active)
        if inp is None:
            return False
        before = _listening(inp)
        set_par(inp, ("port",), int(self._p("Feedbackport")))
        set_par(inp, ("active",), active)
        return _listening(inp) != before

    def Send(self, address: str, *args: Any) -> bool:
        """Send one OSC message to the engine through the OSC Out DAT (when Connect is on)."""
        if not self._p("Active"):
            return False
        out = self.owner.op("oscout")
        if out is None:
            self._error("vacelive: no 'oscout' OSC Out DAT in the component")
            return False
        try:
            out.sendOSC(address, list(args))
        except Exception as exc:  # a network error never breaks the component
            self._error(f"OSC send to {address} failed: {exc}")
            return False
        return True

    def Available(self, name: str) -> bool:
        """Whether the engine's pipeline (the Pipeline menu) has parameter `name`."""
        only = self.params[name].get("pipelines")
        return not only or str(self._p("Pipeline")) in only

    def SendParam(self, name: str) -> None:
        p = self.params[name]
        if not self.Available(name):
            self._notice(f"{p['address']} only applies to {', '.join(p['pipelines'])}: not sent")
            return
        for s in self.by_param[name]:
            if s.role != "action":
                self._known[s.td_name] = self._read(s.td_name)
        address, args, value = osc_sync.encode(p, self.by_param[name], self._read)
        if self.Send(address, *args) and value is not None:
            self.pending.sent(name, value, self.clock())

    def PushAll(self) -> None:
        """Send every live value of this component (aliases and actions excepted)."""
        for name, p in self.params.items():
            if p["type"] != "action" and not p.get("alias_of") and self.Available(name):
                self.SendParam(name)

    def Connect(self) -> None:
        if self._configure_osc():
            self._attempt_at = None  # connect at the next frame, once the OSC In DAT listens
            return
        self._attempt_at = self.clock()
        if self._p("Pushonconnect"):
            self.PushAll()
        self.Send(osc_sync.PREFIX + "/hello", int(self._p("Feedbackport")))
        self.Send(osc_sync.PREFIX + "/preset/list")
        # Last: the server answers in order, so when this reply links us every other answer to
        # the connect (the value dump, the preset list) has already arrived.
        self.Send(osc_sync.PREFIX + "/describe", HANDSHAKE_PARAM)

    def LoadPreset(self, name: str | None = None, chunks: int | None = None) -> None:
        name = name or str(self._p("Presetname"))
        chunks = int(self._p("Morphchunks")) if chunks is None else int(chunks)
        self.Send(osc_sync.PREFIX + "/preset/load", name, chunks)

    def SavePreset(self, name: str | None = None) -> None:
        name = name or str(self._p("Presetsavename")) or str(self._p("Presetname"))
        if not name:
            self._error("preset save: give the preset a name first")
            return
        self.Send(osc_sync.PREFIX + "/preset/save", name)

    # -- parameter callbacks (Parameter Execute DAT) ---------------------------------------
    def OnParValueChange(self, par: Any, prev: Any = None) -> None:
        name = par.name
        spec = self.by_td.get(name)
        if spec is None:
            return
        if spec.param is not None:
            if spec.role == "action":
                return
            if self.guard.is_echo(name, par.eval()):
                return  # the engine told us this value: nothing to send
            self.SendParam(spec.param)
        elif name == "Pipeline":
            # A load-time choice: a running local engine restarts and loads the new weights.
            if self.process.running and str(self._p("Mode")) != "external":
                self._notice(f"pipeline {par.eval()}: restarting the engine to load its weights")
                self.Start()
            else:
                self._notice(f"pipeline {par.eval()}: used the next time the engine starts")
        elif name in ("Active", "Host", "Port", "Feedbackport"):
            self._configure_osc()
            self._linked = False  # (re)connect at the next frame
            self._attempt_at = None
        elif name == "Record":
            if par.eval():
                self.Send(osc_sync.PREFIX + "/record/start", "", int(bool(self._p("Recordside"))))
            else:
                self.Send(osc_sync.PREFIX + "/record/stop")
        elif spec.page == "Textures":
            self._wire_textures()

    def OnParPulse(self, par: Any) -> None:
        name = par.name
        spec = self.by_td.get(name)
        if spec is not None and spec.role == "action":
            self.Send(self.params[spec.param]["address"], 1)
        elif name == "Start":
            self.Start()
        elif name == "Stop":
            self.Stop()
        elif name == "Presetload":
            self.LoadPreset()
        elif name == "Presetsave":
            self.SavePreset()
        elif name == "Presetrefresh":
            self.Send(osc_sync.PREFIX + "/preset/list")
        elif name == "Tap":
            self.Send(osc_sync.PREFIX + "/tap")

    # -- OSC in (OSC In DAT callback) ------------------------------------------------------
    def OnReceiveOSC(self, address: str, args: Any) -> None:
        now = self.clock()
        self._heard = now
        args = list(args or ())
        kind = osc_sync.classify(address, args, self.params)
        what = kind[0]
        if what == "param":
            self._apply_echo(kind[1], args, now)
        elif what == "status":
            self._apply_status(kind[1], kind[2])
        elif what == "error":
            self._error(kind[1])
            addr = osc_sync.error_address(kind[1])
            if addr and addr[len(osc_sync.PREFIX) + 1:] in self.params:
                self.Send(osc_sync.PREFIX + "/get", addr)  # show the value the engine kept
        elif what == "notice":
            self._notice(kind[1])
        elif what == "preset_list":
            self.preset_names = kind[1]
            par = self.pars.get("Presetname")
            if par is not None:
                par.menuNames = list(kind[1])
                par.menuLabels = list(kind[1])
        elif what == "preset_loaded":
            self._notice(f"preset '{kind[1]}' loading over {kind[2]} chunk(s)")
        elif what == "preset_saved":
            self._notice(f"preset '{kind[1]}' saved to {kind[2]}")
        elif what == "describe":
            self._apply_describe(kind[1])
        elif what == "unknown":
            name = kind[1]
            if _PARAM_NAME.match(name) and name not in self._described \
                    and not name.startswith("status/"):
                self._described.add(name)
                self.Send(osc_sync.PREFIX + "/describe", name)

    def _apply_echo(self, name: str, args: list, now: float) -> None:
        p = self.params[name]
        if p["type"] == "action":
            return
        try:
            value, writes = osc_sync.decode(p, self.by_param[name], args)
        except (ValueError, TypeError) as exc:
            self._error(f"cannot show feedback {p['address']} {args!r}: {exc}")
            return
        kind = self.pending.classify(name, value, now)
        if kind == self.pending.OURS:
            return  # the echo of our own newest move
        if kind == self.pending.STALE:
            # an older move of ours, or news while ours is in flight: ask again once our
            # moves have settled (echoes are coalesced, so ours may never come back)
            self._recheck[name] = now + self.pending.hold_s
            return
        for td_name, v in writes.items():
            self._write(td_name, v)

    def _apply_status(self, field: str, value: Any) -> None:
        if field == "chunk":
            old = self.Status.get("chunk")
            if isinstance(old, (int, float)) and isinstance(value, (int, float)) and value < old:
                self._linked = False  # a new stream: the engine restarted, push again
        self.Status[field] = value
        td = td_params.td_name("status_" + field)
        if td in self.pars and isinstance(value, (int, float)):
            self._set_status_par(td, value)

    def _apply_describe(self, text: str) -> None:
        try:
            doc = json.loads(text)
        except ValueError:
            return
        if not isinstance(doc, dict) or "name" not in doc:
            return
        if doc["name"] == HANDSHAKE_PARAM:
            self._linked = True
        elif doc.get("live") and doc["name"] not in self.params:
            try:
                self._add_param(doc)
            except (ValueError, KeyError) as exc:
                self._error(f"cannot add engine parameter {doc.get('name')}: {exc}")

    # -- every frame (Execute DAT) ---------------------------------------------------------
    def OnFrame(self) -> None:
        now = self.clock()
        lines = self.process.take_new_lines()
        log = self.owner.op("log")
        if lines and log is not None:
            log.text = "\n".join(list(self.process.lines)[-self.LOG_LINES:])
        self._set_status_par("Process", self.process.status())
        heard_recently = self._heard is not None and now - self._heard < self.LOST_S
        if self._linked and not heard_recently:
            self._linked = False
        if self._p("Active"):
            if not self._linked:
                if self._attempt_at is None or now - self._attempt_at >= self.RETRY_S:
                    self.Connect()
            elif now - self._heard >= self.PROBE_S and (
                    self._probe_at is None or now - self._probe_at >= self.PROBE_S):
                self._probe_at = now
                self.Send(osc_sync.PREFIX + "/get", osc_sync.PREFIX + "/" + HANDSHAKE_PARAM)
        self._set_status_par("Connected", bool(self._linked and heard_recently))
        for name, due in list(self._recheck.items()):
            if now >= due:
                del self._recheck[name]
                self.Send(osc_sync.PREFIX + "/get", self.params[name]["address"])
        if self._transport() in ("syphon", "ndi") and (
                self._syphon_at is None or now - self._syphon_at >= self.SYPHON_SCAN_S):
            self._syphon_at = now
            self._follow_syphon_output()

    def OnExit(self) -> None:
        """TouchDesigner is quitting: do not leave a GPU process behind."""
        if self.process.running:
            self.process.stop(timeout=3.0)

    # -- the engine process ----------------------------------------------------------------
    def EngineSettings(self) -> "engine_process.EngineSettings":
        transport = self._transport()
        return engine_process.EngineSettings(
            mode=str(self._p("Mode")), executable=str(self._p("Executable")),
            remote_engine=str(self._p("Remoteengine")), keys=str(self._p("Keys")),
            link_codec=str(self._p("Linkcodec")), pipeline=str(self._p("Pipeline")),
            models=str(self._p("Models")), width=int(self._p("Width")),
            height=int(self._p("Height")), codec=str(self._p("Codec")),
            device=str(self._p("Device")), dtype=str(self._p("Dtype")),
            random_weights=str(self._p("Randomweights")), fps=float(self._p("Fps")),
            osc_host=str(self._p("Host")), osc_port=int(self._p("Port")),
            feedback_port=int(self._p("Feedbackport")),
            oscquery_port=int(self._p("Oscqueryport")), presets_dir=str(self._p("Presetsdir")),
            config=str(self._p("Config")), extra_args=str(self._p("Extraargs")),
            textures=textures.engine_specs(transport, self._texture_names()))

    def EngineCommand(self) -> list[str]:
        return engine_process.engine_command(self.EngineSettings())

    def Start(self) -> None:
        if str(self._p("Mode")) == "external":
            self._notice("Process is 'external': start the engine yourself, then Connect")
            return
        try:
            command = self.EngineCommand()
            if self.process.running:
                self.process.stop()
            self.process.start(command)
        except (OSError, ValueError, RuntimeError) as exc:
            self._error(f"cannot start the engine: {exc}")
            return
        self._linked, self._attempt_at, self._heard = False, None, None
        self.Status.clear()

    def Stop(self) -> None:
        """Stop without freezing TouchDesigner: terminate now, wait on a thread."""
        if self.process.proc is None:
            return
        threading.Thread(target=self.process.stop, name="vacelive-stop", daemon=True).start()

    # -- textures --------------------------------------------------------------------------
    def _transport(self) -> str:
        return textures.resolve_transport(str(self._p("Transport")))

    def _texture_names(self) -> dict[str, str]:
        return {"control": str(self._p("Controlname")), "mask": str(self._p("Maskname")),
                "ref": str(self._p("Refname")), "input": str(self._p("Inputname")),
                "output": str(self._p("Outputname"))}

    def _wire_textures(self) -> None:
        """Point the Syphon Spout In/Out TOPs (or the NDI In/Out TOPs) at the engine's stream
        names and switch the output to the transport in use."""
        transport = self._transport()
        shared = transport in ("spout", "syphon")
        ndi = transport == "ndi"
        names = self._texture_names()
        for stream in ("control", "mask", "ref", "input"):
            top = self.owner.op("send_" + stream)
            if top is not None:
                set_par(top, ("sendername",), names[stream])
                set_par(top, ("active",), shared and bool(self._p("Send" + stream)))
            top = self.owner.op("ndiout_" + stream)
            if top is not None:
                set_par(top, ("name", "sendername"), names[stream])
                set_par(top, ("active",), ndi and bool(self._p("Send" + stream)))
        ndi_in = self.owner.op("ndiin_output")
        if ndi_in is not None:
            set_par(ndi_in, ("active",), ndi)
        switch = self.owner.op("output_switch")
        if switch is not None:
            set_par(switch, ("index",), 1 if ndi else 0)
        receive = self.owner.op("receive_output")
        if receive is not None:
            app = str(self._p("Syphonapp"))
            wanted = f"{app}:{names['output']}" if transport == "syphon" and app \
                else names["output"]
            set_par(receive, ("sendername",), wanted)
            set_par(receive, ("active",), shared)

    def _follow_syphon_output(self) -> None:
        if self._transport() == "ndi":  # NDI In TOP: the menu lists "MACHINE (stream)"
            top = self.owner.op("ndiin_output")
            par = getattr(top.par, "name", None) if top is not None else None
            if par is not None:
                found = textures.match_ndi_source(list(getattr(par, "menuNames", []) or []),
                                                  str(self._p("Outputname")))
                if found and par.eval() != found:
                    par.val = found
            return
        receive = self.owner.op("receive_output")
        par = getattr(receive.par, "sendername", None) if receive is not None else None
        if par is None:
            return
        found = textures.match_sender(list(getattr(par, "menuNames", []) or []),
                                      str(self._p("Outputname")), str(self._p("Syphonapp")))
        if found and par.eval() != found:
            par.val = found
