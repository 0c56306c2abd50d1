"""TouchDesigner custom parameters generated from the vacelive parameter schema.

The input is the schema JSON document (`bridge.schema.Schema.to_json()`, the same document the
engine answers to `/vace/describe`), so this module needs neither `bridge` nor `td`: it runs
inside TouchDesigner's Python (copied into a Text DAT by build_tox.py) and headless in tests.

One `ParSpec` per TouchDesigner parameter. Live schema parameters map to:

    float -> Float   int -> Int   bool -> Toggle   enum -> Menu   action -> Pulse
    str   -> Str (File for the file-path params in FILE_PARAMS)
    str_list (refs, N items) -> N File parameters, one per slot
    prompts (N items)        -> N (Str text, Float weight) slot pairs

plus the component's own pages (Presets, Engine, Textures, Status) that are not engine
parameters. `build_pages()` appends whatever is missing on a COMP, so the builder and the
extension share one generator and re-running it is harmless.
"""
# (no `from __future__ import annotations`: dataclasses in a TouchDesigner DAT module must
# not need sys.modules to resolve string annotations)

import re
from dataclasses import dataclass
from typing import Any, Iterable

PREFIX = "/vace"
FILE_PARAMS = frozenset({"extension_first", "extension_last"})  # str params holding a file path
SLIDER_SPAN = 10_000  # ints with a wider range (seed) get a slider over the first 10k values
PROMPT_WEIGHT_MAX = 2.0  # slider end for prompt weights (the engine accepts any weight >= 0)

# Page order on the component: schema groups first (in schema order), then our own pages.
COMPONENT_PAGES = ("Presets", "Engine", "Textures", "Status")


@dataclass
class ParSpec:
    """One TouchDesigner custom parameter."""

    td_name: str  # Capitalised, then lower-case letters/digits (TouchDesigner's rule)
    label: str
    style: str  # Float Int Str StrMenu Toggle Pulse Menu File Folder
    page: str
    default: Any = None
    min: float | None = None  # hard range (clamped)
    max: float | None = None
    norm_min: float | None = None  # slider range
    norm_max: float | None = None
    menu_names: tuple[str, ...] = ()
    menu_labels: tuple[str, ...] = ()
    help: str = ""
    read_only: bool = False
    # binding to the engine: which schema parameter this drives, and how
    param: str | None = None  # schema name ("context_scale", "prompts", ...)
    role: str = "value"  # value | prompt_text | prompt_weight | list_item | action
    slot: int = 0  # slot index for prompt_* / list_item


_TD_NAME = re.compile(r"^[A-Z][a-z0-9]*$")


def td_name(name: str) -> str:
    """Schema name -> TouchDesigner parameter name: 'context_scale' -> 'Contextscale',
    'lora/my-Style' -> 'Loramystyle'. Raises ValueError when nothing usable is left."""
    core = re.sub(r"[^a-z0-9]", "", name.lower())
    if not core or not core[0].isalpha():
        raise ValueError(f"cannot make a TouchDesigner parameter name from {name!r}")
    return core[0].upper() + core[1:]


def label_for(p: dict) -> str:
    name = p["name"]
    if name.startswith("lora/"):
        text = "LoRA " + name[5:]
    else:
        text = name.replace("_", " ").capitalize()
    return f"{text} ({p['unit']})" if p.get("unit") else text


def _help(p: dict) -> str:
    costs = [c for c in p.get("cost", ()) if c != "none"]
    extra = f" [{p['address']}; cost: {', '.join(costs)}]" if costs else f" [{p['address']}]"
    only = f" Only on: {', '.join(p['pipelines'])}." if p.get("pipelines") else ""
    return p.get("description", "") + only + extra


def _menu_label(choice: str) -> str:
    return choice.replace("_", " ").capitalize()


def _norm_range(p: dict) -> tuple[float, float]:
    lo, hi = p["min"], p["max"]
    if p["type"] == "int" and hi - lo > SLIDER_SPAN:
        return lo, lo + SLIDER_SPAN
    return lo, hi


def live_specs(schema_doc: dict) -> list[ParSpec]:
    """ParSpecs of every live parameter of a schema document, in schema order."""
    specs: list[ParSpec] = []
    for p in schema_doc["params"]:
        if p.get("live"):
            specs.extend(param_specs(p))
    return specs


