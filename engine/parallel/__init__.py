"""Pipeline parallelism over DiT blocks (docs/parallel.md).

The block stack is split over N ranks (partition: contiguous, balanced by per-chunk block cost,
each VACE hint block on the rank of the main layer it feeds); rank 0 keeps the whole stream
(codec, text encoder, conditioner, schedule, KV-cache planning, the bridge) and its first share
of blocks (root); ranks 1..N-1 run their blocks (worker) on activations passed with
torch.distributed point-to-point messages (wire: gloo on CPU, NCCL on GPU), each holding only
its own layers' KV cache (shard). launch starts the ranks.

Mode "exact": one causal stream, exactly the single-process computation (same operations in the
same order). Chunk c+1 needs chunk c's clean K/V in every layer, so the ranks take turns: this
splits memory and weights (a 14B DiT over several cards), not time. Throughput modes (stream
batching, two independent streams) are described in docs/parallel.md with what they would need.
"""
