"""Make field-scale language models for benchmarks/bench_slm.py: random-weight decoders of published
shapes (SmolLM2-135M, SmolLM2-360M, Qwen2.5-0.5B; harness.modelgen.decoder) in both formats:

    onnx-fp32/ onnx-int8/ onnx-int4/   ONNX Runtime GenAI folders (the GenAI model builder)
    f16.gguf                           GGUF written with PyPI gguf (harness.modelgen.gguf)
    q8_0.gguf q4_k_m.gguf              llama.cpp's llama-quantize of f16.gguf

into $HARNESS_CACHE/slm-scale/<key>/<shape>/ (not committed: hundreds of MB to GB each), with the
example's text and prompts (examples/slm's generated world) in data/. Random weights: time, memory
and the runtimes are real; quality is not (docs/language-models.md).

    python benchmarks/make_slm_models.py                         # every shape and variant
    python benchmarks/make_slm_models.py --shapes smollm2-135m --variants onnx-int4 q4_k_m.gguf

Runs itself in the examples' lm-venv (torch, transformers, the GenAI builder, gguf), as
examples/slm/build_model.py does; prints the cache folder last.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import importlib.util
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ONNX = {"onnx-fp32": "fp32", "onnx-int8": "int8", "onnx-int4": "int4"}
GGUF = {"q8_0.gguf": "Q8_0", "q4_k_m.gguf": "Q4_K_M"}
VARIANTS = (*ONNX, "f16.gguf", *GGUF)


def _example() -> ModuleType:
    """examples/slm/build_model.py as a module: its venv, export and llama.cpp helpers."""
    spec = importlib.util.spec_from_file_location(
        "build_model", ROOT / "examples" / "slm" / "build_model.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def key(llama_cpp: Path) -> str:
    digest = hashlib.sha256()
    modelgen = ROOT / "harness" / "modelgen"
    sources = (Path(__file__), modelgen / "decoder.py", modelgen / "gguf.py")
    for path in (*sources, llama_cpp / "manifest.json"):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def build(shape_name: str, target: Path, variants: list[str], llama_cpp: Path) -> None:
    """The missing `variants` of `shape_name` into `target` (each made whole or not at all)."""
    from harness.modelgen.decoder import SHAPES, random_decoder
    from harness.modelgen.gguf import write_gguf
    from harness.runtimes.llamacpp_set import quantize

    example = _example()
    train_model = example.train_model
    missing = [v for v in variants if not (target / v).exists()]
    if not missing:
        return
    target.mkdir(parents=True, exist_ok=True)
    work = target / ".work"
    shutil.rmtree(work, ignore_errors=True)
    train_model.write_data(work)  # the example's world: text, prompts, tokenizer corpus
    tokenizer = work / "tokenizer"
    tokenizer.mkdir()
    train_model.train_tokenizer(work / "data" / "train.txt", tokenizer)
    if not (target / "data").is_dir():
        (work / "data" / "train.txt").unlink()
        shutil.copytree(work / "data", target / "data")
    started = time.monotonic()
    hf = random_decoder(SHAPES[shape_name], work / "hf", tokenizer)
    print(f"{shape_name}: random weights in {time.monotonic() - started:.0f} s", flush=True)
    needs_f16 = any(v.endswith(".gguf") for v in missing) and not (target / "f16.gguf").exists()
    if needs_f16:
        write_gguf(hf, work / "f16.gguf", "f16", shape_name)
        (work / "f16.gguf").rename(target / "f16.gguf")
    for variant in missing:
        started = time.monotonic()
        if variant in ONNX:
            example.export(hf, work / variant, ONNX[variant])
            (work / variant).rename(target / variant)
        elif variant in GGUF:
            quantize(llama_cpp, target / "f16.gguf", work / variant, GGUF[variant], threads=2)
            (work / variant).rename(target / variant)
        print(f"{shape_name}: {variant} in {time.monotonic() - started:.0f} s", flush=True)
    shutil.rmtree(work)


def main() -> None:
    from harness.modelgen.decoder import SHAPES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=sorted(SHAPES))
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--llama-cpp", type=Path, help="the runtime set (default: fetched)")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    example = _example()
    llama_cpp = args.llama_cpp or example.llama_cpp_set()
    cache = example.CACHE / "slm-scale" / key(llama_cpp)
    wanted = [(s, cache / s) for s in args.shapes]
    if not args.inside and any(not (f / v).exists() for _, f in wanted for v in args.variants):
        python = example.ensure_venv()
        command = [str(python), __file__, "--inside", "--llama-cpp", str(llama_cpp),
                   "--shapes", *args.shapes, "--variants", *args.variants]  # fmt: skip
        done = subprocess.run(command)
        if done.returncode:
            sys.exit(done.returncode)
    elif args.inside:
        cache.mkdir(parents=True, exist_ok=True)
        for shape, folder in wanted:
            with (cache / f"{shape}.lock").open("w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # another build of the same shape: wait
                build(shape, folder, args.variants, llama_cpp)
        return
    print(cache)


if __name__ == "__main__":
    main()
