"""Pure compute kernels for conv2d and matmul.

Nothing here tunes, reads files or imports ``autotune``: each module registers its kernels in
:mod:`kernels.registry`, and the autotuner discovers them there. Importing any kernel module puts
its threads on PyTorch's OpenMP pool (:mod:`kernels.pool`, configured when first imported) and
warms glibc's allocator once (:func:`kernels.workspace.warm_allocator`).
"""
