"""The parameter catalogue: every live and load-time parameter of vacelive, described once
(the types they are made of are in bridge/param_types.py).

OSC handling (bridge/osc), the parameter store, preset validation, docs/osc.md, `/vace/describe`,
the OSCQuery namespace and the TouchDesigner parameter page are all generated from these `Param`
records, so adding a parameter is one entry in `_live_params()`.

Live parameter names equal ChunkRequest field names where such a field exists (seed, steps,
context_scale, ...); `request_fields()` in bridge/run/request_fields.py relies on that.
"""
from __future__ import annotations

import json
from typing import Sequence

from vacelive.bridge.param_types import (
    INT32_MAX, PREFIX, Control, Param, Schema, StatusField, _LORA_NAME_RE,
)
from vacelive.engine.pipelines import DEFAULT_RECIPE, RECIPES  # plain data, no torch

# --------------------------------------------------------------------------------------------
# the parameter list

# engine.conditioning.annotators: built in, weight-based (vacelive weights download <name>), layout
ANNOTATORS = ("none", "gray", "edges", "scribble", "depth", "depth-base", "depth-large", "flow",
              "flow-large", "layout", "pose")

def _live_params() -> list[Param]:
    P = Param
    return [
        # Prompt
        P("prompt", "str", "", "Single prompt text; same as prompts = [(text, 1.0)]. Reads back "
          "the highest-weighted text when a weighted list is set.", "Prompt",
          cost=("text_encode", "kv_recache"), morph="none", in_presets=False,
          alias_of="prompts"),
        P("prompts", "prompts", (("", 1.0),), "Weighted prompt list blended by the engine. OSC "
          "args alternate text, weight (\"a forest\", 1.0, \"neon city\", 0.5); one JSON string "
          "[{\"text\":..,\"weight\":..}] also works.", "Prompt", max_items=8,
          cost=("text_encode", "kv_recache"), morph="prompts"),
        P("transition_chunks", "int", 0, "Chunks over which a prompt change blends; 0 cuts "
          "(cross-attention reset and KV re-cache).", "Prompt", 0, 32, unit="chunks",
          morph="lerp"),
        P("blend", "enum", "linear", "How weighted prompt embeddings are blended.", "Prompt",
          choices=("linear", "slerp")),
        # Generation
        P("seed", "int", 42, "Noise seed of the next chunks.", "Generation", 0, INT32_MAX),
        P("steps", "int", 4, "Denoising steps per chunk (fewer is faster, softer).",
          "Generation", 1, 4, unit="steps", morph="lerp"),
        P("pause", "bool", False, "Hold generation; the output keeps showing the last frame.",
          "Generation", in_presets=False),
        P("reset", "action", None, "Clear every stream state; the next chunk starts fresh.",
          "Generation", cost=("reset",), morph="none", in_presets=False),
        # VACE
        P("context_scale", "float", 1.0, "VACE hint strength: how strongly control video, "
          "masks and references steer the output.", "VACE", 0.0, 2.0, morph="lerp"),
        P("hint_reuse", "bool", False, "Compute VACE hints once per chunk instead of every "
          "denoising step (faster, slightly less faithful).", "VACE"),
        P("refs", "str_list", (), "Reference image file paths (0 to 3) for subject/style (R2V). "
          "Several args or one; an empty message or \"\" clears them.", "VACE", max_items=3,
          cost=("vae_encode",)),
        P("ref_fit", "enum", "crop", "How reference images are fitted to the generation size.",
          "VACE", choices=("crop", "letterbox")),
        # Inputs
        P("video_enabled", "bool", True, "Use the control/source video input when one is "
          "connected; off generates from text and references only.", "Inputs"),
        P("annotator", "enum", "none", "Turn the incoming video into a control map on the GPU "
          "before VACE (none: the video already is a control map or a source to inpaint).",
          "Inputs", choices=ANNOTATORS),
        P("annotator_overlay", "enum", "none", "A second control map drawn over the first "
          "wherever it is not its background (e.g. gray + scribble, depth + pose; with annotator "
          "none, over the video itself).", "Inputs", choices=ANNOTATORS),
        P("layout_boxes", "str_list", (), "Boxes for the layout annotator, each \"id x y w h\" "
          "(top-left corner and size, 0-1 of the frame). /vace/layout/box, /vace/layout/remove "
          "and /vace/layout/clear edit them; boxes glide to new positions over a chunk.", "Inputs",
          max_items=16),
        P("fit", "enum", "crop", "How wrong-size video and mask inputs are fitted.", "Inputs",
          choices=("crop", "letterbox", "stretch")),
        P("mask_enabled", "bool", True, "Use the mask input when one is connected (white = "
          "generate, black = keep).", "Inputs"),
        P("mask_channel", "enum", "alpha", "Which channel of the mask texture is the mask.",
          "Inputs", choices=("alpha", "red", "luma")),
        P("outpaint_direction", "enum", "none", "Expand the canvas: the input shrinks into the "
          "frame and the new border on these sides is generated.", "Inputs",
          choices=("none", "left", "right", "top", "bottom", "horizontal", "vertical", "all")),
        P("outpaint_ratio", "float", 0.25, "Fraction of the output width/height generated on "
          "each outpainted side.", "Inputs", 0.0, 0.45, morph="lerp"),
        # V2V restyle (engine/v2v.py): the input video as each chunk's starting point
        P("input_mode", "enum", "text", "video restyles the input video (the Input texture, or "
          "the control texture when no Input is connected) by the prompt; text generates from "
          "noise. Composes with VACE control, references and masks.", "V2V",
          choices=("text", "video")),
        P("noise_scale", "float", 0.7, "V2V strength: how much noise is added to the input "
          "before denoising; 0 passes the input through, 1 ignores it (text-to-video).", "V2V",
          0.0, 1.0, morph="lerp"),
        P("noise_controller", "bool", False, "Motion-aware noise (StreamDiffusionV2): fast "
          "input motion lowers the noise by up to 0.1 so the output follows the motion.", "V2V"),
        P("similarity_skip", "bool", False, "While the input stands still, re-send the last "
          "frame instead of generating (StreamDiffusion's similarity filter; a static scene "
          "costs no GPU). Never while other parameters change.", "V2V"),
        P("similarity_threshold", "float", 0.98, "Input similarity (cosine) above which chunks "
          "start to be skipped; the skip chance rises to 1 at identical input.", "V2V",
          0.9, 1.0, morph="lerp"),
        P("similarity_max_skip", "int", 10, "Chunks skipped in a row at most, then one is "
          "generated anyway.", "V2V", 0, 100, unit="chunks"),
        # Pose tokens (UniAnimate-DiT, engine/pose, docs/pose.md)
        P("pose_strength", "float", 0.0, "Pose tokens: how strongly the performer's pose "
          "(UniAnimate-DiT's pose embedding added to the DiT's tokens) drives the figure; 0 is "
          "off (the exact path). Needs pose weights: docs/pose.md.", "Pose", 0.0, 2.0, morph="lerp"),
        P("pose_source", "enum", "annotate", "annotate: DWPose finds the pose in the control "
          "video (one chunk behind the camera); rendered: the control video already is a "
          "DWPose/OpenPose drawing (e.g. from TouchDesigner).", "Pose",
          choices=("annotate", "rendered")),
        P("pose_lookahead", "enum", "wait", "wait: the exact pose embedding, the figure follows "
          "4 frames later; causal: no added delay, each chunk's last latent frame sees the newest "
          "pose held still for its 4 future frames.", "Pose", choices=("wait", "causal")),
        P("pose_ref", "bool", False, "Reference pose (UniAnimate's randomref embedding). Only "
          "image-to-video DiTs take it; the text-to-video pipelines here say so and ignore it.",
          "Pose"),
        # Extension
        P("extension_mode", "enum", "none", "Anchor the stream to first/last frame or clip "
          "files (VACE frame extension); changing it to none ends a running extension.", "Extension",
          choices=("none", "firstframe", "lastframe", "firstlastframe", "firstclip", "lastclip",
                   "firstlastclip"), cost=("vae_encode",)),
        P("extension_first", "str", "", "File path of the first-frame image or clip.",
          "Extension", cost=("vae_encode",)),
        P("extension_last", "str", "", "File path of the last-frame image or clip.",
          "Extension", cost=("vae_encode",)),
        P("extension_chunks", "int", 1, "For how many chunks the anchors condition the stream.",
          "Extension", 1, 64, unit="chunks"),
        # Output
        P("output_fps", "float", 0.0, "Output frame rate target; 0 follows the measured "
          "generation rate.", "Output", 0.0, 120.0, unit="fps", in_presets=False),
        P("pacer_headroom", "float", 3.0, "Frames the output buffer aims to hold when a new chunk "
          "arrives while the output follows the generation rate (output_fps 0): fewer = less "
          "control-to-output latency (one frame is one output interval), more = fewer held "
          "frames when a chunk is late.", "Output", 0.0, 24.0, unit="frames", in_presets=False),
        P("snapshot", "action", None, "Save the next output frame as a PNG (the run loop "
          "writes it and reports the path).", "Output", morph="none", in_presets=False),
        # Tempo (bridge/stage.py, bridge/quantize.py; docs/tempo.md)
        P("tempo", "float", 120.0, "Tempo in BPM. With Link on it is the session's tempo: a "
          "change here changes it for every peer, and a peer's change shows here.", "Tempo",
          20.0, 300.0, unit="bpm", in_presets=False),
        P("link", "bool", False, "Join the Ableton Link session on this network (tempo, beat and "
          "bar phase shared with Live, Resolume, TouchDesigner, ...); off: the internal clock, "
          "set by tempo or tap.", "Tempo", in_presets=False),
        P("quantize", "enum", "none", "Arm prompt cuts, prompt lists, reference swaps and "
          "preset recalls to appear on the next beat, bar or N bars (none: at the next chunk). "
          "/vace/cue arms one message with its own grid.", "Tempo",
          choices=("none", "beat", "bar", "2bars", "4bars", "8bars"), in_presets=False),
        P("transition_beats", "float", 0.0, "Prompt transition length in beats (converted to "
          "chunks at the current tempo and output rate); 0 uses transition_chunks.", "Tempo",
          0.0, 64.0, unit="beats"),
        P("beat_offset_ms", "float", 0.0, "Output latency after vacelive (NDI/Spout hop, "
          "projector): quantised changes are applied this much earlier so they appear on the "
          "beat on the wall.", "Tempo", -500.0, 1000.0, unit="ms", in_presets=False),
    ] + _pipeline_params()


