"""What a TFLite runtime release (ai-edge-litert, tflite-runtime, TensorFlow) loads: schema,
builtin operator versions and custom operators (harness.operators.tables has the tables and
their sources)."""

from __future__ import annotations

from harness.operators.tables import (
    LITERT_MAX_VERSION,
    LITERT_RELEASES,
    TFLITE_BUILTIN_CUSTOM_OPS,
    TFLITE_MIN_RUNTIME,
    TFLITE_SCHEMA_VERSION,
    TFLITE_TABLE_SOURCE,
    TFLITE_XNNPACK_CUSTOM_OPS,
)
from harness.operators.uses import (
    ModelOperators,
    OperatorProblem,
    OperatorUse,
    format_version,
    installed_version,
    locations_text,
    version_tuple,
)

# Every measured ai-edge-litert release loads each operator version TensorFlow's table dates at or
# before this release (TRANSPOSE v7, dated 2.14.4, is missing from 1.0.1).
_LITERT_FLOOR = (2, 14, 0)


def _tflite_min_runtime(name: str, version: int) -> tuple[int, ...] | None:
    needed = TFLITE_MIN_RUNTIME.get(name, {}).get(version)
    return version_tuple(needed) if needed else None


def _litert_support(
    name: str, version: tuple[int, ...]
) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
    """(release, highest version of `name`) for the nearest measured LiteRT releases <= and >=."""
    highest = LITERT_MAX_VERSION.get(name, (0,) * len(LITERT_RELEASES))
    measured = list(zip(LITERT_RELEASES, highest, strict=True))
    below = [m for m in measured if version_tuple(m[0]) <= version]
    above = [m for m in measured if version_tuple(m[0]) >= version]
    return (below[-1] if below else None), (above[0] if above else None)


def _loads(release: str, highest: int, name: str) -> str:
    has = f"loads {name} up to v{highest}" if highest else f"has no kernel for {name}"
    return f"ai-edge-litert {release} {has}"


def check_tflite(model: ModelOperators, runtime: str, version: str) -> list[OperatorProblem]:
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
    wanted = version_tuple(version)
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
    where = locations_text(use)
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
    where = locations_text(use)
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
            f"(newer than ai-edge-litert {installed_version('ai-edge-litert')}); {device} most "
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
        tf_hint = f"; TensorFlow's table dates it {format_version(needed)}" if needed else ""
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
    source = version_tuple(TFLITE_TABLE_SOURCE)
    known = TFLITE_MIN_RUNTIME.get(use.name)
    if needed is not None:
        if wanted >= needed:
            return None
        return OperatorProblem(
            use.name,
            "builtin",
            use.version,
            f"TFLite runtime >= {format_version(needed)}",
            f"{op} needs TFLite runtime >= {format_version(needed)}; the device has {device} "
            f"({fix}){where}",
            locations=use.locations,
        )
    if known and use.version > max(known) and wanted < source:
        has = max((v for v, r in known.items() if version_tuple(r) <= wanted), default=0)
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
