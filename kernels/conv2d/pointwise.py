"""1×1 convolutions as one GEMM per group, without a gather.

A 1×1 filter makes the convolution a matrix product over channels:
``y[n, g] (K/G × Ho·Wo) = w[g] (K/G × C/G) @ x_s[n, g] (C/G × Ho·Wo)``, where ``x_s`` is the
(zero-padded) input subsampled by the stride — for stride 1 and no padding the input itself,
viewed as (N, G, C/G, H·W) at no cost. The GEMMs run batched through :func:`kernels.pool.matmul`
(on the OpenMP pool shared with PyTorch) and the bias is added in place. This is the GEMM im2col
would do, minus its gather (ResNet's projection shortcuts and bottleneck layers are 1×1).
"""

from __future__ import annotations

import torch

from kernels import pool
from kernels.conv2d._common import output_hw, pad_nchw
from kernels.registry import KernelSpec, register


def pointwise(x, w, b, stride, padding, dilation, groups):
    """1×1 convolution: (strided) input view, then ``w @ x`` per (batch, group), bias in place.

    The subsampling copy, the GEMMs and the bias addition are PyTorch tensor operations on
    zero-copy views, so all three run on the one OpenMP pool.
    """
    n_batch, c_in = x.shape[0], x.shape[1]
    k_out = w.shape[0]
    ho, wo = output_hw(x.shape[2:], (1, 1), stride, padding, dilation)
    sh, sw = stride
    with torch.no_grad():
        xt = pool.tensor(pad_nchw(x, padding))[:, :, : (ho - 1) * sh + 1 : sh, : (wo - 1) * sw + 1 : sw]
        columns = xt.reshape(n_batch, groups, c_in // groups, ho * wo)  # copies only when strided
        weights = pool.tensor(w).reshape(groups, k_out // groups, c_in // groups)
        if groups == 1:
            y = _gemm(weights[0], columns[:, 0], None if b is None else pool.tensor(b).reshape(k_out, 1))
        else:
            y = torch.matmul(weights, columns)
            if b is not None:
                y += pool.tensor(b).reshape(1, groups, k_out // groups, 1)
        y = y.reshape(n_batch, k_out, ho, wo)
    return y.numpy()


def _gemm(w: torch.Tensor, columns: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``w (K×C) @ columns[n] (C×P) (+ bias)`` for every n: one mm for a single image, else bmm;
    the bias is the GEMM's C operand (beta = 1), not a second pass."""
    if columns.shape[0] == 1:
        product = torch.mm(w, columns[0]) if bias is None else torch.addmm(bias, w, columns[0])
        return product.unsqueeze(0)
    stacked = w.expand(columns.shape[0], -1, -1)
    return torch.bmm(stacked, columns) if bias is None else torch.baddbmm(bias.unsqueeze(0), stacked, columns)


def applies(problem) -> bool:
    """Whether the filter is 1×1 (any stride, padding and groups)."""
    return tuple(problem.w_shape[2:]) == (1, 1)


register(KernelSpec(name="pointwise", op="conv2d", fn=pointwise, applies=applies, needs="1×1 filters"))
