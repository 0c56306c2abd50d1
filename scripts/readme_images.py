"""The README's two pictures, made with Pillow alone.

    python scripts/readme_images.py perf                 # docs/img/performance.png from docs/PERFORMANCE.md
    python scripts/readme_images.py sheet DEMO_DIR       # docs/img/demo-contact-sheet.png from `vacelive demo --out DEMO_DIR`

`perf` reads the figures out of docs/PERFORMANCE.md's tables (sections 6.1
exact path with the Wan VAE, 6.3 speed switches, 7 targets):
stream fps with VACE depth control at both resolutions. The
figures it drew are stored in the PNG (text chunk "figures"), so tests/test_readme.py sees when the
plot is older than the document. `sheet` shrinks the demo's contact sheet to a 256-colour PNG.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

REPO = Path(__file__).resolve().parents[1]
PERF_MD = REPO / "docs" / "PERFORMANCE.md"
PERF_PNG = REPO / "docs" / "img" / "performance.png"
SHEET_PNG = REPO / "docs" / "img" / "demo-contact-sheet.png"
RESOLUTIONS = ("832×480", "576×320")


# -- reading docs/PERFORMANCE.md ----------------------------------------------------------------------
def _table_after(text: str, heading: str) -> list[dict[str, str]]:
    """The first markdown table after the line starting with `heading`, as dicts by column name."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(heading)), None)
    if start is None:
        raise ValueError(f"{PERF_MD.name}: no section {heading!r}")
    rows: list[list[str]] = []
    for line in lines[start + 1:]:
        if line.startswith("#"):
            break
        if line.startswith("|"):
            rows.append([c.strip().replace("**", "") for c in line.strip().strip("|").split("|")])
        elif rows:
            break
    if len(rows) < 3:
        raise ValueError(f"{PERF_MD.name}: no table under {heading!r}")
    head = [h.lower() for h in rows[0]]
    return [dict(zip(head, r)) for r in rows[2:]]


def _switches(row: dict[str, str]) -> str:
    on = [name for name, col in (("compile", "compile"), ("FP8", "fp8"), ("hint reuse", "hint reuse"))
          if row[col] not in ("–", "-", "")]
    return "TAE, " + " + ".join(on) if on else "TAE, exact"


def figures(text: str) -> dict[str, object]:
    """{"bars": {res: [[label, fps], ...]}, "targets": {res: fps}} with VACE depth control."""
    exact_wan = {r["res"]: float(r["fps"]) for r in _table_after(text, "### 6.1")
                 if r["mode"] == "depth"}
    switches = [r for r in _table_after(text, "### 6.3") if r["mode"] == "depth"]
    targets = {m.group(1): float(m.group(2))
               for m in re.finditer(r"(\d+×\d+) with VACE depth ≥ (\d+) fps", text)}
    bars: dict[str, list[list]] = {}
    for res in RESOLUTIONS:
        rows = [r for r in switches if r["res"] == res]
        exact = next(r for r in rows if _switches(r) == "TAE, exact")
        best = max(rows, key=lambda r: float(r["fps"]))
        bars[res] = [["Wan VAE, exact", exact_wan[res]], ["TAE, exact", float(exact["fps"])],
                     [_switches(best), float(best["fps"])]]  # lists: what JSON gives back
    return {"bars": bars, "targets": {res: targets[res] for res in RESOLUTIONS}}


# -- drawing --------------------------------------------------------------------------------------------
def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType
    except TypeError:
        return ImageFont.load_default()


def draw_perf(figs: dict[str, object]) -> Image.Image:
    W, H = 960, 268
    bg, fg, dim, bar, best, target = "#14161c", "#e8e8ea", "#9aa0aa", "#4a78c2", "#e0a030", "#e05050"
    img = Image.new("RGB", (W, H), bg)
    d = ImageDraw.Draw(img)
    title, small, label = _font(17), _font(12), _font(14)
    d.text((20, 14), "Stream fps with VACE depth control: 4 steps, 1.3B, H200", font=title, fill=fg)
    d.text((20, 38), "real StreamGenerator loop incl. encode/decode and host copy; random full-size "
           "weights (docs/PERFORMANCE.md, section 6)", font=small, fill=dim)
    panel_w, left, top, row_h = (W - 60) // 2, 215, 90, 50
    for p, res in enumerate(RESOLUTIONS):
        x0 = 20 + p * (panel_w + 20)
        rows = figs["bars"][res]
        goal = figs["targets"][res]
        scale_max = max(goal, max(v for _, v in rows)) * 1.15
        bar_w = panel_w - left - 10
        d.text((x0, top - 24), res.replace("×", "x"), font=label, fill=fg)  # the default font has no ×
        for i, (name, fps) in enumerate(rows):
            y = top + i * row_h
            d.text((x0, y + 10), name, font=small, fill=dim)
            w = int(bar_w * fps / scale_max)
            d.rectangle([x0 + left, y + 4, x0 + left + w, y + 34], fill=best if i == len(rows) - 1 else bar)
            d.text((x0 + left + w + 6, y + 11), f"{fps:.1f}", font=label, fill=fg)
        gx = x0 + left + int(bar_w * goal / scale_max)
        for y in range(top, top + len(rows) * row_h, 8):
            d.line([gx, y, gx, y + 4], fill=target, width=2)
        d.text((gx - 40, top - 20), f"target {goal:g} fps", font=small, fill=target)
    return img


def write_perf(md: Path = PERF_MD, out: Path = PERF_PNG) -> dict[str, object]:
    figs = figures(md.read_text(encoding="utf-8"))
    info = PngImagePlugin.PngInfo()
    info.add_text("figures", json.dumps(figs, sort_keys=True, ensure_ascii=False))
    out.parent.mkdir(parents=True, exist_ok=True)
    draw_perf(figs).quantize(64).save(out, optimize=True, pnginfo=info)
    return figs


def read_png_figures(path: Path = PERF_PNG) -> dict[str, object]:
    return json.loads(Image.open(path).text["figures"])


def write_sheet(demo_dir: Path, out: Path = SHEET_PNG, max_width: int = 1600) -> Path:
    src = Image.open(demo_dir / "contact-sheet.png").convert("RGB")
    if src.width > max_width:
        src = src.resize((max_width, round(src.height * max_width / src.width)), Image.LANCZOS)
    out.parent.mkdir(parents=True, exist_ok=True)
    src.quantize(256).save(out, optimize=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    sub.add_parser("perf", help="docs/img/performance.png from docs/PERFORMANCE.md")
    sheet = sub.add_parser("sheet", help="docs/img/demo-contact-sheet.png from a demo folder")
    sheet.add_argument("demo_dir", type=Path)
    args = ap.parse_args(argv)
    if args.what == "perf":
        print(json.dumps(write_perf(), ensure_ascii=False))
        out = PERF_PNG
    else:
        out = write_sheet(args.demo_dir)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
