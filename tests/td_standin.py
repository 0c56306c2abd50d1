"""A minimal stand-in of TouchDesigner's documented Python API, for headless tests of
touchdesigner/ (there is no TouchDesigner on our machines).

Modelled on derivative.ca's docs (COMP/Page/Par/ParGroup classes, OSC Out DAT `sendOSC`, OSC
In DAT callbacks, Parameter Execute and Execute DATs, extensions): only what the component
uses, but with TouchDesigner's behaviour where it matters to us:

- `appendCustomPage` / `Page.appendFloat|Int|Str|StrMenu|Toggle|Pulse|Menu|File|Folder(name,
  label=None, size=1, order=None, replace=True)` return a ParGroup; custom parameter names must
  be Capitalised then lower case/digits;
- `Par.val` clamps numbers when clampMin/clampMax are set, ints stay ints, a Menu only takes
  one of its menuNames; `eval()`, `pulse()`, `default`, `normMin/normMax`, `menuNames/Labels`,
  `readOnly`, `help`;
- a changed parameter calls `onValueChange(par, prev)` (a pulse: `onPulse(par)`) of every
  Parameter Execute DAT watching its COMP, at the end of the frame (`deferred=True`, the
  default) or at once (`deferred=False`) so the echo guard is tested both ways;
- the OSC Out DAT's `sendOSC(address, args)` sends a real UDP datagram (python-osc, from a
  random port as TouchDesigner does); the OSC In DAT binds a real UDP port and calls
  `onReceiveOSC(dat, rowIndex, message, bytes, timeStamp, address, args, peer)` of its callbacks
  DAT when the project cooks (`Project.frame()`), on the main thread like TouchDesigner;
- a Text DAT's `.module` runs its text as a module (NOT registered in sys.modules, the harsher
  case) with `me`, `op` and `parent` injected; `ext0object` is evaluated on
  `reinitextensions.pulse()`.
"""
from __future__ import annotations

import json
import re
import socket
import time
import types
from pathlib import Path
from typing import Any, Callable

from pythonosc.osc_packet import OscPacket
from pythonosc.udp_client import SimpleUDPClient

# the component's modules import as `touchdesigner.*` from the repository root (conftest.py puts
# it on the path: the package is not installed, TouchDesigner loads it from Text DATs)
REPO = Path(__file__).resolve().parents[1]

_CUSTOM_NAME = re.compile(r"^[A-Z][a-z0-9]*$")


class Par:
    def __init__(self, owner: "OP", name: str, style: str, label: str = "", page: Any = None,
                 custom: bool = True, val: Any = None):
        self.owner, self.name, self.style, self.label, self.page = owner, name, style, label, page
        self.isCustom = custom
        self.min, self.max = 0.0, 1.0
        self.clampMin = self.clampMax = False
        self.normMin, self.normMax = 0.0, 1.0
        self.menuNames: list[str] = []
        self.menuLabels: list[str] = []
        self.help = ""
        self.readOnly = False
        self.enable = True
        self._default = self._initial()
        self._val = self._default if val is None else val

    def _initial(self) -> Any:
        return {"Float": 0.0, "Int": 0, "Toggle": False, "Pulse": False}.get(self.style, "")

    # TouchDesigner's Par members used by the component
    @property
    def default(self) -> Any:
        return self._default

    @default.setter
    def default(self, value: Any) -> None:
        self._default = self._coerce(value, clamp=False)

    @property
    def val(self) -> Any:
        return self._val

    @val.setter
    def val(self, value: Any) -> None:
        new = self._coerce(value, clamp=True)
        prev = self._val
        self._val = new
        if prev != new:
            self.owner._par_changed(self, prev)

    def eval(self) -> Any:
        return self._val

    def pulse(self) -> None:
        if self.style != "Pulse":
            raise ValueError(f"{self.name} is not a pulse parameter")
        self.owner._par_pulsed(self)

    @property
    def isPulse(self) -> bool:
        return self.style == "Pulse"

    @property
    def isMenu(self) -> bool:
        return self.style in ("Menu", "StrMenu")

    def _coerce(self, value: Any, clamp: bool) -> Any:
        s = self.style
        if s in ("Float", "Int"):
            x = float(value)
            if clamp and self.clampMin:
                x = max(self.min, x)
            if clamp and self.clampMax:
                x = min(self.max, x)
            return int(round(x)) if s == "Int" else x
        if s == "Toggle":
            return bool(value)
        if s == "Menu":
            value = str(value)
            if self.menuNames and value not in self.menuNames:
                raise ValueError(f"{self.name}: {value!r} is not one of {self.menuNames}")
            return value
        if s == "Pulse":
            return bool(value)
        return "" if value is None else str(value)

    def __repr__(self) -> str:
        return f"<Par {self.owner.name}.{self.name}={self._val!r}>"


