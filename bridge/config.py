"""Settings of `vacelive serve`, `engine` and `relay`: command-line flags plus an optional TOML file.

Precedence: a flag given on the command line > the config file (`--config FILE`) > the built-in
default. The config file uses the flag names as keys (`osc_port = 7800` or `"osc-port" = 7800`)
and may carry a `[params]` table of initial live parameter values (same names and rules as OSC,
e.g. `prompt = "a forest"`, `context_scale = 1.2`); see docs/running.md.

One source of truth for names, types and choices: the config file is checked by feeding its values
through the very same argparse definitions the flags use, so `osc_port = "x"` fails exactly like
`--osc-port x` would, with the file named in the message.
"""
from __future__ import annotations

import argparse
import difflib
import sys
import tomllib
from pathlib import Path
from typing import Any

from vacelive.bridge.argtypes import pipeline_name, ranged, size_px
from vacelive.bridge.osc import add_cli_arguments as add_osc_arguments
from vacelive.engine.pipelines import RECIPES  # plain data, no torch

# Groups of flags a command can register (serve: model, io, osc, run; engine: model, listen;
# relay: link, io, osc, run).
GROUPS = ("model", "io", "osc", "run", "listen", "link")

_DEFAULTS_KEY = "_config_builtin_defaults"
_GROUPS_KEY = "_config_groups"


def default_transport() -> str:
    """Spout on Windows, Syphon on macOS, shared memory elsewhere."""
    if sys.platform == "win32":
        return "spout"
    if sys.platform == "darwin":
        return "syphon"
    return "shm"


def default_spec(name: str) -> str:
    return f"{default_transport()}:{name}"


class ConfigError(ValueError):
    """A config file or flag combination that cannot be used; the message says what to change."""


def add_arguments(parser: argparse.ArgumentParser, *groups: str) -> None:
    """Register the flags of the given groups, then turn every default into None so that
    `resolve()` can tell a flag the user typed from one left at its default."""
    for g in groups:
        if g not in GROUPS:
            raise ValueError(f"unknown flag group {g!r}")
    parser.add_argument("--config", metavar="FILE", help="TOML config file (flags given on the "
                        "command line win over it); see docs/running.md")
    if "model" in groups:
        _add_model(parser)
    if "listen" in groups:
        g = parser.add_argument_group("engine endpoint")
        g.add_argument("--listen", default="tcp://127.0.0.1:5555", metavar="ENDPOINT",
                       help="where relays connect (default loopback; a network address needs --keys)")
        g.add_argument("--keys", metavar="DIR", help="engine key folder from `vacelive keys` "
                       "(KEYS/engine): CURVE-authenticated, encrypted link")
    if "link" in groups:
        g = parser.add_argument_group("remote engine")
        g.add_argument("--engine", default="tcp://127.0.0.1:5555", metavar="ENDPOINT",
                       help="the `vacelive engine` to use, tcp://HOST:PORT")
        g.add_argument("--keys", metavar="DIR", help="relay key folder from `vacelive keys` "
                       "(KEYS/relay, holds engine.key too); needed when the engine uses keys")
        g.add_argument("--link-codec", choices=("raw", "jpeg"), default="raw",
                       help="frames over the link: raw (10 GbE, loopback) or jpeg (1 GbE)")
        g.add_argument("--jpeg-quality", type=ranged(int, 1, 100), default=90, help="JPEG quality 1..100")
    if "io" in groups:
        g = parser.add_argument_group("textures (SPEC = shm:NAME | spout:NAME | syphon:[APP/]NAME | "
                                      "ndi:NAME[?groups=..&ips=..&fourcc=..] | none)")
        g.add_argument("--control", default=default_spec("vacelive-control"), metavar="SPEC",
                       help="control/source video input")
        g.add_argument("--input", default=default_spec("vacelive-input"), metavar="SPEC",
                       help="V2V input video restyled with /vace/input_mode video (until a frame "
                       "arrives there, the control input is the input)")
        g.add_argument("--mask", default=default_spec("vacelive-mask"), metavar="SPEC",
                       help="mask input (white = generate, black = keep)")
        g.add_argument("--ref", default=default_spec("vacelive-ref"), metavar="SPEC",
                       help="live reference image input (added to the refs files)")
        g.add_argument("--output", default=default_spec("vacelive-out"), metavar="SPEC",
                       help="generated frames output")
    if "osc" in groups:
        add_osc_arguments(parser)
    if "run" in groups:
        g = parser.add_argument_group("output")
        g.add_argument("--fps", type=ranged(float, 0, 120), default=0.0,
                       help="output frame rate (0 = follow the measured generation rate); "
                       "the live parameter /vace/output_fps changes it on stage")
        g.add_argument("--snapshots", default="vacelive-snapshots", metavar="DIR",
                       help="folder for /vace/snapshot PNGs (default ./vacelive-snapshots)")
        g.add_argument("--recordings", default="vacelive-recordings", metavar="DIR",
                       help="folder for /vace/record/start MP4 files (default ./vacelive-recordings)")
        g.add_argument("--link", action="store_true",
                       help="join the Ableton Link session at start (the live parameter "
                       "/vace/link switches it on stage)")
    defaults = {}
    for action in parser._actions:  # argparse has no public accessor for this
        if action.dest in ("help", "config") or action.default is argparse.SUPPRESS:
            continue
        defaults[action.dest] = action.default
        if action.default not in (None, False) and action.help and "default" not in action.help:
            action.help += f" (default: {action.default})"  # shown although the real default is None
        action.default = None
    parser.set_defaults(**{_DEFAULTS_KEY: defaults, _GROUPS_KEY: groups})


