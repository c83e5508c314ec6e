"""Build the digits models and test set (deterministic: fixed seeds, bundled data, no download).

    python build_models.py

Trains a scikit-learn MLP (64 -> 32 ReLU -> 10 softmax) on scikit-learn's bundled 8x8 digits and
writes, next to this file:

- models/digits.onnx          skl2onnx export (outputs "label" and "probabilities")
- models/digits_float.tflite  the same weights as a float32 TFLite model
- models/digits_int8.tflite   full-integer int8 TFLite model calibrated on the training set
- data/digits_test.npz        X float32 [N, 64] (pixels / 16), y int64 [N]

Needs the repository's dev extras (scikit-learn, skl2onnx, onnx, flatbuffers); no TensorFlow.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
from ai_edge_litert.interpreter import Interpreter
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

from harness.modelgen import tflite

HERE = Path(__file__).resolve().parent
MODELS = HERE / "models"
DATA = HERE / "data"
SEED = 0


def load() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    digits = load_digits()
    x = (digits.images.reshape(len(digits.images), -1) / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, stratify=y, random_state=SEED
    )
    return x_train, x_test, y_train, y_test


def train(x: np.ndarray, y: np.ndarray) -> MLPClassifier:
    clf = MLPClassifier(
        hidden_layer_sizes=(32,), activation="relu", max_iter=300, random_state=SEED
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x, y)
    return clf


def export_onnx(clf: MLPClassifier, path: Path) -> Path:
    onnx_model = convert_sklearn(
        clf,
        initial_types=[("input", FloatTensorType([None, 64]))],
        options={id(clf): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
        name="digits",  # a fixed graph name (the default is a random uuid)
    )
    path.write_bytes(onnx_model.SerializeToString())
    return path


def onnx_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    assert names == ["label", "probabilities"], names
    (probabilities,) = session.run(["probabilities"], {"input": x})
    return float((probabilities.argmax(axis=1) == y).mean())


def tflite_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    """One sample per invoke, as the models' input is [1, 64]; quantizes for int8 inputs."""
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    correct = 0
    for sample, label in zip(x, y, strict=True):
        feed = sample[None, :]
        if inp["dtype"] != np.float32:
            scale, zero_point = inp["quantization"]
            feed = tflite.quantize(feed, scale, zero_point, inp["dtype"])
        interpreter.set_tensor(inp["index"], feed)
        interpreter.invoke()
        correct += int(interpreter.get_tensor(out["index"])[0].argmax() == label)
    return correct / len(y)


def main() -> None:
    MODELS.mkdir(exist_ok=True)
    DATA.mkdir(exist_ok=True)
    x_train, x_test, y_train, y_test = load()
    clf = train(x_train, y_train)
    np.savez(DATA / "digits_test.npz", X=x_test, y=y_test)

    weights = [w.astype(np.float32) for w in clf.coefs_]  # [in, out]
    biases = [b.astype(np.float32) for b in clf.intercepts_]
    onnx_path = export_onnx(clf, MODELS / "digits.onnx")
    float_path = tflite.mlp(MODELS / "digits_float.tflite", weights, biases, softmax=True)
    int8_path = tflite.mlp_int8(
        MODELS / "digits_int8.tflite", weights, biases, x_train, softmax=True
    )

    print(f"train {len(y_train)} / test {len(y_test)} samples")
    print(f"sklearn        accuracy {clf.score(x_test, y_test):.4f}")
    results = [
        (onnx_path, onnx_accuracy(onnx_path, x_test, y_test)),
        (float_path, tflite_accuracy(float_path, x_test, y_test)),
        (int8_path, tflite_accuracy(int8_path, x_test, y_test)),
    ]
    for path, accuracy in results:
        size_kb = path.stat().st_size / 1024
        print(f"{path.relative_to(HERE)}: accuracy {accuracy:.4f}, {size_kb:.1f} KiB")


if __name__ == "__main__":
    main()
