"""Test data for the real-model corpus, made here without any download: what a user of each
model would prepare, written as a user would write it (numpy, and Pillow for text images).

Each `make_<model>(model_path, out_path, seed)` writes one .npz in the harness's dataset layout:
`X_<input name>` arrays with one row per sample, `y` labels where the task has them.

Streaming stateful models (silero-vad): the harness feeds one sample at a time, each from scratch,
so **each sample carries its incoming state**. The data script streams the audio through the model
once, as the application would, and stores every chunk beside the state the model held before it:
a board (or any other device) then answers each chunk exactly as the stream did, in any order and
on any subset of the chunks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000
# Vowel formants (Hz): a, i, u, e, o. A pulse train through three resonators is a vowel.
VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480),
          (570, 840, 2410))  # fmt: skip


def _resonator(signal: np.ndarray, frequency: float, bandwidth: float) -> np.ndarray:
    """A two-pole resonator (one formant), as a direct-form recursion."""
    r = np.exp(-np.pi * bandwidth / SAMPLE_RATE)
    a1, a2 = -2 * r * np.cos(2 * np.pi * frequency / SAMPLE_RATE), r * r
    out = np.zeros_like(signal)
    y1 = y2 = 0.0
    for i, x in enumerate(signal):
        y0 = x - a1 * y1 - a2 * y2
        out[i], y2, y1 = y0, y1, y0
    return out


def speech_like(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Voiced syllables (a glottal pulse train through vowel formants, 120-300 ms each, with
    pitch movement and short gaps): source-filter synthesis, no recording needed."""
    n = int(seconds * SAMPLE_RATE)
    out = np.zeros(n)
    t = 0
    while t < n:
        length = min(int(rng.uniform(0.12, 0.3) * SAMPLE_RATE), n - t)
        f0 = rng.uniform(100, 220) * (1 + 0.1 * np.sin(np.linspace(0, np.pi, length)))
        phase = np.cumsum(f0 / SAMPLE_RATE)
        pulses = (np.diff(np.floor(phase), prepend=0) > 0).astype(float)
        source = pulses + 0.02 * rng.standard_normal(length)
        formants = VOWELS[int(rng.integers(len(VOWELS)))]
        vowel = sum(_resonator(source, f, 80 + 40 * k) for k, f in enumerate(formants))
        out[t : t + length] = vowel * np.sin(np.linspace(0, np.pi, length)) ** 0.5
        t += length + int(rng.uniform(0.02, 0.08) * SAMPLE_RATE)
    scaled: np.ndarray = 0.5 * out / max(float(np.abs(out).max()), 1e-9)
    return scaled


def speech_and_noise(rng: np.random.Generator, segments: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Alternating stretches of speech and background (quiet noise, or a hum), with a
    per-sample label: 1 where speech is."""
    audio, labels = [], []
    for segment in range(segments):
        seconds = float(rng.uniform(0.8, 1.6))
        n = int(seconds * SAMPLE_RATE)
        background = 0.005 * rng.standard_normal(n)
        if segment % 2:
            audio.append(speech_like(seconds, rng) + background)
            labels.append(np.ones(n, np.int64))
        else:
            hum = 0.02 * np.sin(2 * np.pi * 50 * np.arange(n) / SAMPLE_RATE) * (segment % 4 == 2)
            audio.append(background + hum)
            labels.append(np.zeros(n, np.int64))
    return np.concatenate(audio).astype(np.float32), np.concatenate(labels)


# --- silero-vad ---------------------------------------------------------------------------------
CHUNK = 512  # samples per step at 16 kHz (32 ms)
CONTEXT = 64  # the last samples of the previous chunk, prepended (as silero-vad's own wrapper)


def make_silero_vad(model_path: Path, out_path: Path, seed: int = 0) -> None:
    """Chunks of a 16 kHz stream, each with the state the model held before it (the user's data
    preparation for a streaming model), labelled 1 where the chunk is mostly speech.

    X_input [N, 576]: 64 context samples + the 512-sample chunk; X_state [N, 2, 1, 128]: the
    incoming state; y [N]. `sr` is a scalar the config gives: input_values = { sr = 16000 }."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    audio, labels = speech_and_noise(rng)
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    state = np.zeros((2, 1, 128), np.float32)
    context = np.zeros(CONTEXT, np.float32)
    inputs, states, truth = [], [], []
    for start in range(0, len(audio) - CHUNK + 1, CHUNK):
        chunk = audio[start : start + CHUNK]
        frame = np.concatenate([context, chunk])
        inputs.append(frame)
        states.append(state)  # what the model holds *before* this chunk
        truth.append(int(labels[start : start + CHUNK].mean() >= 0.5))
        feeds = {"input": frame[None], "state": state, "sr": np.array(SAMPLE_RATE, np.int64)}
        _, state = session.run(None, feeds)  # the stream goes on: the next chunk's state
        context = chunk[-CONTEXT:]
    np.savez(
        out_path,
        X_input=np.stack(inputs),
        X_state=np.stack(states).astype(np.float32),
        y=np.asarray(truth, np.int64),
    )


# --- okay-nabu (microWakeWord) ------------------------------------------------------------------
MEL_BANDS = 40
FRAME_STEP = 160  # 10 ms
FRAME_LENGTH = 480  # 30 ms


def _log_mel(audio: np.ndarray) -> np.ndarray:
    """40 log-mel energies per 10 ms frame, scaled to the 0-26 range microWakeWord's frontend
    gives (its input quantization: scale 0.102, zero point -128, so floats 0..26)."""
    frames = np.lib.stride_tricks.sliding_window_view(audio, FRAME_LENGTH)[::FRAME_STEP]
    spectrum = np.abs(np.fft.rfft(frames * np.hanning(FRAME_LENGTH), n=512)) ** 2
    hz = np.linspace(0, SAMPLE_RATE / 2, spectrum.shape[1])
    mel = 2595 * np.log10(1 + hz / 700)
    edges = np.linspace(mel[1], mel[-1], MEL_BANDS + 2)
    bank = np.maximum(
        0,
        np.minimum(
            (mel[None] - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None]),
            (edges[2:, None] - mel[None]) / (edges[2:, None] - edges[1:-1, None]),
        ),
    )
    energies = np.log(spectrum @ bank.T + 1e-6)
    features: np.ndarray = np.clip((energies + 14.0) * 1.3, 0.0, 26.0).astype(np.float32)
    return features


