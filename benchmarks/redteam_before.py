"""Replay the trust boundary's red-team attempts (tests/test_trust_boundary.py) on an older harness,
the way its reusable workflow ran them, to show what each attempt got through before.

    python benchmarks/redteam_before.py [--harness-ref 3090ba8] [NAME ...]

For each attempt: a base repository (the digits model, 0.9733), a pull request that ships a worse
model and makes the attempt's edit, then the old device step (`python -m pytest --device host
--harness-config harness.toml --harness-json ... --baseline <base>`) and the old gate step
(`harness merge ... --expect-device host`), with the older harness first on the import path (a
git worktree of this repository at --harness-ref). Prints one line per attempt: both exit
statuses (0: the worse model passed). Measured 2026-12-07 at 3090ba8: every attempt of ATTEMPTS
exited 0 under both steps; conftest-patches and shadowing exited 0 under pytest and 1 under the
merge (it found no results).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

import test_trust_boundary as attempts  # noqa: E402


def replay(name: str, older: Path) -> tuple[int, int]:
    attempt = {**attempts.ATTEMPTS, **attempts.WORKFLOW_ONLY}[name][0]
    env = {**os.environ, "PYTHONPATH": str(older)}
    env.pop("PYTEST_ADDOPTS", None)
    folder = Path(tempfile.mkdtemp(prefix="redteam-"))
    try:
        source = folder / "base"
        source.mkdir()
        base = attempts.make_base(source)
        root = folder / "pr"
        subprocess.run(["git", "clone", "-q", str(source), str(root)], check=True)
        attempt(root)
        attempts.commit(root, name)
        results = folder / "results"
        results.mkdir()
        device = [sys.executable, "-m", "pytest", "--device", "host", "--harness-config"]
        device += ["harness.toml", f"--harness-json={results / 'host.json'}", "-p"]
        device += ["no:cacheprovider", "--baseline", base, "--harness-history=none"]
        ran = subprocess.run(device, cwd=root, env=env, capture_output=True, text=True)
        merge = [sys.executable, "-c", "import sys; from harness.cli import main; sys.exit(main())"]
        merge += ["merge", str(results), "--out", str(folder / "report"), "--expect-device", "host"]
        merged = subprocess.run(merge, cwd=folder, env=env, capture_output=True, text=True)
        return ran.returncode, merged.returncode
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--harness-ref", default="3090ba8", help="the older harness (git ref)")
    parser.add_argument("names", nargs="*", help="attempts (default: all)")
    args = parser.parse_args()
    names = args.names or [*attempts.ATTEMPTS, *attempts.WORKFLOW_ONLY]
    older = Path(tempfile.mkdtemp(prefix="harness-older-")) / "harness"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(older),
                    args.harness_ref], check=True)  # fmt: skip
    try:
        print(f"harness at {args.harness_ref}: exit statuses (0: the worse model passed)")
        print(f"{'attempt':20} {'pytest':>6} {'merge':>6}")
        for name in names:
            pytest_status, merge_status = replay(name, older)
            print(f"{name:20} {pytest_status:>6} {merge_status:>6}", flush=True)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(older)],
                       check=False)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