def param_specs(p: dict) -> list[ParSpec]:
    """The TouchDesigner parameter(s) of one schema parameter (its JSON form)."""
    name, t, page = p["name"], p["type"], p["group"]
    base = dict(td_name=td_name(name), label=label_for(p), page=page, help=_help(p), param=name)
    if t in ("float", "int"):
        lo, hi = _norm_range(p)
        return [ParSpec(style="Float" if t == "float" else "Int", default=p["default"],
                        min=p["min"], max=p["max"], norm_min=lo, norm_max=hi, **base)]
    if t == "bool":
        return [ParSpec(style="Toggle", default=bool(p["default"]), **base)]
    if t == "enum":
        choices = tuple(p["choices"])
        return [ParSpec(style="Menu", default=p["default"], menu_names=choices,
                        menu_labels=tuple(_menu_label(c) for c in choices), **base)]
    if t == "action":
        return [ParSpec(style="Pulse", role="action", **base)]
    if t == "str":
        return [ParSpec(style="File" if name in FILE_PARAMS else "Str", default=p["default"],
                        **base)]
    if t == "str_list":
        default = list(p.get("default") or [])
        out = []
        for i in range(1, p["max_items"] + 1):
            out.append(ParSpec(
                td_name=f"{base['td_name']}{i}", label=f"{label_for(p).rstrip('s')} {i}",
                style="File", page=page, help=base["help"], param=name, role="list_item",
                slot=i - 1, default=default[i - 1] if i <= len(default) else ""))
        return out
    if t == "prompts":
        default = list(p.get("default") or [])
        out = []
        for i in range(1, p["max_items"] + 1):
            text, weight = ("", 1.0)
            if i <= len(default):
                text, weight = default[i - 1]["text"], float(default[i - 1]["weight"])
            out.append(ParSpec(
                td_name=f"{base['td_name']}text{i}", label=f"Prompt {i}", style="Str",
                page=page, help=base["help"], param=name, role="prompt_text", slot=i - 1,
                default=text))
            out.append(ParSpec(
                td_name=f"{base['td_name']}weight{i}", label=f"Weight {i}", style="Float",
                page=page, help="Weight of prompt slot %d (0 = off)." % i, param=name,
                role="prompt_weight", slot=i - 1, default=weight, min=0.0, max=None,
                norm_min=0.0, norm_max=PROMPT_WEIGHT_MAX))
        return out
    raise ValueError(f"{name}: no TouchDesigner parameter for type {t!r}")


# --------------------------------------------------------------------------------------------
# the component's own pages (not engine parameters)

TRANSPORTS = ("auto", "spout", "syphon", "shm", "ndi")
ENGINE_MODES = ("local", "relay", "external")
CODECS = ("wan", "tae", "lighttae")
DTYPES = ("auto", "bf16", "fp16", "fp32")
LINK_CODECS = ("raw", "jpeg")
RANDOM_WEIGHTS = ("off", "tiny", "full")


def _c(td: str, label: str, style: str, page: str, default: Any = None, help: str = "", **kw):
    return ParSpec(td_name=td, label=label, style=style, page=page, default=default, help=help,
                   **kw)


