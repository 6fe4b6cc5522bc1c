"""Convolutions as the GEMMs accelerators run them (implicit GEMM: Chetlur et al. 2014, "cuDNN: Efficient
Primitives for Deep Learning", §3, lower a convolution to one matrix multiply without materialising it).

A forward convolution of ``x [N, Cin, *spatial_in]`` with ``w [Cout, Cin/groups, *kernel]`` into
``y [N, Cout, *spatial_out]`` is a GEMM of m = N·∏spatial_out rows, n = Cout columns and a reduction of
k = (Cin/groups)·∏kernel, so its FLOPs are 2·m·n·k = 2·N·Cout·Hout·Wout·Cin·kh·kw/groups (2-D). A transposed
convolution (``w [Cin, Cout/groups, *kernel]``) is the data gradient of an ordinary one: every input element
meets (Cout/groups)·∏kernel weights, 2·numel(x)·(Cout/groups)·∏kernel. Its backward computes the data
gradient and the weight gradient, each a GEMM of the same three dimensions permuted, so each costs the
forward's FLOPs: 2× forward when both are needed (1× for a first layer, whose input needs no gradient).
"""
from __future__ import annotations

import math

from watos.ir import TensorType


def convolution_gemm(output_side: TensorType, weight: TensorType) -> tuple[int, int, int]:
    """(m, n, k) of a convolution's implicit GEMM: ``output_side`` is the tensor with one row per output
    position and one column per weight row (the output ``y`` of an ordinary convolution, the input ``x`` of a
    transposed one), ``weight`` its ``[rows, depth, *kernel]`` weight."""
    columns = weight.shape[0]
    return output_side.numel // columns, columns, math.prod(weight.shape[1:])


def convolution_flops(output_side: TensorType, weight: TensorType, passes: int = 1) -> int:
    """FLOPs of ``passes`` GEMMs of a convolution's shape (module docstring): 2·m·n·k each."""
    m, n, k = convolution_gemm(output_side, weight)
    return 2 * m * n * k * passes
