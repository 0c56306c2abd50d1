"""Which texture transport to use and how to name the streams (stdlib only).

TouchDesigner's Syphon Spout In/Out TOPs are one operator pair: Spout on Windows, Syphon on
macOS. The component publishes its Control, Mask, Ref and Input (V2V camera) inputs through
Syphon Spout Out TOPs and receives the engine's output through a Syphon Spout In TOP; the engine
is started with the matching `--control/--mask/--ref/--input/--output SPEC` flags (SPEC = spout:NAME | syphon:NAME |
shm:NAME). Shared memory has no TOP in TouchDesigner: with `shm` the TOPs are switched off and
the vacelive ring is read with the Script TOP reader of docs/transports.md.

NDI (any OS, also across machines): the inputs go out through NDI Out TOPs named like the
streams and the output comes back through an NDI In TOP; the engine runs with `ndi:NAME` specs
and finds TouchDesigner's senders by stream name ("MACHINE (vacelive-control)").
"""

import sys

STREAMS = ("control", "mask", "ref", "input", "output")  # engine flag names, in TOP wiring order


def platform_transport(platform: str | None = None) -> str:
    platform = sys.platform if platform is None else platform
    if platform.startswith("win"):
        return "spout"
    if platform == "darwin":
        return "syphon"
    return "shm"


def resolve_transport(choice: str, platform: str | None = None) -> str:
    if choice in ("", "auto"):
        return platform_transport(platform)
    if choice not in ("spout", "syphon", "shm", "ndi"):
        raise ValueError(f"unknown transport {choice!r} (auto, spout, syphon, shm or ndi)")
    return choice


def engine_specs(transport: str, names: dict[str, str]) -> dict[str, str]:
    """{'--control': 'spout:vacelive-control', ...} for the streams that have a name."""
    return {f"--{s}": f"{transport}:{names[s]}" for s in STREAMS if names.get(s)}


def match_sender(available: list[str], wanted: str, app: str = "") -> str | None:
    """The entry of a Syphon Spout In TOP's sender menu that is the engine's stream.

    Spout lists bare sender names. TouchDesigner's Syphon list has been seen to show another
    app's server as 'app:server' (and other apps list 'app - server'), and the engine's app
    name is its Python executable, so an exact match is tried first, then app:name, then any
    entry ending in the server name."""
    if app and f"{app}:{wanted}" in available:
        return f"{app}:{wanted}"
    if wanted in available:
        return wanted
    for entry in available:
        if entry.endswith(":" + wanted) or entry.endswith(" - " + wanted):
            return entry
    return None


def match_ndi_source(available: list[str], wanted: str) -> str | None:
    """The entry of an NDI In TOP's source menu that is the engine's sender: NDI names are
    'MACHINE (stream)', so an exact entry first, then any machine's stream `wanted`."""
    if wanted in available:
        return wanted
    for entry in available:
        if entry.endswith(f" ({wanted})"):
            return entry
    return None
