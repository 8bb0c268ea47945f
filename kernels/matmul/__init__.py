"""matmul kernels: ``C = A @ B`` for 2-D float arrays."""
