"""Static operator check: does the device's runtime version know every operator in the model?

Runs before anything is loaded into a runtime. `read_operators` parses the model file itself
(ONNX protobuf with the `onnx` package, never reading external data; TFLite flatbuffer with the
schema ai-edge-litert ships), `check` compares what it found with what a runtime release
supports (tables and their sources in `harness.operator_tables`), and `summarise` gives the
operator counts for reports.

    model = read_operators("models/net.tflite")
    for problem in check(model, "tflite-runtime", "2.14.0"):
        print(problem.message)
    # FULLY_CONNECTED v12 needs TFLite runtime >= 2.17.0; the device has tflite-runtime 2.14.0 ...

Problems have a severity: "error" means the runtime will refuse the model (an operator, version,
opset or IR version it lacks); "warning" means the harness cannot tell (a runtime newer than its
tables, an operator version TensorFlow's table does not list).
"""

from __future__ import annotations

import re
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from harness.operator_tables import (
    LITERT_MAX_VERSION,
    LITERT_RELEASES,
    ONNXRUNTIME_DOMAINS,
    ONNXRUNTIME_SUPPORT,
    TFLITE_BUILTIN_CUSTOM_OPS,
    TFLITE_MIN_RUNTIME,
    TFLITE_SCHEMA_VERSION,
    TFLITE_TABLE_SOURCE,
    TFLITE_XNNPACK_CUSTOM_OPS,
)

Severity = Literal["error", "warning"]
Format = Literal["onnx", "tflite"]

RUNTIMES: dict[str, Format] = {
    "onnxruntime": "onnx",
    "ai-edge-litert": "tflite",
    "tflite-runtime": "tflite",
    "tensorflow": "tflite",  # tf.lite.Interpreter from the full TensorFlow package
}

_ONNX_DEFAULT = ""  # the default ONNX domain; "ai.onnx" is normalised to it
_ONNX_ML = "ai.onnx.ml"
_ORT_INTERNAL_KERNELLESS = frozenset({"Constant"})  # folded into initializers when loading
_MAX_LOCATIONS = 3
# Every measured ai-edge-litert release loads each operator version TensorFlow's table dates at or
# before this release (TRANSPOSE v7, dated 2.14.4, is missing from 1.0.1).
_LITERT_FLOOR = (2, 14, 0)


class OperatorReadError(Exception):
    """The model file cannot be parsed: truncated, corrupt, or not the format its name says."""


@dataclass(frozen=True)
class OperatorUse:
    """One operator (name, domain, version) and where the model uses it.

    ONNX: `domain` is the operator's domain ("" for the default ai.onnx domain) and `version` the
    opset the model imports for that domain (0 when it imports none). TFLite: `domain` is
    "builtin" or "custom" and `version` the operator code's version.
    """

    name: str
    domain: str
    version: int
    count: int
    locations: tuple[str, ...]
    local_function: bool = False  # ONNX: a call of a function the model itself defines

    @property
    def label(self) -> str:
        if self.domain in ("", "builtin"):
            return self.name
        return f"{self.domain}.{self.name}" if self.domain != "custom" else f"custom:{self.name}"


@dataclass(frozen=True)
class ModelOperators:
    path: Path
    format: Format
    operators: tuple[OperatorUse, ...]
    opsets: dict[str, int] = field(default_factory=dict)  # ONNX: domain -> imported opset
    ir_version: int | None = None  # ONNX
    schema_version: int | None = None  # TFLite


@dataclass(frozen=True)
class OperatorProblem:
    """Something in the model the runtime release lacks (or that the harness cannot verify)."""

    operator: str  # operator name, or "opset" / "IR version" / "schema version"
    domain: str
    version: int | None  # the model's operator version, opset or IR version
    supported: str  # what the runtime supports, in words
    message: str
    severity: Severity = "error"
    locations: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------
# Reading


