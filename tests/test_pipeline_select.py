"""`vacelive serve --pipeline NAME` for every registered pipeline: the flag takes every recipe
(case and '_' forgiven), refuses others naming the list, builds that pipeline's generator, and a
real-weights start says what it loads before loading (or lists every missing file)."""
from __future__ import annotations

import pytest
import torch

from vacelive.bridge import config
from vacelive.bridge.cli import _build_parser, main
from vacelive.bridge.config import ConfigError
from vacelive.bridge.run.generators import build_local_generator
from vacelive.engine.pipelines import RECIPES
from vacelive.engine.request import ChunkRequest

pytestmark = pytest.mark.usefixtures("single_thread")


def parse(*argv):
    return config.resolve(_build_parser().parse_args(list(argv)))


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_serve_builds_every_pipeline(name):
    cfg = parse("serve", "--pipeline", name.upper().replace("-", "_"), "--random-weights", "tiny",
                "--device", "cpu", "--width", "32", "--height", "32", "--codec", "tae")
    assert cfg.pipeline == name
    gen = build_local_generator(cfg)
    assert gen.describe()["pipeline"] == name
    r = gen.step(ChunkRequest())
    assert r.frames.shape[1:] == (32, 32, 4) and r.frames.dtype == torch.uint8


def test_unknown_pipeline_is_refused_with_the_list(capsys):
    with pytest.raises(SystemExit):
        parse("serve", "--pipeline", "framepack")
    err = capsys.readouterr().err
    assert "framepack" in err and all(name in err for name in RECIPES)


def test_real_weights_start_lists_every_missing_file_before_loading(tmp_path, capsys):
    cfg = parse("serve", "--pipeline", "krea-realtime", "--models", str(tmp_path), "--device", "cpu")
    with pytest.raises(ConfigError) as err:
        build_local_generator(cfg)
    text = str(err.value)
    assert "krea-realtime-video-14b.safetensors" in text and "Wan2_1-VACE_module_14B_bf16.safetensors" in text
    assert "vacelive weights download krea-realtime" in text
    assert main(["serve", "--pipeline", "memflow", "--print-config"]) == 0
    assert 'pipeline = "memflow"' in capsys.readouterr().out