def _add_model(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("model")
    g.add_argument("--pipeline", default="longlive", type=pipeline_name, metavar="NAME",
                   help=f"causal pipeline recipe: {', '.join(RECIPES)}; `vacelive weights list` shows their "
                   "files. Changing it means restarting (weights load with a progress bar)")
    g.add_argument("--models", metavar="DIR", help="models folder (default $VACELIVE_MODELS or "
                   "~/.vacelive/models)")
    g.add_argument("--width", type=size_px, default=832, help="generation width (multiple of 16)")
    g.add_argument("--height", type=size_px, default=480, help="generation height (multiple of 16)")
    g.add_argument("--codec", choices=("wan", "tae", "lighttae"), default="wan",
                   help="VAE that encodes inputs and decodes frames")
    g.add_argument("--device", default="cuda", help="torch device (cuda, cuda:1, cpu)")
    g.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default=None,
                   help="model compute dtype (default: bf16 on a GPU, fp32 on the CPU)")
    g.add_argument("--text-encoder", choices=("bf16", "fp8"), default="bf16",
                   help="umT5 weights file: bf16 (reference) or the fp8 download (upcast on load)")
    g.add_argument("--text-placement", choices=("gpu", "cpu", "offload"), default=None,
                   help="where umT5 runs: gpu (~30 ms per new prompt, 11 GB of VRAM), cpu, or "
                   "offload (on the GPU only while encoding); default: gpu, or cpu with "
                   "--device cpu")
    g.add_argument("--rope", choices=("auto", "absolute", "relative"), default="auto",
                   help="frame positions: auto = reference absolute positions until the 1024-frame "
                   "table end, then window-relative forever (docs/streaming.md)")
    speed = parser.add_argument_group("speed switches (off = the exact reference path; docs/PERFORMANCE.md)")
    speed.add_argument("--compile", action="store_true",
                       help="torch.compile the DiT blocks (about a minute of warm-up at start)")
    speed.add_argument("--compile-codec", action="store_true",
                       help="torch.compile the codec's per-chunk encode and decode (TAE at 832x480 on "
                       "an H200: decode 13.5 -> 7.0 ms; compiled at start with the warm-up)")
    speed.add_argument("--fp8", nargs="?", const="on", default="off", type=fp8_mode, metavar="{on,off,auto}",
                       help="FP8 e4m3 Linears in the DiT blocks (Hopper/Ada GPUs): on (bare --fp8) = every "
                       "block Linear; auto = only the Linear shapes measured faster than bf16 at start-up")
    speed.add_argument("--sdpa", choices=("auto", "default", "flash", "cudnn", "efficient", "math"), default="auto",
                       help="attention kernel: auto = the fastest per attention shape, measured at start-up "
                       "on CUDA (cuDNN, flash, efficient); default = PyTorch's own choice")
    speed.add_argument("--recache", choices=("exact", "newest"), default="exact",
                       help="what a prompt cut re-caches: exact = LongLive's whole window (the cut "
                       "chunk takes ~1.6x a plain one), newest = the newest chunk's frames only (no "
                       "hitch; docs/streaming.md)")
    speed.add_argument("--clean-pass", choices=("exact", "reuse"), default="exact",
                       help="what writes a chunk's keys/values into the KV cache: exact = a clean pass "
                       "(one of five DiT forwards), reuse = the last denoising pass's (about 20 %% less "
                       "DiT work, approximate; docs/PERFORMANCE.md)")
    g.add_argument("--gpus", type=int, default=1, metavar="N",
                   help="run the DiT on N GPUs of this host (ranks over NCCL; with --device cpu: N "
                   "processes over gloo); see --parallel-mode and docs/parallel.md")
    g.add_argument("--parallel-mode", choices=("pipeline", "sequence"), default="pipeline",
                   help="with --gpus > 1: pipeline = DiT blocks split over the GPUs (memory, several "
                   "hosts); sequence = every GPU runs every block on a share of the tokens (Ulysses: "
                   "lower chunk latency on one NVLink host). Both give the one-GPU stream")
    g.add_argument("--parallel-timeout", type=float, default=60.0, metavar="S",
                   help="with --gpus > 1: seconds a rank may stay silent before the stream stops "
                   "with an error (the output holds the last frame)")
    speed.add_argument("--kv-window", type=int, default=None, metavar="FRAMES",
                       help="latent frames of the KV attention window, sink included (default: the "
                       "pipeline's, LongLive 12); fewer = less attention per forward, shorter memory "
                       "(approximate; docs/PERFORMANCE.md)")
    speed.add_argument("--cuda-graphs", action="store_true",
                       help="replay each chunk's DiT forwards as CUDA graphs (exact; far less host work "
                       "per chunk: pays most with short chunks and small resolutions; CUDA only, "
                       "LongLive / Self-Forcing / StreamDiffusionV2 caches; docs/PERFORMANCE.md)")
    speed.add_argument("--chunk-latents", type=int, default=None, metavar="FRAMES",
                       help="latent frames per chunk after the first (default: the pipeline's, LongLive "
                       "3 = 12 video frames); 1 = 4-frame chunks: each frame leaves sooner after its "
                       "control frames, lower throughput (approximate; docs/PERFORMANCE.md)")
    speed.add_argument("--first-chunk-latents", type=int, default=None, metavar="FRAMES",
                       help="latent frames of a stream's first chunk (default: the pipeline's); 1 = the "
                       "first frame alone, on screen in a fraction of a chunk's time after a start or "
                       "reset (approximate; docs/PERFORMANCE.md)")
    g.add_argument("--random-weights", choices=("tiny", "full"), default=None,
                   help="no weight files: a random-weight model (tiny: CPU rehearsal of the whole "
                   "rig; full: full-size shapes for GPU timing). Output is abstract noise-art")


