"""The TouchDesigner component's Pipeline menu: generated from the schema's registered pipelines,
it decides which pipeline-only parameters are sent, and changing it restarts a running local
engine (a load-time action) instead of sending anything over OSC."""
import td_standin as T

from vacelive.engine.pipelines import RECIPES
from vacelive.touchdesigner import build_tox

from test_td_sync import free_port


def comp_with(prj, **pars):
    comp = build_tox.build(prj.op("/project1"), td=T.td)
    comp.par.Port.val = free_port()
    comp.par.Feedbackport.val = free_port()
    comp.par.Pushonconnect.val = False
    for k, v in pars.items():
        getattr(comp.par, k).val = v
    return comp


def sent_addresses(comp):
    return [a for a, _ in comp.op("oscout").sent]


def test_menu_lists_every_pipeline_and_only_applicable_params_are_pushed():
    prj = T.Project(deferred=False)
    try:
        comp = comp_with(prj)
        ext = comp.ext.VaceLiveExt
        assert comp.par.Pipeline.isMenu and set(comp.par.Pipeline.menuNames) == set(RECIPES)
        assert comp.par.Pipeline.eval() == "longlive"
        ext._configure_osc()
        ext.PushAll()
        sent = sent_addresses(comp)
        assert "/vace/seed" in sent and "/vace/kv_cache_attention_bias" not in sent and "/vace/bank_size" not in sent
        comp.op("oscout").sent.clear()
        comp.par.Pipeline.val = "krea-realtime"
        ext.PushAll()
        sent = sent_addresses(comp)
        assert "/vace/kv_cache_attention_bias" in sent and "/vace/bank_size" not in sent
        assert "/vace/pipeline" not in sent  # load-time: never sent over OSC
        comp.op("oscout").sent.clear()
        ext.SendParam("bank_size")  # a MemFlow knob moved while Krea runs: not sent, a notice instead
        assert "/vace/bank_size" not in sent_addresses(comp)
        assert "memflow" in comp.par.Lastnotice.eval()
    finally:
        prj.close()


def test_changing_the_pipeline_restarts_a_running_local_engine():
    prj = T.Project(deferred=False)
    try:
        comp = comp_with(prj, Active=False)
        ext = comp.ext.VaceLiveExt
        starts = []
        ext.Start = lambda: starts.append(ext.EngineCommand())

        class Running:
            running = True

        real = ext.process
        ext.process = Running()
        comp.par.Pipeline.val = "memflow"
        ext.OnParValueChange(comp.par.Pipeline)
        assert len(starts) >= 1 and starts[-1][starts[-1].index("--pipeline") + 1] == "memflow"
        assert "restarting" in comp.par.Lastnotice.eval()
        ext.process = real  # not running: the choice waits for the next start
        n = len(starts)
        comp.par.Pipeline.val = "krea-realtime"
        ext.OnParValueChange(comp.par.Pipeline)
        assert len(starts) == n and "next time" in comp.par.Lastnotice.eval()
    finally:
        prj.close()
