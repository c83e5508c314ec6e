"""Held-out architectures for the timing model's validation: public architectures that were not
used to choose the timing model's features or to fit its weights (benchmarks/bench_fidelity.py
--holdout fits on generate.py's set and estimates these). Same recipe as generate.py (random
weights, fp32 TFLite, full-int8 TFLite, ONNX), its own cache folder, so that generate.py's models
and their cached counts stay valid:

    benchmarks/realscale/generate.sh --holdout [--only densenet121 ...]

Output: ~/.cache/harness/models/holdout-<key>/ (key: TensorFlow, Keras, tf2onnx, both scripts).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import generate  # the recipe: build() reads generate.ARCHITECTURES

# name -> (keras.applications constructor, input range of the preprocessed input)
HOLDOUT = {
    "densenet121": ("DenseNet121", (-2.2, 2.7)),  # torch-style: (x / 255 - mean) / std
    "nasnet_mobile": ("NASNetMobile", (-1.0, 1.0)),
    "efficientnet_b1": ("EfficientNetB1", (0.0, 255.0)),  # rescaling is inside the model
    "efficientnet_v2_b0": ("EfficientNetV2B0", (0.0, 255.0)),
    "convnext_tiny": ("ConvNeXtTiny", (0.0, 255.0)),  # LayerNorm, GELU, 7x7 depthwise
    "resnet50_v2": ("ResNet50V2", (-1.0, 1.0)),
}


def cache_dir() -> Path:
    scripts = b"".join(Path(m).read_bytes() for m in (__file__, generate.__file__))
    key = generate.cache_dir().name.removeprefix("realscale-").rsplit("-", 1)[0]
    digest = hashlib.sha256(scripts).hexdigest()[:10]
    return Path(generate.cache_dir()).parent / f"holdout-{key}-{digest}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=sorted(HOLDOUT), default=None)
    args = parser.parse_args(argv)
    out = cache_dir()
    out.mkdir(parents=True, exist_ok=True)
    generate.ARCHITECTURES = HOLDOUT
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    for name in args.only or list(HOLDOUT):
        if name in manifest and (out / f"{name}.onnx").exists():
            print(f"{name}: cached", flush=True)
            continue
        manifest[name] = generate.build(name, out)
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
        print(f"{name}: built in {manifest[name]['build_s']} s", flush=True)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
