"""How a student LM is judged beside its teacher: perplexity on held-out text (dev, test and
each out-of-domain text) with KL and top-1 agreement (`layergraft.scoring.lm_quality`), greedy
continuations of fixed prompts, and, when asked, the lm-eval zero-shot sentiment score
(`layergraft.scoring.lm_harness`; about 95 s a model on SmolLM2, so off by default)."""

from __future__ import annotations

from layergraft.scoring.lm_quality import greedy_continuations, lm_fidelity


def assess(teacher, student, tokenizer, text, *, harness: bool = False,
           progress: bool = True) -> dict:
    """{dev, test, ood: {name: ...}, continuations, harness}: the evaluation record."""
    say(progress, "perplexity, KL and agreement of student and teacher on "
        + ", ".join(f"{name} ({len(w)} x {w.shape[1]} tokens)"
                    for name, w in text.windows.items()))
    scored = {name: lm_fidelity(teacher, student, windows)
              for name, windows in text.windows.items()}
    record = {"dev": scored.pop("dev"), "test": scored.pop("test"), "ood": scored,
              "continuations": greedy_continuations(teacher, student, tokenizer,
                                                    max_new_tokens=16)}
    record["harness"] = None
    if harness:
        from layergraft.scoring.lm_harness import harness_scores

        record["harness"] = harness_scores({"teacher": teacher, "student": student}, tokenizer)
    return record


def say(progress: bool, line: str) -> None:
    if progress:
        print(line, flush=True)
