"""Reading a TFLite model's operators from its flatbuffer (the schema ai-edge-litert ships)."""

from __future__ import annotations

import struct
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from harness.operators.uses import (
    Collector,
    ModelOperators,
    OperatorReadError,
)


@cache
def _builtin_names() -> dict[int, str]:
    from ai_edge_litert import schema_py_generated as schema

    return {
        int(value): name
        for name, value in vars(schema.BuiltinOperator).items()
        if not name.startswith("_") and isinstance(value, int)
    }


def read_tflite(path: Path) -> ModelOperators:
    from ai_edge_litert import schema_py_generated as schema

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise OperatorReadError(f"{path}: cannot read the file: {exc}") from exc
    if len(data) < 8 or not schema.Model.ModelBufferHasIdentifier(data, 0):
        raise OperatorReadError(
            f"{path}: not a TFLite model (no 'TFL3' flatbuffer identifier; truncated, corrupt, "
            "or another format)"
        )
    try:
        return _parse_tflite(path, data, schema)
    except OperatorReadError:
        raise
    except (IndexError, struct.error, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise OperatorReadError(
            f"{path}: corrupt TFLite flatbuffer (truncated?): {type(exc).__name__}: {exc}"
        ) from exc


def _parse_tflite(path: Path, data: bytes, schema: Any) -> ModelOperators:
    size = len(data)

    def count(n: int, what: str) -> range:
        # Every vector element takes at least 4 bytes: a longer vector means a corrupt length.
        if n < 0 or n * 4 > size:
            raise OperatorReadError(f"{path}: corrupt TFLite flatbuffer: {what} length {n}")
        return range(n)

    model = schema.Model.GetRootAs(data, 0)
    names = _builtin_names()
    codes: list[tuple[str, str, int]] = []
    for i in count(model.OperatorCodesLength(), "operator codes"):
        opcode = model.OperatorCodes(i)
        # As TFLite's GetBuiltinCode: codes above 127 live only in the newer int32 field.
        code = max(int(opcode.DeprecatedBuiltinCode()), int(opcode.BuiltinCode()))
        version = int(opcode.Version())
        if code == schema.BuiltinOperator.CUSTOM:
            custom = opcode.CustomCode()
            name = custom.decode("utf-8") if custom else "<unnamed>"
            codes.append((name, "custom", version))
        else:
            codes.append((names.get(code, f"BUILTIN_{code}"), "builtin", version))
    found = Collector()
    used: set[int] = set()
    for s in count(model.SubgraphsLength(), "subgraphs"):
        subgraph = model.Subgraphs(s)
        raw_name = subgraph.Name()
        where = f"subgraph {s}" + (f" ({raw_name.decode('utf-8')})" if raw_name else "")
        for j in count(subgraph.OperatorsLength(), f"subgraph {s} operators"):
            index = int(subgraph.Operators(j).OpcodeIndex())
            if not 0 <= index < len(codes):
                raise OperatorReadError(
                    f"{path}: corrupt TFLite model: {where} operator {j} refers to operator code "
                    f"{index}, but there are {len(codes)}"
                )
            used.add(index)
            name, domain, version = codes[index]
            found.add(name, domain, version, where)
    # The interpreter resolves every operator code, used or not.
    for index, (name, domain, version) in enumerate(codes):
        if index not in used:
            found.add(name, domain, version, "operator codes (unused)", n=0)
    _check_buffers(path, model, size, count)
    return ModelOperators(
        path=path, format="tflite", operators=found.result(), schema_version=int(model.Version())
    )


def _check_buffers(path: Path, model: Any, size: int, count: Callable[[int, str], range]) -> None:
    """Weights must lie inside the file: a cut-off file fails here rather than in the runtime."""
    for i in count(model.BuffersLength(), "buffers"):
        buffer = model.Buffers(i)
        vector = buffer._tab.Offset(4)
        if vector:
            start = buffer._tab.Vector(vector)
            if start + buffer._tab.VectorLen(vector) > size:
                raise OperatorReadError(f"{path}: truncated TFLite model: buffer {i} ends past EOF")
        offset, length = int(buffer.Offset()), int(buffer.Size())
        if offset > 1 and offset + length > size:
            raise OperatorReadError(
                f"{path}: truncated TFLite model: buffer {i} (bytes {offset}..{offset + length}) "
                f"lies past the end of the {size}-byte file"
            )
