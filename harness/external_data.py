"""Checks on a model file before any runtime opens it (on the host, never in the target).

ONNX external data names files by a relative `location`; a pull request could point it at
`../../.ssh/id_rsa` or `/etc/shadow` so that the runtime reads (and a report leaks) a file outside
the repository. Such a model is refused and the file is never read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any


class UnsafeModel(Exception):
    """The model asks for something harness refuses to do; the message says what and why."""


def _tensors(graph: Any) -> Iterator[Any]:
    """Every tensor of a graph: initializers, sparse ones, and those in node attributes and
    subgraphs (Loop/If/Scan bodies)."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _tensors(subgraph)


def external_data_locations(path: Path) -> list[str]:
    """The `location` of every externally stored tensor, read without loading any of them."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # not ONNX at all: the runtime's own load error will say so
        return []
    locations = []
    for tensor in _tensors(model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            entries = {entry.key: entry.value for entry in tensor.external_data}
            locations.append(entries.get("location", ""))
    return locations


def check_model_file(path: Path) -> list[Path]:
    """Refuse an ONNX model whose external data lies outside the model's folder; return the
    external data files it uses (a device container must see them beside the model)."""
    if path.suffix.lower() != ".onnx":
        return []
    folder = path.resolve().parent
    files = []
    for location in external_data_locations(path):
        target = (folder / location).resolve()  # resolves `..` and symbolic links
        if Path(location).is_absolute() or not target.is_relative_to(folder):
            raise UnsafeModel(
                f"{path.name}: external data location {location!r} points outside the model's "
                f"folder {folder}; refused, and the file was not read (keep external data files "
                "beside the model, with relative names)"
            )
        files.append(target)
    return sorted(set(files))
