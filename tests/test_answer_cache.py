"""Board answers kept across sessions (harness.answers_cache), and the board worker holding only
the dataset rows it answers (harness.worker: load rows, hold).

The cache is sound only because emulated arithmetic is deterministic: a test runs the real rpi4
board twice, in fresh workers, and compares the answers' bytes. End to end: a second session's
sampled agreement comes from the cache (said in the record and the row), and a changed model
(the pull-request case) misses it."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_device_matrix import copy_example

from harness.answers_cache import AnswerCache, Row, RunCache, inputs_sha256, result_of, rows_of
from harness.worker.feeds import DataError, load_npz_rows

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "examples" / "digits"
KEY = {"model_sha256": "ab", "image": "harness-device:arm64-1", "threads": 4}


def _rows() -> dict[int, Row]:
    scores = np.arange(12, dtype=np.float32).reshape(3, 4)
    return {i: Row(i == 9, int(np.argmax(s)), s) for i, s in zip((2, 5, 9), scores, strict=True)}


def test_rows_survive_an_entry_and_come_back_in_the_order_asked(tmp_path: Path) -> None:
    cache = AnswerCache(KEY, tmp_path)
    assert cache.read() == {}
    cache.write(_rows())
    again = AnswerCache(dict(reversed(list(KEY.items()))), tmp_path).read()  # key order: same
    result = result_of(again, [9, 2])
    assert result["top1"] == [3, 3] and result["nonfinite"] == 1
    assert result["nonfinite_rows"] == [9]
    np.testing.assert_array_equal(result["values"], np.array([[8, 9, 10, 11], [0, 1, 2, 3]]))
    assert rows_of(result, [9, 2])[2].top1 == 3


def test_another_key_misses(tmp_path: Path) -> None:
    AnswerCache(KEY, tmp_path).write(_rows())
    assert AnswerCache(KEY | {"model_sha256": "cd"}, tmp_path).read() == {}
    assert AnswerCache(KEY | {"threads": 1}, tmp_path).read() == {}


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(b"not a zip"),
        lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
        lambda p: np.savez(p, key=np.array("x"), rows=np.array([1])),  # another key, no arrays
    ],
    ids=["garbage", "truncated", "foreign"],
)
def test_a_damaged_entry_is_ignored_and_rewritten(tmp_path: Path, damage: Any) -> None:
    cache = AnswerCache(KEY, tmp_path)
    cache.write(_rows())
    damage(cache.path)
    assert cache.read() == {}
    cache.write(_rows())
    assert sorted(cache.read()) == [2, 5, 9]


def test_run_answers_are_kept_per_input_and_repeat(tmp_path: Path) -> None:
    inputs = {"input": np.ones((1, 4), np.float32)}
    digest = inputs_sha256(inputs)
    assert digest != inputs_sha256({"input": np.ones((1, 4), np.float64)})
    cache = RunCache(KEY, tmp_path)
    cache.put(digest, 0, {"probabilities": np.array([[0.25, 0.75]], np.float32)})
    assert cache.get(digest, 1) is None  # the second run of the input: not yet answered
    kept = RunCache(KEY, tmp_path).get(digest, 0)
    assert kept is not None and kept["probabilities"].tolist() == [[0.25, 0.75]]
    assert RunCache(KEY | {"threads": 1}, tmp_path).get(digest, 0) is None
    cache._path(digest, 0).write_bytes(b"damaged")
    assert cache.get(digest, 0) is None


def test_an_entry_whose_arrays_disagree_in_length_is_ignored(tmp_path: Path) -> None:
    cache = AnswerCache(KEY, tmp_path)
    with cache.path.open("wb") as stream:
        np.savez(stream, key=np.array(cache.key), rows=np.array([1, 2]), nonfinite=np.array([0]))
    assert cache.read() == {}


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed], ids=["plain", "compressed"])
def test_rows_are_read_without_the_rest(tmp_path: Path, save: Any) -> None:
    x = np.random.default_rng(0).standard_normal((300, 4, 3)).astype(np.float32)
    path = tmp_path / "d.npz"
    save(path, X=x, X_mask=np.arange(300), y=np.zeros(300, np.int64))
    arrays, total = load_npz_rows(str(path), [7, 0, 299, 7])
    assert total == 300 and sorted(arrays) == ["X", "X_mask"]  # labels stay on the host
    np.testing.assert_array_equal(arrays["X"], x[[0, 7, 299]])
    np.testing.assert_array_equal(arrays["X_mask"], [0, 7, 299])
    with pytest.raises(DataError, match="rows 0..300 asked of its 300 samples"):
        load_npz_rows(str(path), [0, 300])


def test_a_worker_holding_rows_answers_them_as_a_worker_holding_all(tmp_path: Path) -> None:
    from harness.worker.server import RequestError, Worker

    model, dataset = str(DIGITS / "models" / "digits.onnx"), tmp_path / "big.npz"
    x = np.load(DIGITS / "data" / "digits_test.npz")["X"]
    np.savez(dataset, X=np.concatenate([x, x]))  # 900 samples; the board answers 3
    whole, held = Worker(), Worker()
    loaded_whole = whole.load("m", model, 1, str(dataset), output="probabilities")
    loaded = held.load("m", model, 1, str(dataset), output="probabilities", rows=[0])
    assert loaded["samples"] == loaded_whole["samples"] == 900 and loaded["held"] == 1
    rows = [3, 451, 899]
    held.hold("m", [0, *rows])
    assert held.models["m"].feeds.per_sample["input"].shape[0] == 4  # not 900
    mine, theirs = (
        held.evaluate("m", "classification", indices=rows),
        whole.evaluate("m", "classification", indices=rows),
    )
    assert mine["top1"] == theirs["top1"]
    np.testing.assert_array_equal(mine["values"], theirs["values"])
    with pytest.raises(RequestError, match="dataset row 5 is not held"):
        held.evaluate("m", "classification", indices=[5])
    with pytest.raises(RequestError, match="holds 4 dataset rows: name them"):
        held.evaluate("m", "classification")


def test_board_answers_are_bit_identical_run_to_run(docker_client: Any, arm64_binfmt: None) -> None:
    """Two fresh rpi4 workers (the profile's 4 threads) give the same bytes for every runtime
    the digits models use: ONNX Runtime, TFLite float and int8."""
    from harness.config import load_config
    from harness.devices import load_profiles
    from harness.pairs import WorkerHandle

    config = load_config(DIGITS / "harness.toml")
    rpi4 = load_profiles()["rpi4"]
    rows = [0, 17, 230, 449]
    for model in config.models:
        answers = []
        for _ in range(2):
            worker = WorkerHandle(model, rpi4, config)
            try:
                worker.request("hold", rows=rows)
                answers.append(worker.request("evaluate", task="classification", indices=rows))
            finally:
                worker.close()
        first, second = answers
        assert first["top1"] == second["top1"], model.name
        assert first["values"].tobytes() == second["values"].tobytes(), model.name


def _session(pytester: pytest.Pytester, out: Path) -> dict[str, Any]:
    """The accuracy figures of digits-onnx on rpi4 (robustness's under `robustness`)."""
    result = pytester.runpytest(
        f"--harness-json={out}", "-k", "(accuracy or robustness) and onnx", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=2)
    records = {r["suite"]: r for r in json.loads(out.read_text())["results"]}
    assert {r["fidelity"] for r in records.values()} == {"emulated"}
    return dict(records["accuracy"]["figures"]) | {
        "_stdout": result.stdout.str(),
        "robustness": records["robustness"]["figures"],
    }


def test_a_second_session_takes_the_board_answers_from_the_cache_and_a_changed_model_misses(
    pytester: pytest.Pytester,
    docker_client: Any,
    arm64_binfmt: None,
    digits_mlps: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HARNESS_ANSWERS_CACHE", str(pytester.path / "answers"))
    copy_example("digits", pytester.path)
    config = pytester.path / "harness.toml"
    config.write_text(config.read_text().replace(
        'devices = ["host", "x86-64", "rpi4"]',
        'devices = ["rpi4"]\n[plan]\nbudget_s = 0.005\nagreement_samples = 16',
    ))  # fmt: skip
    first = _session(pytester, pytester.path / "first.json")
    assert "board_answers" not in first and first["agreement_n"] == 8
    second = _session(pytester, pytester.path / "second.json")
    note = "from cache: same model, inputs, image and runtime (8 of 8 answers)"
    assert second["board_answers"] == note
    assert "emulated  " + note in second["_stdout"]  # the row says so too
    for figure in ("host_agreement", "host_agreement_low", "accuracy", "agreement_n"):
        assert second[figure] == first[figure], figure
    # The same seeded examples: every run answer of the board's robustness item was kept.
    assert "board_answers" not in first["robustness"]
    said = second["robustness"]["board_answers"]
    kept = re.fullmatch(r"from cache: .* \((\d+) of (\d+) answers\)", said)
    assert kept is not None and kept[1] == kept[2]
    assert int(kept[1]) >= 2 * second["robustness"]["examples"]  # each input twice at least
    # The pull-request case: other model bytes (one more hidden unit, same answers) miss.
    base, wide = digits_mlps
    shutil.copy(wide, pytester.path / "models" / "digits.onnx")
    changed = _session(pytester, pytester.path / "changed.json")
    assert "board_answers" not in changed and changed["host_agreement"] == 1.0
    assert "board_answers" not in changed["robustness"]


def test_generated_parity_inputs_are_written_byte_stable(tmp_path: Path) -> None:
    """The answer cache keys inputs by the dataset file's sha256: the generated inputs of the
    next session must give the same bytes (np.savez stamps the time)."""
    import time

    from harness.suites.parity import _write_npz

    arrays = {"X": np.arange(12, dtype=np.float32).reshape(3, 4), "X_mask": np.ones(3, bool)}
    _write_npz(tmp_path / "a.npz", arrays)
    time.sleep(2.1)  # zip times have a two-second resolution
    _write_npz(tmp_path / "b.npz", arrays)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with np.load(tmp_path / "b.npz") as read:
        np.testing.assert_array_equal(read["X"], arrays["X"])
