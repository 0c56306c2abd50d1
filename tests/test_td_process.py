"""The component starts and stops `vacelive serve` / `vacelive relay`: the command line comes
from the Engine and Textures pages; the process runs for real and its output reaches the log
Text DAT."""
import json
import sys
import textwrap
import time

import pytest
import td_standin as T

from vacelive.touchdesigner import build_tox, engine_process, textures


@pytest.fixture
def comp():
    prj = T.Project()
    c = build_tox.build(prj.op("/project1"), td=T.td)
    c.par.Active.val = False  # no OSC traffic needed here
    c._prj = prj
    yield c
    proc = c.ext.VaceLiveExt.process
    if proc.running:
        proc.stop(timeout=2)
    prj.close()


def test_default_command_line(comp):
    t = textures.platform_transport()
    assert comp.ext.VaceLiveExt.EngineCommand() == [
        "vacelive", "serve", "--pipeline", "longlive", "--width", "832", "--height", "480",
        "--codec", "wan", "--device", "cuda",
        "--control", f"{t}:vacelive-control", "--mask", f"{t}:vacelive-mask",
        "--ref", f"{t}:vacelive-ref", "--input", f"{t}:vacelive-input", "--output", f"{t}:vacelive-out",
        "--osc-host", "127.0.0.1", "--osc-port", "7700", "--osc-feedback", "127.0.0.1:7710",
        "--oscquery-port", "7701", "--fps", "0",
    ]


def test_engine_page_shapes_the_command(comp):
    p = comp.par
    p.Executable.val = "/opt/vl/.venv/bin/python3"
    p.Config.val = "/shows/tonight.toml"
    p.Models.val = "/models"
    p.Width.val, p.Height.val = 1024, 576
    p.Codec.val, p.Dtype.val, p.Device.val = "lighttae", "fp16", "cuda:1"
    p.Randomweights.val = "tiny"
    p.Port.val, p.Feedbackport.val, p.Oscqueryport.val = 7800, 7811, 0
    p.Fps.val = 24
    p.Transport.val = "spout"
    p.Maskname.val = "my mask"
    p.Presetsdir.val = "/shows/presets"
    p.Extraargs.val = '--snapshots "/shows/snap shots" --status-hz 8'
    cmd = comp.ext.VaceLiveExt.EngineCommand()
    assert cmd[:4] == ["/opt/vl/.venv/bin/python3", "-m", "vacelive.bridge.cli", "serve"]
    flags = dict(zip(cmd[4::2], cmd[5::2]))
    assert flags["--config"] == "/shows/tonight.toml" and flags["--models"] == "/models"
    assert (flags["--width"], flags["--height"]) == ("1024", "576")
    assert (flags["--codec"], flags["--dtype"], flags["--device"]) == ("lighttae", "fp16", "cuda:1")
    assert flags["--random-weights"] == "tiny"
    assert flags["--mask"] == "spout:my mask" and flags["--control"] == "spout:vacelive-control"
    assert (flags["--osc-port"], flags["--osc-feedback"], flags["--oscquery-port"]) == \
        ("7800", "127.0.0.1:7811", "0")
    assert flags["--fps"] == "24" and flags["--presets-dir"] == "/shows/presets"
    assert cmd[-4:] == ["--snapshots", "/shows/snap shots", "--status-hz", "8"]


def test_relay_and_external_modes(comp):
    p = comp.par
    p.Mode.val = "relay"
    p.Remoteengine.val = "tcp://10.0.0.5:5555"
    p.Linkcodec.val = "jpeg"
    p.Keys.val = "/home/vj/keys/relay"
    cmd = comp.ext.VaceLiveExt.EngineCommand()
    assert cmd[:2] == ["vacelive", "relay"]
    flags = dict(zip(cmd[2::2], cmd[3::2]))
    assert flags["--engine"] == "tcp://10.0.0.5:5555" and flags["--link-codec"] == "jpeg"
    assert flags["--keys"] == "/home/vj/keys/relay"
    assert "--pipeline" not in flags and "--width" not in flags  # the GPU box decides those
    assert "--output" in flags and "--osc-feedback" in flags  # textures and OSC stay here
    p.Mode.val = "external"
    with pytest.raises(ValueError, match="external"):
        comp.ext.VaceLiveExt.EngineCommand()
    comp.par.Start.pulse()
    assert "external" in comp.par.Lastnotice.eval()
    assert not comp.ext.VaceLiveExt.process.running