def read_operators(path: str | Path) -> ModelOperators:
    """Every operator, operator version and opset in a .onnx or .tflite file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return _read_onnx(path)
    if suffix == ".tflite":
        return _read_tflite(path)
    raise OperatorReadError(f"{path}: unknown model format {suffix!r} (expected .onnx or .tflite)")


class _Collector:
    """Counts operator uses by (name, domain, version, local function) and where they occur."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, int, bool], int] = {}
        self.where: dict[tuple[str, str, int, bool], list[str]] = {}

    def add(
        self, name: str, domain: str, version: int, location: str, local: bool = False, n: int = 1
    ) -> None:
        key = (name, domain, version, local)
        self.counts[key] = self.counts.get(key, 0) + n
        places = self.where.setdefault(key, [])
        if location not in places:
            places.append(location)

    def result(self) -> tuple[OperatorUse, ...]:
        uses = []
        for key in sorted(self.counts, key=lambda k: (k[1], k[0], k[2], k[3])):
            name, domain, version, local = key
            uses.append(
                OperatorUse(name, domain, version, self.counts[key], tuple(self.where[key]), local)
            )
        return tuple(uses)


def _onnx_domain(domain: str) -> str:
    return _ONNX_DEFAULT if domain in ("", "ai.onnx") else domain


def _read_onnx(path: Path) -> ModelOperators:
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - onnx is a dependency of the checks
        raise OperatorReadError(f"{path}: reading ONNX operators needs the onnx package") from exc
    try:
        # External data (weights in side files) is never opened: only the graph matters here,
        # and its locations may point anywhere.
        model = onnx.load(str(path), load_external_data=False)
    except OSError as exc:
        raise OperatorReadError(f"{path}: cannot read the file: {exc}") from exc
    except Exception as exc:
        raise OperatorReadError(
            f"{path}: not a valid ONNX model (truncated or corrupt?): {type(exc).__name__}: {exc}"
        ) from exc
    if model.ir_version <= 0 or not model.HasField("graph"):
        raise OperatorReadError(
            f"{path}: not a valid ONNX model: no IR version or no graph (truncated, corrupt, or "
            "not an ONNX file)"
        )
    opsets = {_onnx_domain(o.domain): int(o.version) for o in model.opset_import}
    functions = {(f.domain, f.name) for f in model.functions}
    found = _Collector()

    def walk(graph: Any, imports: dict[str, int], where: str) -> None:
        for node in graph.node:
            domain = _onnx_domain(node.domain)
            local = (node.domain, node.op_type) in functions
            found.add(node.op_type, domain, imports.get(domain, 0), where, local)
            for attr in node.attribute:
                label = f"{where}/{node.name or node.op_type}.{attr.name}"
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g, imports, label)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for i, sub in enumerate(attr.graphs):
                        walk(sub, imports, f"{label}[{i}]")

    walk(model.graph, opsets, "graph")
    for function in model.functions:
        imports = {_onnx_domain(o.domain): int(o.version) for o in function.opset_import}
        walk(function, imports, f"function {function.domain}.{function.name}")
    return ModelOperators(
        path=path,
        format="onnx",
        operators=found.result(),
        opsets=opsets,
        ir_version=int(model.ir_version),
    )


@cache
def _builtin_names() -> dict[int, str]:
    from ai_edge_litert import schema_py_generated as schema

    return {
        int(value): name
        for name, value in vars(schema.BuiltinOperator).items()
        if not name.startswith("_") and isinstance(value, int)
    }


def _read_tflite(path: Path) -> ModelOperators:
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
    found = _Collector()
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


# --------------------------------------------------------------------------------------------
# Checking


def _version_tuple(version: str) -> tuple[int, ...]:
    match = re.match(r"\s*v?(\d+(?:\.\d+)*)", version)
    if not match:
        raise ValueError(f"not a version number: {version!r}")
    parts = tuple(int(part) for part in match.group(1).split("."))
    return parts + (0,) * (3 - len(parts))  # "2.14" == "2.14.0"


def _fmt(version: tuple[int, ...]) -> str:
    return ".".join(str(part) for part in version)


