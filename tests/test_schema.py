"""The parameter schema: one consistent source for OSC, presets, docs and the run loop."""
import dataclasses
import json
import math
import typing

import pytest

from vacelive.bridge.schema import CONTROLS, DEFAULT_SCHEMA, build_schema

from vacelive.bridge.param_types import COSTS, INT32_MAX, ParamError
from vacelive.engine import request as req

S = DEFAULT_SCHEMA

# Fields the brief requires to exist as live parameters of the same name.
REQUEST_NAMES = ["seed", "steps", "context_scale", "transition_chunks", "blend", "hint_reuse",
                 "fit", "annotator", "mask_channel", "ref_fit", "refs"]


def test_live_names_match_chunk_request_fields_and_defaults():
    request = req.ChunkRequest()
    fields = {f.name for f in dataclasses.fields(req.ChunkRequest)}
    for name in REQUEST_NAMES:
        p = S[name]
        assert p.live and name in fields
        if p.type != "str_list":
            assert p.default == getattr(request, name), name
    assert S["prompts"].default == tuple((p.text, p.weight) for p in request.prompts)


@pytest.mark.parametrize("name, literal, extra", [
    ("annotator", req.Annotator, ()), ("fit", req.FitPolicy, ()),
    ("mask_channel", req.MaskChannel, ()), ("blend", req.BlendMethod, ()),
    ("extension_mode", req.ExtensionMode, ("none",)),
])
def test_enum_choices_match_engine_literals(name, literal, extra):
    assert set(S[name].choices) == set(typing.get_args(literal)) | set(extra)


def test_ref_fit_choices_match_request_annotation():
    import torch  # the "torch.Tensor" forward reference only resolves where torch is installed

    hints = typing.get_type_hints(req.ChunkRequest, {**vars(req), "torch": torch})
    assert set(S["ref_fit"].choices) == set(typing.get_args(hints["ref_fit"]))


def test_every_param_is_fully_described():
    addresses = set()
    for p in S:
        assert p.description and p.group and p.cost
        assert all(c in COSTS for c in p.cost)
        assert p.address.startswith("/vace/") and p.address not in addresses
        addresses.add(p.address)
        if p.numeric:
            assert p.min is not None and p.min <= p.default <= p.max
        if p.type != "action":
            assert p.coerce(p.default, clamp=False) == p.default, p.name
    assert not addresses & {c.address for c in CONTROLS}
    assert {p.name for p in S.load_time} >= {"pipeline", "width", "height", "dtype", "codec",
                                             "models_dir", "osc_host", "osc_port"}


def test_describe_json_roundtrips_and_fits_a_datagram():
    text = S.describe_json()
    assert len(text.encode()) < 60000
    doc = json.loads(text)
    assert [p["name"] for p in doc["params"]] == [p.name for p in S]
    seed = next(p for p in doc["params"] if p["name"] == "seed")
    assert seed["address"] == "/vace/seed" and seed["max"] == INT32_MAX and seed["live"]
    assert next(p for p in doc["params"] if p["name"] == "width")["live"] is False


