"""Turn a dataset (npz) and the config's shapes/values into feeds the model accepts.

Dataset arrays: `X` feeds the model's first input, `X_<input name>` a named one, `y` holds labels.
Float data is quantized for int8/uint8 inputs that carry a scale and zero-point; other dtype
changes must be exact (integral values in range), or the user gets an error saying what to store.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from harness.runtimes.base import TensorSpec


class DataError(Exception):
    """The dataset or the configured inputs do not fit the model; the message says how to fix."""


PICKLED = (
    "holds pickled Python objects, which harness never loads; save plain numeric arrays "
    "(np.savez with numeric dtypes)"
)


def load_npz(path: str) -> dict[str, np.ndarray]:
    """All arrays of an .npz file, refusing pickled objects (never unpickled)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise DataError(f"{path}: {PICKLED}") from exc
        raise DataError(f"{path}: not a readable .npz file ({exc})") from exc
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from exc


def load_npz_rows(path: str, rows: Sequence[int]) -> tuple[dict[str, np.ndarray], int]:
    """The input arrays (`X`, `X_<name>`) of an .npz at sample `rows` only, and how many samples
    the dataset has. Rows are read where they lie in the file, the others never: a board that
    answers 64 samples of a 300 MB test set holds 64 rows, not the set."""
    wanted = sorted({int(r) for r in rows})
    arrays: dict[str, np.ndarray] = {}
    total: int | None = None
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                key = member.removesuffix(".npy")
                if not key.startswith("X"):
                    continue  # labels and anything else stay on the host
                with archive.open(member) as stream:
                    array, count = _read_rows(stream, wanted, f"{path}: array {key}")
                if total is not None and count != total:
                    raise DataError(f"{path}: array {key} has {count} samples, others {total}")
                arrays[key], total = array, count
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from exc
    return arrays, total or 0


def _read_rows(stream: IO[bytes], rows: list[int], source: str) -> tuple[np.ndarray, int]:
    """Rows of one .npy member (seeking past the others), and its sample count."""
    fmt = np.lib.format
    version = fmt.read_magic(stream)
    if version == (1, 0):
        shape, fortran, dtype = fmt.read_array_header_1_0(stream)
    else:
        shape, fortran, dtype = fmt.read_array_header_2_0(stream)
    if dtype.hasobject:
        raise DataError(f"{source}: {PICKLED}")
    if not shape:
        raise DataError(f"{source} has no sample axis; store one row per sample")
    count, row_shape = int(shape[0]), tuple(shape[1:])
    if rows and not 0 <= rows[0] <= rows[-1] < count:
        raise DataError(f"{source}: rows {rows[0]}..{rows[-1]} asked of its {count} samples")
    if fortran and len(shape) > 1:  # rows are not contiguous: read it whole, keep the rows
        whole = fmt.read_array(stream, allow_pickle=False)
        return np.ascontiguousarray(whole[rows]), count
    row_bytes = int(np.prod(row_shape, dtype=np.int64)) * dtype.itemsize
    start = stream.tell()
    out = np.empty((len(rows), *row_shape), dtype=dtype)
    for position, row in enumerate(rows):
        stream.seek(start + row * row_bytes)
        block = stream.read(row_bytes)
        if len(block) != row_bytes:
            raise DataError(f"{source}: the file ends inside row {row}")
        out[position] = np.frombuffer(block, dtype=dtype).reshape(row_shape)
    return out, count


QUANTIZE_BLOCK_BYTES = 16 << 20


