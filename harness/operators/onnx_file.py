"""Reading an ONNX model's operators (the `onnx` package; external data is never read)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.operators.uses import (
    Collector,
    ModelOperators,
    OperatorReadError,
    onnx_domain,
)


def read_onnx(path: Path) -> ModelOperators:
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
    opsets = {onnx_domain(o.domain): int(o.version) for o in model.opset_import}
    functions = {(f.domain, f.name) for f in model.functions}
    found = Collector()

    def walk(graph: Any, imports: dict[str, int], where: str) -> None:
        for node in graph.node:
            domain = onnx_domain(node.domain)
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
        imports = {onnx_domain(o.domain): int(o.version) for o in function.opset_import}
        walk(function, imports, f"function {function.domain}.{function.name}")
    return ModelOperators(
        path=path,
        format="onnx",
        operators=found.result(),
        opsets=opsets,
        ir_version=int(model.ir_version),
    )
