"""`vacelive doctor`: what this machine can run, and what to do about each problem.

The report is a list of `Check`s, each with a status:

    ok     works
    info   not used here or optional (Spout on Linux, FP8 on an older GPU, no torch on a relay)
    warn   something a run may trip over (no GPU, missing weights, no attention kernel)
    fail   a real problem: the command it concerns cannot work as installed (exit code 1)

Facts come from small probe functions (`torch_facts`, `nvidia_smi`, `sdpa_backends`, `fp8_works`,
`port_free`, `module_status`, `shm_works`, `interop_reason`); everything else is pure and the
tests run it against faked probes. Probes that touch the GPU run only when torch sees one.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import platform
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STATUSES = ("ok", "info", "warn", "fail")
CUDA_INDEX = "https://download.pytorch.org/whl/cu130"  # a CUDA build of torch (pytorch.org lists the others)


@dataclass
class Check:
    section: str
    name: str
    status: str
    detail: str
    fix: str = ""  # what to do (empty when nothing is needed)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")


@dataclass
class Options:
    models: str | None = None  # --models (else $VACELIVE_MODELS or ~/.vacelive/models)
    pipeline: str | None = None  # given: its missing files are a failure; None: every pipeline, warnings
    codec: str = "wan"
    text_encoder: str = "bf16"
    osc_host: str = "127.0.0.1"
    osc_port: int = 7700
    oscquery_port: int = 7701
    link_port: int = 5555
    platform: str = field(default_factory=lambda: sys.platform)


# -- probes (replaced by fakes in tests) ----------------------------------------------------------
def torch_facts() -> dict[str, Any]:
    """{"installed": False} | {"installed": True, "error": str} | version, CUDA build and devices."""
    if importlib.util.find_spec("torch") is None:
        return {"installed": False}
    try:
        import torch
    except Exception as exc:  # a broken install (missing shared library, ABI mismatch)
        return {"installed": True, "error": f"{type(exc).__name__}: {exc}"}
    facts: dict[str, Any] = {"installed": True, "version": torch.__version__, "cuda_build": torch.version.cuda,
                             "cuda_available": bool(torch.cuda.is_available()), "devices": [],
                             "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())}
    if facts["cuda_available"]:
        facts["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            facts["devices"].append({"name": p.name, "capability": (p.major, p.minor),
                                     "memory_gb": round(p.total_memory / 2**30, 1)})
    return facts


def nvidia_smi() -> dict[str, Any] | None:
    """The NVIDIA driver's view ({"driver": str, "gpus": [names]}); None without nvidia-smi."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"driver": None, "gpus": [], "error": str(exc)}
    if out.returncode != 0:
        return {"driver": None, "gpus": [], "error": (out.stderr or out.stdout).strip()[:300]}
    rows = [[c.strip() for c in line.split(",")] for line in out.stdout.strip().splitlines() if line.strip()]
    return {"driver": rows[0][1] if rows else None, "gpus": [r[0] for r in rows]}


def sdpa_backends() -> dict[str, str | None]:
    """Each SDPA kernel the engine can pick (--sdpa), run once at the DiT's head size (128) in
    bf16 on cuda:0: None if it ran, else why not."""
    import torch
    import torch.nn.functional as F

    from vacelive.engine.dit.attention import sdpa_context

    q = torch.randn(1, 12, 256, 128, device="cuda", dtype=torch.bfloat16)
    result: dict[str, str | None] = {}
    for name in ("cudnn", "flash", "efficient"):
        try:
            with sdpa_context(name):
                F.scaled_dot_product_attention(q, q, q)
            torch.cuda.synchronize()
            result[name] = None
        except Exception as exc:  # "No available kernel", an unsupported GPU, ...
            result[name] = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return result


def fp8_works() -> str | None:
    """None if the engine's FP8 Linear (--fp8) runs on cuda:0, else why not."""
    import torch
    from torch import nn

    from vacelive.engine.dit.fp8 import Fp8Linear, fp8_supported

    if not fp8_supported("cuda:0"):
        cap = torch.cuda.get_device_capability(0)
        return f"compute capability {cap[0]}.{cap[1]}; FP8 matmuls need 8.9 or newer (Ada, Hopper, Blackwell)"
    try:
        lin = nn.Linear(64, 64, device="cuda", dtype=torch.bfloat16)
        Fp8Linear(lin)(torch.randn(16, 64, device="cuda", dtype=torch.bfloat16))
        torch.cuda.synchronize()
    except Exception as exc:
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return None