@pytest.mark.parametrize("name, value, expected", [
    ("steps", 4.0, 4), ("steps", 2.5, 3), ("steps", "2", 2), ("steps", " 3.0 ", 3),
    ("steps", 99, 4), ("steps", -3, 1), ("steps", True, 1),
    ("context_scale", "0.5", 0.5), ("context_scale", 7, 2.0), ("context_scale", 1, 1.0),
    ("pause", 1, True), ("pause", 0, False), ("pause", 0.0, False), ("pause", 1.0, True),
    ("pause", "on", True), ("pause", "False", False), ("pause", "1", True), ("pause", 0.7, True),
    ("annotator", "depth", "depth"), ("annotator", "DEPTH", "depth"), ("annotator", 4, "depth"),
    ("annotator", 2.0, "edges"), ("annotator", "3", "scribble"),
    ("prompt", 42, "42"), ("prompt", 1.5, "1.5"), ("prompt", ["a", "cat"], "a cat"),
    ("refs", "a.png", ("a.png",)), ("refs", [], ()), ("refs", "", ()), ("refs", None, ()),
    ("refs", ["a.png", "", "b.png"], ("a.png", "b.png")),
    ("prompts", "a cat", (("a cat", 1.0),)),
    ("prompts", ["a", 1.0, "b", 0.5], (("a", 1.0), ("b", 0.5))),
    ("prompts", ["a", "b", 0.5], (("a", 1.0), ("b", 0.5))),
    ("prompts", ["a", "0.3"], (("a", 0.3),)),
    ("prompts", [{"text": "a", "weight": 2}], (("a", 2.0),)),
    ("prompts", [("a", 1), ("b", -1)], (("a", 1.0), ("b", 0.0))),
    ("prompts", [req.Prompt("x", 0.5)], (("x", 0.5),)),
])
def test_coerce_table(name, value, expected):
    got = S[name].coerce(value)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("name, value", [
    ("steps", "abc"), ("steps", float("nan")), ("steps", float("inf")), ("steps", None),
    ("steps", [1, 2]), ("context_scale", "1,5"), ("pause", "maybe"), ("pause", None),
    ("annotator", "bogus"), ("annotator", 11), ("annotator", -1), ("annotator", 1.5),
    ("annotator", True), ("prompt", None), ("prompt", "x" * 5000), ("prompt", "a\x00b"),
    ("refs", ["a", "b", "c", "d"]), ("refs", 3j), ("prompts", [0.5, "a"]), ("prompts", ["a", 0]),
    ("prompts", []), ("prompts", [{"weight": 1}]), ("prompts", ["t"] * 9), ("prompts", 5),
])
def test_coerce_rejects_with_a_named_message(name, value):
    with pytest.raises(ParamError) as exc:
        S[name].coerce(value)
    assert str(exc.value).startswith(name)


def test_strict_mode_rejects_out_of_range_instead_of_clamping():
    with pytest.raises(ParamError, match="outside 1..4"):
        S["steps"].coerce(9, clamp=False)
    with pytest.raises(ParamError, match="negative"):
        S["prompts"].coerce(["a", 1, "b", -1], clamp=False)
    assert S["steps"].coerce(9) == 4


def test_normalized_maps_onto_the_range():
    cs, steps = S["context_scale"], S["steps"]
    assert cs.from_normalized(0.25) == 0.5 and cs.from_normalized(7) == 2.0
    assert cs.from_normalized(-1) == 0.0 and math.isclose(cs.normalized(0.5), 0.25)
    assert steps.from_normalized(0.5) == 3  # 1 + 1.5 rounded half up
    with pytest.raises(ParamError):
        S["annotator"].from_normalized(0.5)
    with pytest.raises(ParamError):
        cs.from_normalized("x")


def test_resolve_addresses():
    assert S.resolve("/vace/seed") == (S["seed"], "value")
    assert S.resolve("/vace/seed/norm") == (S["seed"], "norm")  # the older form, still accepted
    assert S.resolve("/vace/norm/seed") == (S["seed"], "norm")
    assert S.resolve("/vace/index/annotator") == (S["annotator"], "index")
    assert S.resolve("/vace/norm/lora/pipeline") == (S["lora/pipeline"], "norm")
    for bad in ("/vace/norm/annotator", "/vace/index/seed", "/vace/norm/width", "/vace/norm/x"):
        with pytest.raises(ParamError):
            S.resolve(bad)
    assert S.resolve("/vace/annotator/index") == (S["annotator"], "index")
    for bad in ("/vace/annotator/norm", "/vace/seed/index", "/vace/width/norm", "/vace/x"):
        with pytest.raises(ParamError, match="unknown address"):
            S.resolve(bad)
    with pytest.raises(ParamError, match="did you mean /vace/steps"):
        S.resolve("/vace/step")


def test_loras_registered_at_start_get_their_own_param():
    s = build_schema(["style_a", ("Ink-2", 0.5)])
    assert s.lora_names == ["pipeline", "style_a", "Ink-2"]
    assert s["lora/Ink-2"].default == 0.5 and s.resolve("/vace/lora/style_a")[0].live
    for bad in ("pipeline", "a/b", "", "x y"):
        with pytest.raises(ValueError):
            build_schema([bad])
