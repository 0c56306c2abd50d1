"""Settings of serve/engine/relay: TOML config file + flags (flags win), errors that name the file."""
from __future__ import annotations

import tomllib

import pytest

from vacelive.bridge import config
from vacelive.bridge.cli import _build_parser, main
from vacelive.bridge.config import ConfigError


def parse(*argv):
    return config.resolve(_build_parser().parse_args(list(argv)))


def write(tmp_path, text):
    p = tmp_path / "rig.toml"
    p.write_text(text)
    return str(p)


def test_defaults_without_a_file():
    cfg = parse("serve")
    assert (cfg.width, cfg.height, cfg.osc_port, cfg.fps, cfg.device) == (832, 480, 7700, 0.0, "cuda")
    assert cfg.output == config.default_spec("vacelive-out") and cfg.params == {}
    assert cfg.dtype is None  # auto: bf16 on a GPU, fp32 on the CPU


def test_file_values_and_flags_win(tmp_path):
    path = write(tmp_path, """
width = 640
"osc-port" = 9000
osc_feedback = ["127.0.0.1:7000", "10.0.0.5:7001"]
output = "shm:stage-out"
random_weights = "tiny"

[params]
prompt = "a forest at dawn"
context_scale = 1.5
"lora/pipeline" = 0.5
""")
    cfg = parse("serve", "--config", path, "--width", "512")
    assert cfg.width == 512  # the flag wins
    assert cfg.height == 480  # built-in default
    assert cfg.osc_port == 9000 and cfg.output == "shm:stage-out" and cfg.random_weights == "tiny"
    assert cfg.osc_feedback == [("127.0.0.1", 7000), ("10.0.0.5", 7001)]  # typed by the flag's parser
    assert cfg.params == {"prompt": "a forest at dawn", "context_scale": 1.5, "lora/pipeline": 0.5}
    # a flag typed with the built-in default value still beats the file
    assert parse("serve", "--config", path, "--osc-port", "7700").osc_port == 7700