def component_specs(status_fields: Iterable[dict] = (), pipelines: Iterable[str] = ()) -> list[ParSpec]:
    """Presets, Engine, Textures and Status pages. `status_fields` is the schema document's
    "status" list (one read-only parameter each); `pipelines` the choices of its load-time
    `pipeline` parameter (the registered pipelines: the Pipeline menu)."""
    pipelines = tuple(pipelines) or ("longlive",)
    P, E, T, S = COMPONENT_PAGES
    specs = [
        _c("Presetname", "Preset", "StrMenu", P, "default",
           "Preset to load; the menu lists the engine's presets (Refresh)."),
        _c("Morphchunks", "Morph (chunks)", "Int", P, 4,
           "Chunks over which a loaded preset morphs in (0 = switch at the next chunk).",
           min=0, max=256, norm_min=0, norm_max=32),
        _c("Presetload", "Load", "Pulse", P),
        _c("Presetsavename", "Save as", "Str", P, "", "Name of the preset to save."),
        _c("Presetsave", "Save", "Pulse", P),
        _c("Presetrefresh", "Refresh list", "Pulse", P),
        _c("Record", "Record", "Toggle", P, False,
           "Record the engine's paced output to MP4 (on the engine machine, named by time and "
           "preset); off stops and closes the file."),
        _c("Recordside", "Record control beside", "Toggle", P, False,
           "Put the control input beside the output in the recording (from the next Record)."),
        _c("Tap", "Tap tempo", "Pulse", P, None,
           "Tap on the beat: two or more taps set the tempo (the Link session's with Link on)."),
        _c("Active", "Connect", "Toggle", E, True,
           "Send parameter changes and listen for feedback (OSC)."),
        _c("Host", "Engine host", "Str", E, "127.0.0.1",
           "OSC host of the engine, or of the relay when the GPU is remote."),
        _c("Port", "Engine OSC port", "Int", E, 7700, min=1, max=65535, norm_min=1,
           norm_max=65535),
        _c("Feedbackport", "Feedback port", "Int", E, 7710,
           "Local UDP port of the OSC In DAT; registered with /vace/hello.",
           min=1, max=65535, norm_min=1, norm_max=65535),
        _c("Pushonconnect", "Push values on connect", "Toggle", E, True,
           "On connect, send this component's values to the engine (off: take the engine's)."),
        _c("Mode", "Process", "Menu", E, "local",
           "local: start `vacelive serve` here; relay: start `vacelive relay` to a remote "
           "engine; external: start nothing, only connect.",
           menu_names=ENGINE_MODES, menu_labels=("Local serve", "Relay to remote GPU",
                                                 "External (connect only)")),
        _c("Executable", "vacelive executable", "File", E, "vacelive",
           "The `vacelive` command of your install (e.g. C:/vacelive/.venv/Scripts/"
           "vacelive.exe), or a python executable (runs `-m bridge.cli`)."),
        _c("Remoteengine", "Remote engine", "Str", E, "tcp://gpu-box:5555",
           "Relay mode: the GPU box's `vacelive engine --listen` endpoint."),
        _c("Keys", "Relay keys folder", "Folder", E, "",
           "Relay mode: keys/relay from `vacelive keys` (CURVE); empty for a loopback engine."),
        _c("Linkcodec", "Link codec", "Menu", E, "raw",
           "Relay mode: raw frames (10 GbE) or JPEG (1 GbE).", menu_names=LINK_CODECS,
           menu_labels=("Raw", "JPEG")),
        _c("Pipeline", "Pipeline", "Menu", E, pipelines[0],
           "Causal pipeline the engine loads. Changing it restarts a running local engine, which "
           "loads the new weights (progress in the engine's console); parameters of other "
           "pipelines are not sent.", menu_names=pipelines,
           menu_labels=tuple(_menu_label(c) for c in pipelines)),
        _c("Models", "Models folder", "Folder", E, ""),
        _c("Width", "Width", "Int", E, 832, min=256, max=2048, norm_min=256, norm_max=2048),
        _c("Height", "Height", "Int", E, 480, min=256, max=2048, norm_min=256, norm_max=2048),
        _c("Codec", "Codec", "Menu", E, "wan", menu_names=CODECS,
           menu_labels=("Wan VAE", "TAE", "LightTAE")),
        _c("Device", "Device", "Str", E, "cuda"),
        _c("Dtype", "Dtype", "Menu", E, "auto", "auto: bf16 on a GPU, fp32 on the CPU.",
           menu_names=DTYPES, menu_labels=("Auto", "bfloat16", "float16", "float32")),
        _c("Randomweights", "Random weights", "Menu", E, "off",
           "Rehearsal without weights: tiny or full-size random models.",
           menu_names=RANDOM_WEIGHTS, menu_labels=("Off (real weights)", "Tiny", "Full size")),
        _c("Fps", "Output fps", "Float", E, 0.0, "0 follows the measured generation rate.",
           min=0, max=120, norm_min=0, norm_max=60),
        _c("Oscqueryport", "OSCQuery port", "Int", E, 7701, "0 = off.", min=0, max=65535,
           norm_min=0, norm_max=65535),
        _c("Presetsdir", "Presets folder", "Folder", E, ""),
        _c("Config", "Config file", "File", E, "", "Optional TOML config (--config)."),
        _c("Extraargs", "Extra arguments", "Str", E, "",
           "Appended to the command line as-is (shell-style quoting)."),
        _c("Start", "Start engine", "Pulse", E),
        _c("Stop", "Stop engine", "Pulse", E),
        _c("Transport", "Transport", "Menu", T, "auto",
           "auto: Spout on Windows, Syphon on macOS, shared memory elsewhere.",
           menu_names=TRANSPORTS, menu_labels=("Auto (by OS)", "Spout", "Syphon",
                                               "Shared memory", "NDI (network)")),
        _c("Sendcontrol", "Send Control input", "Toggle", T, True,
           "Publish the Control input TOP for the engine's control video."),
        _c("Sendmask", "Send Mask input", "Toggle", T, False,
           "Publish the Mask input (white = generate, black = keep). Leave off while "
           "nothing is wired: an empty mask would keep everything."),
        _c("Sendref", "Send Ref input", "Toggle", T, False,
           "Publish the Ref input TOP as the live reference image."),
        _c("Sendinput", "Send Input (V2V)", "Toggle", T, False,
           "Publish the Input TOP (a camera) as the video that Input mode = video restyles. "
           "Off: the Control input is restyled."),
        _c("Controlname", "Control sender", "Str", T, "vacelive-control"),
        _c("Maskname", "Mask sender", "Str", T, "vacelive-mask"),
        _c("Refname", "Reference sender", "Str", T, "vacelive-ref"),
        _c("Inputname", "Input sender", "Str", T, "vacelive-input"),
        _c("Outputname", "Engine output", "Str", T, "vacelive-out"),
        _c("Syphonapp", "Syphon app name", "Str", T, "",
           "macOS: the app part of the engine's Syphon server, if TouchDesigner lists it "
           "as 'app:server'. Empty: match the server name alone."),
    ]
    for f in status_fields:
        key = f["address"].rsplit("/", 1)[1]
        style = "Int" if f["type"] == "int" else "Float"
        unit = f" ({f['unit']})" if f.get("unit") else ""
        specs.append(_c(td_name("status_" + key), key.replace("_", " ").capitalize() + unit,
                        style, S, 0, f.get("description", ""), read_only=True))
    specs += [
        _c("Connected", "Connected", "Toggle", S, False,
           "Feedback heard from the engine in the last few seconds.", read_only=True),
        _c("Process", "Engine process", "Str", S, "stopped", read_only=True),
        _c("Lasterror", "Last error", "Str", S, "", read_only=True),
        _c("Lastnotice", "Last notice", "Str", S, "", read_only=True),
    ]
    return specs


