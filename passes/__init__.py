"""WATOS's compiler passes, one per file, and the API to write one.

A file dropped into this folder (or given with ``--plugin``) registers its passes when the registry is
first read (:func:`watos.ir.pass_manager.registered_passes`). A pass imports what it needs from here::

    from watos.passes import Graph, OpKind, Pass, PassError, register_pass
"""
from watos.ir import Graph, Op, OpKind, Phase, TensorType, Value
from watos.ir.pass_manager import Pass, PassConfig, PassError, register_pass

__all__ = ["Graph", "Op", "OpKind", "Pass", "PassConfig", "PassError", "Phase", "TensorType", "Value",
           "register_pass"]
