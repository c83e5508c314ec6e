"""What an onnxruntime release supports: opsets, IR version, and the installed runtime's CPU
kernels (harness.operators.tables has the table and its source)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from harness.operators.tables import (
    ONNXRUNTIME_DOMAINS,
    ONNXRUNTIME_SUPPORT,
)
from harness.operators.uses import (
    ONNX_DEFAULT,
    ONNX_ML,
    ModelOperators,
    OperatorProblem,
    OperatorUse,
    Severity,
    format_version,
    installed_version,
    locations_text,
    onnx_domain,
    version_tuple,
)

_ORT_INTERNAL_KERNELLESS = frozenset({"Constant"})  # folded into initializers when loading


@dataclass(frozen=True)
class _OrtRow:
    release: str  # the table row used, e.g. "1.17"
    opset: int
    ml_opset: int
    ir_version: int
    exact: bool  # False: the runtime is newer than the table; the row is a lower bound


def _ort_row(version: str) -> _OrtRow | None:
    wanted = version_tuple(version)[:2]
    known = sorted(ONNXRUNTIME_SUPPORT)
    if wanted < known[0]:
        return None
    row = max(key for key in known if key <= wanted)
    opset, ml_opset, ir_version = ONNXRUNTIME_SUPPORT[row]
    return _OrtRow(format_version(row), opset, ml_opset, ir_version, exact=wanted <= known[-1])


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
                key = (onnx_domain(kernel.domain), kernel.op_name)
                low, high = kernel.version_range
                kernels.setdefault(key, []).append((int(low), int(high)))
        for schema in _pybind_state.get_all_operator_schema():
            if getattr(schema, "has_function", False) or getattr(
                schema, "has_context_dependent_function", False
            ):
                functions.add((onnx_domain(schema.domain), schema.name))
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


def check_onnx(model: ModelOperators, version: str) -> list[OperatorProblem]:
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
                f"(from {format_version(min(ONNXRUNTIME_SUPPORT))}): its operator support is "
                "unknown",
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
        (ONNX_DEFAULT, row.opset, "default domain"),
        (ONNX_ML, row.ml_opset, ONNX_ML),
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
    installed = installed_version("onnxruntime")
    here = installed is not None and version_tuple(installed) == version_tuple(version)
    for use in model.operators:
        problem = _check_onnx_op(use, name, here)
        if problem is not None:
            problems.append(problem)
    return problems


def _check_onnx_op(use: OperatorUse, runtime: str, installed: bool) -> OperatorProblem | None:
    import onnx.defs

    where = locations_text(use)
    label = "the default domain" if use.domain == ONNX_DEFAULT else f"domain {use.domain!r}"
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
    if use.domain in (ONNX_DEFAULT, ONNX_ML):
        newest = (
            onnx.defs.onnx_opset_version()
            if use.domain == ONNX_DEFAULT
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
