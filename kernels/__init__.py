"""Pure compute kernels for conv2d and matmul.

Nothing here tunes, reads files or imports ``autotune``: each module registers its kernels in
:mod:`kernels.registry`, and the autotuner discovers them there. Importing the package puts every
kernel's threads on PyTorch's OpenMP pool (:mod:`kernels.pool`).
"""

from kernels import pool

pool.configure()
