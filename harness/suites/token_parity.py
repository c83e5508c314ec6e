"""Token parity: a language model against its reference variant (`parity_with`: the float or fp16
base, or the same weights in the other runtime), with the statistics llama-perplexity reports for
a quantization, on the model's text:

- KL divergence KL(reference || model) of the next-token distributions at every scored position:
  mean (with its interval, `kld_mean_max`) and 99th percentile (`kld_p99_max`);
- top-1 agreement: both pick the same greedy next token on the same context (teacher forcing: a
  difference at one position does not propagate), with its interval (`token_agreement_min`);
- perplexity ratio, this / the reference's, with its interval (`perplexity_ratio_max`).

Intervals resample whole windows (harness.language_scores.window_mean_interval) at
`plan.confidence`.
Both models are loaded in one worker of their own and compared window by window there: full
distributions (a 49k vocabulary at every position) never leave it. The prompt set's first
PREFIX_PROMPTS prompts add, for the report, tokens in common before the free-running greedy
continuations first differ.

On an emulated board this is computed natively on the host (the quality of a quantization is
the same everywhere but for the last digits of the kernels; the perplexity suite checks the
board's own kernels against the host on a sample).
"""

from __future__ import annotations

from typing import Any

from harness import language_scores
from harness.pairs import BASE_ID, Pair, WorkerHandle
from harness.results import Measurement
from harness.suites import textwork

PREFIX_PROMPTS = 16  # prompts whose free-running continuations are compared (reported only)


def measure(pair: Pair) -> Measurement:
    assert pair.model.parity_with is not None and pair.model.generate is not None
    other = pair.config.model(pair.model.parity_with)
    if pair.profile.emulated:
        from harness.devices import load_profiles

        profile = load_profiles()["host"]
    else:
        profile = pair.profile
    # This model and its reference in one worker (the reference under the base's id).
    worker = WorkerHandle(pair.model, profile, pair.config, base=other)
    try:
        worker.start()
        return _compared(pair, worker, other.name, on_host=profile is not pair.profile)
    finally:
        worker.close()


def _compared(pair: Pair, worker: WorkerHandle, other_name: str, on_host: bool) -> Measurement:
    assert pair.model.generate is not None

    def request(op: str, **arguments: Any) -> dict[str, Any]:
        return worker.request(op, **arguments)

    compared = textwork.scored(request, "compare", pair.model, None, pair.progress,
                               reference_id=BASE_ID)  # fmt: skip
    statistics = language_scores.quantization_statistics(
        compared["kld"],
        compared["nll"],
        compared["reference_nll"],
        compared["greedy"],
        compared["reference_greedy"],
        compared["counts"],
        pair.config.plan.confidence,
        pair.config.seed,
    )
    figures: dict[str, Any] = {"parity_with": other_name} | statistics.figures()
    figures["interval_confidence"] = pair.config.plan.confidence
    figures["runtime"] = worker.loaded.get("runtime")
    figures["reference_runtime"] = worker.base_loaded.get("runtime")
    if on_host:
        figures["computed_on"] = "host (natively; quality does not depend on the board)"
    if pair.model.prompts:
        prompts = [p.prompt for p in pair.model.prompts][:PREFIX_PROMPTS]
        new = pair.model.generate.new_tokens
        mine = worker.request("generate", prompts=prompts, new_tokens=new)["results"]
        theirs = worker.request("generate", base=True, prompts=prompts, new_tokens=new)["results"]
        figures["prompt_prefix_agreement"] = language_scores.prefix_agreement(
            [r.get("tokens", []) for r in mine], [r.get("tokens", []) for r in theirs]
        )
    return Measurement(figures, pair.profile.fidelity)