def test_the_real_cli_accepts_the_command(comp):
    """Parsed by `vacelive`'s own argument parser (skipped until `serve`/`relay` are
    registered in bridge/cli.py)."""
    from vacelive.bridge import cli

    for mode in ("local", "relay"):
        sub = "serve" if mode == "local" else "relay"
        if sub not in cli.COMMANDS:
            pytest.skip(f"`vacelive {sub}` is not registered yet")
        comp.par.Mode.val = mode
        comp.par.Randomweights.val = "tiny"
        comp.par.Linkcodec.val = "jpeg"
        cmd = comp.ext.VaceLiveExt.EngineCommand()
        args = cli._build_parser().parse_args(cmd[1:])
        assert args.command == sub and getattr(args, "_import_error", None) is None
        assert args.osc_port == 7700 and args.osc_feedback == [("127.0.0.1", 7710)]
        assert args.output.endswith(":vacelive-out")
        if mode == "local":
            assert args.random_weights == "tiny" and args.width == 832
        else:
            assert args.engine == "tcp://gpu-box:5555" and args.link_codec == "jpeg"


FAKE_ENGINE = textwrap.dedent("""\
    #!{python}
    import json, signal, sys, time
    signal.signal(signal.SIGTERM, lambda *a: (print("bye", flush=True), sys.exit(0)))
    print(json.dumps(sys.argv[1:]), flush=True)
    print("OSC listening", flush=True)
    while True:
        time.sleep(0.05)
    """)


@pytest.mark.skipif(sys.platform == "win32", reason="a shebang script stands in for vacelive")
def test_start_logs_and_stop_a_real_process(comp, tmp_path):
    exe = tmp_path / "vacelive"
    exe.write_text(FAKE_ENGINE.format(python=sys.executable))
    exe.chmod(0o755)
    comp.par.Executable.val = str(exe)
    ext = comp.ext.VaceLiveExt
    comp.par.Start.pulse()
    assert T.run_until(comp._prj, lambda: "OSC listening" in comp.op("log").text, 10)
    assert comp.par.Process.eval().startswith("running (pid")
    argv_line = next(line for line in comp.op("log").text.splitlines() if line.startswith("["))
    assert json.loads(argv_line) == ext.EngineCommand()[1:]
    comp.par.Stop.pulse()  # returns at once; the wait runs on a thread
    assert T.run_until(comp._prj, lambda: comp.par.Process.eval() == "stopped", 10)
    assert "engine exited with code 0" in comp.op("log").text
    assert "bye" in comp.op("log").text


def test_start_failure_is_reported_not_raised(comp, tmp_path):
    comp.par.Executable.val = str(tmp_path / "no-such-vacelive")
    comp.par.Start.pulse()
    assert "cannot start the engine" in comp.par.Lasterror.eval()
    assert comp.ext.VaceLiveExt.process.status() == "stopped"


