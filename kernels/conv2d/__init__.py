"""conv2d kernels (NCHW, cross-correlation, same semantics as ``torch.nn.functional.conv2d``)."""
