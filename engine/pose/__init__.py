"""UniAnimate-DiT pose conditioning for the causal DiT: the pose CNNs and pose_proj (embedding),
the stream's pose video and its exact per-chunk embedding window (timeline), and the per-chunk
conditioner the generator calls (conditioner). docs/pose.md."""
from vacelive.engine.pose.conditioner import POSE_SOURCES, POSE_STRENGTH_RANGE, PoseChunk, PoseConditioner
from vacelive.engine.pose.embedding import (
    POSE_CHANNELS, PoseEmbedding, load_pose_embedding, load_pose_proj,
)
from vacelive.engine.pose.timeline import LOOKAHEAD, LOOKAHEAD_MODES, PoseTimeline, chunk_pixel_range, window

__all__ = [
    "POSE_SOURCES", "POSE_STRENGTH_RANGE", "PoseChunk", "PoseConditioner",
    "POSE_CHANNELS", "PoseEmbedding", "load_pose_embedding", "load_pose_proj",
    "LOOKAHEAD", "LOOKAHEAD_MODES", "PoseTimeline", "chunk_pixel_range", "window",
]
