"""Build the small language model of this example: a generated corpus, a BPE tokenizer trained on
it, a llama-style decoder (3.2 M parameters) trained for a few minutes on the CPU, exported
to ONNX Runtime GenAI model folders in float32, int8 and int4, plus the same network with random
weights (the reference a trained model's perplexity must be far below).

No model hub is needed. The corpus is a generated world with checkable facts ("The capital of Varo
is Tesk.", "3 plus 4 is 7."), so the prompt set has right answers.

Needs torch, transformers, tokenizers, onnx, onnx_ir and onnxruntime-genai (heavy: keep them out of
the harness's own environment). `python build_model.py --venv` makes that environment once, at
~/.cache/harness/lm-venv, and re-runs itself there. Results are cached under
~/.cache/harness/slm/<hash of this script>/ and copied into --out (default: this folder):

    models/slm-float/  models/slm-int8/  models/slm-int4/  models/slm-random/
    data/train.txt  data/valid.txt  data/prompts.jsonl
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

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
)
SEED = 0
VOCAB = 512
CONTEXT = 256  # the model's position limit (max_length in genai_config.json)
SEQUENCE = 48  # training sequence length
STEPS = 600  # the loss plateaus near 0.75 nats by step 700 of 1500 (measured)
BATCH = 16
PRECISIONS = ("fp32", "int8", "int4")
FOLDERS = {"fp32": "slm-float", "int8": "slm-int8", "int4": "slm-int4"}

SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ve",
    "ra",
    "tu",
    "sen",
    "dor",
    "pel",
    "vin",
    "zu",
    "har",
    "kel",
    "mon",
    "tas",
    "bri",
    "gol",
    "fen",
    "rud",
    "sal",
]
LANGUAGES = ["Norl", "Vesk", "Tamari", "Ostic", "Pell", "Quen", "Dravic", "Umbran"]


def key() -> str:
    """The cache key: this script's bytes (corpus, sizes and training all live in it)."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def make_world(rng: random.Random) -> list[tuple[str, str]]:
    """(prompt, answer) facts: countries with capitals and languages, and small sums."""
    names: set[str] = set()
    while len(names) < 40:
        names.add("".join(rng.choice(SYLLABLES) for _ in range(2)).capitalize())
    countries = sorted(names)
    cities = set()
    while len(cities) < len(countries):
        city = "".join(rng.choice(SYLLABLES) for _ in range(2)).capitalize()
        if city not in names:
            cities.add(city)
    facts = []
    capitals = sorted(cities)  # a set's order changes with PYTHONHASHSEED: sort, then shuffle
    rng.shuffle(capitals)
    for country, city in zip(countries, capitals, strict=True):
        facts.append((f"The capital of {country} is", city))
        facts.append((f"In {country} people speak", rng.choice(LANGUAGES)))
    for a in range(10):
        for b in range(10):
            facts.append((f"{a} plus {b} is", str(a + b)))
    return facts


def write_data(out: Path) -> list[tuple[str, str]]:
    rng = random.Random(SEED)
    facts = make_world(rng)
    lines = [f"{prompt} {answer}." for prompt, answer in facts]
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)

    def shuffled(copies: int) -> str:
        text = []
        for _ in range(copies):
            text += rng.sample(lines, len(lines))
        return "\n".join(text) + "\n"

    (data / "train.txt").write_text(shuffled(60))
    (data / "valid.txt").write_text(shuffled(2))  # the same facts in a fresh order
    sample = rng.sample(facts, 60)
    with (data / "prompts.jsonl").open("w") as prompts:
        for prompt, answer in sample:
            match = "exact" if answer.isdigit() else "contains"
            prompts.write(json.dumps({"prompt": prompt, "expected": answer, "match": match}) + "\n")
        # One regex entry, so every match kind is exercised.
        regex = {"prompt": "7 plus 5 is", "expected": "^12\\.?$", "match": "regex"}
        prompts.write(json.dumps(regex) + "\n")
    return facts


def train_tokenizer(text_file: Path, folder: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train([str(text_file)], trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        model_max_length=CONTEXT,
    )
    wrapped.save_pretrained(folder)
    # GenAI's tokenizer (onnxruntime-extensions) picks its algorithm from tokenizer_class.
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["tokenizer_class"] = "GPT2Tokenizer"
    config_file.write_text(json.dumps(config, indent=1))


def build_hf(folder: Path, text_file: Path | None) -> None:
    """A llama-style decoder saved as a Hugging Face folder; trained on `text_file` if given."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(SEED)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=704,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=CONTEXT,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    print(f"parameters: {sum(p.numel() for p in model.parameters()):,}", flush=True)
    if text_file is not None:
        # One thread: on a shared 2-core machine more threads were 8x slower per step (measured).
        torch.set_num_threads(1)
        ids = torch.tensor(tokenizer(text_file.read_text())["input_ids"])
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 3e-3, total_steps=STEPS)
        generator = torch.Generator().manual_seed(SEED)
        started = time.monotonic()
        model.train()
        for step in range(STEPS):
            starts = torch.randint(0, len(ids) - SEQUENCE - 1, (BATCH,), generator=generator)
            batch = torch.stack([ids[s : s + SEQUENCE] for s in starts])
            loss = model(input_ids=batch, labels=batch).loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            if step % 100 == 0 or step == STEPS - 1:
                elapsed = time.monotonic() - started
                print(f"step {step} loss {loss.item():.3f} ({elapsed:.0f} s)", flush=True)
        model.eval()
    model.save_pretrained(folder)


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


def build(target: Path) -> None:
    work = target.with_name(target.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    write_data(work)
    trained, untrained = work / "hf" / "trained", work / "hf" / "random"
    trained.mkdir(parents=True)
    train_tokenizer(work / "data" / "train.txt", trained)
    shutil.copytree(trained, untrained)
    build_hf(trained, work / "data" / "train.txt")
    build_hf(untrained, None)
    for precision in PRECISIONS:
        export(trained, work / "models" / FOLDERS[precision], precision)
    export(untrained, work / "models" / "slm-random", "fp32")
    shutil.rmtree(work / "hf")
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
    args = parser.parse_args()
    cached = CACHE / "slm" / key()
    if not cached.is_dir():
        if args.venv:
            python = ensure_venv()
            command = [str(python), __file__, "--out", str(args.out)]
            command += ["--cache-only"] if args.cache_only else []
            sys.exit(subprocess.run(command).returncode)
        cached.parent.mkdir(parents=True, exist_ok=True)
        with (cached.parent / f"{cached.name}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another build of the same key: wait for it
            if not cached.is_dir():
                build(cached)
    if args.cache_only:
        print(cached)
        return
    for part in ("models", "data"):
        for entry in sorted((cached / part).iterdir()):
            destination = args.out / part / entry.name
            if entry.is_dir():
                shutil.rmtree(destination, ignore_errors=True)
                shutil.copytree(entry, destination)
            else:
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(entry, destination)
    print(f"models and data in {args.out} (cache {cached})")


if __name__ == "__main__":
    main()
