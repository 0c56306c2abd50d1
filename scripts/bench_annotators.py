#!/usr/bin/env python
"""Benchmark the control-map annotators: per-chunk cost of each at 832x480 (12 frames, inline,
CUDA-synchronised), and the stream fps with each one on (random full-size Wan2.1-1.3B + VACE,
the annotator on its own thread and CUDA stream, one chunk ahead: engine.conditioning.runner).

Weights are random but saved in each model's public layout in a temporary models folder and
loaded through the real loaders (Depth Anything V2 Small/Base/Large at their published sizes,
torchvision RAFT small/large), so the measured work is the real architecture's.

    python scripts/bench_annotators.py --out results/annotators.json   # GPU
    python scripts/bench_annotators.py --smoke                         # CPU, tiny sizes, end to end
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_stream import HostCopy, parse_res, run_variant, sync  # noqa: E402
from bench_vace_tasks import PROMPT, camera_video  # noqa: E402

from vacelive.engine.annotator_models import ANNOTATOR_MODELS  # noqa: E402
from vacelive.engine.codecs import random_codec  # noqa: E402
from vacelive.engine.conditioning.annotators import Annotators  # noqa: E402
from vacelive.engine.conditioning.layout import LayoutTrack  # noqa: E402
from vacelive.engine.config import WAN_1_3B, tiny_config  # noqa: E402
from vacelive.engine.factory import make_conditioner, random_dit, random_text_encoder  # noqa: E402
from vacelive.engine.generator import StreamGenerator  # noqa: E402
from vacelive.engine.request import ChunkRequest, Prompt  # noqa: E402

# Depth Anything V2 sizes (the -hf configs: DINOv2 ViT-S/B/L backbone, DPT neck and head)
DEPTH_SIZES = {
    "depth": dict(hidden=384, layers=12, heads=6, neck=[48, 96, 192, 384], fusion=64),
    "depth-base": dict(hidden=768, layers=12, heads=12, neck=[96, 192, 384, 768], fusion=128),
    "depth-large": dict(hidden=1024, layers=24, heads=16, neck=[256, 512, 1024, 1024], fusion=256),
}
TINY_DEPTH = dict(hidden=32, layers=4, heads=2, neck=[8, 16, 16, 32], fusion=16)
ANNOTATORS = ("gray", "scribble", "layout", "depth", "depth-base", "depth-large", "flow", "flow-large")
STREAM_MODES = ("control", "depth", "depth-inline", "depth-large", "flow", "flow-large", "layout",
                "gray+scribble")


def save_depth(models: Path, name: str, size: dict) -> None:
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    n = size["layers"]
    backbone = Dinov2Config(hidden_size=size["hidden"], num_hidden_layers=n, num_attention_heads=size["heads"],
                            intermediate_size=4 * size["hidden"], image_size=518, patch_size=14,
                            out_indices=[n // 4, n // 2, 3 * n // 4, n], reshape_hidden_states=False)
    cfg = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=size["hidden"],
                              neck_hidden_sizes=size["neck"], fusion_hidden_size=size["fusion"],
                              head_hidden_size=32, patch_size=14)
    DepthAnythingForDepthEstimation(cfg).save_pretrained(models / ANNOTATOR_MODELS[name].folder)


def save_raft(models: Path, name: str) -> bool:
    try:
        from torchvision.models.optical_flow import raft_large, raft_small
    except Exception:  # noqa: BLE001
        return False
    path = models / ANNOTATOR_MODELS[name].files[0].path
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save((raft_large if name == "flow-large" else raft_small)(weights=None).state_dict(), path)
    return True


def prepare_models(models: Path, names, smoke: bool) -> dict[str, str]:
    """Random weights in the public layouts; returns name -> why it is skipped."""
    skipped = {}
    for name in names:
        if name.startswith("depth"):
            save_depth(models, name, TINY_DEPTH if smoke else DEPTH_SIZES[name])
        elif name.startswith("flow") and not save_raft(models, name):
            skipped[name] = "torchvision not importable"
    return skipped


def chunk_cost(ann: Annotators, name: str, frames: torch.Tensor, repeats: int, device) -> float:
    """Median ms of one 12-frame chunk through annotator `name` (inline, synchronised)."""
    layout = LayoutTrack()
    boxes = {"a": (0.1, 0.2, 0.3, 0.5), "b": (0.55, 0.3, 0.3, 0.4)}
    h, w = frames.shape[-2:]

    def once():
        if name == "layout":
            return layout(boxes, frames.shape[0], h, w, device)
        return ann(name, frames)

    for _ in range(2):
        once()  # load + warm-up
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        once()
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


class AnnotatedSource:
    """Chunk requests: the synthetic camera as control video through an annotator (or boxes)."""

    def __init__(self, mode: str, res, steps: int):
        self.mode, self.steps = mode, steps
        self.camera = camera_video(*res)
        self.pos = 0

    def request(self, gen: StreamGenerator, prompt: str = PROMPT) -> ChunkRequest:
        n = gen.next_chunk_frames
        video = self.camera[[(self.pos + i) % len(self.camera) for i in range(n)]]
        kw: dict = {"video": video}
        m = self.mode.removesuffix("-inline")
        if m == "layout":
            t = self.pos / 48
            kw = {"annotator": "layout", "layout": {"a": (0.1 + 0.3 * (t % 1), 0.2, 0.3, 0.5)}}
        elif m == "gray+scribble":
            kw.update(annotator="gray", annotator_overlay="scribble")
        elif m != "control":
            kw["annotator"] = m
        self.pos += n
        return ChunkRequest(prompts=[Prompt(prompt)], steps=self.steps, **kw)


def write(results: dict, out: str | None) -> None:
    """JSON + a markdown table; called after every row, so a run cut short keeps what it measured."""
    if not out:
        return
    env, path = results["env"], Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))
    lines = [f"{env['device']}, {env['resolution']}, {env['dtype']}, 12-frame chunks, codec {env['codec']}, "
             f"{env['steps']} steps, random weights", "", "| annotator | ms / chunk | ms / frame |", "|---|---|---|"]
    lines += [f"| {r['annotator']} | {r.get('chunk_ms', r.get('skipped', r.get('error')))} | {r.get('per_frame_ms', '')} |"
              for r in results["annotators"]]
    lines += ["", "| stream with | fps | chunk ms | annotator ms | lag | maps reused |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['mode']} | {r.get('fps', r.get('skipped', r.get('error')))} | {r.get('chunk_ms', '')} | "
              f"{r.get('annotator_ms', '')} | {r.get('annotator_lag', '')} | {r.get('maps_reused', '')} |"
              for r in results["stream"]]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--res", default="832x480")
    p.add_argument("--annotators", default=",".join(ANNOTATORS))
    p.add_argument("--modes", default=",".join(STREAM_MODES), help="stream variants ('' skips the stream part)")
    p.add_argument("--codec", default="tae")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--repeats", type=int, default=10, help="timed chunks per annotator")
    p.add_argument("--chunks", type=int, default=10, help="measured stream chunks per variant")
    p.add_argument("--warmup", type=int, default=6)
    p.add_argument("--out", default=None, help="JSON results (a .md table is written beside it)")
    p.add_argument("--smoke", action="store_true", help="tiny model and sizes on CPU")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    names = [a for a in args.annotators.split(",") if a]
    modes = [m for m in args.modes.split(",") if m]
    if args.smoke:
        cfg, size, device, dtype = tiny_config(), "tiny", torch.device("cpu"), torch.float32
        w, h = 64, 48
        args.repeats, args.chunks, args.warmup = 1, 1, 1
    else:
        cfg, size, device, dtype = WAN_1_3B, "full", torch.device("cuda"), torch.bfloat16
        w, h = parse_res(args.res)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    env = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "torch": torch.__version__, "resolution": f"{w}x{h}", "dtype": str(dtype).removeprefix("torch."),
           "frames_per_chunk": 12, "steps": args.steps, "codec": args.codec}
    results: dict = {"env": env, "annotators": [], "stream": []}
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp)
        t0 = time.perf_counter()
        wanted = set(names) | {m.removesuffix("-inline") for m in modes}
        skipped = prepare_models(models, [n for n in ANNOTATORS if n in wanted], args.smoke)
        env["weights_saved_s"] = round(time.perf_counter() - t0, 1)
        frames = torch.from_numpy(camera_video(w, h, 12)).to(device).permute(0, 3, 1, 2)[:, :3].float() / 255
        ann = Annotators(device, dtype, models)
        for name in names:
            row = {"annotator": name}
            if name in skipped:
                row["skipped"] = skipped[name]
            else:
                try:
                    row["chunk_ms"] = round(chunk_cost(ann, name, frames, args.repeats, device), 2)
                    row["per_frame_ms"] = round(row["chunk_ms"] / 12, 2)
                except Exception as exc:  # noqa: BLE001 - one failure must not end the run
                    row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                    if args.verbose:
                        traceback.print_exc()
            results["annotators"].append(row)
            print(row, flush=True)
            write(results, args.out)
        del ann
        if modes:
            model = random_dit(cfg, vace=True, device=device, dtype=dtype)
            text = random_text_encoder(cfg.text_dim, size="tiny", seq_len=cfg.text_len, device=device, dtype=dtype)
            codec = random_codec(args.codec, small=size == "tiny", device=device, dtype=dtype)
            for mode in modes:
                row = {"mode": mode}
                if mode.removesuffix("-inline") in skipped:
                    row["skipped"] = skipped[mode.removesuffix("-inline")]
                    results["stream"].append(row)
                    print(row, flush=True)
                    write(results, args.out)
                    continue
                cond = make_conditioner(model, codec, width=w, height=h, device=device, dtype=dtype, models=models)
                cond.annotator_thread = not mode.endswith("-inline")
                try:
                    gen = StreamGenerator(model, codec, text, width=w, height=h, conditioner=cond)
                    r = run_variant(gen, AnnotatedSource(mode, (w, h), args.steps), args, device, HostCopy(device))
                    row.update({k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()
                                if k in ("fps", "chunk_ms", "vace_ms", "dit_ms", "total_ms")})
                    row["annotator_ms"] = round(cond.timings_ms.get("annotator", 0.0), 2)
                    row["annotator_lag"] = cond.timings_ms.get("annotator_lag", 0.0)
                    row["maps_reused"] = cond.maps.reused if cond._maps is not None else 0
                except Exception as exc:  # noqa: BLE001
                    row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                    if args.verbose:
                        traceback.print_exc()
                finally:
                    cond.close(timeout=300)  # let a running job end before the next variant
                results["stream"].append(row)
                print(row, flush=True)
                write(results, args.out)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    print(env)
    write(results, args.out)
    return 0 if any("chunk_ms" in r for r in results["annotators"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
