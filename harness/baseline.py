"""`--baseline REF_OR_PATH`: the base a change is judged against, and where its files come from.

- a git ref (`HEAD~1`, `origin/main`, a merge base): the base's config, device profiles,
  datasets, texts, prompt sets and model files as they were at that commit, read from git's
  objects (never the checkout) into a private folder outside the work tree (`snapshot`, removed
  at the end of the session). The base decides what is measured: harness.boundary.
- a folder: a checkout of the base; its config and files are read there.
- a model file (.onnx/.tflite): the base of the config's single model (no base config).
- a results file (`--harness-json` output): stored figures, compared without re-measuring; the
  config it was made with and its files' digests, when the document carries them, are the base's.

A model with no base (new in this change, or absent from the results file) is recorded in
`missing`; what that does is the config's `baseline_missing` (error | report).
"""

from __future__ import annotations

import os
import posixpath
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.config import HarnessConfig, ModelSpec, load_config, parse_config
from harness.errors import ConfigError
from harness.identity import content_sha256, model_sha256
from harness.language_config import is_language_model
from harness.results import Record


def file_digest(path: Path) -> str | None:
    """A file's (or a model folder's) content hash; None when there is nothing there."""
    if path.is_dir():
        return model_sha256(path)
    return content_sha256(path) if path.is_file() else None


@dataclass(frozen=True)
class Baseline:
    source: str  # what the user gave
    kind: str  # git | folder | model | results
    label: str  # how reports name it, e.g. "HEAD~1 (3f2a9c1d0b7e)"
    files: dict[str, Path] = field(default_factory=dict)  # model name -> the base's model file
    stored: dict[tuple[str, str, str], Record] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)  # model name -> why there is no base
    fingerprint: str | None = None  # machine of a stored baseline
    config: HarnessConfig | None = None  # the base's config: it decides (harness.boundary)
    config_problem: str | None = None  # why the base's config could not be read (an error)
    config_absent: str | None = None  # the base has no harness config: every gate is new
    # The base's files by content (the snapshot's, or a results document's stored digests)
    digest: Callable[[Path], str | None] = file_digest
    profiles: Mapping[str, Mapping[str, Any]] | None = None  # a results document's, as compared
    snapshot: Path | None = None  # the private folder the base's files were extracted to
    config_link: str | None = None  # the config named is a symbolic link in the checkout
    commit: str | None = None  # the base commit (git)

    def context(self, model: ModelSpec, device: str) -> BaselineContext:
        """What this baseline holds for one (model, device), resolved once for its pair."""
        stored = {
            suite: record
            for (name, on, suite), record in self.stored.items()
            if name == model.name and on == device
        }
        missing = self.missing.get(model.name)
        if not stored and self.kind == "results" and not missing:
            missing = f"{self.source} holds no results for {model.name}@{device}"
        base = None
        if model.name in self.files:
            base = replace(model, path=self.files[model.name], problems=())
        elif self.kind in ("git", "folder") and not missing:
            missing = f"{model.name} is not a model of the base ({self.label})"
        other_machine = False
        if self.fingerprint is not None:
            from harness.identity import machine_fingerprint

            other_machine = self.fingerprint != machine_fingerprint()
        return BaselineContext(self.label, base, missing, stored, other_machine)

    def close(self) -> None:
        """Remove the private folder of the base's files."""
        if self.snapshot is not None:
            shutil.rmtree(self.snapshot, ignore_errors=True)


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


def _git(
    root: Path, *arguments: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["git", "-C", str(root), *arguments], input=stdin, capture_output=True, check=False
    )


