"""Problem: the canonical, hashable description of one call — the tuning database's key.

Two problems that may want different kernels differ here; two calls that must share a choice map
to the same problem. Each problem has a stable one-line text form, used as the key in the YAML
file and accepted on the command line (the syntax and its defaults: examples/shapes.yaml):

    conv2d x=1x64x56x56 w=64x64x3x3 stride=1 pad=1 dilation=1 groups=1 float32
    matmul a=64x784 b=784x512 rank_b=32 float32 tol=0.01 weight=3f2a9c01d4e5b6a7

Pairs and padding print in their shortest form (``pad=1`` / ``pad=1,2`` / ``pad=0,1,0,1``).
``tol`` is present only when the caller overrode the default tolerance (a looser tolerance may
admit approximate kernels, so it is a different problem). ``weight`` says the weight is reused
across calls, so its one-time transforms (a kernel spec's ``prepare``: Winograd ``U``, the FFT
of the filter, SVD factors) are not part of each call's cost and are timed apart: for matmul it is
a digest of the right operand's contents (present when approximate kernels are eligible, whose
error depends on the data); for conv2d it is ``weight=fixed`` (a module parameter or an
``autotune.Weight``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from kernels import registry

if TYPE_CHECKING:  # numpy is imported where it is used: `autotune --help` needs none of it
    import numpy as np

Pair = tuple[int, int]
Quad = tuple[int, int, int, int]
DTYPES: tuple[str, ...] = ("float32", "float64")
#: Largest padded input or output (elements) a conv2d problem may have: 2^31 float64 values are
#: 16 GB, already beyond what the float64 reference can hold on a typical machine.
MAX_ELEMENTS = 2**31


class ProblemSyntaxError(ValueError):
    """A problem spec that cannot be parsed; the message says which token and why."""


class Problem:
    """What every op's problem class provides, so the dispatch core never branches on the op.

    A subclass (a frozen dataclass; its fields and class attributes: docs/architecture.md,
    "Adding an op") registered with :func:`register` is parsed, stored, tuned and dispatched like
    the built-in ops. ``EXACT_DEFAULT`` is the kernel of ``off`` mode and of non-finite input.
    """

    op: ClassVar[str]
    FIELDS: ClassVar[frozenset[str]]
    POSITIONAL: ClassVar[int]
    EXACT_DEFAULT: ClassVar[tuple[str, dict[str, Any]]]
    dtype: str
    tol: float | None
    weight: str | None

    @property
    def key(self) -> str:
        """The canonical text form (the database key)."""
        raise NotImplementedError

    @property
    def out_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    @property
    def flops(self) -> int:
        """Direct-equivalent FLOPs (2 per multiply-add), the yardstick for GFLOP/s."""
        raise NotImplementedError

    def random_inputs(self, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """Standard-normal operands of this problem's shapes and dtype (the tuner's inputs)."""
        raise NotImplementedError

    def call_args(self, inputs: tuple[np.ndarray, ...]) -> tuple[Any, ...]:
        """Positional arguments of a kernel call on ``inputs`` (operands, then geometry)."""
        return tuple(inputs)

    def with_batch(self, batch: int) -> Problem:
        """This problem with its batch (leading) dimension replaced."""
        raise NotImplementedError

    def exact(self, args: tuple[Any, ...]) -> np.ndarray:
        """The float64 result of a call with ``args``: the op's reference kernel on widened
        operands (the oracle every candidate is checked against)."""
        import numpy as np

        wide = tuple(a.astype(np.float64) if isinstance(a, np.ndarray) else a for a in args)
        return np.asarray(registry.reference(self.op).fn(*wide), dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for the YAML entry (tuples as lists, None fields left out)."""
        record = {"op": self.op, **asdict(self)}  # type: ignore[call-overload]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in record.items() if v is not None}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Problem:
        """Inverse of :meth:`to_dict` (lists back to tuples)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in record.items() if k != "op"})

    @classmethod
    def from_fields(cls, fields: dict[str, str], dtype: str, tol: float | None) -> Problem:
        """Build from the ``name=value`` tokens of the text form."""
        raise NotImplementedError

    def __str__(self) -> str:
        return self.key


#: op name → its problem class.
PROBLEMS: dict[str, type[Problem]] = {}
P = TypeVar("P", bound=type[Problem])


def register(cls: P) -> P:
    """Make ``cls`` an op the core parses, stores, tunes and dispatches (a class decorator)."""
    PROBLEMS[cls.op] = cls
    registry.add_op(cls.op, cls.POSITIONAL)
    return cls


def _normal(rng: np.random.Generator, dtype: str) -> Callable[[tuple[int, ...]], np.ndarray]:
    return lambda shape: rng.standard_normal(tuple(shape)).astype(dtype)


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def _pair_text(pair: Pair) -> str:
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]},{pair[1]}"


def _pad_text(pad: Quad) -> str:
    top, bottom, left, right = pad
    if top == bottom and left == right:
        return _pair_text((top, left))
    return ",".join(str(p) for p in pad)


def _suffix(tol: float | None, weight: str | None) -> str:
    return ("" if tol is None else f" tol={tol:g}") + ("" if weight is None else f" weight={weight}")


@register
@dataclass(frozen=True)
class ConvProblem(Problem):
    """One conv2d call: x (N, C, H, W) ⊛ w (K, C/groups, kh, kw)."""

    x_shape: tuple[int, int, int, int]
    w_shape: tuple[int, int, int, int]
    stride: Pair = (1, 1)
    padding: Quad = (0, 0, 0, 0)
    dilation: Pair = (1, 1)
    groups: int = 1
    dtype: str = "float32"
    tol: float | None = None
    weight: Literal["fixed"] | None = None
    op: ClassVar[str] = "conv2d"
    FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"x", "w", "stride", "pad", "padding", "dilation", "groups", "tol", "weight"}
    )
    POSITIONAL: ClassVar[int] = 7
    #: BLAS-based, any geometry, reference-grade accuracy.
    EXACT_DEFAULT: ClassVar[tuple[str, dict[str, Any]]] = ("im2col", {})

    def __post_init__(self) -> None:
        check_conv_geometry(self)

    @property
    def out_shape(self) -> tuple[int, int, int, int]:
        """(N, K, Ho, Wo)."""
        n, _, h, w = self.x_shape
        k, _, kh, kw = self.w_shape
        pt, pb, pl, pr = self.padding
        ho = (h + pt + pb - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        wo = (w + pl + pr - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        return (n, k, ho, wo)

    @property
    def flops(self) -> int:
        n, k, ho, wo = self.out_shape
        _, c_per_group, kh, kw = self.w_shape
        return 2 * n * k * ho * wo * c_per_group * kh * kw

    @property
    def key(self) -> str:
        return (
            f"conv2d x={_dims(self.x_shape)} w={_dims(self.w_shape)} stride={_pair_text(self.stride)} "
            f"pad={_pad_text(self.padding)} dilation={_pair_text(self.dilation)} groups={self.groups} "
            f"{self.dtype}{_suffix(self.tol, self.weight)}"
        )

    def random_inputs(self, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        normal = _normal(rng, self.dtype)
        return normal(self.x_shape), normal(self.w_shape), normal(self.w_shape[:1])

    def call_args(self, inputs: tuple[np.ndarray, ...]) -> tuple[Any, ...]:
        x, w, b = inputs
        return (x, w, b, self.stride, self.padding, self.dilation, self.groups)

    def with_batch(self, batch: int) -> ConvProblem:
        return replace(self, x_shape=(batch, *self.x_shape[1:]))

    def exact(self, args: tuple[Any, ...]) -> np.ndarray:
        """PyTorch's conv2d in float64 (:func:`kernels.conv2d.reference.torch_float64`)."""
        from kernels.conv2d.reference import torch_float64

        return torch_float64(*args)

    @classmethod
    def from_fields(cls, fields: dict[str, str], dtype: str, tol: float | None) -> ConvProblem:
        for required in ("x", "w"):
            if required not in fields:
                raise ProblemSyntaxError(f"conv2d spec needs {required}=...; e.g. x=1x64x56x56")
        pad_text = fields.get("pad", fields.get("padding", "0"))
        return cls(
            x_shape=_parse_shape(fields["x"], 4, f"x={fields['x']}"),  # type: ignore[arg-type]
            w_shape=_parse_shape(fields["w"], 4, f"w={fields['w']}"),  # type: ignore[arg-type]
            stride=_parse_pair(fields.get("stride", "1"), "stride"),
            padding=_parse_pad(pad_text, f"pad={pad_text}"),
            dilation=_parse_pair(fields.get("dilation", "1"), "dilation"),
            groups=_parse_ints(fields.get("groups", "1"), ",", "groups")[0],
            dtype=dtype,
            tol=tol,
            weight=fields.get("weight"),  # type: ignore[arg-type]
        )