@pytest.mark.parametrize("text,match", [
    ("osc_prot = 1", r"unknown setting 'osc_prot' \(did you mean 'osc_port'\?\)"),
    ('osc_port = "x"', r"rig.toml: osc_port: expected an integer, got 'x'"),
    ('codec = "vae"', r"rig.toml: codec: invalid choice: 'vae'"),
    ("fps = 500", r"rig.toml: fps: 500 is outside 0..120"),
    ("osc_port = 70000", r"rig.toml: osc_port: 70000 is outside 0..65535"),
    ("status_hz = 0", r"rig.toml: status_hz: 0 is outside 0.1..100"),
    ("height = 100", r"rig.toml: height: 100 is not a multiple of 16 \(nearest: 96\)"),
    ("[params]\ncontext_scale = 9", r"rig.toml: \[params\] context_scale: 9 is outside 0..2"),
    ("[params]\nsteps = 0", r"rig.toml: \[params\] steps: 0 is outside 1..4"),
    ("[params]\noutput_fps = -1", r"rig.toml: \[params\] output_fps: -1 is outside 0..120"),
    ('[params]\n"lora/ink" = 9', r"rig.toml: \[params\] lora/ink: 9 is outside"),
    ("[params]\nstepz = 2", r"rig.toml: \[params\] stepz is not a live parameter \(did you mean 'steps'\?\)"),
    ("[params]\nwidth = 512", r"rig.toml: \[params\] width is a load-time setting"),
    ("[params]\nreset = 1", r"rig.toml: \[params\] reset is an action"),
    ("width = [1, 2]", r"width takes one value, not a list"),
    ("width = = 3", r"rig.toml: invalid TOML"),
    ("params = 3", r"\[params\] must be a table"),
    ("listen = 'tcp://0.0.0.0:1'", r"unknown setting 'listen'"),  # an engine setting, not serve's
])
def test_bad_files_name_the_file_and_the_key(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        parse("serve", "--config", write(tmp_path, text))


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        parse("serve", "--config", str(tmp_path / "nope.toml"))


def test_print_config_round_trips(tmp_path, capsys):
    path = write(tmp_path, 'width = 640\nosc_feedback = ["127.0.0.1:7000"]\n[params]\nprompt = "x"\n')
    assert main(["serve", "--config", path, "--fps", "30", "--print-config"]) == 0
    text = capsys.readouterr().out
    data = tomllib.loads(text)
    assert data["width"] == 640 and data["fps"] == 30.0 and data["params"] == {"prompt": "x"}
    again = write(tmp_path, text)
    cfg = parse("serve", "--config", again)
    assert (cfg.width, cfg.fps, cfg.osc_feedback) == (640, 30.0, [("127.0.0.1", 7000)])


def test_out_of_range_flags_are_refused_not_clamped(capsys):
    with pytest.raises(SystemExit):
        parse("serve", "--fps", "121")
    assert "argument --fps: 121 is outside 0..120" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse("relay", "--jpeg-quality", "0")
    assert "argument --jpeg-quality: 0 is outside 1..100" in capsys.readouterr().err


def test_print_config_text_placement_follows_the_device(capsys):
    assert main(["serve", "--device", "cpu", "--print-config"]) == 0
    assert tomllib.loads(capsys.readouterr().out)["text_placement"] == "cpu"
    assert main(["serve", "--print-config"]) == 0
    assert tomllib.loads(capsys.readouterr().out)["text_placement"] == "gpu"
    assert main(["serve", "--device", "cpu", "--text-placement", "offload", "--print-config"]) == 0
    assert tomllib.loads(capsys.readouterr().out)["text_placement"] == "offload"
    assert parse("engine", "--device", "cpu").text_placement == "cpu"


def test_relay_and_engine_flags():
    cfg = parse("relay", "--engine", "tcp://gpu:5555", "--link-codec", "jpeg")
    assert (cfg.engine, cfg.link_codec, cfg.jpeg_quality) == ("tcp://gpu:5555", "jpeg", 90)
    assert not hasattr(cfg, "pipeline")  # the model lives on the engine
    cfg = parse("engine")
    assert cfg.listen == "tcp://127.0.0.1:5555" and cfg.keys is None and cfg.pipeline == "longlive"


def test_engine_refuses_a_network_address_without_keys(capsys):
    code = main(["engine", "--listen", "tcp://0.0.0.0:5599", "--random-weights", "tiny",
                 "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2
    assert "reachable from the network" in err and "vacelive keys" in err and "--keys" in err


def test_serve_without_cuda_says_what_to_do(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["serve", "--control", "none", "--mask", "none", "--ref", "none",
                 "--output", "shm:unused", "--osc-port", "0"]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU" in err and "--device cpu --random-weights tiny" in err


def test_serve_with_missing_weights_names_the_download(tmp_path, capsys):
    assert main(["serve", "--device", "cpu", "--models", str(tmp_path), "--control", "none",
                 "--mask", "none", "--ref", "none", "--output", "shm:unused", "--osc-port", "0"]) == 2
    err = capsys.readouterr().err
    assert "vacelive weights download longlive" in err


@pytest.mark.parametrize("argv,match", [
    (["engine", "--listen", "0.0.0.0:5555"], r"--listen '0.0.0.0:5555': expected tcp://HOST:PORT"),
    (["relay", "--engine", "gpu-box:5555", "--output", "shm:unused"], r"--engine 'gpu-box:5555'"),
])
def test_endpoints_are_checked(capsys, argv, match):
    import re

    assert main(argv) == 2
    assert re.search(match, capsys.readouterr().err)


def test_speed_switches_reach_the_generator(tmp_path):
    from vacelive.bridge.run.generators import build_local_generator

    exact = build_local_generator(parse("serve", "--random-weights", "tiny", "--device", "cpu", "--width", "64",
                                        "--height", "48", "--codec", "tae")).describe()
    assert (exact["compile"], exact["fp8"], exact["sdpa"], exact["rope"]) == (False, False, "auto", "auto")
    path = write(tmp_path, 'fp8 = true\nrope = "relative"\n')
    fast = build_local_generator(parse("serve", "--config", path, "--random-weights", "tiny", "--device", "cpu",
                                       "--width", "64", "--height", "48", "--codec", "tae", "--sdpa", "math")).describe()
    assert (fast["fp8"], fast["sdpa"], fast["rope"], fast["rope_mode"]) == (True, "math", "relative", "relative")
