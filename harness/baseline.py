"""`--baseline REF_OR_PATH`: where the base model of each configured model comes from.

- a git ref (`HEAD~1`, `origin/main`, a merge base): each model file as it was at that commit,
  extracted with git into `.harness/baseline/<commit>/` beside the config (the user's files are
  never touched). The dataset stays the current one, so both models are judged on the same data.
- a folder: a checkout of the base; model paths are resolved inside it as in the config.
- a model file (.onnx/.tflite): the base of the config's single model.
- a results file (`--harness-json` output): stored figures, compared without re-measuring.

A model with no base (new in this change, or absent from the results file) is recorded in
`missing`; what that does is the config's `baseline_missing` (error | report).
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.config import HarnessConfig, ModelSpec, load_config
from harness.errors import ConfigError
from harness.results import Record


@dataclass(frozen=True)
class Baseline:
    source: str  # what the user gave
    kind: str  # git | folder | model | results
    label: str  # how reports name it, e.g. "HEAD~1 (3f2a9c1d0b7e)"
    models: dict[str, ModelSpec] = field(default_factory=dict)  # model name -> base spec
    stored: dict[tuple[str, str, str], Record] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)  # model name -> why there is no base
    fingerprint: str | None = None  # machine of a stored baseline
    config: HarnessConfig | None = None  # the base checkout's harness config (gate policy)
    config_problem: str | None = None  # why the base's config could not be read (an error)
    config_absent: str | None = None  # the base has no harness config: every gate is new

    def context(self, model: str, device: str) -> BaselineContext:
        """What this baseline holds for one (model, device), resolved once for its pair."""
        stored = {
            suite: record
            for (name, on, suite), record in self.stored.items()
            if name == model and on == device
        }
        missing = self.missing.get(model)
        if not stored and self.kind == "results" and not missing:
            missing = f"{self.source} holds no results for {model}@{device}"
        other_machine = False
        if self.fingerprint is not None:
            from harness.identity import machine_fingerprint

            other_machine = self.fingerprint != machine_fingerprint()
        return BaselineContext(self.label, self.models.get(model), missing, stored, other_machine)


@dataclass(frozen=True)
class BaselineContext:
    """What `--baseline` means for one (model, device): a base model measured alongside, or
    stored records from an earlier session, or why there is neither."""

    label: str = ""  # empty: no --baseline given
    base: ModelSpec | None = None  # the base version of the model, measured in the same worker
    missing: str | None = None  # why there is no base
    stored: Mapping[str, Record] = field(default_factory=dict)  # suite -> stored record
    other_machine: bool = False  # the stored records were measured on another machine

    def stored_figures(self, suite: str) -> dict[str, Any]:
        record = self.stored.get(suite)
        return dict(record["figures"]) if record else {}

    def problem(self, suite: str) -> str | None:
        """Why the stored baseline gives `suite` nothing to compare with (None: it may)."""
        if self.base is not None or self.missing or not self.label:
            return None
        record = self.stored.get(suite)
        if record is None:
            return f"it holds no {suite} record for this model and device"
        if record.get("error"):
            return f"its {suite} record failed: {str(record['error']).splitlines()[0]}"
        return (
            f"its {suite} record lacks the figure (figures there: {', '.join(record['figures'])})"
        )


def _git(root: Path, *arguments: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(root), *arguments], capture_output=True, check=False)


def _from_git(ref: str, config: HarnessConfig) -> Baseline | None:
    top = _git(config.root, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        return None
    repo = Path(top.stdout.decode().strip()).resolve()
    resolved = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if resolved.returncode != 0:
        return None
    commit = resolved.stdout.decode().strip()
    label = f"{ref} ({commit[:12]})"
    target = config.root / ".harness" / "baseline" / commit[:12]
    models, missing = {}, {}
    for model in config.models:
        try:
            relative = model.path.relative_to(repo).as_posix()
        except ValueError:
            missing[model.name] = f"{model.path} is outside the git repository {repo}"
            continue
        # A language model is a folder: every file under it, as it was at the commit.
        listed = _git(repo, "ls-tree", "-r", "--name-only", commit, "--", relative)
        names = listed.stdout.decode().splitlines() if listed.returncode == 0 else []
        if not names or names == [relative] or model.task != "generate":
            names = [relative]
        shown_all = [(name, _git(repo, "show", f"{commit}:{name}")) for name in names]
        if any(shown.returncode != 0 for _, shown in shown_all):
            missing[model.name] = f"{relative} does not exist at {label}"
            continue
        for name, shown in shown_all:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes(shown.stdout)
        models[model.name] = replace(model, path=target / relative, problems=())
    base_config, problem, absent = None, None, None
    relative = config.source.relative_to(repo).as_posix()
    shown = _git(repo, "show", f"{commit}:{relative}")
    if shown.returncode != 0:
        absent = f"{relative} does not exist at {label}: every gate is new"
    else:
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(shown.stdout)
        base_config, problem = _base_config(path, config)
    return Baseline(ref, "git", label, models, missing=missing, config=base_config,
                    config_problem=problem, config_absent=absent)  # fmt: skip


def _base_config(path: Path, config: HarnessConfig) -> tuple[HarnessConfig | None, str | None]:
    """The base checkout's config, read with today's device profiles."""
    try:
        return load_config(path, config.profiles), None
    except ConfigError as exc:
        return None, f"the base's config does not load: {exc}"


def _from_folder(folder: Path, config: HarnessConfig) -> Baseline:
    models, missing = {}, {}
    for model in config.models:
        path = folder / model.path.relative_to(config.root)
        if path.is_file() or (path / "genai_config.json").is_file():  # a file, or a GenAI folder
            models[model.name] = replace(model, path=path, problems=())
        else:
            missing[model.name] = f"{path} does not exist in the baseline folder"
    base_config, problem, absent = None, None, None
    config_path = folder / config.source.relative_to(config.root)
    if config_path.is_file():
        base_config, problem = _base_config(config_path, config)
    else:
        absent = f"{config_path} does not exist: every gate is new"
    return Baseline(str(folder), "folder", str(folder), models, missing=missing,
                    config=base_config, config_problem=problem, config_absent=absent)  # fmt: skip


def _from_results(path: Path, config: HarnessConfig) -> Baseline:
    from harness.results import read_document

    try:
        document = read_document(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"--baseline {path}: cannot use it as stored results: {exc} (give a git ref, a "
            "folder, a model file, or a file written by --harness-json)"
        ) from exc
    stored = {(r["model"], r["device"], r["suite"]): r for r in document.get("results", [])}
    present = {model for model, _, _ in stored}
    missing = {
        m.name: f"{path} holds no results for model {m.name!r}"
        for m in config.models
        if m.name not in present
    }
    label = f"{path.name} ({document.get('created', 'undated')})"
    fingerprint = document.get("host", {}).get("fingerprint")
    return Baseline(
        str(path), "results", label, stored=stored, missing=missing, fingerprint=fingerprint
    )


def resolve_baseline(source: str, config: HarnessConfig) -> Baseline:
    path = Path(source)
    if not path.is_absolute():
        path = Path.cwd() / path
    if path.is_dir():
        return _from_folder(path.resolve(), config)
    if path.is_file():
        if path.suffix.lower() in (".onnx", ".tflite"):
            if len(config.models) != 1:
                names = ", ".join(m.name for m in config.models)
                raise ConfigError(
                    f"--baseline {source}: a single model file can be the base of a config with "
                    f"one model, and {config.source} has several ({names}); give a git ref or a "
                    "folder instead"
                )
            model = config.models[0]
            return Baseline(
                source,
                "model",
                path.name,
                {model.name: replace(model, path=path.resolve(), problems=())},
            )
        return _from_results(path, config)
    from_git = _from_git(source, config)
    if from_git is not None:
        return from_git
    raise ConfigError(
        f"--baseline {source}: not a git ref of the repository holding {config.source}, nor an "
        "existing folder, model file or results file"
    )
