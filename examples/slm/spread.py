"""Measure how the example's quality figures move with the training seed and torch's thread count,
and write spread.json, from which harness.toml's quality gates are set.

torch CPU training is not reproducible across machines (other kernels and reduction orders), so
a model retrained on a fresh machine is another draw of the same training: greedy-token agreement
of int4 with float moved from 0.842 on one machine to 0.793 on another. Seeds and thread counts
are the draws we can make here. For each (seed, threads) this builds the models (cached;
build_model.py --seed --threads) and runs the example's quality suites through pytest, as a user
would (`--device=host -k "perplexity or answers or token_parity"`), with the variants the gates
must tell apart added: int8 (ONNX) and Q8_0, Q2_K (GGUF).

    python examples/slm/spread.py                    # the grid below; minutes per draw
    python examples/slm/spread.py --draws 0:1 1:1    # seed:threads

tests/test_slm_spread.py checks harness.toml's gates against spread.json: every draw passes them
with a margin, and the damaging quantization (Q2_K) fails them in every draw.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DRAWS = ("0:1", "1:1", "2:1", "3:1", "4:1", "0:2")
FIGURES = (
    "perplexity",
    "answer_accuracy",
    "token_agreement",
    "token_agreement_low",
    "token_agreement_high",
    "kld_mean",
    "kld_mean_low",
    "kld_mean_high",
    "kld_p99",
    "kld_p99_low",
    "kld_p99_high",
    "perplexity_ratio",
    "perplexity_ratio_low",
    "perplexity_ratio_high",
)
# The variants the example does not gate, added so that the gates are seen to tell them apart.
EXTRA = """
[[models]]
name = "slm-int8"
task = "generate"
path = "models/slm-int8"
text = "data/valid.txt"
prompts = "data/prompts.jsonl"
parity_with = "slm-float"
[models.generate]
new_tokens = 8

[[models]]
name = "slm-q8_0"
task = "generate"
path = "models/slm-q8_0.gguf"
text = "data/valid.txt"
prompts = "data/prompts.jsonl"
parity_with = "slm-f16"
[models.generate]
new_tokens = 8

[[models]]
name = "slm-q2_k"
task = "generate"
path = "models/slm-q2_k.gguf"
text = "data/valid.txt"
prompts = "data/prompts.jsonl"
parity_with = "slm-f16"
[models.generate]
new_tokens = 8
"""


def training_digest() -> str:
    """The part of the training key that is train_model.py's bytes: a changed training makes
    spread.json stale (tests/test_slm_spread.py says so)."""
    return hashlib.sha256((HERE / "train_model.py").read_bytes()).hexdigest()[:16]


def built(seed: int, threads: int) -> Path:
    done = subprocess.run(
        [sys.executable, str(HERE / "build_model.py"), "--venv", "--cache-only",
         "--seed", str(seed), "--threads", str(threads)],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode:
        sys.exit(f"build of seed {seed}, {threads} threads failed:\n{done.stderr[-3000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def measured(models: Path) -> dict[str, dict[str, float]]:
    """The quality figures of every variant, from one pytest run of the example."""
    with tempfile.TemporaryDirectory(prefix="slm-spread-") as scratch:
        root = Path(scratch)
        shutil.copytree(models / "data", root / "data")
        shutil.copytree(models / "models", root / "models")
        config = (HERE / "harness.toml").read_text()
        (root / "harness.toml").write_text(config + "\n" + EXTRA)
        out = root / "out.json"
        subprocess.run(
            [sys.executable, "-m", "pytest", "--device=host", "-q", "-p", "no:cacheprovider",
             "-k", "perplexity or answers or token_parity", f"--harness-json={out}",
             "--rootdir", str(root)],
            cwd=root, capture_output=True, text=True,
        )  # fmt: skip
        document = json.loads(out.read_text())
    figures: dict[str, dict[str, float]] = {}
    for record in document["results"]:
        mine = figures.setdefault(record["model"], {})
        for name in FIGURES:
            value = record.get("figures", {}).get(name)
            if value is not None and (name != "perplexity" or record["suite"] == "perplexity"):
                mine[name] = value
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", nargs="+", default=list(DRAWS), help="seed:threads")
    parser.add_argument("--out", type=Path, default=HERE / "spread.json")
    args = parser.parse_args()
    draws = []
    for draw in args.draws:
        seed, threads = (int(x) for x in draw.split(":"))
        figures = measured(built(seed, threads))
        draws.append({"seed": seed, "threads": threads, "figures": figures})
        line = ", ".join(
            f"{m} {f['token_agreement']:.3f}/{f['kld_mean']:.4f}"
            for m, f in sorted(figures.items())
            if "kld_mean" in f
        )
        print(f"seed {seed}, {threads} threads: agreement/KLD {line}", flush=True)
    document = {
        "what": "quality figures of examples/slm per training draw (spread.py)",
        "training": training_digest(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "draws": draws,
    }
    args.out.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
