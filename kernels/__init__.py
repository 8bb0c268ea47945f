"""Pure compute kernels for conv2d and matmul.

Nothing here tunes, reads files or imports ``autotune``: each module registers its kernels in
:mod:`kernels.registry`, and the autotuner discovers them there.
"""

import os

# Two OpenMP runtimes share this process: Numba's (system libgomp) and PyTorch's (its bundled
# libgomp). With the default busy-wait policy, threads of one runtime keep spinning after a
# parallel region and steal the cores the other one (or OpenBLAS) needs next: measured here, an
# im2col gather followed by a BLAS GEMM took 8 ms instead of 2.6 ms. Sleeping idle threads cost
# PyTorch ~10% on a lone conv but make every mix of kernels predictable. Only a default: a value
# the user set wins, and it only takes effect if no OpenMP runtime has been loaded yet.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
