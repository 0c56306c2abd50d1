"""VACE conditioning for a live stream: every task (R2V, control video, inpaint/outpaint masks,
first/last frame and clip extension) and their compositions, from what a ChunkRequest carries.

    conditioner = VaceConditioner(codec, width, height, device, dtype)
    vace = conditioner.prepare(request, first_chunk=True, num_frames=9)   # None: text only
    model(x, t, text, kv, start, **vace.model_kwargs(), context_scale=request.context_scale)

Modules: inputs (live frames -> device tensors), annotators (gray/edges/scribble built in; depth,
flow, pose plug-ins; overlay of two maps), depth, flow, layout (the annotators with models or
state), runner (annotators on their own thread, one chunk ahead), encode (streaming VACE
encoding), tasks (inference, sticky refs, outpaint, extension layout), conditioner (the per-chunk
orchestration). User guide: docs/vace.md.
"""
from vacelive.engine.conditioning.annotators import AnnotatorUnavailable, Annotators, register_annotator
from vacelive.engine.conditioning.conditioner import VaceConditioner
from vacelive.engine.conditioning.encode import VaceEncoder, chunk_groups, encode_masks, fold_mask
from vacelive.engine.conditioning.inputs import InputError
from vacelive.engine.conditioning.layout import set_layout_detector
from vacelive.engine.conditioning.runner import AnnotatorRunner, ChunkMaps
from vacelive.engine.conditioning.tasks import Tasks, infer_tasks

__all__ = [
    "AnnotatorUnavailable", "Annotators", "register_annotator",
    "VaceConditioner",
    "VaceEncoder", "chunk_groups", "encode_masks", "fold_mask",
    "InputError",
    "set_layout_detector",
    "AnnotatorRunner", "ChunkMaps",
    "Tasks", "infer_tasks",
]
