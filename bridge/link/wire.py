"""Wire format of the remote link: a JSON header frame followed by raw binary frames. No pickle.

A message is a ZMQ multipart message `[header, blob0, blob1, ...]`. The header is UTF-8 JSON with
`"v": WIRE_VERSION` and `"kind"`. Values inside it are plain JSON except:

* `{"$type": "ChunkRequest" | "Prompt" | "Outpaint" | "Extension", "fields": {...}}` for the
  request dataclasses of engine/request.py (a fixed whitelist: nothing else is ever constructed);
* `{"$dict": [[key, value], ...]}` for dicts (any string keys, no escaping rules);
* `{"$array": {...}}` for a numpy array or torch tensor:
  - `codec: "raw"`: `dtype`, `shape`, `lib` ("numpy"|"torch") and `blob`, the index of one
    binary frame holding the C-contiguous little-endian bytes (bfloat16 travels as its bits);
  - `codec: "jpeg"`: uint8 images [H,W,C] or [F,H,W,C] with C in 1/3/4: `blobs` (one JPEG per
    frame), `shape`, `lib`, and for C=4 `alpha`: "opaque" (alpha was all 255 and comes back
    255) or the index of a raw blob with the alpha planes. Masks never use JPEG.

JPEG runs on the GPU through torchvision.io.encode_jpeg/decode_jpeg when the tensor is on CUDA (or
a CUDA decode is asked for) and torchvision is importable; otherwise Pillow on the CPU.

`lib` says what the sender had; the receiver rebuilds a torch tensor only where torch is installed.
A relay without torch gets numpy arrays (bfloat16 cannot be one and is refused there).
"""
from __future__ import annotations

import dataclasses
import io
import json
from typing import Any

import numpy as np

from vacelive.engine.request import ChunkRequest, ChunkResult, Extension, Outpaint, Prompt

WIRE_VERSION = 1
CODECS = ("raw", "jpeg")

_TYPES = {cls.__name__: cls for cls in (ChunkRequest, Prompt, Outpaint, Extension)}
# Fields whose pictures may travel lossy when the link uses JPEG (masks and anything else: raw).
_LOSSY_FIELDS = {"ChunkRequest": {"video", "input_video", "refs", "extension"}, "Extension": {"first", "last"}}
_DTYPES = {"uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64", "bool"}


class WireError(ValueError):
    """A message that does not follow this format (logged and answered, never fatal)."""


# -- arrays ------------------------------------------------------------------------------------------
def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def _jpeg_ok(x: Any) -> bool:
    shape = tuple(x.shape)
    return "uint8" in str(x.dtype) and len(shape) in (3, 4) and shape[-1] in (1, 3, 4) \
        and shape[-2] >= 8 and shape[-3] >= 8


def _torch_module() -> Any:
    """torch if it is installed, else None (a relay-only install)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def gpu_jpeg_available() -> bool:
    try:
        import torch
        import torchvision.io  # noqa: F401
    except Exception:
        return False
    return bool(torch.cuda.is_available())


def _encode_jpeg_frames(frames: Any, quality: int) -> list[bytes]:
    """frames: [F,H,W,C] uint8 with C in (1,3); numpy or torch. CUDA tensors encode on the GPU."""
    if _is_torch(frames) and frames.device.type == "cuda" and gpu_jpeg_available():
        from torchvision.io import encode_jpeg

        chw = [f.permute(2, 0, 1).contiguous() for f in frames]
        return [bytes(t.cpu().numpy()) for t in encode_jpeg(chw, quality=quality)]
    from PIL import Image

    arr = frames.detach().cpu().numpy() if _is_torch(frames) else np.asarray(frames)

    def one(f: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(f[..., 0] if f.shape[-1] == 1 else f)).save(
            buf, format="JPEG", quality=quality)
        return buf.getvalue()

    return list(_pool().map(one, arr))


_POOL = None


def _pool():
    """Pillow releases the GIL while coding, so a chunk's frames are coded in parallel."""
    global _POOL
    if _POOL is None:
        import os
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 2), thread_name_prefix="jpeg")
    return _POOL


def _decode_jpeg_frames(blobs: list[Any], channels: int, device: str) -> Any:
    """JPEG blobs -> [F,H,W,channels] uint8: torch on `device` via the GPU decoder, else numpy."""
    if device.startswith("cuda") and gpu_jpeg_available():
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg

        mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
        data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
        imgs = decode_jpeg(data, mode=mode, device=device)
        return torch.stack([im.permute(1, 2, 0) for im in imgs])
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    frames = list(_pool().map(lambda b: np.asarray(Image.open(io.BytesIO(b)).convert(mode)), blobs))
    arr = np.stack(frames)
    return arr[..., None] if channels == 1 else arr


