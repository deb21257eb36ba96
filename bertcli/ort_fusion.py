"""ONNX Runtime's fused transformer operators in an exported graph: onnxscript's `optimize_for_ort`.

The dynamo exporter writes attention, LayerNorm and GELU out as their elementwise steps. onnxscript's ORT fusions
(`onnxscript.rewriter.ort_fusions.optimize_for_ort`, written for the dynamo exporter's graphs) rewrite them into
ONNX Runtime's contrib operators: Attention / MultiHeadAttention, SkipLayerNormalization, BiasGelu. ONNX Runtime's
own transformer optimizer (`onnxruntime.transformers.optimizer.optimize_model`, model_type bert) fuses LayerNorm
and GELU on these graphs but not attention: it fused attention on the TorchScript exporter's graph of
transformers' own eager-attention forward, and on neither exporter's graph of bertcli's forward (SDPA).

Measured on a shared 2-core AMD EPYC (Zen 4, AVX-512 VNNI), one thread, MiniLM (6 x 384) fine-tuned on movie
reviews, batches of 64 x 128 real reviews, CPU time per batch, best of 6 to 10 (benchmarks/bench_onnx_fusion.py):
PyTorch fp32 ~2,250 ms; ONNX fp32 as exported 1.00-1.02x of it, fused 1.09-1.12x; ORT's optimizer 0.99-1.06x;
int8 as quantized 2.20-2.25x, quantized then fused 2.31-2.39x. fp32 stays GEMM-bound: the fused graph spends ~60% of
its time in MatMul and ~25% in Attention, work PyTorch's GEMMs do as fast.

int8 is quantized from the graph as exported, then fused: quantizing the fused graph leaves the packed QKV weights
of its Attention in fp32 (slower), and ONNX Runtime's QAttention that would quantize them forces a reduced 7-bit
range, which changed 14% of the movie-review predictions. Fused after quantization, the projections stay
MatMulInteger and attention becomes a fp32 MultiHeadAttention.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

CONTRIB = "com.microsoft"  # ONNX Runtime's operator domain: what a fusion puts into the graph


def fuse_for_ort(source: Path, target: Path) -> dict[str, int]:
    """Write `source` with onnxscript's ORT fusions applied to `target`; return the count of each ONNX Runtime
    operator the fused graph holds ({} when nothing fused). Raises what onnxscript raises (the caller keeps the
    graph as exported)."""
    import onnx_ir as ir
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    model = ir.load(str(source))
    model, _ = optimize_for_ort(model)
    ir.save(model, str(target))
    return fused_operators(target)


def fused_operators(path: Path) -> dict[str, int]:
    """{op_type: count} of the ONNX Runtime (com.microsoft) operators in the graph at `path`, by name."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return dict(sorted(Counter(n.op_type for n in graph.node if n.domain == CONTRIB).items()))
