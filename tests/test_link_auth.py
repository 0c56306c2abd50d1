"""CURVE authentication: only relays whose public key is authorized get in; refusals are logged."""
from __future__ import annotations

import logging

import pytest
import zmq.auth

from vacelive.bridge.cli import main as cli_main
from vacelive.bridge.link import ClientKeys, EngineKeys, EngineServer, EngineUnavailable, RemoteGenerator, generate_keys
from pattern_engine import PatternGenerator, read_stamp
from vacelive.engine.request import ChunkRequest


@pytest.fixture
def keyed_engine(tmp_path):
    paths = generate_keys(tmp_path / "keys", "relay")
    server = EngineServer(PatternGenerator(), "tcp://127.0.0.1:0", keys=paths.engine_dir).start()
    yield server, paths
    server.stop()


def _refused(gen: RemoteGenerator) -> None:
    assert not gen.wait_ready(1.5)
    with pytest.raises(EngineUnavailable):
        gen.step(ChunkRequest(seed=1))


def test_authorized_relay_is_accepted(keyed_engine):
    server, paths = keyed_engine
    with RemoteGenerator(server.endpoint, client_key=paths.client_dir, heartbeat=0.1) as gen:
        assert gen.connected and gen.describe()["link"]["auth"] == "curve"
        assert read_stamp(gen.step(ChunkRequest(seed=9)).frames[0])[3] == 9


def test_relay_without_keys_is_refused_and_logged(keyed_engine, caplog):
    server, _ = keyed_engine
    caplog.set_level(logging.WARNING, logger="vacelive.bridge.link.server")
    with RemoteGenerator(server.endpoint, heartbeat=0.1, connect_timeout=None) as gen:
        _refused(gen)
    assert "does not use CURVE" in caplog.text
    assert server.stats["refused_handshakes"] >= 1 and server.stats["steps"] == 0


def test_unauthorized_key_is_refused_and_logged(keyed_engine, tmp_path, caplog):
    server, paths = keyed_engine
    caplog.set_level(logging.WARNING, logger="vacelive.bridge.link.server")
    stranger_dir = tmp_path / "stranger"
    stranger_dir.mkdir()
    _, secret_file = zmq.auth.create_certificates(str(stranger_dir), "stranger")
    stranger = ClientKeys.from_file(secret_file)
    with RemoteGenerator(server.endpoint, server_public_key=paths.engine_dir / "engine.key",
                         client_key=stranger, heartbeat=0.1, connect_timeout=None) as gen:
        _refused(gen)
    assert "not in the authorized folder" in caplog.text
    assert stranger.public.decode() in caplog.text  # the log names the refused key
    assert server.stats["steps"] == 0


def test_wrong_engine_key_is_refused_and_logged(keyed_engine, tmp_path, caplog):
    server, paths = keyed_engine
    caplog.set_level(logging.WARNING, logger="vacelive.bridge.link.server")
    other = generate_keys(tmp_path / "other", "relay")  # a different engine's public key
    with RemoteGenerator(server.endpoint, server_public_key=other.engine_dir / "engine.key",
                         client_key=paths.client_dir / "relay.key_secret", heartbeat=0.1,
                         connect_timeout=None) as gen:
        _refused(gen)
    assert "CURVE handshake failed" in caplog.text


def test_keys_command_writes_layout_and_keeps_existing_keys(tmp_path, capsys):
    root = tmp_path / "k"
    assert cli_main(["keys", "--dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert "engine" in out and "relay" in out
    engine = EngineKeys.from_dir(root / "engine")
    relay = ClientKeys.from_dir(root / "relay")
    assert relay.server_public == engine.public
    assert (engine.authorized_dir / "relay.key").exists()
    # a second relay: engine key untouched, both relays authorized
    assert cli_main(["keys", "--dir", str(root), "--client", "stage2"]) == 0
    assert EngineKeys.from_dir(root / "engine").public == engine.public
    assert sorted(p.name for p in engine.authorized_dir.glob("*.key")) == ["relay.key", "stage2.key"]
    assert ClientKeys.from_dir(root / "relay").public == relay.public