def fp8_mode(value: str) -> str:
    """--fp8 value: on / off / auto (true/false/1/0 from a config file too)."""
    v = str(value).strip().lower()
    mode = {"true": "on", "1": "on", "yes": "on", "false": "off", "0": "off", "no": "off"}.get(v, v)
    if mode not in ("on", "off", "auto"):
        raise argparse.ArgumentTypeError(f"--fp8 takes on, off or auto, not {value!r}")
    return mode


def _flag_of(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.option_strings and a.dest != "help"}


def _config_argv(data: dict[str, Any], actions: dict[str, argparse.Action], source: str) -> list[str]:
    """TOML key/values → the argv that the same flags would be; ConfigError for unknown keys."""
    argv: list[str] = []
    for key, value in data.items():
        dest = key.replace("-", "_")
        action = actions.get(dest)
        if action is None or dest == "config":
            close = difflib.get_close_matches(dest, [d for d in actions if d != "config"], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{source}: unknown setting {key!r}{hint}; known: "
                              f"{', '.join(sorted(d for d in actions if d != 'config'))}, [params]")
        flag = action.option_strings[-1]
        if action.nargs == 0:  # store_true
            if not isinstance(value, bool):
                raise ConfigError(f"{source}: {key} must be true or false")
            if value:
                argv.append(flag)
            continue
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and not isinstance(action, argparse._AppendAction):
            raise ConfigError(f"{source}: {key} takes one value, not a list")
        for v in values:
            if isinstance(v, (dict, list)):
                raise ConfigError(f"{source}: {key}: expected a plain value, got {v!r}")
            argv += [flag, str(v).lower() if isinstance(v, bool) else str(v)]
    return argv


def read_config_file(path: str | Path, parser_factory) -> tuple[dict[str, Any], dict[str, Any]]:
    """Parse a TOML file with the flags of `parser_factory()`; returns (settings, params)."""
    source = str(path)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {source} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {source}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    params = data.pop("params", {})
    if not isinstance(params, dict):
        raise ConfigError(f"{source}: [params] must be a table of live parameter values")
    parser = parser_factory()
    actions = _flag_of(parser)
    argv = _config_argv(data, actions, source)
    parser.exit_on_error = False
    try:
        ns = parser.parse_args(argv)
    except argparse.ArgumentError as exc:
        key = (exc.argument_name or "").split("/")[-1].lstrip("-").replace("-", "_")
        raise ConfigError(f"{source}: {key}: {exc.message}" if key else f"{source}: {exc}") from None
    check_params(params, source)
    settings = {d: getattr(ns, d) for d in actions if getattr(ns, d, None) is not None}
    settings.pop("config", None)
    return settings, params