class ParGroup(list):
    """The parameters of one line (size 1 here)."""

    @property
    def name(self) -> str:
        return self[0].name


class ParCollection:
    def __init__(self) -> None:
        object.__setattr__(self, "_pars", {})

    def __getattr__(self, name: str) -> Par:
        try:
            return self._pars[name]
        except KeyError:
            raise AttributeError(f"no parameter {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:  # op.par.x = v sets the value
        getattr(self, name).val = value

    def __getitem__(self, name: str) -> Par:
        return self._pars[name]

    def _add(self, par: Par) -> None:
        self._pars[par.name] = par


class Page:
    def __init__(self, owner: "COMP", name: str):
        self.owner, self.name = owner, name
        self.parGroups: list[ParGroup] = []

    @property
    def pars(self) -> list[Par]:
        return [p for g in self.parGroups for p in g]

    @property
    def isCustom(self) -> bool:
        return True

    def _append(self, style: str, name: str, label: str | None = None, size: int = 1,
                order: int | None = None, replace: bool = True) -> ParGroup:
        if not _CUSTOM_NAME.match(name):
            raise ValueError(f"custom parameter name {name!r}: capital letter, then lower "
                             "case letters or digits")
        if size != 1:
            raise NotImplementedError("the stand-in models size-1 parameters only")
        if name in self.owner.par._pars:
            if not replace:
                raise ValueError(f"parameter {name} exists")
            self.owner._remove_par(name)
        par = Par(self.owner, name, style, label or name, page=self)
        self.owner.par._add(par)
        group = ParGroup([par])
        self.parGroups.append(group)
        return group

    def appendFloat(self, name, label=None, size=1, order=None, replace=True):
        return self._append("Float", name, label, size, order, replace)

    def appendInt(self, name, label=None, size=1, order=None, replace=True):
        return self._append("Int", name, label, size, order, replace)

    def appendStr(self, name, label=None, size=1, order=None, replace=True):
        return self._append("Str", name, label, size, order, replace)

    def appendStrMenu(self, name, label=None, order=None, replace=True):
        return self._append("StrMenu", name, label, 1, order, replace)

    def appendToggle(self, name, label=None, order=None, replace=True):
        return self._append("Toggle", name, label, 1, order, replace)

    def appendPulse(self, name, label=None, order=None, replace=True):
        return self._append("Pulse", name, label, 1, order, replace)

    def appendMenu(self, name, label=None, order=None, replace=True):
        return self._append("Menu", name, label, 1, order, replace)

    def appendFile(self, name, label=None, order=None, replace=True):
        return self._append("File", name, label, 1, order, replace)

    def appendFolder(self, name, label=None, order=None, replace=True):
        return self._append("Folder", name, label, 1, order, replace)


# --------------------------------------------------------------------------------------------
# operators

class Connector:
    def __init__(self, owner: "OP"):
        self.owner = owner
        self.connections: list[OP] = []

    def connect(self, other: "OP") -> None:
        self.connections = [other]


class OP:
    BUILTIN: dict[str, tuple[str, Any]] = {}

    def __init__(self, project: "Project", parent: "COMP | None", name: str):
        self.project, self._parent, self.name = project, parent, name
        self.par = ParCollection()
        self.nodeX = self.nodeY = 0
        self.inputConnectors = [Connector(self)]
        self._storage: dict[str, Any] = {}
        for pname, (style, default) in self.BUILTIN.items():
            self.par._add(Par(self, pname, style, pname, custom=False, val=default))

    @property
    def path(self) -> str:
        return (self._parent.path.rstrip("/") + "/" + self.name) if self._parent else "/"

    def parent(self, n: int = 1) -> "COMP":
        p = self
        for _ in range(n):
            p = p._parent
        return p

    def op(self, path: str) -> "OP | None":
        """TouchDesigner paths: relative to this operator ('..' is the COMP holding a DAT, a
        bare name from a DAT is a sibling, from a COMP a child), or absolute."""
        if path.startswith("/"):
            node: OP | None = self.project.root
            parts = path[1:].split("/")
        else:
            node, parts = self, path.split("/")
        for part in [p for p in parts if p and p != "."]:
            if node is None:
                return None
            if part == "..":
                node = node._parent
            elif isinstance(node, COMP):
                node = node._children.get(part)
            else:
                node = node._parent._children.get(part)
        return node

    def store(self, key: str, value: Any) -> None:
        self._storage[key] = value

    def fetch(self, key: str, default: Any = None) -> Any:
        return self._storage.get(key, default)

    def destroy(self) -> None:
        self._parent._children.pop(self.name, None)
        self.project._destroyed(self)

    def _par_changed(self, par: Par, prev: Any) -> None:
        self.project._notify(self, "value", par, prev)

    def _par_pulsed(self, par: Par) -> None:
        self.project._notify(self, "pulse", par, None)

    def _remove_par(self, name: str) -> None:
        self.par._pars.pop(name, None)


class DAT(OP):
    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.text = ""

    @property
    def module(self) -> types.ModuleType:
        mod = types.ModuleType(self.name)
        mod.__dict__.update(me=self, op=self.op, parent=self.parent)
        exec(compile(self.text, f"<DAT {self.path}>", "exec"), mod.__dict__)
        return mod


class textDAT(DAT):
    BUILTIN = {"file": ("File", ""), "syncfile": ("Toggle", False)}


class tableDAT(DAT):
    pass


class parameterexecuteDAT(DAT):
    BUILTIN = {"active": ("Toggle", True), "op": ("Str", ""), "pars": ("Str", "*"),
               "custom": ("Toggle", True), "builtin": ("Toggle", False),
               "valuechange": ("Toggle", True), "onpulse": ("Toggle", True)}


class executeDAT(DAT):
    BUILTIN = {"active": ("Toggle", True), "framestart": ("Toggle", False),
               "exit": ("Toggle", False)}


class oscoutDAT(DAT):
    """Sends with python-osc from an ephemeral port, like TouchDesigner's OSC Out DAT."""

    BUILTIN = {"active": ("Toggle", True), "protocol": ("Str", "msging"),
               "address": ("Str", "localhost"), "port": ("Int", 10000)}

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self._client: SimpleUDPClient | None = None
        self._client_for: tuple | None = None
        self.sent: list[tuple[str, list]] = []

    def sendOSC(self, address: str, args: list, asBundle: bool = False,
                useNonStandardTypes: bool = True) -> None:
        if not self.par.active.eval():
            return
        target = (self.par.address.eval(), int(self.par.port.eval()))
        if self._client_for != target:
            self._client = SimpleUDPClient(*target)
            self._client_for = target
        self._client.send_message(address, list(args))
        self.sent.append((address, list(args)))


class oscinDAT(DAT):
    """Binds a real UDP port; delivers messages to the callbacks DAT when the project cooks."""

    BUILTIN = {"active": ("Toggle", True), "port": ("Int", 10000),
               "callbacks": ("Str", ""), "clamp": ("Toggle", False),
               "maxlines": ("Int", 100)}

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self._sock: socket.socket | None = None
        self._bound: int | None = None
        self.received = 0

    def _socket(self) -> socket.socket | None:
        port = int(self.par.port.eval())
        if not self.par.active.eval():
            self.close()
            return None
        if self._bound != port:
            self.close()
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", port))
            s.setblocking(False)
            self._sock, self._bound = s, port
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock, self._bound = None, None

    def cook(self) -> int:
        sock = self._socket()
        if sock is None:
            return 0
        n = 0
        cb = self.op(self.par.callbacks.eval()) if self.par.callbacks.eval() else None
        module = cb.module if cb is not None else None
        while True:
            try:
                data, peer = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            for timed in OscPacket(data).messages:
                msg = timed.message
                n += 1
                self.received += 1
                if module is not None:
                    text = " ".join([msg.address] + [str(a) for a in msg.params])
                    module.onReceiveOSC(self, self.received, text, data, time.time(),
                                        msg.address, list(msg.params), peer)
        return n


class TOP(OP):
    pass


class inTOP(TOP):
    pass


class outTOP(TOP):
    pass


class nullTOP(TOP):
    pass


class syphonspoutoutTOP(TOP):
    BUILTIN = {"active": ("Toggle", True), "sendername": ("Str", "TDSyphonSpoutOut")}


class syphonspoutinTOP(TOP):
    BUILTIN = {"active": ("Toggle", True), "sendername": ("StrMenu", "")}


class ndioutTOP(TOP):
    BUILTIN = {"active": ("Toggle", True), "name": ("Str", "TDNDIOut")}


class ndiinTOP(TOP):
    BUILTIN = {"active": ("Toggle", True), "name": ("StrMenu", "")}


class switchTOP(TOP):
    """Multi-input: TouchDesigner shows a new empty connector once the last one is wired."""

    BUILTIN = {"index": ("Int", 0)}

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.inputConnectors = [Connector(self), Connector(self)]


class COMP(OP):
    BUILTIN = {"ext0object": ("Str", ""), "ext0name": ("Str", ""),
               "ext0promote": ("Toggle", False), "reinitextensions": ("Pulse", False)}

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self._children: dict[str, OP] = {}
        self.customPages: list[Page] = []
        self.ext = types.SimpleNamespace()
        self.saved_to: list[str] = []

    def appendCustomPage(self, name: str) -> Page:
        page = Page(self, name)
        self.customPages.append(page)
        return page

    @property
    def customPars(self) -> list[Par]:
        return [p for page in self.customPages for p in page.pars]

    def create(self, op_type: type, name: str) -> OP:
        if name in self._children:
            raise ValueError(f"{self.path}/{name} exists")
        child = op_type(self.project, self, name)
        self._children[name] = child
        return child

    @property
    def children(self) -> list[OP]:
        return list(self._children.values())

    def _par_pulsed(self, par: Par) -> None:
        if par.name == "reinitextensions":
            self._init_extension()
            return
        super()._par_pulsed(par)

    def _init_extension(self) -> None:
        expr = self.par.ext0object.eval()
        if not expr:
            return
        obj = eval(expr, {"op": self.op, "me": self, "parent": self.parent})
        name = self.par.ext0name.eval() or type(obj).__name__
        setattr(self.ext, name, obj)

    def save(self, path: str) -> None:
        """Writes a JSON summary (a real .tox is TouchDesigner's binary format)."""
        doc = {"path": self.path, "ops": sorted(self._children),
               "pages": {p.name: [par.name for par in p.pars] for p in self.customPages}}
        with open(path, "w", encoding="utf-8") as f:
            json.dump(doc, f)
        self.saved_to.append(path)


baseCOMP = COMP


class Project:
    """The root network plus the cook loop: OSC in, frame start, deferred par callbacks."""

    def __init__(self, deferred: bool = True):
        self.deferred = deferred
        self.root = COMP(self, None, "")
        self.root.create(baseCOMP, "project1")
        self._queue: list[tuple[OP, str, Par, Any]] = []
        self.frame_count = 0

    def op(self, path: str) -> OP | None:
        return self.root.op(path)

    def _all(self, node: OP | None = None) -> list[OP]:
        node = node or self.root
        out = [node]
        for child in getattr(node, "_children", {}).values():
            out.extend(self._all(child))
        return out

    def _notify(self, owner: OP, kind: str, par: Par, prev: Any) -> None:
        if self.deferred and kind == "value":
            self._queue.append((owner, kind, par, prev))
        else:
            self._dispatch(owner, kind, par, prev)

    def _dispatch(self, owner: OP, kind: str, par: Par, prev: Any) -> None:
        for dat in self._all():
            if not isinstance(dat, parameterexecuteDAT) or not dat.par.active.eval():
                continue
            if dat.op(dat.par.op.eval()) is not owner:
                continue
            if par.isCustom and not dat.par.custom.eval():
                continue
            if not par.isCustom and not dat.par.builtin.eval():
                continue
            module = dat.module
            if kind == "value" and dat.par.valuechange.eval():
                module.onValueChange(par, prev)
            elif kind == "pulse" and dat.par.onpulse.eval():
                module.onPulse(par)

    def frame(self) -> None:
        """One cook: OSC In DATs deliver, Execute DATs get onFrameStart, and the parameter
        changes of this frame reach the Parameter Execute DATs."""
        self.frame_count += 1
        for node in self._all():
            if isinstance(node, oscinDAT):
                node.cook()
        for node in self._all():
            if isinstance(node, executeDAT) and node.par.framestart.eval():
                node.module.onFrameStart(self.frame_count)
        while self._queue:
            batch, self._queue = self._queue, []
            for item in batch:
                self._dispatch(*item)

    def close(self) -> None:
        for node in self._all():
            if isinstance(node, oscinDAT):
                node.close()

    def _destroyed(self, node: OP) -> None:
        if isinstance(node, oscinDAT):
            node.close()


# the `td` module's names used by build_tox.build(td=...)
td = types.SimpleNamespace(
    baseCOMP=baseCOMP, textDAT=textDAT, tableDAT=tableDAT, oscoutDAT=oscoutDAT,
    oscinDAT=oscinDAT, parameterexecuteDAT=parameterexecuteDAT, executeDAT=executeDAT,
    inTOP=inTOP, outTOP=outTOP, nullTOP=nullTOP, syphonspoutinTOP=syphonspoutinTOP,
    syphonspoutoutTOP=syphonspoutoutTOP, ndioutTOP=ndioutTOP, ndiinTOP=ndiinTOP,
    switchTOP=switchTOP,
)


def run_until(project: Project, cond: Callable[[], bool], timeout: float = 3.0,
              step: float = 0.005) -> bool:
    """Cook frames until cond() holds (UDP on loopback takes a moment)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        project.frame()
        if cond():
            return True
        time.sleep(step)
    project.frame()
    return cond()
