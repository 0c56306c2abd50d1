"""The TouchDesigner component's custom pages come from the schema: exactly the live parameters,
with their ranges, defaults and menus; the builder assembles the whole component."""
import json
import sys
import types

import pytest
import td_standin as T

from vacelive.bridge.schema import DEFAULT_SCHEMA, STATUS_FIELDS, build_schema
from vacelive.touchdesigner import build_tox, td_params

DOC = DEFAULT_SCHEMA.to_json()


@pytest.fixture
def project():
    prj = T.Project()
    yield prj
    prj.close()


def _built(prj, **kw):
    return build_tox.build(prj.op("/project1"), td=T.td, **kw)


def _schema_pars(comp):
    return {p.name: p for p in comp.customPars if p.page.name not in td_params.COMPONENT_PAGES}


def test_pages_hold_exactly_the_live_parameters(project):
    comp = _built(project)
    pars = _schema_pars(comp)
    expected = set()
    for p in DEFAULT_SCHEMA.live:
        base = td_params.td_name(p.name)
        if p.type == "prompts":
            expected |= {f"{base}text{i}" for i in range(1, p.max_items + 1)}
            expected |= {f"{base}weight{i}" for i in range(1, p.max_items + 1)}
        elif p.type == "str_list":
            expected |= {f"{base}{i}" for i in range(1, p.max_items + 1)}
        else:
            expected.add(base)
    assert set(pars) == expected
    # no load-time parameter leaks onto the pages
    assert not {td_params.td_name(p.name) for p in DEFAULT_SCHEMA.load_time} & set(pars)
    assert not any(par.page.name == "Startup" for par in comp.customPars)


def test_each_parameter_carries_range_default_menu_and_page(project):
    comp = _built(project)
    for p in DEFAULT_SCHEMA.live:
        if p.type in ("prompts", "str_list"):
            continue
        par = getattr(comp.par, td_params.td_name(p.name))
        assert par.page.name == p.group, p.name
        assert p.address in par.help
        if p.type in ("float", "int"):
            assert par.style == ("Float" if p.type == "float" else "Int")
            assert (par.min, par.max, par.clampMin, par.clampMax) == (p.min, p.max, True, True)
            assert par.normMin == p.min
            assert par.normMax == (p.max if p.max - p.min <= td_params.SLIDER_SPAN
                                   else p.min + td_params.SLIDER_SPAN)
            assert par.default == p.default and par.eval() == p.default
        elif p.type == "enum":
            assert par.style == "Menu"
            assert par.menuNames == list(p.choices)
            assert len(par.menuLabels) == len(p.choices)
            assert par.default == p.default and par.eval() == p.default
        elif p.type == "bool":
            assert par.style == "Toggle" and par.eval() is p.default
        elif p.type == "action":
            assert par.style == "Pulse"
        elif p.type == "str":
            assert par.style in ("Str", "File") and par.eval() == p.default
    # clamping is TouchDesigner's (the stand-in's) job once the range is set
    comp.par.Contextscale.val = 5.0
    assert comp.par.Contextscale.eval() == DEFAULT_SCHEMA["context_scale"].max


def test_list_parameters_become_slots(project):
    comp = _built(project)
    prompts = DEFAULT_SCHEMA["prompts"]
    assert comp.par.Promptstext1.eval() == prompts.default[0][0]
    assert comp.par.Promptsweight1.eval() == prompts.default[0][1]
    assert comp.par.Promptsweight1.min == 0 and comp.par.Promptsweight1.clampMin
    assert comp.par.Promptstext8.page.name == "Prompt"
    assert comp.par.Refs3.style == "File"
    assert comp.par.Extensionfirst.style == "File"


def test_status_and_engine_pages(project):
    comp = _built(project)
    status = {p.name for p in comp.customPars if p.page.name == "Status"}
    for f in STATUS_FIELDS:
        assert td_params.td_name("status_" + f.name) in status
        assert getattr(comp.par, td_params.td_name("status_" + f.name)).readOnly
    engine = {p.name for p in comp.customPars if p.page.name == "Engine"}
    assert {"Host", "Port", "Feedbackport", "Start", "Stop", "Executable", "Mode"} <= engine
    order = [p.name for p in comp.customPages]
    assert order[:len(td_params.page_order(td_params.live_specs(DOC)))] == \
        td_params.page_order(td_params.live_specs(DOC))
    assert order[-4:] == list(td_params.COMPONENT_PAGES)