def all_specs(schema_doc: dict) -> list[ParSpec]:
    """Every parameter of the component; raises ValueError on a name collision."""
    pipeline = next((p for p in schema_doc["params"] if p["name"] == "pipeline"), {})
    choices = list(pipeline.get("choices", ()))
    if pipeline.get("default") in choices:  # the default pipeline first: the menu's default
        choices.remove(pipeline["default"])
        choices.insert(0, pipeline["default"])
    specs = live_specs(schema_doc) + component_specs(schema_doc.get("status", ()), choices)
    seen: dict[str, str] = {}
    for s in specs:
        if s.td_name in seen:
            raise ValueError(f"TouchDesigner parameter {s.td_name} comes from both "
                             f"{seen[s.td_name]} and {s.param or s.page}")
        if not _TD_NAME.match(s.td_name):
            raise ValueError(f"bad TouchDesigner parameter name {s.td_name!r}")
        seen[s.td_name] = s.param or s.page
    return specs


def page_order(specs: Iterable[ParSpec]) -> list[str]:
    pages: list[str] = []
    for s in specs:
        if s.page not in pages:
            pages.append(s.page)
    return pages


# --------------------------------------------------------------------------------------------
# applying specs to a COMP (TouchDesigner's Page/Par API; the stand-in in tests)

_APPEND = {
    "Float": "appendFloat", "Int": "appendInt", "Str": "appendStr", "StrMenu": "appendStrMenu",
    "Toggle": "appendToggle", "Pulse": "appendPulse", "Menu": "appendMenu",
    "File": "appendFile", "Folder": "appendFolder",
}


def build_pages(comp: Any, specs: list[ParSpec]) -> dict[str, Any]:
    """Create every missing page and parameter of `specs` on `comp`; existing parameters keep
    their values (so re-running after an engine adds a LoRA only appends). Returns
    {td_name: Par}."""
    pages = {p.name: p for p in comp.customPages}
    out: dict[str, Any] = {}
    for s in specs:
        par = getattr(comp.par, s.td_name, None)
        if par is None:
            page = pages.get(s.page)
            if page is None:
                page = pages[s.page] = comp.appendCustomPage(s.page)
            group = getattr(page, _APPEND[s.style])(s.td_name, label=s.label)
            par = group[0]
            _configure(par, s)
        out[s.td_name] = par
    return out


def _configure(par: Any, s: ParSpec) -> None:
    if s.style in ("Float", "Int"):
        if s.min is not None:
            par.min, par.clampMin = s.min, True
        if s.max is not None:
            par.max, par.clampMax = s.max, True
        if s.norm_min is not None:
            par.normMin = s.norm_min
        if s.norm_max is not None:
            par.normMax = s.norm_max
    if s.menu_names:
        par.menuNames = list(s.menu_names)
        par.menuLabels = list(s.menu_labels)
    if s.style != "Pulse" and s.default is not None:
        par.default = s.default
        par.val = s.default
    if s.help:
        par.help = s.help
    if s.read_only:
        par.readOnly = True
