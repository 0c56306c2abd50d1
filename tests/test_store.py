"""Parameter store: latest value wins, actions coalesce, snapshots are consistent."""
import sys
import threading

import pytest

from vacelive.bridge.schema import build_schema

from vacelive.bridge.param_types import ParamError
from vacelive.bridge.morph import blend_prompts
from vacelive.bridge.run.request_fields import request_fields
from vacelive.bridge.store import Action, ParamStore
from vacelive.engine.request import ChunkRequest, Outpaint, Prompt


def test_latest_value_wins_and_changed_is_relative_to_last_snapshot():
    st = ParamStore()
    first = st.snapshot()
    assert first.changed == frozenset() and first.index == 1
    for i in range(1000):
        st.set("seed", i)
    st.set("steps", 2)
    st.set("steps", 4)  # back to the previous value: not a change
    snap = st.snapshot()
    assert snap["seed"] == 999 and snap.changed == {"seed"}
    assert st.snapshot().changed == frozenset()
    with pytest.raises(TypeError):
        snap.values["seed"] = 1  # immutable view


def test_actions_coalesce_and_drain_once():
    st = ParamStore()
    for _ in range(10_000):
        st.trigger("reset")
    st.trigger("snapshot")
    snap = st.snapshot()
    assert [a.kind for a in snap.actions] == ["reset", "snapshot"]
    assert request_fields(snap)["reset"] is True
    assert st.snapshot().actions == () and request_fields(st.snapshot())["reset"] is False
    with pytest.raises(ParamError):
        st.trigger("bogus")


def test_apply_is_all_or_nothing_and_load_time_is_refused():
    st = ParamStore(load_time={"width": 640})
    with pytest.raises(ParamError, match="steps"):
        st.apply({"seed": 5, "steps": "many"})
    assert st.get("seed") == 42
    with pytest.raises(ParamError, match="load-time"):
        st.set("width", 512)
    assert st.get("width") == 640
    with pytest.raises(ParamError, match="action"):
        st.set("reset", 1)
    with pytest.raises(ParamError, match="live parameter"):
        ParamStore(load_time={"seed": 1})


def test_prompt_and_prompts_stay_in_agreement():
    st = ParamStore()
    st.set("prompt", "a cat")
    assert st.get("prompts") == (("a cat", 1.0),)
    st.set("prompts", ["a dog", 0.2, "a fox", 0.9])
    assert st.get("prompt") == "a fox"
    st.apply({"prompt": "ignored", "prompts": ["wins", 1.0]})
    assert st.get("prompt") == "wins"


def test_request_fields_build_a_chunk_request():
    st = ParamStore(schema=build_schema(["ink"]))
    st.apply({"prompts": ["a", 1.0, "b", 0.5], "steps": 2, "annotator": "pose",
              "outpaint_direction": "horizontal", "outpaint_ratio": 0.2, "lora/ink": 0.3,
              "hint_reuse": True, "fit": "letterbox"})
    fields = request_fields(st.snapshot())
    request = ChunkRequest(**fields)
    assert request.prompts == [Prompt("a", 1.0), Prompt("b", 0.5)]
    assert request.steps == 2 and request.annotator == "pose" and request.hint_reuse
    assert request.fit == "letterbox" and request.reset is False
    assert request.outpaint == Outpaint(left=0.2, right=0.2)
    assert request.lora_scales == {"pipeline": 1.0, "ink": 0.3}
    assert "refs" not in fields  # file I/O belongs to the run loop
    st.set("outpaint_direction", "none")
    assert request_fields(st.snapshot())["outpaint"] is None


def test_concurrent_batches_land_whole_in_one_snapshot():
    st = ParamStore()
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            i += 1
            st.apply({"seed": i, "transition_chunks": i % 33, "context_scale": (i % 200) / 100})

    t = threading.Thread(target=writer)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # force thread switches inside apply()
    t.start()
    try:
        seen = 0
        for _ in range(3000):
            v = st.snapshot().values
            if v["seed"] != 42:
                seen += 1
                i = v["seed"]
                assert v["transition_chunks"] == i % 33
                assert v["context_scale"] == (i % 200) / 100
    finally:
        stop.set()
        t.join()
        sys.setswitchinterval(switch)
    assert seen > 0


def test_morph_passes_through_intermediate_values():
    st = ParamStore()
    st.apply({"prompt": "old", "context_scale": 1.0, "annotator": "none", "seed": 1})
    st.snapshot()
    st.morph_to("p", {"prompt": "new", "context_scale": 2.0, "annotator": "depth", "seed": 9},
                chunks=4)
    snaps = [st.snapshot() for _ in range(5)]
    assert [s["context_scale"] for s in snaps] == [1.25, 1.5, 1.75, 2.0, 2.0]
    assert [s["annotator"] for s in snaps] == ["none", "depth", "depth", "depth", "depth"]
    assert [s["seed"] for s in snaps] == [1, 9, 9, 9, 9]
    assert snaps[0]["prompts"] == (("old", 0.75), ("new", 0.25))
    assert snaps[1]["prompts"] == (("old", 0.5), ("new", 0.5))
    assert snaps[3]["prompts"] == (("new", 1.0),) and snaps[3]["prompt"] == "new"
    assert [s.morph for s in snaps[:4]] == [("p", k, 4) for k in (1, 2, 3, 4)]
    assert snaps[4].morph is None and snaps[4].changed == frozenset()
    assert snaps[0].action("preset_load").args == ("p", 4)


def test_performer_beats_a_running_morph_and_zero_chunks_switch_at_once():
    st = ParamStore()
    st.morph_to("p", {"context_scale": 2.0, "steps": 1}, chunks=4)
    st.snapshot()
    st.set("context_scale", 0.1)
    later = [st.snapshot() for _ in range(3)]
    assert all(s["context_scale"] == 0.1 for s in later) and later[-1]["steps"] == 1
    st.morph_to("q", {"steps": 3}, chunks=0)
    assert st.snapshot()["steps"] == 3
    with pytest.raises(ParamError):
        st.morph_to("bad", {"steps": 9})  # presets are strict: out of range is refused


def test_blend_prompts_caps_and_merges():
    a = tuple((f"a{i}", 1.0) for i in range(8))
    b = tuple((f"b{i}", 1.0) for i in range(8))
    mid = blend_prompts(a, b, 0.75)
    assert len(mid) == 8 and all(t.startswith("b") for t, _ in mid)
    assert blend_prompts((("x", 1.0),), (("x", 1.0),), 0.5) == (("x", 1.0),)


def test_listeners_see_changes_and_cannot_break_writes():
    st = ParamStore()
    seen = []
    st.add_listener(lambda changes, origin: seen.append((dict(changes), origin)))
    st.add_listener(lambda changes, origin: 1 / 0)
    st.set("seed", 3, origin="me")
    st.morph_to("p", {"steps": 1}, chunks=1)
    st.snapshot()
    assert seen == [({"seed": 3}, "me"), ({"steps": 1}, "morph")]
    assert st.get("seed") == 3


def test_action_record_is_immutable_and_carries_origin():
    st = ParamStore()
    st.apply({}, [Action("reset", (), ("127.0.0.1", 5))])
    assert st.snapshot().action("reset").origin == ("127.0.0.1", 5)


def test_initial_values_are_refused_out_of_range_not_clamped():
    with pytest.raises(ParamError, match="context_scale: 9 is outside 0..2"):
        ParamStore(initial={"context_scale": 9})
    assert ParamStore(initial={"context_scale": 2}).get("context_scale") == 2.0
