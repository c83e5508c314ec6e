"""Tiny real models for tests and examples, written without TensorFlow or a model hub.

`harness.modelgen.tflite` writes .tflite flatbuffers with the schema that ai-edge-litert ships;
`harness.modelgen.onnx` writes .onnx graphs with `onnx.helper`. Both make the awkward features real
models have: dynamic and named dimensions, several inputs and outputs, int8/uint8 tensors carrying
scale and zero-point, int64 scalars, state inputs, QDQ graphs, very slow and very hungry models.

The harness core never imports this package; it needs the `dev` extras (onnx, flatbuffers).
"""