@register
@dataclass(frozen=True)
class MatmulProblem(Problem):
    """One matmul call: a (m, k) @ b (k, n), optionally with truncated-SVD ranks."""

    a_shape: Pair
    b_shape: Pair
    dtype: str = "float32"
    rank_a: int | None = None
    rank_b: int | None = None
    tol: float | None = None
    weight: str | None = field(default=None)
    op: ClassVar[str] = "matmul"
    FIELDS: ClassVar[frozenset[str]] = frozenset({"a", "b", "rank_a", "rank_b", "tol", "weight"})
    POSITIONAL: ClassVar[int] = 2
    EXACT_DEFAULT: ClassVar[tuple[str, dict[str, Any]]] = ("blas", {})

    def __post_init__(self) -> None:
        check_matmul_geometry(self)

    @property
    def out_shape(self) -> Pair:
        return (self.a_shape[0], self.b_shape[1])

    @property
    def flops(self) -> int:
        m, k = self.a_shape
        return 2 * m * k * self.b_shape[1]

    @property
    def key(self) -> str:
        ranks = "".join(
            f" rank_{n}={r}" for n, r in (("a", self.rank_a), ("b", self.rank_b)) if r is not None
        )
        return (
            f"matmul a={_dims(self.a_shape)} b={_dims(self.b_shape)}{ranks} {self.dtype}"
            f"{_suffix(self.tol, self.weight)}"
        )

    def random_inputs(self, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        normal = _normal(rng, self.dtype)
        return normal(self.a_shape), normal(self.b_shape)

    def with_batch(self, batch: int) -> MatmulProblem:
        return replace(self, a_shape=(batch, self.a_shape[1]))

    def exact(self, args: tuple[Any, ...]) -> np.ndarray:
        """float64 GEMM on the one pool (numpy's OpenBLAS threads would spin beside the next timed
        runs): as exact as the reference loops and fast enough to check live calls."""
        import numpy as np

        from kernels import pool

        return pool.matmul(*(np.asarray(a, dtype=np.float64) for a in args))

    @classmethod
    def from_fields(cls, fields: dict[str, str], dtype: str, tol: float | None) -> MatmulProblem:
        for required in ("a", "b"):
            if required not in fields:
                raise ProblemSyntaxError(f"matmul spec needs {required}=...; e.g. a=64x784 b=784x512")
        ranks = {
            name: _parse_ints(fields[name], ",", name)[0] if name in fields else None
            for name in ("rank_a", "rank_b")
        }
        return cls(
            a_shape=_parse_shape(fields["a"], 2, f"a={fields['a']}"),  # type: ignore[arg-type]
            b_shape=_parse_shape(fields["b"], 2, f"b={fields['b']}"),  # type: ignore[arg-type]
            dtype=dtype,
            tol=tol,
            weight=fields.get("weight"),
            **ranks,
        )


# --- Parsing the text form. ------------------------------------------------------------------

_TOKEN = re.compile(r"^(?P<name>[a-z_]+)=(?P<value>\S+)$")


def _parse_ints(text: str, sep: str, token: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(sep))
    except ValueError:
        raise ProblemSyntaxError(f"{token!r}: expected integers separated by {sep!r}") from None


def _parse_pair(text: str, token: str) -> Pair:
    values = _parse_ints(text, ",", token)
    if len(values) not in (1, 2):
        raise ProblemSyntaxError(f"{token!r}: expected one or two integers")
    return (values[0], values[-1])


def _parse_pad(text: str, token: str) -> Quad:
    values = _parse_ints(text, ",", token)
    if len(values) in (1, 2):
        return (values[0], values[0], values[-1], values[-1])
    if len(values) != 4:
        raise ProblemSyntaxError(f"{token!r}: expected 1, 2 or 4 integers")
    return values  # type: ignore[return-value]


def _parse_shape(text: str, ndim: int, token: str) -> tuple[int, ...]:
    values = _parse_ints(text, "x", token)
    if len(values) != ndim:
        raise ProblemSyntaxError(f"{token!r}: expected {ndim} dimensions like {'x'.join('N' * ndim)}")
    return values


def parse_problem(spec: str) -> Problem:
    """Parse the text form (see the module docstring); ProblemSyntaxError names the bad token."""
    tokens = spec.split()
    if not tokens:
        raise ProblemSyntaxError("empty problem spec; expected e.g. 'conv2d x=1x3x32x32 w=8x3x3x3'")
    op, rest = tokens[0], tokens[1:]
    if op not in PROBLEMS:
        raise ProblemSyntaxError(f"unknown op {op!r}; expected {' or '.join(repr(o) for o in PROBLEMS)}")
    cls = PROBLEMS[op]
    fields: dict[str, str] = {}
    dtype = "float32"
    for token in rest:
        if token in DTYPES:
            dtype = token
            continue
        match = _TOKEN.match(token)
        if not match or match["name"] not in cls.FIELDS:
            raise ProblemSyntaxError(
                f"unexpected token {token!r} in a {op} spec; expected one of "
                f"{', '.join(sorted(cls.FIELDS))} as name=value, or a dtype ({', '.join(DTYPES)})"
            )
        fields[match["name"]] = match["value"]
    try:
        tol = float(fields["tol"]) if "tol" in fields else None
    except ValueError:
        raise ProblemSyntaxError(f"tol={fields['tol']!r}: expected a number") from None
    try:
        return cls.from_fields(fields, dtype, tol)
    except ProblemSyntaxError:
        raise
    except (ValueError, TypeError) as exc:
        raise ProblemSyntaxError(str(exc)) from None


def problem_from_dict(record: Mapping[str, Any]) -> Problem:
    """Inverse of ``to_dict`` (used when reading the YAML file)."""
    cls = PROBLEMS.get(record.get("op"))  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"unknown op {record.get('op')!r} in a problem record")
    return cls.from_dict(record)