def _pipeline_params() -> list[Param]:
    """Live parameters that only some pipelines have (`pipelines=`): reported by /vace/describe
    with their pipelines, refused with a notice on the others. Names equal ChunkRequest fields."""
    P = Param
    return [
        # Krea Realtime 14B (Scope's krea_realtime_video port: kv_cache_attention_bias, default 0.3)
        P("kv_cache_attention_bias", "float", 0.3, "Krea: attention weight of the cached past "
          "frames (log-bias on every cached key except the first frame and the current chunk); "
          "lower = less error build-up from the past, 1 = plain attention.", "Pipeline",
          0.01, 1.0, morph="lerp", pipelines=("krea-realtime",)),
        # MemFlow (KlingTeam/MemFlow configs/inference.yaml: bank_size 3, record_interval 3)
        P("bank_size", "int", 3, "MemFlow: latent frames in the per-block memory bank (0 = "
          "memory off). A change empties the memory at the next chunk.", "Pipeline", 0, 6,
          unit="frames", pipelines=("memflow",)),
        P("record_interval", "int", 3, "MemFlow: a new bank slot opens every N chunks; until it "
          "does, each chunk's first frame replaces the newest slot.", "Pipeline", 1, 12,
          unit="chunks", pipelines=("memflow",)),
        # RewardForcing (YepicAI/Reward-Forcing CausalWanSelfAttention compression_alpha 0.999)
        P("sink_ema", "float", 0.999, "RewardForcing: share of the sink kept when frames leave "
          "the window (sink <- a * sink + (1 - a) * evicted frame, once per chunk); 1 = the "
          "first frames anchor the stream forever, lower = the anchor follows the recent past.",
          "Pipeline", 0.9, 1.0, morph="lerp", pipelines=("reward-forcing",)),
    ]


