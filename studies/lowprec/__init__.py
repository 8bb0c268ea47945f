"""Emulated low-precision kernels for the precision study (pure compute; never registered).

Real hardware formats this CPU lacks are emulated exactly: values live in float64 "carriers" that
are always exactly representable in the emulated format, and every arithmetic operation is rounded
to its format right after it is computed (:mod:`studies.lowprec.rounding`). Because float64 has
more than ``2p + 2`` significand bits for every emulated format of precision ``p ≤ 24``, one
float64 operation followed by one rounding gives the correctly rounded result of that operation in
the emulated format (Figueroa, "When is double rounding innocuous?", 1995) — bit-identical to
native hardware without fused multiply-add.

* :mod:`.rounding` — round-to-nearest-even to an (exponent bits, mantissa bits) format;
* :mod:`.float_conv` — direct, im2col + GEMM and Winograd F(m×m, 3×3) with every product,
  transform step and accumulation rounded; :mod:`.float_fft` — FFT convolution on a radix-2 FFT
  rounded after every butterfly operation; :mod:`.float_matmul` — the GEMM they share;
* :mod:`.integer` — symmetric quantisation, integer conv/matmul with int32/int64 accumulators and
  Winograd with integer-scaled transforms.

These modules live with the studies, outside ``kernels``, and register no ``KernelSpec``: the
registry never sees them; they exist to measure error, not to be tuned.
"""
