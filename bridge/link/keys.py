"""ZMQ CURVE keys for the remote link (`vacelive keys` writes them).

Layout written by generate_keys(DIR):

    DIR/engine/engine.key_secret            engine keypair: stays on the GPU box
    DIR/engine/engine.key                   engine public key
    DIR/engine/authorized_clients/NAME.key  public keys of the relays the engine accepts
    DIR/NAME/NAME.key_secret                relay keypair: copy the whole DIR/NAME folder to the
    DIR/NAME/NAME.key                       TouchDesigner machine
    DIR/NAME/engine.key                     the engine public key, so the relay folder is complete

The engine loads `EngineKeys.from_dir(DIR/engine)`; a relay loads `ClientKeys.from_dir(DIR/NAME)`.
Files use zmq.auth's certificate format (z85 keys), so zmq tools can read them too.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

ENGINE = "engine"
AUTHORIZED = "authorized_clients"


def _check_curve() -> None:
    if not zmq.has("curve"):
        raise RuntimeError("this libzmq was built without CURVE support; install pyzmq wheels from PyPI")


def _secret_file_mode(path: Path) -> None:
    try:
        os.chmod(path, 0o600)
    except OSError:  # pragma: no cover - Windows ACLs
        pass


@dataclass(frozen=True)
class EngineKeys:
    public: bytes
    secret: bytes
    authorized_dir: Path

    @classmethod
    def from_dir(cls, directory: str | Path) -> "EngineKeys":
        directory = Path(directory)
        secret_file = directory / f"{ENGINE}.key_secret"
        if not secret_file.exists():
            raise FileNotFoundError(
                f"no engine keypair at {secret_file}: run `vacelive keys --dir {directory.parent}`")
        public, secret = zmq.auth.load_certificate(str(secret_file))
        if not secret:
            raise ValueError(f"{secret_file} holds no secret key")
        authorized = directory / AUTHORIZED
        if not authorized.is_dir() or not any(authorized.glob("*.key")):
            raise FileNotFoundError(
                f"no authorized client keys in {authorized}: run `vacelive keys --dir {directory.parent}`")
        return cls(public=public, secret=secret, authorized_dir=authorized)


@dataclass(frozen=True)
class ClientKeys:
    public: bytes
    secret: bytes
    server_public: bytes | None = None

    @classmethod
    def from_dir(cls, directory: str | Path) -> "ClientKeys":
        """A relay folder written by generate_keys: NAME.key_secret plus engine.key."""
        directory = Path(directory)
        secrets = [p for p in directory.glob("*.key_secret") if p.stem != ENGINE]
        if len(secrets) != 1:
            raise FileNotFoundError(f"expected one relay *.key_secret in {directory}, found {len(secrets)}")
        public, secret = zmq.auth.load_certificate(str(secrets[0]))
        engine_key = directory / f"{ENGINE}.key"
        server = load_public_key(engine_key) if engine_key.exists() else None
        return cls(public=public, secret=secret, server_public=server)

    @classmethod
    def from_file(cls, secret_file: str | Path) -> "ClientKeys":
        public, secret = zmq.auth.load_certificate(str(secret_file))
        if not secret:
            raise ValueError(f"{secret_file} holds no secret key")
        return cls(public=public, secret=secret)

    @classmethod
    def load(cls, value: "ClientKeys | str | Path | tuple[bytes, bytes]") -> "ClientKeys":
        if isinstance(value, ClientKeys):
            return value
        if isinstance(value, tuple):
            return cls(public=value[0], secret=value[1])
        path = Path(value)
        return cls.from_dir(path) if path.is_dir() else cls.from_file(path)


def load_public_key(value: bytes | str | Path) -> bytes:
    """A z85 public key (40 characters) or a certificate file holding one."""
    if isinstance(value, bytes) and len(value) == 40:
        return value
    if isinstance(value, str) and len(value) == 40 and not Path(value).exists():
        return value.encode()
    public, _ = zmq.auth.load_certificate(str(value))
    return public


@dataclass(frozen=True)
class KeyPaths:
    engine_dir: Path
    client_dir: Path
    created_engine: bool
    created_client: bool


def generate_keys(directory: str | Path, client_name: str = "relay", force: bool = False) -> KeyPaths:
    """Write (or complete) the key layout above. Existing keys are kept unless force=True."""
    _check_curve()
    if not client_name or client_name == ENGINE or any(c in client_name for c in "/\\. "):
        raise ValueError(f"bad client name {client_name!r}")
    root = Path(directory)
    engine_dir, client_dir = root / ENGINE, root / client_name
    authorized = engine_dir / AUTHORIZED
    for d in (engine_dir, authorized, client_dir):
        d.mkdir(parents=True, exist_ok=True)

    created_engine = force or not (engine_dir / f"{ENGINE}.key_secret").exists()
    if created_engine:
        zmq.auth.create_certificates(str(engine_dir), ENGINE)
        _secret_file_mode(engine_dir / f"{ENGINE}.key_secret")
    created_client = force or not (client_dir / f"{client_name}.key_secret").exists()
    if created_client:
        zmq.auth.create_certificates(str(client_dir), client_name)
        _secret_file_mode(client_dir / f"{client_name}.key_secret")
    shutil.copyfile(client_dir / f"{client_name}.key", authorized / f"{client_name}.key")
    shutil.copyfile(engine_dir / f"{ENGINE}.key", client_dir / f"{ENGINE}.key")
    return KeyPaths(engine_dir, client_dir, created_engine, created_client)
