"""Write a GGUF file (llama.cpp's format) from a Hugging Face decoder folder, with PyPI `gguf`.

What llama.cpp's own `convert_hf_to_gguf.py` does for the two architectures harness builds
(`LlamaForCausalLM` -> arch `llama`, `Qwen2ForCausalLM` -> arch `qwen2`), without its
pre-tokenizer detection (which refuses a tokenizer it does not know, as the example's own one):

- tensors renamed to llama.cpp's names (token_embd, blk.N.attn_q, ..., output_norm, output);
- the llama arch's query and key weights permuted from Hugging Face's rotate-half layout to the
  interleaved one llama.cpp's RoPE expects (qwen2 uses NEOX RoPE: no permutation);
- the byte-level BPE tokenizer (tokenizer.json) as `tokenizer.ggml.model = "gpt2"` with the GPT-2
  pre-tokenizer, padded with unused tokens up to the embedding's rows (a random-weight model of a
  published shape has a 49,152-row embedding and a small tokenizer).

Weights are written in float32 or float16 (`ftype` "f32" | "f16"); quantized variants (Q8_0,
Q4_K_M, Q2_K...) come from llama.cpp's own `llama-quantize` (harness.llamacpp.quantize).

Runs where torch-free `safetensors` and `gguf` are installed (the examples' lm-venv); the harness
core never imports it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

ARCHITECTURES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}
PRE_TOKENIZER = "gpt-2"  # the GPT-2 split regex: what tokenizers' ByteLevel(use_regex=True) uses
TOKEN_NORMAL, TOKEN_CONTROL, TOKEN_UNUSED = 1, 3, 5  # llama.cpp's token types


def permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """Hugging Face's rotate-half query/key rows -> llama.cpp's interleaved pairs (as
    convert_hf_to_gguf.py's LlamaModel.permute)."""
    rows = weights.shape[0]
    return (
        weights.reshape(heads, 2, rows // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _tensor_names(arch: str, layers: int) -> dict[str, str]:
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight":
             "output_norm.weight", "lm_head.weight": "output.weight"}  # fmt: skip
    parts = {
        "input_layernorm.weight": "attn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight",
        "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.v_proj.weight": "attn_v.weight",
        "self_attn.o_proj.weight": "attn_output.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight",
        "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
    }
    if arch == "qwen2":
        parts |= {f"self_attn.{x}_proj.bias": f"attn_{x}.bias" for x in "qkv"}
    for layer in range(layers):
        for hf, ours in parts.items():
            names[f"model.layers.{layer}.{hf}"] = f"blk.{layer}.{ours}"
    return names


def _tokenizer(folder: Path, rows: int) -> tuple[list[str], list[int], list[str], dict[str, int]]:
    """(tokens, token types, merges, special ids) of a byte-level BPE tokenizer.json, padded
    with unused tokens to `rows` entries."""
    document = json.loads((folder / "tokenizer.json").read_text())
    model = document["model"]
    if model.get("type") != "BPE":
        raise ValueError(f"{folder}/tokenizer.json: a {model.get('type')} tokenizer; only BPE")
    vocab: dict[str, int] = dict(model["vocab"])
    special = {t["content"]: int(t["id"]) for t in document.get("added_tokens", [])}
    vocab |= special
    if len(vocab) > rows:
        raise ValueError(f"the tokenizer has {len(vocab)} tokens, the embedding {rows} rows")
    tokens = [f"[PAD{i}]" for i in range(rows)]
    types = [TOKEN_UNUSED] * rows
    for text, index in vocab.items():
        tokens[index] = text
        types[index] = TOKEN_CONTROL if text in special else TOKEN_NORMAL
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return tokens, types, merges, special


def write_gguf(hf: Path, out: Path, ftype: str = "f16", name: str | None = None) -> Path:
    """The Hugging Face decoder folder `hf` (config.json, model.safetensors, tokenizer.json)
    as one GGUF file at `out`, weights in `ftype` ("f32" or "f16"; norms stay float32)."""
    import gguf
    from safetensors.numpy import load_file

    config: dict[str, Any] = json.loads((hf / "config.json").read_text())
    architecture = (config.get("architectures") or ["?"])[0]
    if architecture not in ARCHITECTURES:
        raise ValueError(f"{hf}: {architecture} is not one of {', '.join(ARCHITECTURES)}")
    if ftype not in ("f32", "f16"):
        raise ValueError(f"ftype {ftype!r}: f32 or f16 (llama-quantize makes the others)")
    arch = ARCHITECTURES[architecture]
    weights: dict[str, np.ndarray] = {}
    for file in sorted(hf.glob("*.safetensors")):
        weights |= load_file(str(file))
    layers, heads = int(config["num_hidden_layers"]), int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    hidden = int(config["hidden_size"])
    head_dim = int(config.get("head_dim") or hidden // heads)
    rows = int(weights["model.embed_tokens.weight"].shape[0])

    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_name(name or hf.name)
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(config.get("rope_theta") or 10000.0))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps") or 1e-6))
    writer.add_vocab_size(rows)
    file_type = gguf.LlamaFileType.ALL_F32 if ftype == "f32" else gguf.LlamaFileType.MOSTLY_F16
    writer.add_file_type(file_type)

    tokens, types, merges, special = _tokenizer(hf, rows)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(PRE_TOKENIZER)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for key, setter in (("bos_token_id", writer.add_bos_token_id),
                        ("eos_token_id", writer.add_eos_token_id)):  # fmt: skip
        value = config.get(key)
        if isinstance(value, list):
            value = value[0]
        if value is not None:
            setter(int(value))
    writer.add_add_bos_token(False)  # as the Hugging Face tokenizer: no BOS added to text

    names = _tensor_names(arch, layers)
    tied = bool(config.get("tie_word_embeddings")) or "lm_head.weight" not in weights
    for source, array in weights.items():
        if source == "lm_head.weight" and tied:
            continue
        if source not in names:
            raise ValueError(f"{hf}: tensor {source} has no GGUF name (not a {architecture}?)")
        data = np.asarray(array, dtype=np.float32)
        if arch == "llama" and source.endswith("q_proj.weight"):
            data = permute(data, heads)
        elif arch == "llama" and source.endswith("k_proj.weight"):
            data = permute(data, kv_heads)
        if ftype == "f16" and data.ndim == 2:
            data = data.astype(np.float16)
        writer.add_tensor(names[source], data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
