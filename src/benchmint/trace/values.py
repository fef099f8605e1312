"""The typed values of an execution trace's op arguments, one per argument (what
:attr:`benchmint.trace.model.Node.inputs` and :attr:`~benchmint.trace.model.Node.outputs` hold), and the ET's
tensor element types as torch dtype names.

=========================== ====================================================================
ET type                     Python value
=========================== ====================================================================
``Tensor(float)`` ...       :class:`TensorRef` (``dtype`` is a torch dtype name such as ``"float32"``;
                            an undefined tensor, ``Tensor(nullptr (uninitialized))``, has ``dtype None``)
``Int``, ``SymInt``         ``int``
``Double``, ``SymFloat``    ``float``
``Bool``, ``SymBool``       ``bool``
``String``                  ``str``
``None``                    ``None``
``Device``                  :class:`Device`
``Generator``               :class:`Generator`
``GenericList[...]``        ``list`` of typed values (tensors, ints, ... nested as written)
``Tuple[...]``              ``tuple`` of typed values
anything else (``Object``)  :class:`Opaque` (the ET type string and the raw JSON value; never an error)
=========================== ====================================================================

Nothing in this module imports torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

# ----------------------------------------------------------------------------------------------- dtypes

_DTYPES: dict[str, str] = {
    "float": "float32",
    "double": "float64",
    "c10::Half": "float16",
    "Half": "float16",
    "c10::BFloat16": "bfloat16",
    "BFloat16": "bfloat16",
    "long": "int64",
    "long int": "int64",
    "long long": "int64",
    "int64_t": "int64",
    "int": "int32",
    "short": "int16",
    "short int": "int16",
    "signed char": "int8",
    "unsigned char": "uint8",
    "uint16_t": "uint16",
    "unsigned short": "uint16",
    "uint32_t": "uint32",
    "unsigned int": "uint32",
    "uint64_t": "uint64",
    "unsigned long": "uint64",
    "bool": "bool",
    "c10::complex<float>": "complex64",
    "c10::complex<double>": "complex128",
    "c10::complex<c10::Half>": "complex32",
    "c10::Float8_e4m3fn": "float8_e4m3fn",
    "c10::Float8_e5m2": "float8_e5m2",
    "c10::Float8_e4m3fnuz": "float8_e4m3fnuz",
    "c10::Float8_e5m2fnuz": "float8_e5m2fnuz",
    "c10::qint8": "qint8",
    "c10::quint8": "quint8",
    "c10::qint32": "qint32",
}


def dtype_from_et(type_str: str) -> str | None:
    """Torch dtype name for an ET tensor type: ``"Tensor(float)"`` -> ``"float32"``, ``"Tensor(c10::Half)"``
    -> ``"float16"``; ``None`` for an undefined tensor (``Tensor(nullptr (uninitialized))``); an unknown
    element type is returned as written."""
    inner = type_str[7:-1] if type_str.startswith("Tensor(") and type_str.endswith(")") else type_str
    if inner.startswith("nullptr") or inner == "":
        return None
    return _DTYPES.get(inner, inner)


# ------------------------------------------------------------------------------------------ typed values


class Device:
    """A ``Device`` argument (``"cpu"``, ``"cuda:0"``). ``str(d)`` is the name as written."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    @property
    def type(self) -> str:
        return self.name.split(":", 1)[0]

    @property
    def index(self) -> int | None:
        _, _, idx = self.name.partition(":")
        return int(idx) if idx.isdigit() else None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Device) and other.name == self.name

    def __hash__(self) -> int:
        return hash(("Device", self.name))

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"Device({self.name!r})"


class Generator:
    """A ``Generator`` argument (a random number generator); ``raw`` is the value as written."""

    __slots__ = ("raw",)

    def __init__(self, raw: Any):
        self.raw = raw

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Generator) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(("Generator", repr(self.raw)))

    def __repr__(self) -> str:
        return f"Generator({self.raw!r})"


class Opaque:
    """An argument of a type the model does not interpret (``Object``, ``Stream``, a future type): the ET
    type string and the raw JSON value, kept so nothing is lost."""

    __slots__ = ("type", "raw")

    def __init__(self, type: str, raw: Any):
        self.type = type
        self.raw = raw

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and (other.type, other.raw) == (self.type, self.raw)

    def __hash__(self) -> int:
        return hash(("Opaque", self.type, repr(self.raw)))

    def __repr__(self) -> str:
        return f"Opaque({self.type!r}, {self.raw!r})"