class _Commit:
    """One commit's files, read from git's objects, never from the checkout."""

    def __init__(self, repo: Path, commit: str) -> None:
        self.repo, self.commit = repo, commit

    def read(self, path: str) -> bytes | None:
        """The file at `path`; a symbolic link inside the tree is followed there, one that
        leaves it (or dangles) reads as absent."""
        if "\n" in path:
            return None
        asked = f"{self.commit}:{path}\n".encode()
        done = _git(self.repo, "cat-file", "--batch", "--follow-symlinks", stdin=asked)
        header, _, rest = done.stdout.partition(b"\n")
        parts = header.split()
        if done.returncode != 0 or len(parts) != 3 or parts[1] != b"blob":
            return None
        return rest[: int(parts[2])]

    def files_under(self, path: str) -> list[str]:
        """`path` itself when it is a file, else every file below it."""
        listed = _git(self.repo, "ls-tree", "-r", "-z", "--name-only", self.commit, "--", path)
        names = [n.decode() for n in listed.stdout.split(b"\0") if n]
        return names if listed.returncode == 0 else []

    def extract(self, paths: Iterable[str], into: Path) -> list[str]:
        """Write the files at (and under) `paths` into `into`, a fresh private folder: regular
        files and folders only, nothing outside it. Returns the paths that were not there."""
        absent = []
        for path in paths:
            names = self.files_under(path)
            if not names:
                absent.append(path)
            for name in names:
                content = self.read(name)
                if content is not None and _inside(name):
                    (into / name).parent.mkdir(parents=True, exist_ok=True)
                    (into / name).write_bytes(content)
        return absent


def _inside(path: str) -> bool:
    """A repository-relative path that stays inside the repository."""
    return not (posixpath.isabs(path) or path == ".." or path.startswith("../"))


def _referenced(table: Mapping[str, Any], folder: str) -> list[str]:
    """The repository paths a config's table names: its matrix folder and each model's file,
    dataset, text and prompt set."""
    names = [table.get("matrix", "device-matrix")]
    for model in table.get("models", []) if isinstance(table.get("models"), list) else []:
        if isinstance(model, dict):
            names += [model.get(key) for key in ("path", "dataset", "text", "prompts")]
    joined = (posixpath.normpath(posixpath.join(folder, n)) for n in names if isinstance(n, str))
    return [p for p in joined if _inside(p)]


def _table(text: bytes, name: str) -> Mapping[str, Any]:
    """The harness table of a config file's text (pyproject.toml: [tool.harness])."""
    try:
        document = tomllib.loads(text.decode("utf-8", errors="replace"))
    except tomllib.TOMLDecodeError:
        return {}
    if posixpath.basename(name) == "pyproject.toml":
        table = document.get("tool", {}).get("harness", {})
        return table if isinstance(table, dict) else {}
    return document


def _named_in_repo(config: HarnessConfig, repo: Path) -> str | None:
    """The config's path in the repository as the command named it: its folder as git sees
    it, its file name unresolved (a link stays a link)."""
    prefix = _git(config.source.parent, "rev-parse", "--show-prefix")
    if prefix.returncode != 0:
        return None
    return posixpath.join(prefix.stdout.decode().strip(), config.source.name)


def _link(repo: Path, relative: str) -> str | None:
    """Why the config at `relative` in the checkout is not what git's tree holds there: a
    symbolic link (the base's config at that path is the reference either way)."""
    path = repo / relative
    if path.is_symlink():
        return f"{relative} is a symbolic link to {os.readlink(path)}"
    return None


