#!/bin/sh
# Builds the real-scale models (generate.py; with --holdout, generate_holdout.py's; with --recipes,
# generate_recipes.py's build recipes and non-convolutional models) in a TensorFlow venv of their own, kept out of the
# project's dependencies (~1.7 GB): $HARNESS_CACHE/tf-venv (default ~/.cache/harness/tf-venv).
# Prints the model folder as its last line.
set -eu
cache="${HARNESS_CACHE:-$HOME/.cache/harness}"
venv="$cache/tf-venv"
if ! "$venv/bin/python" -c "import tensorflow, tf2onnx" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'tensorflow-cpu==2.21.*' 'tf2onnx==1.17.*'
fi
script=generate.py
if [ "${1:-}" = "--holdout" ]; then  # the held-out architectures (generate_holdout.py)
    shift
    script=generate_holdout.py
elif [ "${1:-}" = "--recipes" ]; then  # build recipes, transformers, recurrent models
    shift
    script=generate_recipes.py
fi
exec "$venv/bin/python" "$(dirname "$0")/$script" "$@"
