"""The README's Quick start: two commands (demo, tests) per OS, CPU-only torch on Linux and Windows,
CI runs the test line verbatim; its pictures exist, are small, and the performance plot carries
the figures of docs/PERFORMANCE.md as they are now."""
from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def _quick_start() -> str:
    return README.split("## Quick start", 1)[1].split("\n## ", 1)[0]


def _code_lines(text: str) -> list[str]:
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def test_quick_start_is_two_commands_per_os_and_torch_comes_first():
    qs = _quick_start().split("### ", 1)[0]
    lines = _code_lines(qs)
    assert len(lines) == 6, lines  # Linux, Windows, macOS: demo and tests each
    for demo, tests in zip(lines[0::2], lines[1::2]):
        assert demo.endswith("vacelive demo") and tests.endswith("pytest -q")
        for line in (demo, tests):
            torch_at, extra_at = line.index("pip install torch==2.13.0"), line.index("pip install -e")
            assert torch_at < extra_at  # torch first, so the extra does not pull another build
    for line in lines[:4]:  # Linux and Windows: PyTorch's CPU index (PyPI's Linux torch is a CUDA build)
        assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in line


def test_ci_runs_the_readme_test_line_verbatim():
    printed = subprocess.run([str(REPO / ".ci" / "run"), "--print"], capture_output=True, text=True, check=True)
    assert printed.stdout.strip() == _code_lines(_quick_start())[1]
    assert printed.stdout.strip().endswith("pip install -e '.[test]' && pytest -q")


def test_pictures_exist_and_are_small():
    for name, limit in (("demo-contact-sheet.png", 300_000), ("performance.png", 100_000)):
        path = REPO / "docs" / "img" / name
        assert f"(docs/img/{name})" in README
        assert path.is_file() and path.stat().st_size < limit, (name, path.stat().st_size)


def _readme_images():
    spec = importlib.util.spec_from_file_location("readme_images", REPO / "scripts" / "readme_images.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_performance_plot_shows_the_current_figures_of_performance_md():
    ri = _readme_images()
    now = ri.figures((REPO / "docs" / "PERFORMANCE.md").read_text(encoding="utf-8"))
    drawn = ri.read_png_figures()
    assert drawn == now, "docs/img/performance.png is stale: run `python scripts/readme_images.py perf`"
    # what the plot claims is what the README's Speed paragraph says
    best = {res: bars[-1][1] for res, bars in now["bars"].items()}
    assert f"{best['832×480']:g} fps at 832×480" in README


def test_performance_figures_are_read_from_the_tables():
    ri = _readme_images()
    md = """### 6.1 Exact
| res | mode | fps |
|---|---|---|
| 832×480 | text | **22.1** |
| 832×480 | depth | **13.8** |
| 576×320 | depth | **31.9** |

### 6.3 Speed switches
| res | mode | compile | FP8 | hint reuse | fps |
|---|---|---|---|---|---|
| 832×480 | depth | – | – | – | 26.2 |
| 832×480 | depth | on | on | on | **37.6** |
| 832×480 | text | on | on | – | 40.8 |
| 576×320 | depth | – | – | – | 63.9 |
| 576×320 | depth | on | – | on | 99.0 |

| 832×480 with VACE depth ≥ 40 fps | | 576×320 with VACE depth ≥ 90 fps |
"""
    figs = ri.figures(md)
    assert figs["bars"]["832×480"] == [["Wan VAE, exact", 13.8], ["TAE, exact", 26.2],
                                       ["TAE, compile + FP8 + hint reuse", 37.6]]
    assert figs["bars"]["576×320"][-1] == ["TAE, compile + hint reuse", 99.0]
    assert figs["targets"] == {"832×480": 40.0, "576×320": 90.0}
