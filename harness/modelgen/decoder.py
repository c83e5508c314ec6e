"""Random-weight decoders of published shapes, as Hugging Face folders (the GenAI builder and
harness.modelgen.gguf take them from there): what the field ships at 100M-500M parameters, made
here without a model hub.

Random weights give the real cost (every multiply of a real model happens) and no quality: a
random model's perplexity is its vocabulary's size, and quantization agreement on it is noise
(int4 against fp32: 0.26 on SmolLM2-135M's shape). Quality gates belong on a trained model
(examples/slm); these models test scale: time, memory, the runtimes and the boards.

The tokenizer is the caller's (a small trained BPE, e.g. the example's): the embedding keeps
the published vocabulary's rows, so its size and the output projection's cost are the real ones;
tokens past the tokenizer's never occur in text.

Needs torch and transformers (the examples' lm-venv); the harness core never imports it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Shape:
    """A published decoder's configuration (its config.json on the Hugging Face hub)."""

    name: str
    architecture: str  # LlamaForCausalLM | Qwen2ForCausalLM
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    max_position_embeddings: int
    rope_theta: float
    rms_norm_eps: float
    tie_word_embeddings: bool = True

    def config(self) -> dict[str, object]:
        fields = asdict(self)
        fields.pop("name")
        fields["architectures"] = [fields.pop("architecture")]
        return fields


SHAPES = {
    shape.name: shape
    for shape in (
        # HuggingFaceTB/SmolLM2-135M
        Shape(
            "smollm2-135m", "LlamaForCausalLM", 576, 1536, 30, 9, 3, 49152, 8192, 100000.0, 1e-5
        ),  # fmt: skip
        # HuggingFaceTB/SmolLM2-360M
        Shape(
            "smollm2-360m", "LlamaForCausalLM", 960, 2560, 32, 15, 5, 49152, 8192, 100000.0, 1e-5
        ),  # fmt: skip
        # Qwen/Qwen2.5-0.5B (q/k/v biases: arch qwen2)
        Shape(
            "qwen2.5-0.5b", "Qwen2ForCausalLM", 896, 4864, 24, 14, 2, 151936, 32768, 1000000.0, 1e-6
        ),  # fmt: skip
    )
}


def random_decoder(shape: Shape, folder: Path, tokenizer: Path, seed: int = 0) -> Path:
    """`shape` with random weights (transformers' own initialisation, seeded) and the tokenizer
    files of the folder `tokenizer`, saved as a Hugging Face folder at `folder`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tokenizer / name).is_file():
            shutil.copy2(tokenizer / name, folder / name)
    special = json.loads((tokenizer / "tokenizer.json").read_text()).get("added_tokens", [])
    first = int(special[0]["id"]) if special else 0
    kind = "qwen2" if shape.architecture == "Qwen2ForCausalLM" else "llama"
    config = AutoConfig.for_model(kind, **shape.config(), bos_token_id=first, eos_token_id=first)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(folder)
    return folder
