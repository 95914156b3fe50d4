"""Generation step 4, generate: seeded continuations of the LM Datanet's prompts by the trained LM,
in ``generations.jsonl`` (one JSON object per generation: ``generation`` id, ``prompt``,
``prompt_ids``, ``generated_ids``, ``text``)."""

from __future__ import annotations

import json
from pathlib import Path

from datanet.models import lm
from datanet_lab.pipeline import manifest
from datanet_lab.pipeline.engine import Procedure, run_step
from datanet_lab.pipeline.generation import build_step as gen_build
from datanet_lab.pipeline.generation import train_step as gen_train
from datanet_lab.pipeline.generation.build_step import build_generation
from datanet_lab.pipeline.generation.train_step import train_generation
from datanet_lab.pipeline.run import Run


def generation_id(index: int) -> str:
    """The id of generation ``index`` (its prompt's position), e.g. ``g0003``."""
    return f"g{index:04d}"


def generate_texts(run: Run) -> list[lm.Generation]:
    """The run's generations: reused when ``run`` holds them from the same parameters and model,
    otherwise sampled (``gen_temperature``, up to ``gen_max_new_tokens`` tokens, seeded by
    ``seed`` and the prompt's position) and written."""
    return run_step(run, PROCEDURE)


def _compute(run: Run, staging: Path) -> None:
    dn, trained = build_generation(run), train_generation(run)
    generations = lm.generate(trained.model, trained.tokenizer, dn.prompts, run.params["gen_max_new_tokens"],
                              run.params["seed"], temperature=run.params["gen_temperature"])
    lines = [json.dumps({"generation": generation_id(k), "prompt": g.prompt, "prompt_ids": list(g.prompt_ids),
                         "generated_ids": list(g.generated_ids), "text": g.text})
             for k, g in enumerate(generations)]
    (staging / "generations.jsonl").write_text("\n".join(lines) + "\n")


def _load(run: Run) -> list[lm.Generation]:
    return [lm.Generation(r["prompt"], tuple(r["prompt_ids"]), tuple(r["generated_ids"]), r["text"])
            for r in map(json.loads, (run.directory / "generations.jsonl").read_text().splitlines())]


PROCEDURE = Procedure(manifest.GEN_GENERATE, _compute, _load, requires=(gen_build.PROCEDURE, gen_train.PROCEDURE))
