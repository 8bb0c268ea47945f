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
        if groups == 1 and b is not None:  # bias fused into the GEMM (beta = 1 on a broadcast bias)
            bias = pool.tensor(b).reshape(1, k_out, 1)
            y = torch.baddbmm(bias, weights.expand(n_batch, -1, -1), columns[:, 0])
        else:
            y = torch.matmul(weights, columns)
            if b is not None:
                y += pool.tensor(b).reshape(1, groups, k_out // groups, 1)
        y = y.reshape(n_batch, k_out, ho, wo)
    return y.numpy()


def applies(problem) -> bool:
    """1×1 filters (any stride, padding and groups)."""
    return tuple(problem.w_shape[2:]) == (1, 1)


register(KernelSpec(name="pointwise", op="conv2d", fn=pointwise, applies=applies))
