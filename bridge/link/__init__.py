"""Remote link: the engine on a GPU box, the run loop beside TouchDesigner, over ZMQ.

    EngineServer(generator, "tcp://0.0.0.0:5555", keys="KEYS/engine").start()    # GPU box
    gen = RemoteGenerator("tcp://gpu-box:5555", client_key="KEYS/relay")          # TD machine
    result = gen.step(ChunkRequest(...))                                            # Generator protocol

Wire format (JSON header + raw or JPEG frames, never pickle): bridge/link/wire.py.
Keys and security: bridge/link/keys.py and docs/transports.md.
"""
from .client import EngineUnavailable, RemoteGenerator, RemoteStepError
from .keys import ClientKeys, EngineKeys, generate_keys
from .server import EngineServer, is_local_endpoint
from .wire import WireError

__all__ = [
    "ClientKeys",
    "EngineKeys",
    "EngineServer",
    "EngineUnavailable",
    "RemoteGenerator",
    "RemoteStepError",
    "WireError",
    "generate_keys",
    "is_local_endpoint",
]
