"""The V2V input texture of the run loop (`--input`), beside the control texture (`--control`).

With `input_mode = video` each chunk's request carries the input frames the engine restyles
(engine/v2v.py):
* an input source is connected: its newest `n` frames (FrameHistory.window: a contiguous run of
  the newest frames, never an old backlog; a slow chunk skips frames, it never queues them);
* no input source, or nothing has arrived there yet: the control texture is the input. When the control window already goes to
  VACE (`video_enabled`), the request carries it once, as `video`, and the engine takes its input
  from there (one copy over a remote link); with `video_enabled` off it goes as `input_video`.
With `input_mode = text` nothing is added. The loop never waits for input frames: a chunk whose
input has not arrived yet is generated from text, with the engine's notice.
"""
from __future__ import annotations

from typing import Any, Mapping


class V2VInput:
    def __init__(self, history: Any = None) -> None:
        self.history = history  # FrameHistory of the input texture, or None
        self.last_counter: int | None = None  # source counter of the newest frame last sent

    def fields(self, values: Mapping[str, Any], n: int, video: Any, control: Any) -> dict[str, Any]:
        """Request fields for this chunk: {} or {"input_video": frames [n, H, W, 4]}.
        `video` is what the request already carries as VACE video; `control` the control history."""
        if values.get("input_mode") != "video":
            return {}
        window = self.history.window(n) if self.history is not None else None
        if window is None:  # no input texture, or nothing arrived there yet: the control texture
            if video is not None:
                return {}  # the engine reads its input from `video`
            window = control.window(n) if control is not None else None
            if window is None:
                return {}
        self.last_counter = window.newest_counter
        return {"input_video": window.frames}