def pack_array(x: Any, blobs: list[Any], codec: str = "raw", quality: int = 90) -> dict:
    lib = "torch" if _is_torch(x) else "numpy"
    if codec == "jpeg" and _jpeg_ok(x):
        single = len(x.shape) == 3
        frames = x[None] if single else x
        c = int(frames.shape[-1])
        meta: dict[str, Any] = {"codec": "jpeg", "shape": list(x.shape), "lib": lib}
        if c == 4:
            alpha = frames[..., 3]
            opaque = bool((alpha == 255).all())
            rgb = frames[..., :3]
            if not opaque:
                a = alpha.detach().cpu().numpy() if lib == "torch" else np.asarray(alpha)
                meta["alpha"] = len(blobs)
                blobs.append(np.ascontiguousarray(a, dtype=np.uint8))
            else:
                meta["alpha"] = "opaque"
        else:
            rgb = frames
        start = len(blobs)
        blobs.extend(_encode_jpeg_frames(rgb, quality))
        meta["blobs"] = list(range(start, len(blobs)))
        return {"$array": meta}
    if lib == "torch":
        t = x.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        t = t.contiguous()
        dtype = str(t.dtype).replace("torch.", "")
        if dtype == "bfloat16":
            import torch

            arr = t.view(torch.int16).numpy()
        else:
            arr = t.numpy()
    else:
        arr = np.ascontiguousarray(x)
        dtype = str(arr.dtype)
    if dtype not in _DTYPES and dtype != "bfloat16":
        raise WireError(f"unsupported array dtype {dtype}")
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    meta = {"codec": "raw", "dtype": dtype, "shape": list(arr.shape), "lib": lib, "blob": len(blobs)}
    blobs.append(arr)
    return {"$array": meta}


def _buffer(blob: Any) -> memoryview:
    return blob.buffer if hasattr(blob, "buffer") else memoryview(blob)


def unpack_array(meta: dict, blobs: list[Any], device: str = "cpu") -> Any:
    try:
        codec, shape, lib = meta["codec"], [int(s) for s in meta["shape"]], meta["lib"]
        if codec == "raw":
            dtype = meta["dtype"]
            if dtype not in _DTYPES and dtype != "bfloat16":
                raise WireError(f"unsupported array dtype {dtype}")
            np_dtype = np.int16 if dtype == "bfloat16" else np.dtype(dtype).newbyteorder("<")
            raw = np.frombuffer(_buffer(blobs[int(meta["blob"])]), dtype=np_dtype)
            arr = raw.reshape(shape)
            # Zero-copy: a received zmq.Frame is writable and stays alive as long as the array
            # views it. Read-only inputs (bytes) are copied so callers always get writable memory.
            if not arr.flags.writeable:
                arr = arr.copy()
            torch = _torch_module() if lib == "torch" else None
            if torch is None:
                if dtype == "bfloat16":
                    raise WireError("a bfloat16 array needs torch on the receiving side")
                return arr
            t = torch.from_numpy(arr)
            if dtype == "bfloat16":
                t = t.view(torch.bfloat16)
            return t.to(device) if device != "cpu" else t
        if codec == "jpeg":
            c = shape[-1]
            frames = _decode_jpeg_frames([_buffer(blobs[int(i)]) for i in meta["blobs"]],
                                         1 if c == 1 else 3, device if lib == "torch" else "cpu")
            if c == 4:
                alpha_ref = meta["alpha"]
                if alpha_ref == "opaque":
                    alpha = None
                else:
                    alpha = np.frombuffer(_buffer(blobs[int(alpha_ref)]), np.uint8)
                    alpha = alpha.reshape(tuple(frames.shape[:3]))
                if _is_torch(frames):
                    import torch

                    a = torch.full_like(frames[..., :1], 255) if alpha is None else \
                        torch.from_numpy(alpha.copy()).to(frames.device)[..., None]
                    frames = torch.cat([frames, a], dim=-1)
                else:
                    a = np.full(frames.shape[:3] + (1,), 255, np.uint8) if alpha is None else alpha[..., None]
                    frames = np.concatenate([frames, a], axis=-1)
            if tuple(frames.shape[1:]) != tuple(shape[-3:]):
                raise WireError(f"jpeg frames decoded to {tuple(frames.shape)}, header says {shape}")
            if len(shape) == 3:
                frames = frames[0]
            torch = _torch_module() if lib == "torch" and not _is_torch(frames) else None
            if torch is not None:
                frames = torch.from_numpy(np.ascontiguousarray(frames))
                if device != "cpu":
                    frames = frames.to(device)
            elif lib == "numpy" and _is_torch(frames):
                frames = frames.cpu().numpy()
            return frames
    except WireError:
        raise
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise WireError(f"bad array in message: {type(exc).__name__}: {exc}") from exc
    raise WireError(f"unknown codec {meta.get('codec')!r}")