def make_okay_nabu(model_path: Path, out_path: Path, seed: int = 0) -> None:
    """Windows of 3 feature frames (30 ms) of speech and background that are not the wake word:
    y = 0 everywhere, so accuracy is 1 - the false-accept rate. Floats: the harness quantizes
    them with the input's scale and zero point."""
    rng = np.random.default_rng(seed)
    audio, _ = speech_and_noise(rng, segments=6)
    features = _log_mel(audio)
    windows = features[: len(features) // 3 * 3].reshape(-1, 3, MEL_BANDS)
    np.savez(out_path, X=windows, y=np.zeros(len(windows), np.int64))


# --- ocr-direction (PaddleOCR text direction classifier) -----------------------------------------
WORDS = ("harness", "Raspberry Pi", "latency 12 ms", "Invoice 2024", "Total: 41.50", "QEMU",
         "hello world", "Model gate", "accuracy", "Docker", "OCR test", "pytest -k",
         "merge request", "device matrix", "int8 model", "ARM64 board")  # fmt: skip


def text_line(text: str, rng: np.random.Generator, size: int = 28) -> object:
    """A printed text line (dark on light, random colours) as a PIL image."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=size)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    _, _, right, bottom = measure.textbbox((0, 0), text, font=font)
    background = tuple(int(v) for v in rng.integers(180, 256, 3))
    ink = tuple(int(v) for v in rng.integers(0, 80, 3))
    image = Image.new("RGB", (int(right) + 12, int(bottom) + 12), background)
    ImageDraw.Draw(image).text((6, 6), text, fill=ink, font=font)
    return image


def make_ocr_direction(model_path: Path, out_path: Path, seed: int = 0) -> None:
    """Text lines upright (y = 0) and turned by 180 degrees (y = 1), preprocessed as RapidOCR
    does: height 48, width up to 192 (padded), (pixel / 255 - 0.5) / 0.5, CHW."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for index in range(96):
        image = text_line(WORDS[index % len(WORDS)], rng)
        label = int(rng.integers(2))
        if label:
            image = image.rotate(180)  # type: ignore[attr-defined]
        width, height = image.size  # type: ignore[attr-defined]
        resized = min(192, int(np.ceil(48 * width / height)))
        pixels = np.asarray(image.resize((resized, 48)), np.float32) / 255.0  # type: ignore[attr-defined]
        sample = np.zeros((3, 48, 192), np.float32)
        sample[:, :, :resized] = ((pixels - 0.5) / 0.5).transpose(2, 0, 1)
        images.append(sample)
        labels.append(label)
    np.savez(out_path, X=np.stack(images), y=np.asarray(labels, np.int64))


# --- images without labels (detection, segmentation) ---------------------------------------------
def scenes(count: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Photographs stand-ins: smooth gradients with a few bright and dark ellipses (faces and
    heads at the sizes the detectors look for), HWC floats in [0, 1]."""
    y, x = np.mgrid[0:size, 0:size] / size
    out = np.empty((count, size, size, 3), np.float32)
    for i in range(count):
        image = rng.uniform(0.2, 0.8, 3) * (0.6 + 0.4 * (x * rng.uniform(-1, 1) + y)[..., None])
        for _ in range(int(rng.integers(1, 4))):
            cx, cy = rng.uniform(0.2, 0.8, 2)
            rx, ry = rng.uniform(0.08, 0.3), rng.uniform(0.1, 0.35)
            inside = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1
            image[inside] = rng.uniform(0.3, 0.95, 3)
        out[i] = np.clip(image + 0.02 * rng.standard_normal(image.shape), 0, 1)
    return out


def make_face_detection(model_path: Path, out_path: Path, seed: int = 0) -> None:
    """128x128 RGB scenes scaled to [-1, 1], as MediaPipe feeds its face detector; no labels
    (the corpus gates how devices agree, latency, memory and robustness)."""
    rng = np.random.default_rng(seed)
    np.savez(out_path, X=scenes(48, 128, rng)[:, None] * 2 - 1)


def make_selfie_segmentation(model_path: Path, out_path: Path, seed: int = 0) -> None:
    """256x256 RGB scenes in [0, 1], as MediaPipe feeds its selfie segmenter; no labels."""
    rng = np.random.default_rng(seed)
    np.savez(out_path, X=scenes(24, 256, rng)[:, None])


def make_ocr_recognition(model_path: Path, out_path: Path, seed: int = 0) -> None:
    """Text lines at height 48 and width 320 (RapidOCR's recognizer input), no labels: the
    output is a CTC distribution over 6,625 characters per step."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(24):
        image = text_line(WORDS[index % len(WORDS)], rng)
        width, height = image.size  # type: ignore[attr-defined]
        resized = min(320, int(np.ceil(48 * width / height)))
        pixels = np.asarray(image.resize((resized, 48)), np.float32) / 255.0  # type: ignore[attr-defined]
        sample = np.zeros((3, 48, 320), np.float32)
        sample[:, :, :resized] = ((pixels - 0.5) / 0.5).transpose(2, 0, 1)
        images.append(sample)
    np.savez(out_path, X=np.stack(images))
