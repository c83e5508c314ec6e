"""The worker as counting mode runs it: `python -m harness.worker.counting` (inside the target,
under QEMU with the counting plugin; harness.backends.qemu starts it).

The same protocol and operations as harness.worker, with two differences that keep instruction
counts identical from run to run:

- `bench(count=True)` runs the loop between the markers without reading the clock per sample:
  subtracting two perf_counter_ns() integers takes a few more instructions when they straddle a
  2**30 ns boundary, so per-sample timing made one run in six differ by 12 instructions.
- `hello`, `load` and `memory` report no wall-clock times, pid or memory figures (zeros), and
  /proc/self/status is never read: their digits vary from run to run, so the sizes of the
  strings made from them varied, and with them the heap layout the counted loop then ran in
  (measured: one run in ten counted 10 instructions per inference fewer).

Standard library, numpy and the runtime only, like the rest of harness.worker.
"""

from __future__ import annotations

from typing import Any

from harness.worker import markers, server

# Reply fields whose values vary from run to run; reported as 0 by the counting worker.
VARYING = {
    "hello": ("pid", "empty_peak_kb", "empty_rss_kb"),
    "load": ("load_s", "first_run_s", "peak_kb", "rss_kb"),
}


class CountingWorker(server.Worker):
    def status_kb(self, field: str) -> int:
        """No reading: /proc/self/status (of QEMU, under emulation) has lines whose lengths vary
        from run to run (context switches, memory), and reading them left the heap different."""
        return 0

    def hello(self, formats: list[str]) -> dict[str, Any]:
        result = super().hello(formats)
        result.update(dict.fromkeys(VARYING["hello"], 0))
        result["counting"] = True
        return result

    def load(self, *arguments: Any, **named: Any) -> dict[str, Any]:
        """server.Worker.load, with the varying figures zeroed."""
        result = super().load(*arguments, **named)
        result.update(dict.fromkeys(VARYING["load"], 0))
        return result

    def bench(
        self, model_id: str, samples: int, warmup: int = 0, count: bool = False
    ) -> dict[str, Any]:
        if not count:
            return super().bench(model_id, samples, warmup)
        model = self._model(model_id)
        feeds = model.feeds.sample(0) if model.feeds.count else dict(model.feeds.constants)
        call = model.runtime.timed_call(feeds)
        for _ in range(warmup):
            call()
        markers.begin()
        for _ in range(samples):
            call()
        markers.end()
        return {"samples_ns": [], "counted_samples": samples}


def main() -> None:
    # No request-reading thread here: a second thread moves the heap's layout from run to run
    # and with it the counted instructions (0.007% seen); counts must repeat exactly. A counted
    # run is bounded (one model, a few inferences), so a killed host leaves it briefly at most.
    server.main(CountingWorker(), exit_when_orphaned=False)


if __name__ == "__main__":
    main()
