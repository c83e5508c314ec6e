# TensorFlow and torch are typed only in the venv these generators run in (generate.sh), not in
# the one mypy checks them from: their decorators and base classes are Any there.
# mypy: disable-error-code="untyped-decorator,misc,name-defined,unused-ignore"
"""Build recipes and architectures beyond generate.py's three, for the timing model's calibration
and held-out checks (benchmarks/bench_fidelity.py --recipes): what users ship.

Recipes (TFLite converter, TF 2.21, random weights; latency does not depend on their values):
  fp32           the converter's default
  int8           full integer, int8 input and output, representative dataset (generate.py's)
  int8_float_io  full integer inside, float input and output (QUANTIZE / DEQUANTIZE at the ends)
  dynamic        dynamic-range quantization: int8 weights, float activations, no dataset
  fp16           float16 weights (DEQUANTIZE to float32 at load)
  int16x8        int16 activations, int8 weights: TFLite's own kernels (XNNPACK takes none)
  onnx           tf2onnx 1.17, opset 17 (onnxruntime's MLAS kernels)

Architectures: the six of generate.py (MobileNet v1/v2/v3-small/v3-large, EfficientNet-B0,
ResNet-50), and four that are not convolutional networks: `vit_tiny` (a ViT-Ti-shaped encoder,
6 layers, width 192, patches of 16), `bert_mini` (a BERT-mini-shaped text encoder on 128 input
embeddings, 4 layers, width 256), `lstm_kws` (two LSTM layers of 128 over 49 frames of 40
features, a keyword spotter's shape) and `gru_seq` (two GRU layers of 128 over 50 frames of 64).
Which models calibrate and which are held out is bench_fidelity.py's choice (ROLES), made before
any was measured.

    benchmarks/realscale/generate.sh --recipes [--only vit_tiny ...] [--recipe fp16 ...]

Output: ~/.cache/harness/models/recipes-<TF, Keras, tf2onnx, scripts' hash>/<arch>_<recipe>.tflite
(or .onnx) and manifest.json (per file: architecture, recipe, parameters, build seconds; a
recipe the converter or runtime refuses, or a converter that ends the process, is recorded with
its error, not built: run the script again to go on).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import generate  # the recipe of generate.py (ARCHITECTURES, SEED, cache folder, versions)
import numpy as np
import tensorflow as tf
import tf2onnx

keras = tf.keras
RECIPES = ("fp32", "int8", "int8_float_io", "dynamic", "fp16", "int16x8", "onnx")
CALIBRATION_SAMPLES = generate.CALIBRATION_SAMPLES


def _encoder_block(x: Any, heads: int, width: int, hidden: int) -> Any:
    """A pre-norm transformer encoder layer (LayerNorm, self-attention, LayerNorm, GELU MLP)."""
    h = keras.layers.LayerNormalization(epsilon=1e-6)(x)
    h = keras.layers.MultiHeadAttention(num_heads=heads, key_dim=width // heads)(h, h)
    x = keras.layers.Add()([x, h])
    h = keras.layers.LayerNormalization(epsilon=1e-6)(x)
    h = keras.layers.Dense(hidden, activation="gelu")(h)
    h = keras.layers.Dense(width)(h)
    return keras.layers.Add()([x, h])


class _Position(keras.layers.Layer):  # type: ignore[misc]
    """A learned position embedding added to the tokens."""

    def build(self, shape: Any) -> None:
        self.table = self.add_weight(shape=(1, shape[1], shape[2]), initializer="random_normal")

    def call(self, x: Any) -> Any:
        return x + self.table


def vit_tiny(inputs: Any) -> Any:
    x = keras.layers.Conv2D(192, 16, strides=16)(inputs)
    x = keras.layers.Reshape((196, 192))(x)
    x = _Position()(x)
    for _ in range(6):
        x = _encoder_block(x, heads=3, width=192, hidden=768)
    x = keras.layers.LayerNormalization(epsilon=1e-6)(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.layers.Dense(1000)(x)


def bert_mini(inputs: Any) -> Any:
    x = _Position()(inputs)
    for _ in range(4):
        x = _encoder_block(x, heads=4, width=256, hidden=1024)
    x = keras.layers.LayerNormalization(epsilon=1e-6)(x)
    x = keras.layers.Dense(256, activation="tanh")(x[:, 0])
    return keras.layers.Dense(2)(x)


def lstm_kws(inputs: Any) -> Any:
    x = keras.layers.LSTM(128, return_sequences=True)(inputs)
    x = keras.layers.LSTM(128)(x)
    return keras.layers.Dense(12)(x)


def gru_seq(inputs: Any) -> Any:
    x = keras.layers.GRU(128, return_sequences=True)(inputs)
    x = keras.layers.GRU(128)(x)
    return keras.layers.Dense(10)(x)


# name -> (builder, input shape without the batch, input range)
CUSTOM: dict[str, tuple[Callable[[Any], Any], tuple[int, ...], tuple[float, float]]] = {
    "vit_tiny": (vit_tiny, (224, 224, 3), (-1.0, 1.0)),
    "bert_mini": (bert_mini, (128, 256), (-1.0, 1.0)),
    "lstm_kws": (lstm_kws, (49, 40), (-1.0, 1.0)),
    "gru_seq": (gru_seq, (50, 64), (-1.0, 1.0)),
}
ARCHITECTURES = [*generate.ARCHITECTURES, *CUSTOM]


def cache_dir() -> Path:
    scripts = b"".join(Path(m).read_bytes() for m in (__file__, generate.__file__))
    key = generate.cache_dir().name.removeprefix("realscale-").rsplit("-", 1)[0]
    digest = hashlib.sha256(scripts).hexdigest()[:10]
    return Path(generate.cache_dir()).parent / f"recipes-{key}-{digest}"


def keras_model(name: str) -> tuple[Any, tuple[int, ...], tuple[float, float]]:
    keras.utils.set_random_seed(generate.SEED)
    if name in CUSTOM:
        builder, shape, value_range = CUSTOM[name]
        inputs = keras.Input(shape=shape, batch_size=1, name="input")
        return keras.Model(inputs, builder(inputs)), shape, value_range
    constructor, value_range = generate.ARCHITECTURES[name]
    inputs = keras.Input(shape=generate.SHAPE[1:], batch_size=1, name="input")
    model = getattr(keras.applications, constructor)(weights=None, input_tensor=inputs)
    return model, generate.SHAPE[1:], value_range


def convert(
    model: Any,
    recipe: str,
    shape: tuple[int, ...],
    value_range: tuple[float, float],
    out: Path,
    stem: str,
) -> Path:
    if recipe == "onnx":
        spec = (tf.TensorSpec((1, *shape), tf.float32, name="input"),)

        @tf.function(input_signature=spec)  # type: ignore[misc]
        def forward(x: Any) -> Any:
            return model(x, training=False)

        path = out / f"{stem}.onnx"
        tf2onnx.convert.from_function(
            forward, input_signature=spec, opset=17, output_path=str(path)
        )
        return path
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if stem.split("_")[0] in ("vit", "bert"):  # from_keras_model cannot trace these (TF 2.21)
        spec = tf.TensorSpec((1, *shape), tf.float32, name="input")

        @tf.function(input_signature=[spec])  # type: ignore[misc]
        def call(x: Any) -> Any:
            return model(x, training=False)

        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [call.get_concrete_function()], model
        )
    rng = np.random.default_rng(generate.SEED + 1)
    low, high = value_range
    samples = rng.uniform(low, high, size=(CALIBRATION_SAMPLES, 1, *shape)).astype(np.float32)

    def representative() -> Iterator[list[np.ndarray]]:
        for sample in samples:
            yield [sample]

    if recipe != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if recipe in ("int8", "int8_float_io", "int16x8"):
        converter.representative_dataset = representative
    if recipe in ("int8", "int8_float_io"):
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if recipe == "int8":
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    if recipe == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    if recipe == "int16x8":
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ]
    path = out / f"{stem}.tflite"
    path.write_bytes(converter.convert())
    return path


def check(path: Path) -> None:
    """The model runs one inference in LiteRT / onnxruntime as the harness would (else a
    converter's output no runtime takes would reach the bench)."""
    if path.suffix == ".onnx":
        return  # checked by the bench's counted worker, which reports a refusal
    interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    interpreter.invoke()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=ARCHITECTURES, default=None)
    parser.add_argument("--recipe", nargs="*", choices=RECIPES, default=None)
    args = parser.parse_args(argv)
    out = cache_dir()
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    manifest: dict[str, Any] = (
        json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    )
    for name in args.only or ARCHITECTURES:
        recipes = args.recipe or [  # generate.py's models have its three recipes already
            r for r in RECIPES if name in CUSTOM or r not in ("fp32", "int8", "onnx")
        ]
        wanted = [r for r in recipes if f"{name}_{r}" not in manifest]
        if not wanted:
            print(f"{name}: cached", flush=True)
            continue
        model, shape, value_range = keras_model(name)
        for recipe in wanted:
            stem = f"{name}_{recipe}"
            started = time.monotonic()
            record: dict[str, Any] = {
                "architecture": name,
                "recipe": recipe,
                "parameters": int(model.count_params()),
            }
            # Written first: a converter that kills the process (the int8 LSTM quantizer can)
            # leaves this record, and the next run goes on with the others.
            manifest[stem] = record | {"error": "the converter ended the process (no error)"}
            manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
            try:
                path = convert(model, recipe, shape, value_range, out, stem)
                check(path)
                record["file"] = path.name
            except Exception as exc:  # noqa: BLE001 - a refused recipe is recorded, not fatal
                record["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
                for leftover in out.glob(f"{stem}.*"):
                    leftover.unlink()
            record["build_s"] = round(time.monotonic() - started, 1)
            manifest[stem] = record
            manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
            print(f"{stem}: {record.get('error') or 'built'} ({record['build_s']} s)", flush=True)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