def test_names_follow_touchdesigner_rules_and_collisions_fail():
    assert td_params.td_name("context_scale") == "Contextscale"
    assert td_params.td_name("lora/my-Style_2") == "Loramystyle2"
    with pytest.raises(ValueError):
        td_params.td_name("9lives")
    doc = build_schema(["a-b"]).to_json()
    td_params.all_specs(doc)  # fine
    lora = next(p for p in doc["params"] if p["name"] == "lora/a-b")
    bad = dict(doc, params=doc["params"] + [dict(lora, name="lora/ab")])
    with pytest.raises(ValueError, match="Loraab"):
        td_params.all_specs(bad)
    with pytest.raises(ValueError):  # a stand-in of TouchDesigner's own rule
        T.Page(T.COMP(T.Project(), None, "x"), "p").appendFloat("context_scale")


def test_build_pages_is_idempotent_and_appends_new_loras(project):
    comp = _built(project)
    comp.par.Contextscale.val = 0.3
    n = len(comp.customPars)
    td_params.build_pages(comp, td_params.all_specs(DOC))
    assert len(comp.customPars) == n and comp.par.Contextscale.eval() == 0.3
    doc = build_schema([("neon", 0.5)]).to_json()
    td_params.build_pages(comp, td_params.all_specs(doc))
    assert comp.par.Loraneon.page.name == "LoRA" and comp.par.Loraneon.eval() == 0.5
    assert len(comp.customPars) == n + 1


def test_builder_assembles_and_saves_the_component(project, tmp_path, capsys):
    comp = _built(project, save_to=str(tmp_path / "vacelive.tox"))
    names = {c.name for c in comp.children}
    assert {"VaceLiveExt", "schema", "log", "oscout", "oscin", "oscin_callbacks", "parexec",
            "frame", "Control", "Mask", "Ref", "Input", "send_control", "send_mask", "send_ref",
            "send_input",
            "receive_output", "Output", "ndiout_control", "ndiout_input", "ndiin_output",
            "output_switch"} | set(build_tox.MODULES) <= names
    assert json.loads(comp.op("schema").text) == DOC
    assert comp.op("send_mask").inputConnectors[0].connections == [comp.op("Mask")]
    assert comp.op("Output").inputConnectors[0].connections == [comp.op("output_switch")]
    switch = comp.op("output_switch")
    assert [c.connections for c in switch.inputConnectors] == [[comp.op("receive_output")],
                                                               [comp.op("ndiin_output")]]
    assert comp.op("ndiout_ref").inputConnectors[0].connections == [comp.op("Ref")]
    assert comp.op("parexec").par.op.eval() == ".."
    assert comp.op("parexec").op("..") is comp
    assert comp.op("oscin").par.callbacks.eval() == "oscin_callbacks"
    ext = comp.ext.VaceLiveExt  # ext0object was evaluated like TouchDesigner does
    assert type(ext).__name__ == "VaceLiveExt" and ext.owner is comp
    saved = json.loads((tmp_path / "vacelive.tox").read_text())
    assert "Prompt" in saved["pages"] and "oscout" in saved["ops"]
    assert "has no parameter" not in capsys.readouterr().out
    # rebuilding replaces the old component
    again = _built(project)
    assert again is not comp and project.op("/project1/vacelive") is again


def test_extension_imports_its_modules_from_sibling_dats(monkeypatch):
    """Inside TouchDesigner there is no `touchdesigner` package: `import td_params` finds the
    sibling Text DAT. Simulate that import path and check the module still loads."""
    from vacelive.touchdesigner import engine_process, osc_sync, textures
    monkeypatch.setitem(sys.modules, "touchdesigner", None)  # makes the package import fail
    for name, mod in (("td_params", td_params), ("osc_sync", osc_sync),
                      ("engine_process", engine_process), ("textures", textures)):
        monkeypatch.setitem(sys.modules, name, mod)
    src = (T.REPO / "touchdesigner" / "vacelive_ext.py").read_text()
    module = types.ModuleType("VaceLiveExt")
    exec(compile(src, "VaceLiveExt", "exec"), module.__dict__)
    assert module.td_params is td_params and module.osc_sync is osc_sync