def _from_git(ref: str, config: HarnessConfig) -> Baseline | None:
    top = _git(config.root, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        return None
    repo = Path(top.stdout.decode().strip())
    resolved = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if resolved.returncode != 0:
        return None
    commit = resolved.stdout.decode().strip()
    label = f"{ref} ({commit[:12]})"
    relative = _named_in_repo(config, repo)
    if relative is None:
        return None
    tree = _Commit(repo, commit)
    # Private, outside the work tree: nothing the change committed can redirect these writes.
    snapshot = Path(tempfile.mkdtemp(prefix=f"harness-base-{commit[:12]}-"))
    found: dict[str, Any] = dict(source=ref, kind="git", label=label, snapshot=snapshot,
                                 commit=commit, config_link=_link(repo, relative))  # fmt: skip
    text = tree.read(relative)
    if text is None:
        return _without_config(tree, snapshot, config, repo, label, relative, found)
    table = _table(text, relative)
    tree.extract([relative, *_referenced(table, posixpath.dirname(relative))], snapshot)
    base_config, problem = _base_config(snapshot / relative, config)
    files, missing = {}, {}
    for model in base_config.models if base_config is not None else ():
        if model.path.exists():
            files[model.name] = model.path
        else:
            where = model.path.relative_to(snapshot).as_posix()
            missing[model.name] = f"{where} does not exist at {label}"
    return Baseline(**found, files=files, missing=missing, config=base_config,
                    config_problem=problem)  # fmt: skip


def _without_config(
    tree: _Commit,
    snapshot: Path,
    config: HarnessConfig,
    repo: Path,
    label: str,
    relative: str,
    found: dict[str, Any],
) -> Baseline:
    """A base without a harness config: every gate is new; each model's file where this
    change's config puts it, as it was at the base commit."""
    files, missing = {}, {}
    for model in config.models:
        try:
            where = model.path.relative_to(repo.resolve()).as_posix()
        except ValueError:
            missing[model.name] = f"{model.path} is outside the git repository {repo}"
            continue
        if tree.extract([where], snapshot):
            missing[model.name] = f"{where} does not exist at {label}"
        else:
            files[model.name] = snapshot / where
    absent = f"{relative} does not exist at {label}: every gate is new"
    return Baseline(**found, files=files, missing=missing, config_absent=absent)


def _base_config(path: Path, config: HarnessConfig) -> tuple[HarnessConfig | None, str | None]:
    """The base's config, with the base's own device profiles (its matrix folder, beside it)."""
    try:
        return load_config(path), None
    except ConfigError as exc:
        return None, f"the base's config does not load: {exc}"


def _from_folder(folder: Path, config: HarnessConfig) -> Baseline:
    config_path = folder / config.source.relative_to(config.root)
    base_config, problem, absent = None, None, None
    if config_path.is_file():
        base_config, problem = _base_config(config_path, config)
    else:
        absent = f"{config_path} does not exist: every gate is new"
    named = (
        {m.name: m.path for m in base_config.models}
        if base_config is not None
        else {m.name: folder / m.path.relative_to(config.root) for m in config.models}
    )
    files, missing = {}, {}
    for name, path in named.items():
        if path.is_file() or is_language_model(path):  # a file, or a GenAI folder
            files[name] = path
        else:
            missing[name] = f"{path} does not exist in the baseline folder"
    return Baseline(str(folder), "folder", str(folder), files, missing=missing,
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
    found = dict(stored=stored, missing=missing, fingerprint=fingerprint)
    return Baseline(str(path), "results", label, **found, **_stored_config(document, config, path))


def _stored_config(
    document: Mapping[str, Any], config: HarnessConfig, path: Path
) -> dict[str, Any]:
    """The config a results document was made with (its `config_snapshot`), read as if it
    were this checkout's, with its files' digests and device profiles as they were."""
    snapshot = document.get("config_snapshot")
    if not isinstance(snapshot, dict) or not isinstance(snapshot.get("text"), str):
        return {"config_absent": f"{path} does not carry the config it was made with"}
    name = str(snapshot.get("name") or config.source.name)
    table = _table(snapshot["text"].encode(), name)
    prefix = "tool.harness." if name == "pyproject.toml" else ""
    try:
        base = parse_config(table, config.source, prefix, config.profiles)
    except ConfigError as exc:
        return {"config_problem": f"the config stored in {path} does not load: {exc}"}
    digests = dict(snapshot.get("digests") or {})

    def digest(file: Path) -> str | None:
        try:
            return digests.get(file.relative_to(config.root).as_posix())
        except ValueError:
            return None

    profiles = dict(snapshot.get("profiles") or {})
    return {"config": base, "digest": digest, "profiles": profiles}


def config_snapshot(
    config: HarnessConfig,
    measured: Path,
    roots: Sequence[Path],
    profiles: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """What a results document carries so it can be a base later: the text of the config file
    `measured` (the base's, when the session measured the base's config), the digests of
    `config`'s data files by path under its folder (or under one of `roots`, where the base's
    files were read from), and the device profiles as compared (harness.policy)."""
    digests = {}
    for model in config.models:
        for file in (model.dataset, model.text):
            content = file_digest(file) if file is not None else None
            where = _relative(file, [config.root, *roots]) if file is not None else None
            if content is not None and where is not None:
                digests[where] = content
    return {
        "name": measured.name,
        "text": measured.read_text(encoding="utf-8", errors="replace"),
        "digests": digests,
        "profiles": dict(profiles),
    }


def _relative(path: Path, roots: Sequence[Path]) -> str | None:
    for root in roots:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            continue
    return None


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
            return Baseline(source, "model", path.name, {config.models[0].name: path.resolve()})
        return _from_results(path, config)
    from_git = _from_git(source, config)
    if from_git is not None:
        return from_git
    raise ConfigError(
        f"--baseline {source}: not a git ref of the repository holding {config.source}, nor an "
        "existing folder, model file or results file"
    )
