"""The optimizer step of the traced training step: mixed-precision AdamW (Loshchilov & Hutter 2019).

Every parameter keeps fp32 moments and, for 16-bit weights, an fp32 master copy; the update runs on the
fp32 state and writes the new weights in the model's dtype. Each update is traced under its parameter's
module scope and names the parameter on every op (``PARAM_KEY``), so the optimizer is counted with its block.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.fx.traceback as fx_traceback

from watos.frontend.fx_import import PARAM_KEY

# Mixed-precision AdamW hyper-parameters: they change no shape or cost, only make the update concrete.
_ADAMW = {"lr": 1e-4, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1}


def adamw_states(dtype: torch.dtype) -> tuple[str, ...]:
    """Optimizer state per parameter: fp32 moments, plus an fp32 master copy of 16-bit weights."""
    return ("exp_avg", "exp_avg_sq") + (("master",) if dtype != torch.float32 else ())


def adamw_update(name: str, param: Any, grad: Any, state: dict[str, Any]) -> Any:
    """One AdamW step (Loshchilov & Hutter 2019, Algorithm 2) for one parameter, in place on its
    fp32 state, at step 1 (bias corrections are constants); returns the new weights in the model's
    dtype. Runs under the parameter's module scope so it is counted with its block, and names the
    parameter on every op."""
    module = name.rpartition(".")[0]
    fx_traceback.current_meta["nn_module_stack"] = {module: (module, "")}
    try:
        with fx_traceback.annotate({PARAM_KEY: name}):
            return _adamw_math(param, grad, state)
    finally:
        fx_traceback.current_meta.pop("nn_module_stack", None)


def _adamw_math(param: Any, grad: Any, state: dict[str, Any]) -> Any:
    master = state.get("master", param.detach())  # an fp32 parameter is its own master copy
    if grad is None:
        return master.to(param.dtype)
    g = grad.float()
    b1, b2 = _ADAMW["beta1"], _ADAMW["beta2"]
    state["exp_avg"].mul_(b1).add_(g, alpha=1 - b1)
    state["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
    denominator = (state["exp_avg_sq"] / (1 - b2)).sqrt_().add_(_ADAMW["eps"])
    master.mul_(1 - _ADAMW["lr"] * _ADAMW["weight_decay"])
    master.addcdiv_(state["exp_avg"], denominator, value=-_ADAMW["lr"] / (1 - b1))
    return master.to(param.dtype)