class TensorRef:
    """A tensor argument of a node.

    ``tensor_id``, ``storage_id``, ``offset`` (in elements), ``numel``, ``itemsize`` and ``device`` are as
    written in the ET value ``[tensor_id, storage_id, offset, numel, itemsize, device]``; ``shape`` and
    ``strides`` come from the node's ``shapes``/``strides`` (``strides`` is ``None`` before schema 1.1.1);
    ``dtype`` is the torch dtype name (``"float32"``; ``None`` for an undefined tensor) and ``type`` the ET type
    string (``"Tensor(float)"``).

    The identity of a tensor in the trace is :attr:`key` (PyTorch reuses tensor ids for views of one storage):
    ``(tensor_id, storage_id, offset, numel, itemsize, device)``.
    """

    __slots__ = ("tensor_id", "storage_id", "offset", "numel", "itemsize", "device", "shape", "strides", "dtype",
                 "type")

    def __init__(self, tensor_id: int, storage_id: int, offset: int, numel: int, itemsize: int, device: str,
                 shape: tuple[int, ...] = (), strides: tuple[int, ...] | None = None, dtype: str | None = None,
                 type: str = "Tensor"):
        self.tensor_id = tensor_id
        self.storage_id = storage_id
        self.offset = offset
        self.numel = numel
        self.itemsize = itemsize
        self.device = device
        self.shape = shape
        self.strides = strides
        self.dtype = dtype
        self.type = type

    @property
    def key(self) -> tuple[int, int, int, int, int, str]:
        """Unique identity of this tensor within a trace."""
        return (self.tensor_id, self.storage_id, self.offset, self.numel, self.itemsize, self.device)

    @property
    def storage_key(self) -> tuple[int, str]:
        """Identity of the storage the tensor lives in: ``(storage_id, device)``."""
        return (self.storage_id, self.device)

    @property
    def nbytes(self) -> int:
        """Bytes of the tensor's own elements (``numel * itemsize``)."""
        return self.numel * self.itemsize

    @property
    def span(self) -> int:
        """Elements of the storage the tensor reaches from its offset: from shape and strides when the trace
        has strides (an expanded view reaches fewer than ``numel``), else ``numel`` (contiguous)."""
        st, sh = self.strides, self.shape
        if st is None or len(st) != len(sh):
            return self.numel
        if 0 in sh:
            return 0
        return 1 + sum((d - 1) * abs(x) for d, x in zip(sh, st, strict=True))

    @property
    def is_undefined(self) -> bool:
        """An undefined tensor (``Tensor(nullptr (uninitialized))``): no storage, nothing to allocate."""
        return self.dtype is None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TensorRef) and other.key == self.key and other.shape == self.shape

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return (f"TensorRef(id={self.tensor_id}, storage={self.storage_id}, offset={self.offset}, "
                f"numel={self.numel}, dtype={self.dtype}, shape={list(self.shape)}, device={self.device!r})")


Value = TensorRef | int | float | bool | str | None | Device | Generator | Opaque | list | tuple
"""One typed argument value (see the module docstring for the mapping from ET types)."""


def freeze(x: Any) -> Any:
    if isinstance(x, list):
        return tuple(freeze(v) for v in x)
    return x


def iter_tensors(values: Iterable[Value]) -> Iterator[TensorRef]:
    for v in values:
        if isinstance(v, TensorRef):
            yield v
        elif isinstance(v, list | tuple):
            yield from iter_tensors(v)


_SCALAR_TYPES = ((bool, "Bool"), (int, "Int"), (float, "Double"), (str, "String"), (Device, "Device"),
                 (Generator, "Generator"))  # bool before int: a bool is an int


def et_type_of(v: Value) -> str:
    """The ET type string of a typed value (the inverse of the decoder, for values built in Python)."""
    if isinstance(v, TensorRef | Opaque):
        return v.type
    if v is None:
        return "None"
    for cls, name in _SCALAR_TYPES:
        if isinstance(v, cls):
            return name
    if isinstance(v, list | tuple):
        return ("GenericList[" if isinstance(v, list) else "Tuple[") + ",".join(map(et_type_of, v)) + "]"
    return "Object"


def _per_value(v: Value, attr: str, other: Any) -> Any:
    if isinstance(v, TensorRef):
        return getattr(v, attr)
    if isinstance(v, list | tuple):
        return tuple(_per_value(x, attr, other) for x in v)
    return other


def shape_of(v: Value) -> Any:
    """The shape of a typed value as the ET writes it: a tensor's, nested for lists; ``()`` for a scalar."""
    return _per_value(v, "shape", ())


def strides_of(v: Value) -> Any:
    """The strides of a typed value, nested for lists; ``None`` for a scalar."""
    return _per_value(v, "strides", None)
