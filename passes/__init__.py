"""WATOS's compiler passes, one per file, and the API to write one.

A file dropped into this folder (or given with ``--plugin``) registers its passes when the registry is
first read (:func:`watos.ir.pass_manager.registered_passes`); each joins the pipeline of the ``stage`` it
declares (``import``, ``lower`` or ``cost``). A pass imports what it needs from here::

    from watos.passes import Graph, OpKind, Pass, PassError, register_pass

and may declare the typed analysis it writes with ``@analysis("key")`` (:mod:`watos.ir.analyses`).
"""
from watos.ir import Graph, Op, OpKind, Phase, TensorType, Value
from watos.ir.analyses import analysis
from watos.ir.pass_manager import Pass, PassConfig, PassError, register_pass

__all__ = ["Graph", "Op", "OpKind", "Pass", "PassConfig", "PassError", "Phase", "TensorType", "Value", "analysis",
           "register_pass"]
