"""Build the small language model of this example: train_model.py's corpus, tokenizer and
3.2 M-parameter llama-style decoder (trained once per training key, cached), exported to ONNX
Runtime GenAI model folders in float32, int8 and int4, plus the same network with random weights
(the reference a trained model's perplexity must be far below), and to GGUF for llama.cpp: F16
written with PyPI `gguf` (harness.modelgen.gguf), then Q8_0, Q4_K_M and Q2_K made from it by
llama.cpp's own llama-quantize (the llama.cpp runtime set, harness.images.llamacpp).

No model hub is needed. Needs torch, transformers, tokenizers, onnx, onnx_ir and
onnxruntime-genai (heavy: keep them out of the harness's own environment). `python build_model.py
--venv` makes that environment once, at ~/.cache/harness/lm-venv, and re-runs itself there.
Results are cached (training: ~/.cache/harness/slm/train/<training key>/; exports:
~/.cache/harness/slm/<export key>/) and copied into --out (default: this folder):

    models/slm-float/  models/slm-int8/  models/slm-int4/  models/slm-random/
    models/slm-f16.gguf  models/slm-q8_0.gguf  models/slm-q4_k_m.gguf  models/slm-q2_k.gguf
    data/train.txt  data/valid.txt  data/prompts.jsonl

`--seed N --threads N` train with another seed or number of torch threads (spread.py measures
how the quality figures move with them); the defaults are what the example and the tests use.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[2]))  # harness, for its GGUF writer
import train_model  # noqa: E402  (beside this script)

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "harness"))
VENV = CACHE / "lm-venv"
# torch 2.13.0 is the CPU build this machine keeps on disk; elsewhere pip takes the CPU wheel from
# PyTorch's index (set PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu).
REQUIREMENTS = (
    "torch==2.13.0",
    "transformers==5.24.0",
    "tokenizers==0.23.3",
    "onnx==1.23.2",
    "onnx_ir",
    "onnxruntime==1.32.0",
    "onnxruntime-genai==0.18.0",
    "gguf==0.19.0",
)
PRECISIONS = ("fp32", "int8", "int4")
FOLDERS = {"fp32": "slm-float", "int8": "slm-int8", "int4": "slm-int4"}
GGUF_QUANTS = ("Q8_0", "Q4_K_M", "Q2_K")  # made from slm-f16.gguf by llama-quantize


def key(seed: int, threads: int, llama_cpp: Path) -> str:
    """The export's cache key: this script's and the GGUF writer's bytes, the llama.cpp that
    quantizes, and the training's key."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update((HERE.parents[1] / "harness" / "modelgen" / "gguf.py").read_bytes())
    digest.update((llama_cpp / "manifest.json").read_bytes())
    return f"{digest.hexdigest()[:16]}-{train_model.key(seed, threads)}"


def llama_cpp_set() -> Path:
    """The llama.cpp runtime set for this host (fetched by harness once, then cached)."""
    try:
        from harness.devices import HOST_ARCH
        from harness.images.llamacpp import fetch
    except ImportError as exc:
        sys.exit(f"harness is not importable here ({exc}); run this script with harness's venv")
    return fetch(HOST_ARCH)


def export_gguf(hf: Path, models: Path, llama_cpp: Path) -> None:
    """slm-f16.gguf written with PyPI gguf, then llama-quantize's variants of it."""
    from harness.modelgen.gguf import write_gguf
    from harness.runtimes.llamacpp_set import quantize

    f16 = write_gguf(hf, models / "slm-f16.gguf", "f16", "slm")
    for kind in GGUF_QUANTS:
        quantize(llama_cpp, f16, models / f"slm-{kind.lower()}.gguf", kind)


def cached(folder: Path, make: Callable[[Path], None]) -> Path:
    """`folder`, made by `make(folder)` unless it exists; builds of one folder wait for each
    other (a lock file beside it)."""
    if not folder.is_dir():
        folder.parent.mkdir(parents=True, exist_ok=True)
        with (folder.parent / f"{folder.name}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another build of the same key: wait for it
            if not folder.is_dir():
                make(folder)
    return folder


def export(hf: Path, out: Path, precision: str) -> None:
    """The ONNX Runtime GenAI model builder, from the local folder (no hub)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "onnxruntime_genai.models.builder",
            "-i",
            str(hf),
            "-o",
            str(out),
            "-p",
            precision,
            "-e",
            "cpu",
            "-c",
            str(out.parent / f".builder-cache-{out.name}"),
        ],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
    )
    if done.returncode:
        sys.exit(f"the GenAI model builder failed for {precision}:\n{done.stdout}{done.stderr}")
    shutil.rmtree(out.parent / f".builder-cache-{out.name}", ignore_errors=True)


def build(target: Path, seed: int, threads: int, llama_cpp: Path) -> None:
    trained = CACHE / "slm" / "train" / train_model.key(seed, threads)
    cached(trained, lambda folder: train_model.train(folder, seed, threads))
    work = target.with_name(target.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(trained / "data", work / "data")
    for precision in PRECISIONS:
        export(trained / "hf" / "trained", work / "models" / FOLDERS[precision], precision)
    export(trained / "hf" / "random", work / "models" / "slm-random", "fp32")
    export_gguf(trained / "hf" / "trained", work / "models", llama_cpp)
    work.rename(target)


def ensure_venv() -> Path:
    python = VENV / "bin" / "python"
    complete = VENV / "requirements.txt"  # written last: a failed install is redone
    wanted = "\n".join(REQUIREMENTS) + "\n"
    if not complete.is_file() or complete.read_text() != wanted:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *REQUIREMENTS], check=True)
        complete.write_text(wanted)
    return python


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="where models/ and data/ go")
    parser.add_argument("--venv", action="store_true", help=f"run inside {VENV} (made if missing)")
    parser.add_argument(
        "--cache-only", action="store_true", help="build into the cache only; print its folder"
    )
    parser.add_argument("--seed", type=int, default=train_model.SEED, help="training seed")
    parser.add_argument(
        "--threads", type=int, default=train_model.THREADS, help="torch threads while training"
    )
    parser.add_argument(
        "--llama-cpp", type=Path, help="the llama.cpp runtime set (default: fetched by harness)"
    )
    args = parser.parse_args()
    llama_cpp = args.llama_cpp or llama_cpp_set()
    folder = CACHE / "slm" / key(args.seed, args.threads, llama_cpp)
    if not folder.is_dir():
        if args.venv:
            python = ensure_venv()
            command = [str(python), __file__, "--out", str(args.out), "--llama-cpp", str(llama_cpp)]
            command += ["--seed", str(args.seed), "--threads", str(args.threads)]
            command += ["--cache-only"] if args.cache_only else []
            sys.exit(subprocess.run(command).returncode)
        cached(folder, lambda target: build(target, args.seed, args.threads, llama_cpp))
    if args.cache_only:
        print(folder)
        return
    for part in ("models", "data"):
        for entry in sorted((folder / part).iterdir()):
            destination = args.out / part / entry.name
            if entry.is_dir():
                shutil.rmtree(destination, ignore_errors=True)
                shutil.copytree(entry, destination)
            else:
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(entry, destination)
    print(f"models and data in {args.out} (cache {folder})")


if __name__ == "__main__":
    main()