def to_dtype(array: np.ndarray, spec: TensorSpec, source: str) -> np.ndarray:
    """Cast or quantize `array` to what `spec` takes."""
    target = np.dtype(spec.dtype)
    if array.dtype == target:
        return array
    quant = spec.quantization
    if quant is not None and array.dtype.kind == "f" and target.kind in "iu":
        info = np.iinfo(target)
        out = np.empty(array.shape, dtype=target)
        # Block by block: float64 temporaries of a whole image dataset would cost 8x its size.
        rows = max(1, QUANTIZE_BLOCK_BYTES // max(1, array[:1].size * 8))
        for begin in range(0, max(1, array.shape[0] if array.ndim else 1), rows):
            block = array[begin : begin + rows] if array.ndim else array
            scaled = np.round(block.astype(np.float64) / quant.scale) + quant.zero_point
            if array.ndim:
                out[begin : begin + rows] = np.clip(scaled, info.min, info.max)
            else:
                out[...] = np.clip(scaled, info.min, info.max)
        return out
    if target.kind == "f" and array.dtype.kind in "fiub":
        return array.astype(target)
    if target.kind == "b" and array.dtype.kind in "iub":
        return array.astype(target)
    if target.kind in "iu" and array.dtype.kind in "fiub":
        info = np.iinfo(target)
        if array.size and (
            not np.array_equal(array, np.round(array))
            or array.min() < info.min
            or array.max() > info.max
        ):
            raise DataError(
                f"{source} is {array.dtype} but model input {spec.name!r} is {target} without "
                f"quantization parameters: store integer values in [{info.min}, {info.max}]"
            )
        return array.astype(target)
    raise DataError(
        f"{source} is {array.dtype} and model input {spec.name!r} is {target}: harness cannot "
        "convert between them; store the array as " + str(target)
    )


def dequantize(array: np.ndarray, spec: TensorSpec) -> np.ndarray:
    quant = spec.quantization
    if quant is None or array.dtype.kind not in "iu":
        return array
    return ((array.astype(np.float32) - quant.zero_point) * quant.scale).astype(np.float32)


def _fits(shape: tuple[int, ...], spec: TensorSpec) -> bool:
    if spec.shape is None:
        return True
    if len(shape) != len(spec.shape):
        return False
    return all(
        not isinstance(d, int) or d < 0 or d == s for d, s in zip(spec.shape, shape, strict=True)
    )


def _shape_text(spec: TensorSpec) -> str:
    if spec.shape is None:
        return "[?]"
    return (
        "[" + ", ".join(str(d) if isinstance(d, int) and d >= 0 else "?" for d in spec.shape) + "]"
    )


@dataclass
class Feeds:
    """Prepared inputs: per input name, either a per-sample stack or one constant array."""

    per_sample: dict[str, np.ndarray]  # name -> array whose first axis indexes samples
    keep_axis: dict[str, bool]  # True: slice i:i+1 (model has the batch axis); False: index i
    constants: dict[str, np.ndarray]
    count: int  # samples in the dataset (0: no dataset, generated input only)
    batch_assumed: tuple[str, ...] = ()  # inputs whose dynamic batch dim was set to 1

    def sample(self, index: int) -> dict[str, np.ndarray]:
        feeds = dict(self.constants)
        for name, stack in self.per_sample.items():
            feeds[name] = stack[index : index + 1] if self.keep_axis[name] else stack[index]
        return feeds

    def shapes(self) -> dict[str, tuple[int, ...]]:
        first = self.sample(0) if self.count else dict(self.constants)
        return {name: tuple(value.shape) for name, value in first.items()}


def _configured_shape(
    spec: TensorSpec, input_shapes: Mapping[str, Sequence[int]], where: str
) -> tuple[int, ...]:
    if spec.name in input_shapes:
        shape = tuple(int(d) for d in input_shapes[spec.name])
        if not _fits(shape, spec):
            raise DataError(
                f"{where}: input_shapes.{spec.name} = {list(shape)} does not fit the model's "
                f"input {spec.name!r} {_shape_text(spec)}"
            )
        return shape
    if spec.shape is not None and not spec.dynamic:
        return tuple(int(d) for d in spec.shape if isinstance(d, int))
    if batch_only_dynamic(spec):
        assert spec.shape is not None
        return (1, *(int(d) for d in spec.shape[1:] if isinstance(d, int)))
    example = [1 if not isinstance(d, int) or d < 0 else d for d in spec.shape or (1,)]
    free = [i for i, d in enumerate(spec.shape or (None,)) if not isinstance(d, int) or d < 0]
    raise DataError(
        f"model input {spec.name!r} has dynamic shape {_shape_text(spec)} and nothing says its "
        f"size: set input_shapes = {{ {toml_key(spec.name)} = {example} }} (with the sizes "
        f"your data has in place of the 1s at dims {', '.join(map(str, free))}: 1 there "
        f"measures a degenerate input) for this model in {where}"
    )


def batch_only_dynamic(spec: TensorSpec) -> bool:
    """Only the first (batch) dim is dynamic, as keras and most exporters write: it runs at
    batch 1 without configuration."""
    if spec.shape is None or len(spec.shape) < 2:
        return False
    first, rest = spec.shape[0], spec.shape[1:]
    return (not isinstance(first, int) or first < 0) and all(
        isinstance(d, int) and d >= 0 for d in rest
    )


def toml_key(name: str) -> str:
    """`name` as a TOML key: bare when it may be, quoted otherwise (`"serving_default:0"`)."""
    import json
    import re

    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


def check_input_names(
    names: Sequence[str],
    input_shapes: Mapping[str, Any],
    input_values: Mapping[str, Any],
    where: str,
) -> None:
    """Every key of `input_shapes` and `input_values` names an input of the model: a misspelt
    one would otherwise be ignored and the input fed something else."""
    for key, table in (("input_shapes", input_shapes), ("input_values", input_values)):
        unknown = [name for name in table if name not in names]
        if unknown:
            import difflib

            first = unknown[0]
            near = difflib.get_close_matches(first, names, n=1)
            hint = f" (did you mean {toml_key(near[0])}?)" if near else ""
            raise DataError(
                f"{where}: {key}.{toml_key(first)} names no input of this model{hint}; the "
                f"model's inputs are {list(names)}: rename the key to one of them"
            )


def is_integer_scalar(spec: TensorSpec) -> bool:
    """An integer input holding one value (shape [] or all ones): a sample rate, a step count,
    a token position. No generated value means anything for it."""
    if np.dtype(spec.dtype).kind not in "iu" or spec.quantization is not None:
        return False
    return spec.shape is not None and all(isinstance(d, int) and d == 1 for d in spec.shape)


def _generated(spec: TensorSpec, shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    target = np.dtype(spec.dtype)
    if target.kind == "f":
        return rng.standard_normal(shape).astype(target)
    if target.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    info = np.iinfo(target)
    low, high = max(info.min, -128), min(info.max, 127)
    return rng.integers(low, high + 1, shape, dtype=np.int64).astype(target)


def build_feeds(
    inputs: list[TensorSpec],
    dataset: dict[str, np.ndarray] | None,
    dataset_path: str,
    input_shapes: Mapping[str, Sequence[int]],
    input_values: Mapping[str, Any],
    where: str,
    seed: int = 0,
) -> Feeds:
    """Match dataset arrays and configured values to the model's inputs.

    `where` names the config file, so errors can point at the key to set.
    """
    per_sample: dict[str, np.ndarray] = {}
    keep_axis: dict[str, bool] = {}
    constants: dict[str, np.ndarray] = {}
    names = [spec.name for spec in inputs]
    check_input_names(names, input_shapes, input_values, where)
    arrays = {} if dataset is None else {k: v for k, v in dataset.items() if k.startswith("X")}
    unknown = [k for k in arrays if k != "X" and k[2:] not in names]
    if unknown:
        raise DataError(
            f"{dataset_path}: arrays {unknown} name no model input; the model's inputs are "
            f"{names} (use X_<input name>, or X for the first input)"
        )
    count = 0
    assumed: list[str] = []
    for position, spec in enumerate(inputs):
        key = f"X_{spec.name}"
        if key not in arrays and position == 0 and "X" in arrays:
            key = "X"
        if key in arrays:
            array = arrays[key]
            source = f"{dataset_path}: array {key} {list(array.shape)}"
            if array.ndim == 0:
                raise DataError(f"{source} has no sample axis; store one row per sample")
            if count and array.shape[0] != count:
                raise DataError(f"{source} has {array.shape[0]} samples, other arrays {count}")
            count = array.shape[0]
            row = array.shape[1:]
            if _fits((1, *row), spec):
                keep_axis[spec.name] = True
            elif _fits(tuple(row), spec):
                keep_axis[spec.name] = False
            else:
                raise DataError(
                    f"{source}: one sample {list(row)} does not fit model input {spec.name!r} "
                    f"{_shape_text(spec)}; harness feeds one sample at a time (batch 1)"
                )
            per_sample[spec.name] = to_dtype(array, spec, source)
        elif spec.name in input_values:
            value = np.asarray(input_values[spec.name])
            shape = () if spec.shape == () else _configured_shape(spec, input_shapes, where)
            source = f"{where}: input_values.{spec.name}"
            constants[spec.name] = to_dtype(np.broadcast_to(value, shape).copy(), spec, source)
        elif is_integer_scalar(spec):
            raise DataError(
                f"model input {spec.name!r} is an {spec.dtype} scalar {_shape_text(spec)} (a "
                "sample rate, a step count) and nothing gives its value; harness never guesses "
                f"one: add input_values = {{ {toml_key(spec.name)} = <its value> }} for this "
                f"model in {where}"
                + ("" if dataset is None else f" (or array X_{spec.name} to {dataset_path})")
            )
        elif dataset is None:
            shape = _configured_shape(spec, input_shapes, where)
            constants[spec.name] = _generated(spec, shape, seed + position)
            if batch_only_dynamic(spec) and spec.name not in input_shapes:
                assumed.append(spec.name)
        else:
            raise DataError(
                f"model input {spec.name!r} ({spec.dtype} {_shape_text(spec)}) gets no data: add "
                f"array X_{spec.name} to {dataset_path}, or give a constant (a scalar such as a "
                f"step count, or a state filled with one value) with input_values = "
                f"{{ {toml_key(spec.name)} = 0 }} in {where}"
            )
    return Feeds(per_sample, keep_axis, constants, count, tuple(assumed))