def _lora_param(name: str, default: float) -> Param:
    what = "the pipeline's own LoRA (e.g. LongLive)" if name == "pipeline" else f"LoRA '{name}'"
    return Param(f"lora/{name}", "float", float(default), f"Scale of {what}.", "LoRA", 0.0, 2.0,
                 cost=("lora_remerge",), morph="lerp")


def _load_time_params() -> list[Param]:
    def P(name, type_, default, description, **kw):
        return Param(name, type_, default, description, "Startup", live=False,
                     cost=("restart",), morph="none", in_presets=False, **kw)

    return [
        P("pipeline", "enum", DEFAULT_RECIPE, "Causal pipeline (weights, cache policy and "
          "schedule). Changing it reloads the engine: restart with --pipeline NAME (the "
          "TouchDesigner component restarts its engine when its Pipeline menu changes).",
          choices=tuple(RECIPES)),
        P("width", "int", 832, "Generation width in pixels (multiple of 16).", min=16,
          max=2048, unit="px"),
        P("height", "int", 480, "Generation height in pixels (multiple of 16).", min=16,
          max=2048, unit="px"),
        P("dtype", "enum", "bfloat16", "Model compute dtype.",
          choices=("bfloat16", "float16", "float32")),
        P("codec", "str", "wan2.1", "VAE used to encode inputs and decode frames."),
        P("models_dir", "str", "", "Folder with the model weights."),
        P("loras", "str_list", (), "User LoRAs registered at start-up (name=path); each gets "
          "/vace/lora/<name>."),
        P("osc_host", "str", "127.0.0.1", "OSC bind address; 0.0.0.0 opts into the LAN."),
        P("osc_port", "int", 7700, "OSC UDP port.", min=1, max=65535),
        P("oscquery_port", "int", 7701, "OSCQuery HTTP port (0 = off).", min=0, max=65535),
        P("presets_dir", "str", "", "User preset folder (saved presets)."),
    ]