def test_stop_kills_a_process_that_ignores_terminate():
    proc = engine_process.EngineProcess()
    proc.start([sys.executable, "-c",
                "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "print('up', flush=True); time.sleep(30)"])
    end = time.monotonic() + 10
    while "up" not in proc.lines and time.monotonic() < end:
        time.sleep(0.01)
    t0 = time.monotonic()
    code = proc.stop(timeout=0.5)
    assert code is not None and code != 0 and time.monotonic() - t0 < 5
    assert any("killing" in line for line in proc.lines)
    assert proc.status() == "stopped"


def test_transport_by_os_and_texture_wiring(comp):
    assert textures.platform_transport("win32") == "spout"
    assert textures.platform_transport("darwin") == "syphon"
    assert textures.platform_transport("linux") == "shm"
    p = comp.par
    p.Transport.val = "spout"
    comp._prj.frame()
    send = {s: comp.op("send_" + s) for s in ("control", "mask", "ref", "input")}
    assert send["control"].par.sendername.eval() == "vacelive-control"
    assert send["control"].par.active.eval() is True
    assert send["mask"].par.active.eval() is False  # nothing wired by default: no empty mask
    p.Sendmask.val = True
    p.Maskname.val = "stage-mask"
    comp._prj.frame()
    assert send["mask"].par.active.eval() is True
    assert send["mask"].par.sendername.eval() == "stage-mask"
    assert comp.ext.VaceLiveExt.EngineSettings().textures["--mask"] == "spout:stage-mask"
    assert send["input"].par.active.eval() is False  # V2V camera: off until asked for
    p.Sendinput.val = True
    comp._prj.frame()
    assert send["input"].par.active.eval() is True and send["input"].par.sendername.eval() == "vacelive-input"
    assert "--input" in comp.ext.VaceLiveExt.EngineCommand()
    receive = comp.op("receive_output")
    assert receive.par.sendername.eval() == "vacelive-out" and receive.par.active.eval()
    p.Transport.val = "shm"  # no TOP for shared memory: everything off
    comp._prj.frame()
    assert not receive.par.active.eval() and not send["control"].par.active.eval()
    # Syphon: follow the server's entry in the In TOP's menu ("app:server")
    p.Transport.val = "syphon"
    comp._prj.frame()
    receive.par.sendername.menuNames = ["Resolume Arena - Composition", "python3.11:vacelive-out"]
    comp.ext.VaceLiveExt._syphon_at = None  # the next scan (once a second) is due
    comp._prj.frame()
    assert receive.par.sendername.eval() == "python3.11:vacelive-out"
    assert comp.op("output_switch").par.index.eval() == 0
    # NDI: the NDI Out TOPs carry the stream names, the output comes from the NDI In TOP
    p.Transport.val = "ndi"
    comp._prj.frame()
    ndi_out, ndi_in = comp.op("ndiout_control"), comp.op("ndiin_output")
    assert ndi_out.par.name.eval() == "vacelive-control" and ndi_out.par.active.eval()
    assert comp.op("ndiout_mask").par.active.eval()  # Send Mask (on above) decides
    assert not comp.op("ndiout_ref").par.active.eval()
    assert not send["control"].par.active.eval() and not receive.par.active.eval()
    assert ndi_in.par.active.eval() and comp.op("output_switch").par.index.eval() == 1
    assert comp.ext.VaceLiveExt.EngineSettings().textures["--control"] == "ndi:vacelive-control"
    ndi_in.par.name.menuNames = ["STUDIO (Arena Out)", "GPUBOX (vacelive-out)"]
    comp.ext.VaceLiveExt._syphon_at = None
    comp._prj.frame()
    assert ndi_in.par.name.eval() == "GPUBOX (vacelive-out)"


def test_match_sender():
    names = ["TDSyphonSpoutOut", "Arena - vacelive-out", "python:other"]
    assert textures.match_sender(names, "vacelive-out") == "Arena - vacelive-out"
    assert textures.match_sender(["vacelive-out", "x:vacelive-out"], "vacelive-out") == \
        "vacelive-out"
    assert textures.match_sender(["x:vacelive-out"], "vacelive-out", app="x") == "x:vacelive-out"
    assert textures.match_sender(names, "missing") is None
    with pytest.raises(ValueError):
        textures.resolve_transport("srt")
    assert textures.resolve_transport("ndi") == "ndi"
    assert textures.match_ndi_source(["A (vacelive-out2)", "B (vacelive-out)"], "vacelive-out") \
        == "B (vacelive-out)"
    assert textures.match_ndi_source(["A (other)"], "vacelive-out") is None