def port_free(host: str, port: int, kind: str) -> str | None:
    """None if this process could bind `kind` ("udp"/"tcp") host:port now, else the OS's reason."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM)
    try:
        if kind == "tcp" and os.name != "nt":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
        s.bind((host, port))
    except OSError as exc:
        return exc.strerror or str(exc)
    finally:
        s.close()
    return None


def module_status(name: str) -> str | None:
    """None if `name` imports, else why not (not installed, or the import's error)."""
    if importlib.util.find_spec(name) is None:
        return "not installed"
    try:
        importlib.import_module(name)
    except Exception as exc:  # a native library missing behind the Python module
        return f"{type(exc).__name__}: {exc}"
    return None


def shm_works() -> str | None:
    """None if a shared-memory segment can be created (the shm transport's ring)."""
    from multiprocessing import shared_memory

    try:
        seg = shared_memory.SharedMemory(create=True, size=4096)
    except OSError as exc:
        return str(exc)
    seg.close()
    seg.unlink()
    return None


def interop_reason() -> str | None:
    """None if the CUDA-OpenGL zero-copy output can be tried (bridge.transports.gl_interop)."""
    from vacelive.bridge.transports.gl_interop import interop_unavailable_reason

    return interop_unavailable_reason()


def models_report(options: Options) -> list[tuple[str, Path, list[Any], str]]:
    """(pipeline, models folder, missing files, download command) per pipeline looked at."""
    from vacelive.engine.models_dir import check, download_command, models_dir
    from vacelive.engine.pipelines import RECIPES, WeightOptions, get_recipe

    weight_options = WeightOptions(codec=options.codec, text_encoder=options.text_encoder)
    recipes = [get_recipe(options.pipeline)] if options.pipeline else list(RECIPES.values())
    root = models_dir(options.models)
    return [(r.name, root, check(r, weight_options, root), download_command(r, weight_options, root))
            for r in recipes]


# -- checks -----------------------------------------------------------------------------------------
def gpu_checks(opts: Options) -> list[Check]:
    section = "GPU and torch"
    t = torch_facts()
    smi = nvidia_smi()
    out: list[Check] = []
    if smi is not None and smi.get("driver"):
        out.append(Check(section, "NVIDIA driver", "ok", f"{smi['driver']} ({', '.join(smi['gpus'])})"))
    elif smi is not None:
        out.append(Check(section, "NVIDIA driver", "fail", f"nvidia-smi failed: {smi.get('error', '')}",
                         "reinstall or update the NVIDIA driver, then reboot"))
    if not t["installed"]:
        out.append(Check(section, "torch", "info", "torch not installed: relay-only install "
                         "(`vacelive relay`, `td`, `keys`, `doctor` work; serve/engine/demo need the engine extra)",
                         "for serve/engine/demo here: torch first (README, Quick start), then "
                         "pip install -e '.[engine]' in the vacelive checkout"))
        return out
    if "error" in t:
        out.append(Check(section, "torch", "fail", f"torch is installed but does not import: {t['error']}",
                         "reinstall torch: pip install --force-reinstall torch (the CUDA build on a GPU box)"))
        return out
    build = f"CUDA {t['cuda_build']} build" if t["cuda_build"] else "CPU-only build"
    out.append(Check(section, "torch", "ok", f"{t['version']} ({build})"))
    if t["cuda_available"]:
        for i, d in enumerate(t["devices"]):
            cap = d["capability"]
            out.append(Check(section, f"cuda:{i}", "ok",
                             f"{d['name']}, compute capability {cap[0]}.{cap[1]}, {d['memory_gb']:g} GB"))
        if t.get("cudnn"):
            out.append(Check(section, "cuDNN", "ok", str(t["cudnn"])))
        return out
    gpus = smi["gpus"] if smi and smi.get("driver") else []
    if gpus and not t["cuda_build"]:
        out.append(Check(section, "CUDA", "fail", f"the driver sees {', '.join(gpus)} but this torch is "
                         "a CPU-only build, so serve/engine cannot use the GPU",
                         f"pip install --force-reinstall torch --index-url {CUDA_INDEX}"))
    elif gpus:
        out.append(Check(section, "CUDA", "fail", f"torch (CUDA {t['cuda_build']}) cannot use the GPU "
                         f"({', '.join(gpus)}); the driver ({smi['driver']}) is probably older than "
                         f"CUDA {t['cuda_build']} needs",
                         "update the NVIDIA driver, or install a torch built for an older CUDA "
                         "(pytorch.org lists the index URLs)"))
    elif t.get("mps"):
        out.append(Check(section, "GPU", "warn", "no CUDA GPU; Apple Metal (MPS) is available but the "
                         "engine is built and measured for CUDA",
                         "run the engine on an NVIDIA box and `vacelive relay` here; "
                         "`--device cpu` rehearses the rig"))
    else:
        out.append(Check(section, "GPU", "warn", "no CUDA GPU visible: serve/engine run only as a CPU "
                         "rehearsal (`--device cpu --random-weights tiny`), far from real time",
                         "run the engine on an NVIDIA GPU box (`vacelive engine`) and `vacelive relay` "
                         "here; on a GPU box install the NVIDIA driver and a CUDA build of torch"))
    return out


def attention_checks(opts: Options) -> list[Check]:
    section = "attention and FP8"
    t = torch_facts()
    if not t.get("installed"):
        return [Check(section, "SDPA kernels", "info", "torch not installed: attention runs on the engine box")]
    if "error" in t:
        return [Check(section, "SDPA kernels", "info", "not checked: torch does not import (above)")]
    if not t.get("cuda_available"):
        return [Check(section, "SDPA kernels", "info", "no CUDA GPU: attention would run on the CPU "
                      "math path (cuDNN/flash/efficient kernels and FP8 are CUDA only)")]
    out: list[Check] = []
    backends = sdpa_backends()
    for name, why in backends.items():
        out.append(Check(section, f"SDPA {name}", "ok" if why is None else "info",
                         "runs (bf16, head size 128)" if why is None else f"unavailable: {why}"))
    if all(why is not None for why in backends.values()):
        out.append(Check(section, "SDPA", "warn", "no fast attention kernel runs here: attention falls "
                         "back to the math path (several times slower)",
                         "use a GPU of compute capability 8.0+ and a current torch CUDA build"))
    why = fp8_works()
    out.append(Check(section, "FP8 (--fp8)", "ok" if why is None else "info",
                     "e4m3 rowwise matmul runs" if why is None else f"unavailable: {why}",
                     "" if why is None else "leave --fp8 off (the default) on this GPU"))
    return out


def model_checks(opts: Options) -> list[Check]:
    section = "models"
    out: list[Check] = []
    engine_installed = bool(torch_facts().get("installed"))
    try:
        reports = models_report(opts)
    except ValueError as exc:  # an unknown --pipeline
        return [Check(section, "pipeline", "fail", str(exc), "pick a pipeline `vacelive weights list` shows")]
    from vacelive.engine.pipelines import DEFAULT_RECIPE

    incomplete: list[str] = []
    for name, root, missing, command in reports:
        if not missing:
            out.append(Check(section, name, "ok", f"all files present in {root}"))
            continue
        if not opts.pipeline and name != DEFAULT_RECIPE:  # the others in one line
            incomplete.append(f"{name} ({len(missing)} missing)")
            continue
        shown = ", ".join(m.file.path for m in missing[:3])
        more = f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""
        # a named pipeline is what the user means to run; a relay-only install never loads weights
        severity = "fail" if opts.pipeline else "warn" if engine_installed else "info"
        out.append(Check(section, name, severity,
                         f"{len(missing)} file(s) missing in {root}: {shown}{more}",
                         f"{command}   (or `--random-weights tiny` to rehearse without weights)"))
    if incomplete:
        out.append(Check(section, "other pipelines", "info", "not downloaded: " + ", ".join(incomplete),
                         "`vacelive doctor --pipeline NAME` lists the files of one"))
    return out


def port_checks(opts: Options) -> list[Check]:
    section = "ports"
    # serve and relay bind OSC and OSCQuery (a busy port stops them: fail); only `vacelive engine`
    # binds the link port (on a relay machine it does not matter: warn)
    wanted = [("OSC", "udp", opts.osc_host, opts.osc_port, "--osc-port", "fail"),
              ("OSCQuery", "tcp", opts.osc_host, opts.oscquery_port, "--oscquery-port", "fail"),
              ("engine link", "tcp", "0.0.0.0", opts.link_port, "--listen tcp://0.0.0.0:PORT", "warn")]
    out: list[Check] = []
    for what, kind, host, port, flag, severity in wanted:
        if not port:
            continue
        why = port_free(host, port, kind)
        if why is None:
            out.append(Check(section, f"{what} {kind.upper()} {port}", "ok", f"free on {host}"))
        else:
            out.append(Check(section, f"{what} {kind.upper()} {port}", severity,
                             f"cannot bind {host}:{port}: {why} (another vacelive, TouchDesigner or "
                             "another OSC program holds it)",
                             f"stop that program, or give vacelive another port ({flag})"))
    return out


def transport_checks(opts: Options) -> list[Check]:
    section = "transports"
    plat = opts.platform
    out: list[Check] = []
    why = shm_works()
    out.append(Check(section, "shm", "ok" if why is None else "fail",
                     "shared-memory rings work" if why is None else f"cannot create shared memory: {why}",
                     "" if why is None else "Linux: /dev/shm must be mounted and writable (docker: --shm-size=1g)"))
    for name, os_name, module, hint in (("Spout", "win32", "SpoutGL", "pip install SpoutGL"),
                                        ("Syphon", "darwin", "syphon", "pip install syphon-python")):
        if plat != os_name:
            where = "Windows" if os_name == "win32" else "macOS"
            out.append(Check(section, name, "info", f"{where} only (this is {plat}); use shm or NDI here"))
            continue
        why = module_status(module)
        out.append(Check(section, name, "ok" if why is None else "fail",
                         f"{module} imports" if why is None else f"{module}: {why}",
                         "" if why is None else f"{hint} (part of vacelive's dependencies on this OS)"))
    why = module_status("cyndilib")  # a dependency on every OS; only ndi:NAME specs need it
    out.append(Check(section, "NDI", "ok" if why is None else "warn",
                     "cyndilib imports (NDI runtime included)" if why is None
                     else f"ndi:NAME sources/senders unavailable: cyndilib {why}",
                     "" if why is None else "pip install --force-reinstall cyndilib"))
    if plat == "darwin":
        out.append(Check(section, "GL interop", "info", "CUDA-OpenGL zero-copy is for NVIDIA GPUs "
                         "(Windows/Linux); Syphon sends from host memory"))
    elif not torch_facts().get("cuda_available"):
        out.append(Check(section, "GL interop", "info", "needs a CUDA GPU in this process (outputs are "
                         "sent from host memory, which is the normal relay path)"))
    else:
        why = interop_reason()
        out.append(Check(section, "GL interop", "ok" if why is None else "info",
                         "CUDA-OpenGL zero-copy output can be used" if why is None else f"optional: {why}",
                         "" if why is None else "outputs then go through host memory (a little more latency)"))
    return out


SECTIONS = (gpu_checks, attention_checks, model_checks, port_checks, transport_checks)


def run_checks(opts: Options | None = None) -> list[Check]:
    opts = opts or Options()
    checks: list[Check] = []
    for section in SECTIONS:
        checks += section(opts)
    return checks


def exit_code(checks: list[Check]) -> int:
    return 1 if any(c.status == "fail" for c in checks) else 0


def format_report(checks: list[Check], header: str = "") -> str:
    lines = [header] if header else []
    section = None
    for c in checks:
        if c.section != section:
            section = c.section
            lines.append(f"\n{section}")
        lines.append(f"  {c.status.upper():<5} {c.name:<20} {c.detail}")
        if c.fix and c.status != "ok":
            lines.append(f"  {'':<5} {'':<20} -> {c.fix}")
    counts = {s: sum(c.status == s for c in checks) for s in STATUSES}
    lines.append(f"\n{counts['fail']} problem(s), {counts['warn']} warning(s)")
    return "\n".join(lines)


def header() -> str:
    from vacelive import __version__

    return (f"vacelive {__version__} doctor: Python {platform.python_version()} on {platform.system()} "
            f"{platform.machine()}")