# --------------------------------------------------------------------------------------------
# non-parameter addresses (for docs, /vace/describe and OSCQuery)


# --------------------------------------------------------------------------------------------
# non-parameter addresses (for docs, /vace/describe and OSCQuery)

CONTROLS: tuple[Control, ...] = (
    Control(f"{PREFIX}/get", "[address|name ...]", "<address> <value> per parameter",
            "Current value(s); no argument sends every live value.", "s"),
    Control(f"{PREFIX}/describe", "[address|name]", f"{PREFIX}/describe <json>",
            "The schema as JSON (one parameter, or everything).", "s"),
    Control(f"{PREFIX}/hello", "[port]", "every live value",
            "Register sender-ip:port (default: the sending port) for echoes and status; "
            "TouchDesigner sends from a random port, so pass its OSC In port.", "i"),
    Control(f"{PREFIX}/preset/load", "name [chunks]", f"{PREFIX}/preset/loaded name chunks",
            "Morph to a preset over N chunks (default 0 = switch at the next chunk).", "si"),
    Control(f"{PREFIX}/preset/save", "name", f"{PREFIX}/preset/saved name path",
            "Save the current live values to the user preset folder.", "s"),
    Control(f"{PREFIX}/preset/list", "", f"{PREFIX}/preset/list name ...",
            "Names of every shipped and saved preset.", ""),
    Control(f"{PREFIX}/layout/box", "id x y w h", f"{PREFIX}/layout_boxes ...",
            "Add or move a layout box (top-left corner and size, 0-1 of the frame); the layout "
            "annotator draws it.", "sffff"),
    Control(f"{PREFIX}/layout/remove", "id", f"{PREFIX}/layout_boxes ...",
            "Remove one layout box.", "s"),
    Control(f"{PREFIX}/layout/clear", "", f"{PREFIX}/layout_boxes",
            "Remove every layout box.", ""),
    Control(f"{PREFIX}/cue", "grid [length] address args...", f"{PREFIX}/cue/armed what beat",
            "Arm one message for the next grid line (none, beat, bar, 2bars, 4bars, 8bars, "
            "Nbeats); length (8beats, 2bars, N chunks) sets a prompt's transition or a preset's "
            "morph, e.g. /vace/cue bar 8beats /vace/preset/load dusk.", "ss"),
    Control(f"{PREFIX}/tap", "", f"{PREFIX}/tempo <bpm>",
            "Tap tempo: two or more taps set the tempo (their mean interval) and put the beat on "
            "the tap; with Link on, the session's tempo.", ""),
    Control(f"{PREFIX}/record/start", "[name|path.mp4] [side_by_side]",
            f"{PREFIX}/record/started path codec",
            "Record the paced output to MP4 (named by time and preset, or the given name or path); "
            "side_by_side 1 adds the control input on the right.", "si"),
    Control(f"{PREFIX}/record/stop", "", f"{PREFIX}/record/stopped path frames dropped",
            "Stop recording; the reply comes when the file is closed.", ""),
    Control(f"{PREFIX}/record/status", "", f"{PREFIX}/record/status active path frames "
            "dropped seconds codec", "The current (or last) recording.", ""),
)

