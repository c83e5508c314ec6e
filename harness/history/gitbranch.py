"""The history on a git branch: one record file per run (harness.history.records), appended by
commits on a branch of its own (default `harness-history`), read through a local SQLite file
that is only a cache of it (rebuilt from the branch whenever it is missing or disagrees).

Why a branch: it lasts as long as the repository (the Actions cache evicts entries unused for a
week, artifacts expire), anyone who can read the repository can read it, and GitHub Pages can
serve the nightly site from it. Writers are the nightly workflow on the default branch (with
`contents: write` there only); pull-request checks only fetch.

Writing never touches a work tree: the commit is built with git's plumbing in a private index
(`read-tree`, `update-index`, `write-tree`, `commit-tree`) on top of the branch's fetched tip and
pushed without force. Record files have unique names, so two writers never conflict; when
another writer pushed first the push is refused (non-fast-forward), and the writer fetches the
new tip and builds its commit again on it, up to PUSH_ATTEMPTS times with a growing, jittered
pause. A run is therefore never lost and never stored twice.

Where git works: for `git:NAME` with NAME a remote of the repository in the current folder
(`git:origin` in a workflow's checkout, using the checkout's credentials), that repository; the
fetched tip is kept under `refs/harness/BRANCH`, nothing else in it changes. For a path or a
URL, a bare repository under the cache folder. The cache folder (`$HARNESS_CACHE/history/<hash of
remote and branch>/`, or `--history-cache`) holds the SQLite cache and a lock file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from harness.errors import ConfigError
from harness.history.records import RunRecord
from harness.history.sqlite import Store

__all__ = ["DEFAULT_BRANCH", "PUSH_ATTEMPTS", "GitError", "GitHistory", "parse_location"]

DEFAULT_BRANCH = "harness-history"
PUSH_ATTEMPTS = 12
RUNS = "runs"
_RACE = re.compile(
    r"non-fast-forward|fetch first|\[rejected\]|cannot lock ref|failed to update ref|"
    r"stale info|incorrect old value|reference already exists",
    re.I,
)
_MISSING_BRANCH = re.compile(r"couldn't find remote ref", re.I)


class GitError(ConfigError):
    """A git command failed: the message names the command and what git said."""


def parse_location(location: str) -> tuple[str, str]:
    """(remote, branch) from `git:REMOTE[#BRANCH]` or `git+URL[#BRANCH]`."""
    body = location.removeprefix("git:") if location.startswith("git:") else location[4:]
    remote, _, branch = body.partition("#")
    if not remote:
        raise ConfigError(
            f"--history {location}: name the remote, e.g. git:origin, git:/srv/history.git or "
            "git+https://github.com/OWNER/NAME.git"
        )
    branch = branch or DEFAULT_BRANCH
    if not re.fullmatch(r"[A-Za-z0-9._/-]+", branch) or ".." in branch:
        raise ConfigError(f"--history {location}: {branch!r} is not a branch name")
    return remote, branch


def _is_remote_name(remote: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9._-]+", remote) is not None and not Path(remote).exists()


def default_cache_root() -> Path:
    root = os.environ.get("HARNESS_CACHE") or str(Path.home() / ".cache" / "harness")
    return Path(root) / "history"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Git:
    """git commands in one repository (a checkout's, or the cache's bare one)."""

    def __init__(self, git_dir: Path) -> None:
        self.git_dir = git_dir
        self.env = {
            **os.environ,
            "GIT_DIR": str(git_dir),
            "GIT_TERMINAL_PROMPT": "0",  # a missing credential fails instead of waiting
            "GIT_AUTHOR_NAME": os.environ.get("GIT_AUTHOR_NAME", "harness"),
            "GIT_AUTHOR_EMAIL": os.environ.get("GIT_AUTHOR_EMAIL", "harness@localhost"),
            "GIT_COMMITTER_NAME": os.environ.get("GIT_COMMITTER_NAME", "harness"),
            "GIT_COMMITTER_EMAIL": os.environ.get("GIT_COMMITTER_EMAIL", "harness@localhost"),
        }
        self.env.pop("GIT_WORK_TREE", None)
        self.env.pop("GIT_INDEX_FILE", None)

    def run(
        self,
        *args: str,
        input: str | bytes | None = None,
        check: bool = True,
        index: Path | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        env = self.env if index is None else {**self.env, "GIT_INDEX_FILE": str(index)}
        data = input.encode() if isinstance(input, str) else input
        done = subprocess.run(["git", *args], input=data, capture_output=True, env=env)
        if check and done.returncode != 0:
            raise GitError(
                f"git {' '.join(args[:3])} failed in {self.git_dir}: "
                f"{done.stderr.decode(errors='replace').strip()}"
            )
        return done

    def text(self, *args: str, **kwargs: object) -> str:
        return self.run(*args, **kwargs).stdout.decode().strip()  # type: ignore[arg-type]

    def read_blobs(self, specs: Sequence[str]) -> list[bytes]:
        """The contents of `REV:PATH` objects, in one `git cat-file --batch`."""
        if not specs:
            return []
        out = self.run("cat-file", "--batch", input="".join(f"{s}\n" for s in specs)).stdout
        blobs: list[bytes] = []
        at = 0
        for spec in specs:
            end = out.index(b"\n", at)
            header = out[at:end].split()
            if len(header) < 3 or header[1] != b"blob":
                raise GitError(f"git cat-file: {spec} is not a file ({out[at:end]!r})")
            size = int(header[2])
            blobs.append(out[end + 1 : end + 1 + size])
            at = end + 1 + size + 1
        return blobs


class GitHistory(Store):
    """A history branch read through its SQLite cache; writes go to the branch first."""

    remote: str
    branch: str
    git: Git
    readonly: bool
    retries: int  # pushes refused because another writer was first, in this process

    @classmethod
    def open(
        cls,
        location: str,
        *,
        repository: str | None = None,
        readonly: bool = False,
        cache: Path | None = None,
    ) -> GitHistory:
        remote, branch = parse_location(location)
        if _is_remote_name(remote):
            found = subprocess.run(
                ["git", "rev-parse", "--absolute-git-dir"], capture_output=True, text=True
            )
            if found.returncode != 0:
                raise ConfigError(
                    f"--history {location}: {remote!r} names a remote of the repository in the "
                    f"current folder, and {Path.cwd()} is in none; run it in a checkout, or name "
                    "the repository by path or URL (git:/path/to/repo.git)"
                )
            git_dir = Path(found.stdout.strip())
            url = subprocess.run(
                ["git", "--git-dir", str(git_dir), "remote", "get-url", remote],
                capture_output=True,
                text=True,
            )
            if url.returncode != 0:
                raise ConfigError(
                    f"--history {location}: the repository at {git_dir} has no remote {remote!r} "
                    "(`git remote -v` lists them)"
                )
            key = f"{url.stdout.strip()}#{branch}"
        else:
            if "://" not in remote and not remote.startswith("git@"):
                remote = str(Path(remote).resolve())
            key = f"{remote}#{branch}"
            git_dir = Path()  # set below, inside the cache folder
        folder = cache or default_cache_root() / hashlib.sha256(key.encode()).hexdigest()[:16]
        folder.mkdir(parents=True, exist_ok=True)
        if git_dir == Path():
            git_dir = folder / "repo.git"
            with _locked(folder / "lock"):
                if not (git_dir / "HEAD").exists():
                    subprocess.run(
                        ["git", "init", "--quiet", "--bare", str(git_dir)],
                        check=True,
                        capture_output=True,
                    )
        history = cls(folder / "history.sqlite", repository=repository)
        history.remote, history.branch, history.readonly = remote, branch, readonly
        history.git = Git(git_dir)
        history.retries = 0
        history.lock = folder / "lock"
        history.sync()
        return history

    lock: Path

    @property
    def where(self) -> str:
        return f"branch {self.branch} of {self.remote}"

    @property
    def tracking(self) -> str:
        return f"refs/harness/{self.branch}"

    # -- reading ----------------------------------------------------------------------------

    def fetch(self) -> str | None:
        """Fetch the branch; its tip, or None when the remote has no such branch yet."""
        done = self.git.run(
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-write-fetch-head",
            self.remote,
            f"+refs/heads/{self.branch}:{self.tracking}",
            check=False,
        )
        if done.returncode == 0:
            return self.git.text("rev-parse", "--verify", f"{self.tracking}^{{commit}}")
        message = done.stderr.decode(errors="replace").strip()
        if _MISSING_BRANCH.search(message):
            self.git.run("update-ref", "-d", self.tracking, check=False)
            return None
        raise GitError(
            f"cannot fetch {self.where}: {message} (check the remote and that this job may read it)"
        )

    def _paths(self, tip: str | None) -> list[str]:
        if tip is None:
            return []
        listed = self.git.text("ls-tree", "-r", "--name-only", tip, "--", f"{RUNS}/")
        return [p for p in listed.splitlines() if p.endswith(".json")]

    def _tip_in_cache(self) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'git_tip'").fetchone()
        return str(row[0]) if row else None

    def _import(self, tip: str | None) -> int:
        """Bring the cache level with the branch at `tip`; the number of runs read."""
        if tip is not None and tip == self._tip_in_cache():
            return 0
        paths = self._paths(tip)
        on_branch = {Path(p).stem.rsplit("-", 1)[-1] for p in paths}
        cached = {d[:16] for d in self.digests()}
        if cached - on_branch:  # the cache holds runs the branch does not: rebuild it
            self.db.executescript("BEGIN IMMEDIATE; DELETE FROM figures; DELETE FROM runs; COMMIT;")
            cached = set()
        wanted = [p for p in paths if Path(p).stem.rsplit("-", 1)[-1] not in cached]
        blobs = self.git.read_blobs([f"{tip}:{p}" for p in wanted])
        for path, blob in zip(wanted, blobs, strict=True):
            record = RunRecord.from_text(blob.decode(), f"{self.where}: {path}")
            super().add_record(record)
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('git_tip', ?)", (tip or "",))
        return len(wanted)

    def sync(self) -> int:
        """Fetch the branch and read its new runs into the cache; how many were new."""
        with _locked(self.lock):
            return self._import(self.fetch())

    # -- writing ----------------------------------------------------------------------------

    def add_record(self, record: RunRecord) -> int:
        return self.add_records([record])[0]

    def add_records(self, records: Sequence[RunRecord]) -> list[int]:
        """Append the records to the branch in one commit; their run ids in the cache."""
        self.append(records)
        found = []
        for record in records:
            row = self.db.execute("SELECT id FROM runs WHERE digest = ?", (record.digest,))
            found.append(int(row.fetchone()[0]))
        return found

    def append(self, records: Sequence[RunRecord], message: str | None = None) -> int:
        """Commit the records not on the branch yet and push; how many were added."""
        added: list[int] = []

        def files(tip: str | None) -> dict[str, bytes] | None:
            present = set(self._paths(tip))
            todo = {r.path: r.text().encode() for r in records if r.path not in present}
            added[:] = [len(todo)]
            return todo or None

        count = len(records)
        text = message or (
            f"harness history: {count} run{'s' * (count != 1)}"
            + (f" of {records[0].commit[:10]}" if count == 1 and records[0].commit else "")
        )
        self._write(files, text, keep_site=True)
        return added[0] if added else 0

    def publish(self, render: Callable[[], Mapping[str, bytes]], message: str) -> bool:
        """Replace everything on the branch outside runs/ with `render()`'s files (the nightly
        site), rendered from the runs at the tip it lands on; False when nothing changed."""

        def files(tip: str | None) -> dict[str, bytes] | None:
            self._import(tip)
            return dict(render())

        return self._write(files, message, keep_site=False)

    def _write(
        self,
        files: Callable[[str | None], Mapping[str, bytes] | None],
        message: str,
        *,
        keep_site: bool,
    ) -> bool:
        if self.readonly:
            raise ConfigError(
                f"the history on {self.where} was opened read-only; a pull request's check "
                "reads it, only the nightly run on the default branch writes it"
            )
        pause = 0.1
        last = ""
        with _locked(self.lock):
            for _ in range(PUSH_ATTEMPTS):
                tip = self.fetch()
                wanted = files(tip)
                if wanted is None:
                    self._import(tip)
                    return False
                commit = self._commit(tip, wanted, message, keep_site=keep_site)
                if commit == tip:
                    return False
                done = self.git.run(
                    "push", "--quiet", "--porcelain", self.remote,
                    f"{commit}:refs/heads/{self.branch}", check=False,
                )  # fmt: skip
                if done.returncode == 0:
                    self.git.run("update-ref", self.tracking, commit)
                    self._import(commit)
                    return True
                last = (done.stdout + done.stderr).decode(errors="replace").strip()
                if not _RACE.search(last):
                    raise GitError(
                        f"cannot push to {self.where}: {last} (the nightly job needs "
                        "`permissions: contents: write` and a checkout that keeps its "
                        "credentials)"
                    )
                self.retries += 1
                time.sleep(pause * (0.5 + random.random()))
                pause = min(pause * 2, 5.0)
        raise GitError(
            f"gave up pushing to {self.where} after {PUSH_ATTEMPTS} attempts, each refused "
            f"because another writer pushed first: {last}"
        )

    def _commit(
        self, tip: str | None, files: Mapping[str, bytes], message: str, *, keep_site: bool
    ) -> str:
        """A commit on `tip` with `files` added (and, unless keep_site, only runs/ kept)."""
        with tempfile.TemporaryDirectory(prefix="harness-history-") as folder:
            index = Path(folder) / "index"
            if tip is not None and keep_site:
                self.git.run("read-tree", tip, index=index)
            elif tip is not None and self._paths(tip):
                self.git.run("read-tree", f"--prefix={RUNS}/", f"{tip}:{RUNS}", index=index)
            else:
                self.git.run("read-tree", "--empty", index=index)
            names = []
            for number, (_, data) in enumerate(sorted(files.items())):
                file = Path(folder) / f"{number}"
                file.write_bytes(data)
                names.append(str(file))
            blobs = self.git.text(
                "hash-object", "-w", "--stdin-paths", input="\n".join(names) + "\n"
            ).splitlines()
            listing = "".join(
                f"100644 {blob}\t{path}\n" for blob, path in zip(blobs, sorted(files), strict=True)
            )
            self.git.run("update-index", "--add", "--index-info", input=listing, index=index)
            tree = self.git.text("write-tree", index=index)
            if tip is not None and tree == self.git.text("rev-parse", f"{tip}^{{tree}}"):
                return tip
            parents = ["-p", tip] if tip is not None else []
            return self.git.text("commit-tree", tree, *parents, "-m", message)