def check_params(params: dict[str, Any], source: str) -> None:
    """The [params] table by the OSC rules, except that a value out of range is an error naming
    the file and the key (OSC clamps a fader; a file is a decision). LoRA names are checked by
    the session, which knows the engine's LoRAs."""
    from vacelive.bridge.param_types import ParamError
    from vacelive.bridge.schema import build_schema

    loras = [k[5:] for k in params if k.startswith("lora/") and k != "lora/pipeline"]
    try:
        schema = build_schema(loras)
    except (ParamError, ValueError) as exc:
        raise ConfigError(f"{source}: [params] {exc}") from None
    for key, value in params.items():
        p = schema.get(key)
        if p is None or not p.live or p.type == "action":
            close = difflib.get_close_matches(key, [q.name for q in schema.live], n=1)
            why = ("is a load-time setting; put it above [params]" if p is not None and not p.live
                   else "is an action, not a value" if p is not None
                   else "is not a live parameter" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ConfigError(f"{source}: [params] {key} {why}")
        try:
            p.coerce(value, clamp=False)
        except ParamError as exc:
            why = str(exc).removeprefix(f"{p.name}: ")
            raise ConfigError(f"{source}: [params] {key}: {why}") from None


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Flags > config file > built-in defaults. Returns a new namespace with every setting filled,
    `params` (initial live values from the file's [params] table) and `config` (the file or None).
    Raises ConfigError with a message for the user."""
    defaults: dict[str, Any] = getattr(args, _DEFAULTS_KEY)
    groups: tuple[str, ...] = getattr(args, _GROUPS_KEY)
    from_file: dict[str, Any] = {}
    params: dict[str, Any] = {}
    if args.config:
        def factory() -> argparse.ArgumentParser:
            p = argparse.ArgumentParser(add_help=False)
            add_arguments(p, *groups)
            return p

        from_file, params = read_config_file(args.config, factory)
    merged = argparse.Namespace(**vars(args))
    for dest, default in defaults.items():
        given = getattr(args, dest, None)
        if given is not None:
            value = given
        elif dest in from_file:
            value = from_file[dest]
        else:
            value = default
        setattr(merged, dest, value)
    if "text_placement" in defaults and merged.text_placement is None:
        merged.text_placement = "cpu" if str(merged.device).startswith("cpu") else "gpu"
    merged.params = params
    return merged


def check_endpoint(endpoint: str, flag: str) -> str:
    """A ZMQ endpoint for --listen/--engine: tcp://HOST:PORT (or ipc://PATH); ConfigError else."""
    scheme, sep, rest = endpoint.partition("://")
    if scheme == "ipc" and sep and rest:
        return endpoint
    host, _, port = rest.rpartition(":")
    if scheme != "tcp" or not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{flag} {endpoint!r}: expected tcp://HOST:PORT, e.g. tcp://127.0.0.1:5555")
    return endpoint


def parse_spec(spec: str | None) -> str | None:
    """A transport spec, or None for "none"/"off"/"" (input disabled)."""
    if spec is None or spec.strip().lower() in ("", "none", "off"):
        return None
    return spec.strip()


def to_toml(settings: dict[str, Any], params: dict[str, Any] | None = None) -> str:
    """The effective settings as a TOML config file (`vacelive serve --print-config`)."""
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        s = str(v)
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = []
    for key, v in settings.items():
        if v is None:
            lines.append(f"# {key} =  (not set)")
        else:
            if isinstance(v, tuple) and len(v) == 2 and isinstance(v[1], int):  # host:port
                v = f"{v[0]}:{v[1]}"
            elif isinstance(v, list):
                v = [f"{x[0]}:{x[1]}" if isinstance(x, tuple) else x for x in v]
            lines.append(f"{key} = {value(v)}")
    if params:
        lines += ["", "[params]"]
        for key, v in params.items():
            k = key if key.replace("_", "").isalnum() else f'"{key}"'
            lines.append(f"{k} = {value(v)}")
    return "\n".join(lines) + "\n"


def effective_settings(cfg: argparse.Namespace) -> dict[str, Any]:
    """The resolved settings (not the bookkeeping entries), in flag order."""
    defaults = getattr(cfg, _DEFAULTS_KEY)
    return {dest: getattr(cfg, dest) for dest in defaults}