# Everything the run loop's status provider (bridge.run.loop.RunLoop.status) sends, in its order.
STATUS_FIELDS: tuple[StatusField, ...] = (
    StatusField("fps", "float", "fps", "Frames per second generated (measured; 0 while paused or "
                "while chunks fail, e.g. the engine behind a relay is down)."),
    StatusField("fps_out", "float", "fps", "Rate the output is paced at right now (the fixed "
                "output_fps, or following the generation rate)."),
    StatusField("latency_ms", "float", "ms", "Time of the last chunk, request to frames."),
    StatusField("chunk", "int", "", "Index of the last generated chunk."),
    StatusField("dropped", "int", "frames", "Output frames dropped or held so far."),
    StatusField("gpu_mem_mb", "float", "MB", "GPU memory allocated by the engine."),
    StatusField("errors", "int", "chunks", "Failed chunks so far."),
    StatusField("paused", "int", "", "1 while paused (the output holds the last frame), else 0."),
    StatusField("jitter_p99_ms", "float", "ms", "Output pacing jitter, 99th percentile over the "
                "last 1024 frames."),
    StatusField("annotator_ms", "float", "ms", "Time the annotator thread took for the newest "
                "map(s) of the last chunk (depth, flow, pose, ...); 0 without one."),
    StatusField("annotator_lag", "int", "chunks", "How many chunks older than the previous "
                "chunk the map in use is: 0 keeps up, more means the annotator is slower than a "
                "chunk and its last map is reused."),
    StatusField("noise_scale_used", "float", "", "V2V noise scale of the last chunk (after the "
                "motion-aware controller); -1 while generating from text."),
    StatusField("skipped", "int", "chunks", "Chunks the similarity skip replaced by the last "
                "frame so far (a still input)."),
    StatusField("recompiles", "int", "graphs", "torch.compile compilations that happened inside "
                "chunks (each stalls its chunk, a shape the start-up warm-up missed); 0 on a healthy "
                "show, always 0 without --compile or --compile-codec."),
    StatusField("graph_captures", "int", "graphs", "CUDA graphs captured so far with --cuda-graphs "
                "(one per cache-slot layout, in the first chunks after a start or reset, and with "
                "--clean-pass reuse at the first prompt cut of each layout; each costs its chunk "
                "about one extra forward of host work); 0 without --cuda-graphs."),
    StatusField("graph_fallbacks", "int", "forwards", "DiT forwards that ran without a CUDA graph "
                "because their capture failed (logged once per layout); 0 on a healthy show."),
    StatusField("control_latency_p50_ms", "float", "ms", "Control-to-output latency, median over the "
                "last 1024 frames: from a control frame's arrival to the output frame it conditioned "
                "leaving the sink (0 without a control video)."),
    StatusField("control_latency_p99_ms", "float", "ms", "Control-to-output latency, 99th percentile "
                "over the last 1024 frames."),
    StatusField("tempo", "float", "bpm", "Tempo of the beat clock (Link session or internal)."),
    StatusField("beat", "float", "beats", "Beat position now (Link: the session's beat time)."),
    StatusField("phase", "float", "beats", "Position inside the bar, 0 up to 4."),
    StatusField("link_peers", "int", "", "Other Ableton Link peers in the session (0 without Link)."),
    StatusField("armed", "int", "", "Quantised changes waiting for their beat."),
    StatusField("recording", "int", "", "1 while recording, else 0."),
    StatusField("record_frames", "int", "frames", "Frames written to the current recording."),
    StatusField("record_dropped", "int", "frames", "Frames the recording dropped because the "
                "encoder fell behind (the output never drops for it)."),
)

FEEDBACK: tuple[tuple[str, str], ...] = (
    (f"{PREFIX}/<param> <value>", "echo of every applied value (clamped/canonical form); "
     "numeric params also at /vace/norm/<param>, enums also at /vace/index/<param>"),
    (f"{PREFIX}/error <message>", "every rejected message, malformed packet or unknown address"),
    (f"{PREFIX}/status/<field> <value>", "a few times per second while a run loop is attached"),
    (f"{PREFIX}/notice <message>", "run-loop notices (input fixed up, snapshot written, ...)"),
)



def build_schema(loras: Sequence[str | tuple[str, float]] = ()) -> Schema:
    """The schema of one engine session: the fixed parameters plus one `lora/<name>` scale for
    the pipeline LoRA and for each user LoRA registered at start-up ((name, default scale) or
    name with default 1.0)."""
    lora_params = [_lora_param("pipeline", 1.0)]
    for entry in loras:
        name, default = (entry, 1.0) if isinstance(entry, str) else entry
        if not _LORA_NAME_RE.match(name) or name == "pipeline":
            raise ValueError(
                f"LoRA name {name!r}: use letters, digits, '_' or '-' (not 'pipeline')"
            )
        lora_params.append(_lora_param(name, default))
    return Schema(_live_params() + lora_params + _load_time_params(), CONTROLS, STATUS_FIELDS)


DEFAULT_SCHEMA = build_schema()


if __name__ == "__main__":  # `python -m bridge.schema [lora ...]`: the schema as JSON (stdlib only)
    import sys

    print(json.dumps(build_schema(sys.argv[1:]).to_json(), indent=2, ensure_ascii=False))
