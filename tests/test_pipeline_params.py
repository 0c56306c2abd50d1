"""Parameters that only some pipelines have (Param.pipelines): one schema, reported by
/vace/describe, accepted on their pipelines, refused with a notice on the others; the pipeline
itself is an enum of the registered recipes (load-time), also in the TouchDesigner menu."""
from __future__ import annotations

import json
from dataclasses import fields

import pytest

from vacelive.bridge.osc import OscConfig, OscServer
from vacelive.bridge.presets import PresetLibrary
from vacelive.bridge.schema import DEFAULT_SCHEMA, build_schema
from vacelive.bridge.store import ParamStore
from vacelive.engine.pipelines import RECIPES
from vacelive.engine.request import ChunkRequest
from vacelive.touchdesigner import td_params

from test_osc_server import Peer

RESTRICTED = [p for p in DEFAULT_SCHEMA.live if p.pipelines]


def test_restricted_params_name_registered_pipelines_and_request_fields():
    assert {p.name for p in RESTRICTED} >= {"kv_cache_attention_bias", "bank_size", "record_interval"}
    request_fields = {f.name for f in fields(ChunkRequest)}
    for p in RESTRICTED:
        assert set(p.pipelines) <= set(RECIPES), p.name
        assert p.name in request_fields, p.name  # reaches the engine through the request
        assert p.to_json()["pipelines"] == list(p.pipelines)
        assert getattr(ChunkRequest(), p.name) == p.default, p.name
    assert "pipelines" not in DEFAULT_SCHEMA["seed"].to_json()


def test_pipeline_is_an_enum_of_the_registered_recipes():
    p = DEFAULT_SCHEMA["pipeline"]
    assert p.type == "enum" and not p.live
    assert p.choices == tuple(RECIPES)
    assert {"krea-realtime", "memflow"} <= set(p.choices)


def test_touchdesigner_pipeline_menu_and_help_come_from_the_schema():
    specs = {s.td_name: s for s in td_params.all_specs(DEFAULT_SCHEMA.to_json())}
    menu = specs["Pipeline"]
    assert menu.style == "Menu"
    assert set(menu.menu_names) == set(RECIPES) and menu.default == "longlive"
    bias = specs[td_params.td_name("kv_cache_attention_bias")]
    assert "Only on: krea-realtime" in bias.help


def _server(tmp_path, pipeline):
    store = ParamStore(build_schema(), load_time={"pipeline": pipeline})
    server = OscServer(store, PresetLibrary(user_dir=tmp_path), OscConfig(port=0, oscquery_port=None)).start()
    return store, server


@pytest.mark.parametrize("param", RESTRICTED, ids=lambda p: p.name)
def test_accepted_on_its_pipeline_refused_elsewhere(tmp_path, param):
    other = next(name for name in RECIPES if name not in param.pipelines)
    value = param.max if param.default != param.max else param.min
    store, server = _server(tmp_path, param.pipelines[0])
    peer = Peer(server.address)
    try:
        peer.send(param.address, value)
        assert peer.expect(param.address) == [value]
        assert store.get(param.name) == value
    finally:
        peer.close()
        server.stop()

    store, server = _server(tmp_path, other)
    peer = Peer(server.address)
    try:
        peer.send(param.address, value)
        error = peer.expect("/vace/error")[0]
        assert param.address in error and param.pipelines[0] in error and repr(other) in error
        assert store.get(param.name) == param.default  # untouched
        peer.send("/vace/get", "/vace/seed")  # the server is still fine
        assert peer.expect("/vace/seed") == [42]
        # /vace/describe reports the restriction, so a UI can hide or grey the control
        peer.send("/vace/describe", param.name)
        doc = json.loads(peer.expect("/vace/describe")[0])
        assert doc["pipelines"] == list(param.pipelines)
    finally:
        peer.close()
        server.stop()


def test_setting_the_pipeline_over_osc_says_how_to_change_it(tmp_path):
    store, server = _server(tmp_path, "memflow")
    peer = Peer(server.address)
    try:
        peer.send("/vace/pipeline", "krea-realtime")
        error = peer.expect("/vace/error")[0]
        assert "load-time" in error and "--pipeline" in error and "'memflow'" in error
        peer.send("/vace/get", "/vace/pipeline")
        assert peer.expect("/vace/pipeline") == ["memflow"]
    finally:
        peer.close()
        server.stop()


def test_the_run_loop_keeps_the_store_pipeline_equal_to_the_engines():
    """A relay learns its remote engine's pipeline from describe(): after a chunk the store (and
    so the OSC refusal rule) follows it; names the schema does not know are ignored."""
    from test_runloop import make_loop

    from pattern_engine import PatternGenerator
    from vacelive.bridge.run.generators import GeneratorWrapper

    class Reports(GeneratorWrapper):
        name = "memflow"

        def describe(self):
            return {**self.inner.describe(), "pipeline": self.name}

    gen = Reports(PatternGenerator(96, 64))
    loop, _, store, _, _ = make_loop(gen=gen)
    assert store.get("pipeline") == "longlive"
    assert loop.run_once().error is None
    assert store.get("pipeline") == "memflow"
    gen.name = "pattern"
    loop.run_once()
    assert store.get("pipeline") == "memflow"
    with pytest.raises(Exception, match="live parameter"):
        store.set_load_time("seed", 3)