# --- Validation of the built-in ops. ---------------------------------------------------------


def check_conv_geometry(p: ConvProblem) -> None:
    """Raise ValueError unless the shapes, stride, padding, dilation and groups are consistent."""
    if len(p.x_shape) != 4 or len(p.w_shape) != 4:
        raise ValueError(f"conv2d: x and w must be 4-D, got x={p.x_shape} w={p.w_shape}")
    if min(p.x_shape) < 1 or min(p.w_shape) < 1:
        raise ValueError(f"conv2d: shapes must be positive, got x={p.x_shape} w={p.w_shape}")
    if p.groups < 1:
        raise ValueError(f"conv2d: groups must be a positive int, got {p.groups}")
    c_in, k_out, c_per_group = p.x_shape[1], p.w_shape[0], p.w_shape[1]
    if c_in % p.groups or k_out % p.groups:
        raise ValueError(
            f"conv2d: groups={p.groups} must divide both x's {c_in} input channels and w's "
            f"{k_out} output channels"
        )
    if c_per_group * p.groups != c_in:
        raise ValueError(
            f"conv2d: w has {c_per_group} input channels per group but x has {c_in} "
            f"(groups={p.groups}); expected w.shape[1] == x.shape[1] // groups == "
            f"{c_in // p.groups}"
        )
    if min(p.stride) < 1 or min(p.dilation) < 1:
        raise ValueError(
            f"conv2d: stride and dilation must be >= 1, got stride={p.stride} dilation={p.dilation}"
        )
    if min(p.padding) < 0:
        raise ValueError(f"conv2d: padding must be >= 0, got {p.padding}")
    if p.dtype not in DTYPES:
        raise TypeError(f"conv2d: dtype must be one of {DTYPES}, got {p.dtype!r}")
    if p.weight not in (None, "fixed"):
        raise ValueError(f"conv2d: weight must be 'fixed' or absent, got {p.weight!r}")
    _, _, ho, wo = p.out_shape
    if ho < 1 or wo < 1:
        raise ValueError(
            f"conv2d: the (dilated) kernel {p.w_shape[2:]} does not fit the padded input "
            f"{p.x_shape[2:]} with padding {p.padding} and dilation {p.dilation}; "
            f"output would be {ho}x{wo}"
        )
    n, c_in, h, w = p.x_shape
    padded = n * c_in * (h + p.padding[0] + p.padding[1]) * (w + p.padding[2] + p.padding[3])
    if max(padded, n * p.w_shape[0] * ho * wo) > MAX_ELEMENTS:
        raise ValueError(
            f"conv2d: padding {p.padding} makes a padded input of {padded:.3g} elements and an "
            f"output of {n * p.w_shape[0] * ho * wo:.3g}; at most 2^31 elements are supported"
        )


def check_matmul_geometry(p: MatmulProblem) -> None:
    """Raise ValueError unless a @ b is defined and the ranks are in range."""
    if len(p.a_shape) != 2 or len(p.b_shape) != 2:
        raise ValueError(f"matmul: a and b must be 2-D, got a={p.a_shape} b={p.b_shape}")
    if min(p.a_shape) < 1 or min(p.b_shape) < 1:
        raise ValueError(f"matmul: shapes must be positive, got a={p.a_shape} b={p.b_shape}")
    if p.a_shape[1] != p.b_shape[0]:
        raise ValueError(
            f"matmul: a is {p.a_shape[0]}x{p.a_shape[1]} and b is {p.b_shape[0]}x{p.b_shape[1]}; "
            f"expected a.shape[1] == b.shape[0]"
        )
    if p.dtype not in DTYPES:
        raise TypeError(f"matmul: dtype must be one of {DTYPES}, got {p.dtype!r}")
    for name, rank, shape in (("rank_A", p.rank_a, p.a_shape), ("rank_B", p.rank_b, p.b_shape)):
        if rank is not None and not 1 <= rank <= min(shape):
            raise ValueError(f"matmul: {name} must be in 1..{min(shape)}, got {rank}")
