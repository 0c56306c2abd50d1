"""`vacelive engine`: the model on a GPU box, served to `vacelive relay` over ZMQ.

Binds loopback by default; a network address needs CURVE keys from `vacelive keys` (the link is
then encrypted and only authorized relays get in). See docs/running.md and docs/transports.md.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from vacelive.bridge import config
from vacelive.bridge.config import ConfigError
from vacelive.bridge.run.generators import GeneratorWrapper
from vacelive.engine.request import ChunkRequest, ChunkResult

log = logging.getLogger("vacelive.engine")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config.add_arguments(parser, "model", "listen")
    parser.add_argument("--print-config", action="store_true",
                        help="print the effective settings as a TOML config file and exit")


class LoggedGenerator(GeneratorWrapper):
    """The served generator, logging what changes in the requests it gets (prompt, references,
    resets): on a headless GPU box that log is how an operator sees a relay's state arrive."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self._prompts: Any = None

    def describe(self) -> dict[str, Any]:
        d = dict(super().describe())
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            d.setdefault("gpu_mem_mb", torch.cuda.memory_allocated() / 2**20)
        return d

    def reset(self) -> None:
        log.info("reset")
        super().reset()

    def step(self, request: ChunkRequest) -> ChunkResult:
        prompts = [(p.text, p.weight) for p in request.prompts]
        if prompts != self._prompts:
            self._prompts = prompts
            log.info("prompts: %s", "; ".join(f"{t!r} x{w:g}" for t, w in prompts))
        if request.refs is not None:
            sizes = ", ".join("x".join(str(s) for s in tuple(r.shape)[:2][::-1]) for r in request.refs)
            log.info("references received: %d image(s)%s", len(request.refs),
                     f" ({sizes})" if sizes else "")
        if request.reset:
            log.info("reset requested with this chunk")
        return super().step(request)


def run(args: argparse.Namespace) -> int:
    from vacelive.bridge.link import EngineServer, is_local_endpoint
    from vacelive.bridge.run.generators import build_local_generator

    try:
        cfg = config.resolve(args)
        if args.print_config:
            print(config.to_toml(config.effective_settings(cfg), cfg.params), end="")
            return 0
        if cfg.params:
            raise ConfigError("[params] belongs to serve/relay configs (the relay sends parameters)")
        config.check_endpoint(cfg.listen, "--listen")
        if not cfg.keys and not is_local_endpoint(cfg.listen):  # before loading any model
            raise ConfigError(
                f"--listen {cfg.listen} is reachable from the network, so the engine needs CURVE "
                "keys: run `vacelive keys --dir keys`, then pass --keys keys/engine here and "
                "--keys keys/relay to the relay (or listen on tcp://127.0.0.1:PORT)")
        generator = LoggedGenerator(build_local_generator(cfg))
        try:
            server = EngineServer(generator, cfg.listen, keys=cfg.keys)
        except (ValueError, FileNotFoundError) as exc:
            raise ConfigError(f"--listen {cfg.listen}: {exc}") from None
        try:
            server.start()
        except Exception as exc:  # zmq bind errors: address in use, bad endpoint
            raise ConfigError(f"cannot listen on {cfg.listen}: {exc}") from None
    except ConfigError as exc:
        print(f"vacelive engine: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def handler(signum, frame):  # noqa: ARG001
        log.info("%s received: shutting down", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)
    d = generator.describe()
    print(f"vacelive engine ready on {server.endpoint} ({'CURVE keys' if cfg.keys else 'no auth, loopback'}); "
          f"model {d.get('pipeline', '?')} {generator.width}x{generator.height} on {cfg.device}. "
          "Ctrl+C to stop.", flush=True)
    while not stop.wait(0.2):
        pass
    server.stop()
    close = getattr(generator.inner, "close", None)
    if callable(close):
        close()
    return 0