# -- values -------------------------------------------------------------------------------------------
def pack_value(value: Any, blobs: list[Any], codec: str = "raw", quality: int = 90,
               lossy: bool = False) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.ndarray) or _is_torch(value):
        return pack_array(value, blobs, codec if lossy else "raw", quality)
    if isinstance(value, np.generic):
        return value.item()
    if dataclasses.is_dataclass(value) and type(value).__name__ in _TYPES:
        name = type(value).__name__
        lossy_fields = _LOSSY_FIELDS.get(name, set())
        fields = {
            f.name: pack_value(getattr(value, f.name), blobs, codec, quality, f.name in lossy_fields)
            for f in dataclasses.fields(value)
        }
        return {"$type": name, "fields": fields}
    if isinstance(value, dict):
        return {"$dict": [[str(k), pack_value(v, blobs, codec, quality, lossy)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return [pack_value(v, blobs, codec, quality, lossy) for v in value]
    raise WireError(f"cannot send a {type(value).__name__}")


def unpack_value(value: Any, blobs: list[Any], device: str = "cpu") -> Any:
    if isinstance(value, list):
        return [unpack_value(v, blobs, device) for v in value]
    if not isinstance(value, dict):
        return value
    if "$array" in value:
        return unpack_array(value["$array"], blobs, device)
    if "$dict" in value:
        return {str(k): unpack_value(v, blobs, device) for k, v in value["$dict"]}
    if "$type" in value:
        cls = _TYPES.get(value["$type"])
        if cls is None:
            raise WireError(f"unknown type {value['$type']!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        fields = value.get("fields", {})
        unknown = set(fields) - known
        if unknown:
            raise WireError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
        try:
            return cls(**{k: unpack_value(v, blobs, device) for k, v in fields.items()})
        except TypeError as exc:
            raise WireError(f"bad {cls.__name__}: {exc}") from exc
    raise WireError(f"unexpected object with keys {sorted(value)}")


# -- messages -----------------------------------------------------------------------------------------
def encode(kind: str, fields: dict[str, Any], blobs: list[Any] | None = None) -> list[Any]:
    """A message as multipart frames. `fields` must already be packed (pack_value)."""
    header = {"v": WIRE_VERSION, "kind": kind, **fields}
    return [json.dumps(header, separators=(",", ":"), allow_nan=True).encode()] + list(blobs or [])


def decode(frames: list[Any]) -> tuple[dict, list[Any]]:
    """Split a multipart message into (header dict, blobs); raises WireError on a bad header."""
    if not frames:
        raise WireError("empty message")
    try:
        header = json.loads(bytes(_buffer(frames[0])))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"header is not JSON: {exc}") from exc
    if not isinstance(header, dict) or "kind" not in header:
        raise WireError("header is not an object with a 'kind'")
    if header.get("v") != WIRE_VERSION:
        raise WireError(f"wire version {header.get('v')!r}, this side speaks {WIRE_VERSION}")
    return header, frames[1:]


def encode_request(request: ChunkRequest, codec: str = "raw", quality: int = 90) -> tuple[Any, list[Any]]:
    """ChunkRequest -> (packed header value, blobs)."""
    blobs: list[Any] = []
    return pack_value(request, blobs, codec, quality), blobs


def encode_result(result: ChunkResult, codec: str = "raw", quality: int = 90) -> tuple[dict, list[Any]]:
    blobs: list[Any] = []
    frames = pack_array(result.frames, blobs, codec, quality)
    fields = {
        "frames": frames,
        "chunk_index": int(result.chunk_index),
        "timings_ms": {str(k): float(v) for k, v in result.timings_ms.items()},
        "notices": [str(n) for n in result.notices],
        "skipped": bool(result.skipped),
        "noise_scale": None if result.noise_scale is None else float(result.noise_scale),
    }
    return fields, blobs


def decode_result(header: dict, blobs: list[Any], device: str = "cpu") -> ChunkResult:
    try:
        frames = unpack_value(header["frames"], blobs, device)
        torch = None if _is_torch(frames) else _torch_module()
        if torch is not None:  # the engine's own type where torch is installed
            frames = torch.from_numpy(np.ascontiguousarray(frames))
        return ChunkResult(
            frames=frames,
            chunk_index=int(header["chunk_index"]),
            timings_ms=dict(header.get("timings_ms", {})),
            notices=list(header.get("notices", [])),
            skipped=bool(header.get("skipped", False)),
            noise_scale=header.get("noise_scale"),
        )
    except KeyError as exc:
        raise WireError(f"result without {exc}") from exc
