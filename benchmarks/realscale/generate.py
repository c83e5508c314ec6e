# TensorFlow and torch are typed only in the venv these generators run in (generate.sh), not in
# the one mypy checks them from: their decorators and base classes are Any there.
# mypy: disable-error-code="untyped-decorator,misc,name-defined,unused-ignore"
"""Real-scale models with random weights: public architectures as fp32 TFLite, full-int8 TFLite
and ONNX, for the timing model's validation (benchmarks/bench_fidelity.py) and other real-scale
benchmarks. Latency does not depend on the weight values, so no pretrained weights are needed.

Runs inside the TensorFlow venv that benchmarks/realscale/generate.sh creates (tensorflow-cpu and
tf2onnx are not harness dependencies):

    benchmarks/realscale/generate.sh            # all architectures
    benchmarks/realscale/generate.sh --only mobilenet_v2

Output, cached under ~/.cache/harness/models/realscale-<key>/ (key: TensorFlow, Keras, tf2onnx
and this script's hash): <arch>_fp32.tflite, <arch>_int8.tflite, <arch>.onnx, manifest.json, and
mobilenet_v2_data.npz (500 samples: X float32 [500, 224, 224, 3] in the model's input range,
y int64 = the fp32 model's own top-1, so accuracy measures what quantization changes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402

# name -> (keras.applications constructor, input range of the preprocessed input)
ARCHITECTURES = {
    "mobilenet_v1": ("MobileNet", (-1.0, 1.0)),
    "mobilenet_v2": ("MobileNetV2", (-1.0, 1.0)),
    "mobilenet_v3_small": ("MobileNetV3Small", (0.0, 255.0)),  # rescaling is inside the model
    "mobilenet_v3_large": ("MobileNetV3Large", (0.0, 255.0)),
    "efficientnet_b0": ("EfficientNetB0", (0.0, 255.0)),
    "resnet50": ("ResNet50", (-128.0, 128.0)),  # caffe-style mean-subtracted BGR
}
SHAPE = (1, 224, 224, 3)
CALIBRATION_SAMPLES = 16
DATASET_SAMPLES = 500
DATASET_ARCH = "mobilenet_v2"
SEED = 0


def cache_dir() -> Path:
    root = Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "harness"))
    script = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:10]
    key = f"tf{tf.__version__}-keras{tf.keras.__version__}-tf2onnx{tf2onnx.__version__}-{script}"
    return root / "models" / f"realscale-{key}"


def random_inputs(n: int, low: float, high: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(low, high, size=(n, *SHAPE[1:])).astype(np.float32)


def build(name: str, out: Path) -> dict[str, object]:
    constructor, (low, high) = ARCHITECTURES[name]
    tf.keras.utils.set_random_seed(SEED)
    inputs = tf.keras.Input(shape=SHAPE[1:], batch_size=SHAPE[0], name="input")
    model = getattr(tf.keras.applications, constructor)(weights=None, input_tensor=inputs)
    spec = (tf.TensorSpec(SHAPE, tf.float32, name="input"),)

    @tf.function(input_signature=spec)
    def forward(x: tf.Tensor) -> tf.Tensor:
        return model(x, training=False)

    started = time.monotonic()
    fp32 = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    (out / f"{name}_fp32.tflite").write_bytes(fp32)

    calibration = random_inputs(CALIBRATION_SAMPLES, low, high, SEED + 1)

    def representative():  # type: ignore[no-untyped-def]
        for sample in calibration:
            yield [sample[None]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    (out / f"{name}_int8.tflite").write_bytes(converter.convert())

    tf2onnx.convert.from_function(
        forward, input_signature=spec, opset=17, output_path=str(out / f"{name}.onnx")
    )
    record: dict[str, object] = {
        "architecture": constructor,
        "parameters": int(model.count_params()),
        "input_range": [low, high],
        "build_s": round(time.monotonic() - started, 1),
    }
    if name == DATASET_ARCH:
        x = random_inputs(DATASET_SAMPLES, low, high, SEED + 2)
        y = np.concatenate(
            [np.argmax(model(x[i : i + 50], training=False), axis=1) for i in range(0, len(x), 50)]
        ).astype(np.int64)
        np.savez(out / f"{name}_data.npz", X=x, y=y)
        record["dataset"] = f"{name}_data.npz"
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=sorted(ARCHITECTURES), default=None)
    args = parser.parse_args(argv)
    out = cache_dir()
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    for name in args.only or list(ARCHITECTURES):
        if name in manifest and (out / f"{name}.onnx").exists():
            print(f"{name}: cached", flush=True)
            continue
        manifest[name] = build(name, out)
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
        print(f"{name}: built in {manifest[name]['build_s']} s", flush=True)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
