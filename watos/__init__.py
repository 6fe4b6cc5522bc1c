"""WATOS: plan LLM training on wafer-scale chips, compiler style.

Public API (imports torch lazily, so ``watos --help`` stays fast)::

    source = watos.load_model("llama3-70b")          # or a config.json, file.py:factory, an nn.Module
    graph = watos.trace(source, seq_len=4096, micro_batch=1)   # traced + default pass pipeline
"""
from watos.errors import WatosError
from watos.frontend.sources import ModelSource, load_model

__all__ = ["WatosError", "ModelSource", "load_model", "trace"]


def trace(source, *, seq_len: int = 2048, micro_batch: int = 1, dtype: str = "bf16",
          attention: str = "sdpa", replicate_blocks: bool = True, passes=None, instruments=()):
    """Trace ``source`` (a spec or :class:`ModelSource`) and run the pass pipeline on its IR."""
    from watos.ir.pass_manager import PassManager, default_pipeline
    from watos.frontend.trace import trace as trace_joint

    if not isinstance(source, ModelSource):
        source = load_model(source)
    graph = trace_joint(source, seq_len=seq_len, micro_batch=micro_batch, dtype=dtype,
                        attention=attention, replicate_blocks=replicate_blocks)
    return PassManager(passes if passes is not None else default_pipeline(), instruments).run(graph)
