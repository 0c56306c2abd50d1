"""One stream's DiT on several ranks (docs/parallel.md); two modes, both the single-process stream.

pipeline  the block stack split over N ranks (partition: contiguous, balanced by per-chunk block
          cost, each VACE hint block on the rank of the main layer it feeds); rank 0 keeps the
          whole stream (codec, text encoder, conditioner, schedule, KV-cache planning, the bridge)
          and its first share of blocks (root); ranks 1..N-1 run theirs (worker, shard), each
          holding only its own layers' KV cache. Bit for bit the single-process stream; it splits
          memory (14B, several hosts), not time: chunk c+1 needs chunk c's clean K/V in every
          layer, so the ranks take turns (only the clean pass overlaps the decode).
sequence  Ulysses (ulysses): every rank runs every block on a share of the chunk's tokens, with
          all-to-alls around self-attention and the KV cache split by heads: lower chunk latency
          on one NVLink host; equal to the single process up to fp32 round-off.

wire: headers over gloo and tensors over torch.distributed P2P (gloo on CPU, NCCL on GPU), every
wait bounded; launch: starting the ranks (spawn on one host, torchrun, several hosts).
"""
