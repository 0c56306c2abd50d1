"""Stand-in DWPose ONNX files with known outputs (the real YOLOX-L / DWPose-L files are 350 MB and
cannot be in CI): the detector always finds one person box, the pose model always answers the
same SimCC peaks. They exercise onnxruntime and the whole decoding chain, not accuracy."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from vacelive.engine.conditioning.pose_annotator import DET_SIZE, dwpose_files

FRAME_HW = (360, 480)  # the camera frame the expected values are computed for
BOX_IN = (320.0, 224.0, 96.0, 256.0)  # detector-input cx, cy, w, h of the person
POSE_WH = (288, 384)  # DWPose-L input (W, H)
# COCO-WholeBody keypoint -> (x, y) in pose-model input pixels
KP_IN = {0: (144.0, 40.0), 5: (180.0, 120.0), 6: (100.0, 120.0), 9: (200.0, 250.0), 15: (150.0, 370.0)}


def constant_model(path: Path, in_shape, outputs: dict) -> None:
    """An ONNX graph: input of `in_shape`; every output = its constant + 0 * mean(input)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], keepdims=0),
             helper.make_node("Mul", ["m", "zero"], ["z"])]
    inits = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    outs = []
    for name, value in outputs.items():
        inits.append(numpy_helper.from_array(value.astype(np.float32), f"{name}_c"))
        nodes.append(helper.make_node("Add", [f"{name}_c", "z"], [name]))
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(value.shape)))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
                              outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def anchor(stride: int, gx: int, gy: int) -> int:
    """Index of grid cell (gx, gy) of `stride` in YOLOX's flattened 8/16/32 output."""
    base = 0
    for s in (8, 16, 32):
        if s == stride:
            return base + gy * (DET_SIZE[1] // s) + gx
        base += (DET_SIZE[0] // s) * (DET_SIZE[1] // s)
    raise ValueError(stride)


def write_dwpose_standins(models: Path) -> Path:
    """<models>/DWPose/{yolox_l,dw-ll_ucoco_384}.onnx stand-ins; returns `models`."""
    det_path, pose_path = dwpose_files(models)
    det_path.parent.mkdir(parents=True, exist_ok=True)
    det = np.zeros((1, 8400, 6), np.float32)
    cx, cy, w, h = BOX_IN
    a = anchor(32, int(cx // 32), int(cy // 32))
    det[0, a] = [cx / 32 - int(cx // 32), cy / 32 - int(cy // 32), np.log(w / 32), np.log(h / 32), 0.9, 0.9]
    b = anchor(16, int(cx // 16), int(cy // 16))  # same person, lower score: removed by NMS
    det[0, b] = [cx / 16 - int(cx // 16) + 0.1, cy / 16 - int(cy // 16), np.log(w / 16), np.log(h / 16), 0.8, 0.8]
    c = anchor(8, 2, 2)  # a weak box elsewhere: passes NMS (0.1) but not the person score (0.3)
    det[0, c] = [0.5, 0.5, np.log(2), np.log(2), 0.5, 0.5]
    constant_model(det_path, (1, 3, 640, 640), {"out": det})
    sx = np.zeros((1, 133, POSE_WH[0] * 2), np.float32)
    sy = np.zeros((1, 133, POSE_WH[1] * 2), np.float32)
    for k, (x, y) in KP_IN.items():
        sx[0, k, int(x * 2)], sy[0, k, int(y * 2)] = 0.9, 0.8
    constant_model(pose_path, (1, 3, POSE_WH[1], POSE_WH[0]), {"simcc_x": sx, "simcc_y": sy})
    return models
