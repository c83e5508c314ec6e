"""Train the small language model of this example: a generated corpus, a BPE tokenizer trained on
it and a llama-style decoder (3.2 M parameters) trained for a few minutes on the CPU, saved as
Hugging Face folders (hf/trained, and hf/random: the same network untrained). build_model.py
exports them; this file is only the training, so that a change to the exports does not retrain.

The corpus is a generated world with checkable facts ("The capital of Varo is Tesk.", "3 plus 4
is 7."), so the prompt set has right answers. The world and the data files depend on DATA_SEED
only; the training seed and the number of torch threads change the weights, not the data.

torch CPU training is not reproducible across machines (other kernels, other reduction orders),
and neither across thread counts on one machine: the quality figures of the trained model move
with the seed and the threads by a few points. examples/slm/spread.py measures that spread over
several seeds and thread counts, and the gates in harness.toml are set below it.

Needs torch, transformers and tokenizers (build_model.py --venv provides them).
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import time
from pathlib import Path

DATA_SEED = 0  # the world, train.txt, valid.txt, prompts.jsonl
SEED = 0  # the default training seed (weights' initialisation and batch order)
THREADS = 1  # the default torch threads: on a shared 2-core machine two were 8x slower per step
VOCAB = 512
CONTEXT = 256  # the model's position limit (max_length in genai_config.json)
SEQUENCE = 48  # training sequence length
STEPS = 600  # the loss plateaus near 0.75 nats by step 700 of 1500 (measured)
BATCH = 16

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


def key(seed: int = SEED, threads: int = THREADS) -> str:
    """The training's cache key: this file's bytes (corpus, sizes and training live in it), the
    training seed and the torch threads."""
    digest = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    return f"{digest}-seed{seed}-threads{threads}"


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
    rng = random.Random(DATA_SEED)
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


def build_hf(folder: Path, text_file: Path | None, seed: int, threads: int) -> None:
    """A llama-style decoder saved as a Hugging Face folder; trained on `text_file` if given."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
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
        torch.set_num_threads(threads)
        ids = torch.tensor(tokenizer(text_file.read_text())["input_ids"])
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 3e-3, total_steps=STEPS)
        generator = torch.Generator().manual_seed(seed)
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


def train(target: Path, seed: int = SEED, threads: int = THREADS) -> None:
    """data/ and hf/trained, hf/random into `target` (made whole or not at all)."""
    work = target.with_name(target.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    write_data(work)
    trained, untrained = work / "hf" / "trained", work / "hf" / "random"
    trained.mkdir(parents=True)
    train_tokenizer(work / "data" / "train.txt", trained)
    shutil.copytree(trained, untrained)
    build_hf(trained, work / "data" / "train.txt", seed, threads)
    build_hf(untrained, None, DATA_SEED, threads)  # the random twin does not move with the seed
    work.rename(target)