def _where(use: OperatorUse) -> str:
    shown = ", ".join(use.locations[:_MAX_LOCATIONS])
    more = len(use.locations) - _MAX_LOCATIONS
    return f" (in {shown}{f' and {more} more' if more > 0 else ''})"


def check(model: ModelOperators, runtime: str, version: str) -> list[OperatorProblem]:
    """What in `model` the runtime release (e.g. "onnxruntime", "1.17.0") does not support."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; known: {', '.join(sorted(RUNTIMES))}")
    if RUNTIMES[runtime] != model.format:
        raise ValueError(f"{runtime} does not run {model.format} models ({model.path})")
    if model.format == "onnx":
        return _check_onnx(model, version)
    return _check_tflite(model, runtime, version)


# ONNX ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _OrtRow:
    release: str  # the table row used, e.g. "1.17"
    opset: int
    ml_opset: int
    ir_version: int
    exact: bool  # False: the runtime is newer than the table; the row is a lower bound


def _ort_row(version: str) -> _OrtRow | None:
    wanted = _version_tuple(version)[:2]
    known = sorted(ONNXRUNTIME_SUPPORT)
    if wanted < known[0]:
        return None
    row = max(key for key in known if key <= wanted)
    opset, ml_opset, ir_version = ONNXRUNTIME_SUPPORT[row]
    return _OrtRow(_fmt(row), opset, ml_opset, ir_version, exact=wanted <= known[-1])


def _installed(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


@cache
def _ort_registry() -> tuple[dict[tuple[str, str], list[tuple[int, int]]], set[tuple[str, str]]]:
    """The installed onnxruntime's CPU kernels ((domain, op) -> since-version ranges) and the
    operators it can expand from a function body instead. Empty when its (private) pybind API
    is missing: the kernel check is then skipped."""
    kernels: dict[tuple[str, str], list[tuple[int, int]]] = {}
    functions: set[tuple[str, str]] = set()
    try:
        from onnxruntime.capi import _pybind_state

        for kernel in _pybind_state.get_all_opkernel_def():
            if kernel.provider == "CPUExecutionProvider":
                key = (_onnx_domain(kernel.domain), kernel.op_name)
                low, high = kernel.version_range
                kernels.setdefault(key, []).append((int(low), int(high)))
        for schema in _pybind_state.get_all_operator_schema():
            if getattr(schema, "has_function", False) or getattr(
                schema, "has_context_dependent_function", False
            ):
                functions.add((_onnx_domain(schema.domain), schema.name))
    except (ImportError, AttributeError):
        return {}, set()
    return kernels, functions


def _ort_kernel(use: OperatorUse) -> bool:
    """The installed onnxruntime has a CPU kernel for `use` at its version (an operator that
    onnxruntime defines itself, e.g. SimplifiedLayerNormalization in the default domain)."""
    kernels, _ = _ort_registry()
    return any(low <= use.version <= high for low, high in kernels.get((use.domain, use.name), ()))


@cache
def _first_opset(domain: str, name: str) -> int | None:
    import onnx.defs

    since = [
        s.since_version
        for s in onnx.defs.get_all_schemas_with_history()
        if s.domain == domain and s.name == name
    ]
    return min(since) if since else None


def _check_onnx(model: ModelOperators, version: str) -> list[OperatorProblem]:
    problems: list[OperatorProblem] = []
    row = _ort_row(version)
    if row is None:
        return [
            OperatorProblem(
                "onnxruntime",
                "",
                None,
                "unknown",
                f"onnxruntime {version} is older than every release the harness knows "
                f"(from {_fmt(min(ONNXRUNTIME_SUPPORT))}): its operator support is unknown",
                severity="warning",
            )
        ]
    name = f"onnxruntime {version}"
    newer = (
        ""
        if row.exact
        else f" (onnxruntime {version} is newer than the harness's table, whose newest row, "
        f"{row.release}, is used as a lower bound: unverified)"
    )
    severity: Severity = "error" if row.exact else "warning"
    if model.ir_version is not None and model.ir_version > row.ir_version:
        problems.append(
            OperatorProblem(
                "IR version",
                "",
                model.ir_version,
                f"IR version <= {row.ir_version}",
                f"IR version {model.ir_version} is above {name}'s maximum {row.ir_version}: save "
                f"the model with IR version <= {row.ir_version} (an older exporter or onnx "
                f"package) or upgrade onnxruntime on the device{newer}",
                severity,
            )
        )
    for domain, limit, label in (
        (_ONNX_DEFAULT, row.opset, "default domain"),
        (_ONNX_ML, row.ml_opset, _ONNX_ML),
    ):
        opset = model.opsets.get(domain)
        if opset is not None and opset > limit:
            problems.append(
                OperatorProblem(
                    "opset",
                    domain,
                    opset,
                    f"opset <= {limit}",
                    f"opset {opset} ({label}) is above {name}'s maximum {limit}: export with "
                    f"opset <= {limit} or upgrade onnxruntime on the device{newer}",
                    severity,
                )
            )
    installed = _installed("onnxruntime")
    here = installed is not None and _version_tuple(installed) == _version_tuple(version)
    for use in model.operators:
        problem = _check_onnx_op(use, name, here)
        if problem is not None:
            problems.append(problem)
    return problems


def _check_onnx_op(use: OperatorUse, runtime: str, installed: bool) -> OperatorProblem | None:
    import onnx.defs

    where = _where(use)
    label = "the default domain" if use.domain == _ONNX_DEFAULT else f"domain {use.domain!r}"
    if use.local_function:
        return None  # expanded from the function body the model carries
    if use.domain not in ONNXRUNTIME_DOMAINS:
        return OperatorProblem(
            use.name,
            use.domain,
            use.version,
            "no kernel unless registered",
            f"custom operator {use.name} from domain {use.domain!r}: the device runtime has no "
            "kernel for it unless registered (a custom-op library such as onnxruntime-extensions "
            f"loaded into the session){where}",
            locations=use.locations,
        )
    if use.version == 0:
        return OperatorProblem(
            use.name,
            use.domain,
            None,
            "an opset import for the domain",
            f"{use.name} is in {label}, which the model does not import (no opset_import "
            f"entry): the model is invalid; re-export it{where}",
            locations=use.locations,
        )
    since: int | None = None
    if use.domain in (_ONNX_DEFAULT, _ONNX_ML):
        newest = (
            onnx.defs.onnx_opset_version()
            if use.domain == _ONNX_DEFAULT
            else onnx.defs.onnx_ml_opset_version()
        )
        if use.version > newest:
            return None  # beyond the installed onnx package: only the opset check applies
        try:
            schema = onnx.defs.get_schema(use.name, use.version, use.domain)
        except onnx.defs.SchemaError:
            if installed and _ort_kernel(use):
                return None  # onnxruntime's own operator in the standard domain (GenAI models)
            first = _first_opset(use.domain, use.name)
            why = (
                f"it first appears in opset {first}"
                if first is not None
                else "no ONNX opset defines it (misspelled, or a custom operator placed in the "
                "standard domain)"
            )
            return OperatorProblem(
                use.name,
                use.domain,
                use.version,
                f"operators of {label} at opset {use.version}",
                f"{use.name} is not an operator of {label} at opset {use.version}: {why}; "
                f"{runtime} has no kernel for it{where}",
                locations=use.locations,
            )
        if schema.deprecated:
            return OperatorProblem(
                use.name,
                use.domain,
                use.version,
                f"{use.name} before opset {schema.since_version}",
                f"{use.name} is deprecated in {label} from opset {schema.since_version} (the "
                f"model imports {use.version}): {runtime} refuses it; re-export with its "
                f"replacement or an opset below {schema.since_version}{where}",
                locations=use.locations,
            )
        since = int(schema.since_version)
    kernels, functions = _ort_registry() if installed else ({}, set())
    if not kernels or use.name in _ORT_INTERNAL_KERNELLESS:
        return None
    # The device runs the onnxruntime installed here: its kernel registry is the truth.
    wanted = since if since is not None else use.version
    if any(low <= wanted <= high for low, high in kernels.get((use.domain, use.name), ())):
        return None
    if (use.domain, use.name) in functions:
        return None
    return OperatorProblem(
        use.name,
        use.domain,
        use.version,
        "a CPU kernel",
        f"{runtime} has no CPU kernel for {use.name} ({label}, opset {use.version}): "
        f"export without it or upgrade onnxruntime on the device{where}",
        locations=use.locations,
    )


# TFLite ----------------------------------------------------------------------------------------


def _tflite_min_runtime(name: str, version: int) -> tuple[int, ...] | None:
    needed = TFLITE_MIN_RUNTIME.get(name, {}).get(version)
    return _version_tuple(needed) if needed else None


def _litert_support(
    name: str, version: tuple[int, ...]
) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
    """(release, highest version of `name`) for the nearest measured LiteRT releases <= and >=."""
    highest = LITERT_MAX_VERSION.get(name, (0,) * len(LITERT_RELEASES))
    measured = list(zip(LITERT_RELEASES, highest, strict=True))
    below = [m for m in measured if _version_tuple(m[0]) <= version]
    above = [m for m in measured if _version_tuple(m[0]) >= version]
    return (below[-1] if below else None), (above[0] if above else None)


def _loads(release: str, highest: int, name: str) -> str:
    has = f"loads {name} up to v{highest}" if highest else f"has no kernel for {name}"
    return f"ai-edge-litert {release} {has}"


def _check_tflite(model: ModelOperators, runtime: str, version: str) -> list[OperatorProblem]:
    problems: list[OperatorProblem] = []
    device = f"{runtime} {version}"
    if model.schema_version != TFLITE_SCHEMA_VERSION:
        problems.append(
            OperatorProblem(
                "schema version",
                "",
                model.schema_version,
                f"schema version {TFLITE_SCHEMA_VERSION}",
                f"TFLite schema version {model.schema_version}: {device} only loads schema "
                f"version {TFLITE_SCHEMA_VERSION}; reconvert the model",
            )
        )
    wanted = _version_tuple(version)
    for use in model.operators:
        problem = (
            _check_tflite_custom(use, runtime, device)
            if use.domain == "custom"
            else _check_tflite_builtin(use, runtime, wanted, device)
        )
        if problem is not None:
            problems.append(problem)
    return problems


def _check_tflite_custom(use: OperatorUse, runtime: str, device: str) -> OperatorProblem | None:
    where = _where(use)
    if use.name in TFLITE_BUILTIN_CUSTOM_OPS or use.name in TFLITE_XNNPACK_CUSTOM_OPS:
        return None  # the builtin resolver, or the XNNPACK delegate every interpreter applies
    if use.name.startswith("Flex"):
        if runtime == "tensorflow":
            return None  # the full TensorFlow package links the Flex delegate
        return OperatorProblem(
            use.name,
            "custom",
            use.version,
            "no TensorFlow (Flex) operators",
            f"{use.name} is a TensorFlow operator (Flex, from SELECT_TF_OPS): {device} has no "
            "Flex delegate and refuses the model; convert with TFLite builtin operators only "
            f"or run it with the full tensorflow package{where}",
            locations=use.locations,
        )
    return OperatorProblem(
        use.name,
        "custom",
        use.version,
        "no kernel unless registered",
        f"custom operator {use.name}: {device} has no kernel for it unless registered with the "
        f"interpreter (custom op resolver / delegate); the model fails to load{where}",
        locations=use.locations,
    )


def _check_tflite_builtin(
    use: OperatorUse, runtime: str, wanted: tuple[int, ...], device: str
) -> OperatorProblem | None:
    where = _where(use)
    op = f"{use.name} v{use.version}"
    needed = _tflite_min_runtime(use.name, use.version)
    fix = "upgrade the runtime on the device, or convert the model with an older converter / op set"
    if use.name.startswith("BUILTIN_"):
        return OperatorProblem(
            use.name,
            "builtin",
            use.version,
            "known builtin operators",
            f"{op}: builtin operator code unknown to the TFLite schema the harness reads "
            f"(newer than ai-edge-litert {_installed('ai-edge-litert')}); {device} most "
            f"likely refuses it: {fix}{where}",
            locations=use.locations,
        )
    if runtime == "ai-edge-litert":
        # Measured per release, and support only grows from one release to the next: a release
        # between two measured ones has at least the lower one's versions, at most the upper's.
        below, above = _litert_support(use.name, wanted)
        if below is not None and use.version <= below[1]:
            return None
        if below is None and needed is not None and needed <= _LITERT_FLOOR:
            return None  # every measured release has what TensorFlow dates <= 2.14.0
        certain = above is not None and use.version > above[1]
        if below is not None and above is not None and below[0] != above[0]:
            evidence = f"measured: {_loads(*below, use.name)}, {_loads(*above, use.name)}"
        elif above is not None:
            evidence = _loads(*above, use.name)
        else:
            assert below is not None
            evidence = f"the newest release measured, {_loads(*below, use.name)}"
        reference = above if above is not None else below
        tf_hint = f"; TensorFlow's table dates it {_fmt(needed)}" if needed else ""
        unverified = "" if certain else "; unverified: no measurement covers this release"
        return OperatorProblem(
            use.name,
            "builtin",
            use.version,
            f"versions <= {reference[1]}" if reference and reference[1] else "no kernel",
            f"{op} {'is not' if certain else 'may not be'} supported by {device} ({evidence}"
            f"{tf_hint}): {fix}{unverified}{where}",
            "error" if certain else "warning",
            use.locations,
        )
    source = _version_tuple(TFLITE_TABLE_SOURCE)
    known = TFLITE_MIN_RUNTIME.get(use.name)
    if needed is not None:
        if wanted >= needed:
            return None
        return OperatorProblem(
            use.name,
            "builtin",
            use.version,
            f"TFLite runtime >= {_fmt(needed)}",
            f"{op} needs TFLite runtime >= {_fmt(needed)}; the device has {device} ({fix}){where}",
            locations=use.locations,
        )
    if known and use.version > max(known) and wanted < source:
        has = max((v for v, r in known.items() if _version_tuple(r) <= wanted), default=0)
        return OperatorProblem(
            use.name,
            "builtin",
            use.version,
            f"versions <= {has}",
            f"{op} is newer than every version TensorFlow's table lists for it (up to "
            f"v{max(known)}, TensorFlow {TFLITE_TABLE_SOURCE}): {device} does not have it "
            f"({fix}){where}",
            locations=use.locations,
        )
    return OperatorProblem(
        use.name,
        "builtin",
        use.version,
        "unknown",
        f"{op} is not in TensorFlow's runtime-version table: the harness cannot tell whether "
        f"{device} supports it{where}",
        "warning",
        use.locations,
    )


# --------------------------------------------------------------------------------------------
# Reporting


def summarise(model: ModelOperators) -> dict[str, Any]:
    """Operator counts and versions, for reports (JSON-ready)."""
    counts: Counter[str] = Counter()
    versions: dict[str, set[int]] = {}
    for use in model.operators:
        counts[use.label] += use.count
        versions.setdefault(use.label, set()).add(use.version)
    summary: dict[str, Any] = {
        "format": model.format,
        "operators": dict(sorted(counts.items())),
        "versions": {label: sorted(v) for label, v in sorted(versions.items())},
        "total": sum(counts.values()),
    }
    if model.format == "onnx":
        summary["ir_version"] = model.ir_version
        summary["opsets"] = dict(sorted(model.opsets.items()))
    else:
        summary["schema_version"] = model.schema_version
    return summary
