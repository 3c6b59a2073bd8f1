import socket
from contextlib import contextmanager, nullcontext

import torch


def real_logits(logits: torch.Tensor, mask: torch.Tensor, row: int) -> torch.Tensor:
    """Logits of one row's real (unpadded) positions, in order."""
    return logits[row][mask[row].bool()]


def selections(report):
    """Every stage's kept indices, per image, as nested lists (comparable across runs)."""
    return [
        (stage.name, stage.layer, [(s.row, s.dominant.tolist(), s.targets.tolist(), s.merged_into.tolist())
                                   for s in stage.segments])
        for stage in report.stages
    ]


def row_of(batch: dict, row: int) -> dict:
    """One row of a batch, its padding removed, as a batch of one."""
    keep = batch["attention_mask"][row].bool()
    out = {"input_ids": batch["input_ids"][row][keep][None], "attention_mask": batch["attention_mask"][row][keep][None]}
    if "pixel_values" in batch:
        # images follow placeholder order, row by row; count each row's images
        per_image = 576
        counts = [int((batch["input_ids"][r] == 250).sum()) // per_image for r in range(batch["input_ids"].shape[0])]
        first = sum(counts[:row])
        if counts[row]:
            out["pixel_values"] = batch["pixel_values"][first : first + counts[row]]
    return out


@contextmanager
def prompt_queries(method, appended: int):
    """Recomputing prompt + ``appended`` generated tokens from scratch, a text-guided
    method would query with the last *generated* token; the cached run pruned once,
    with the prompt's. Point this instance's queries back at the prompt (its last
    token; SparseVLM: raters among the prompt's text) so the two runs are comparable."""
    reduce_llm, prepare_llm = method.reduce_llm, method.prepare_llm

    def reduce_at_prompt(stage, spec):
        stage.last_columns = stage.last_columns - appended
        return reduce_llm(stage, spec)

    def prepare_at_prompt(entry):
        entry.row_mask = entry.row_mask.clone()
        entry.row_mask[:, entry.row_mask.shape[1] - appended:] = False
        return prepare_llm(entry)

    method.reduce_llm, method.prepare_llm = reduce_at_prompt, prepare_at_prompt
    try:
        yield
    finally:
        del method.reduce_llm, method.prepare_llm


def assert_generate_matches_recompute(model, handle, batch: dict, steps: int, text_guided: bool) -> None:
    """Cached ``generate()`` under ``handle`` equals recomputing the whole sequence
    without a cache at every step (the pruned KV cache is right)."""
    import torch

    generated = model.generate(**batch, max_new_tokens=steps, do_sample=False)
    new_tokens = generated[:, batch["input_ids"].shape[1]:]
    ids, mask = batch["input_ids"], batch["attention_mask"]
    extra = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}
    running = getattr(handle.adapter, "method", handle.method)  # per-crop / per-frame plans run a copy
    for step in range(steps):
        guard = prompt_queries(running, step) if text_guided else nullcontext()
        with guard:
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False, **extra).logits
        token = logits[:, -1].argmax(-1)
        assert token.tolist() == new_tokens[:, step].tolist(), f"step {step}"
        ids = torch.cat([ids, token[:, None]], 1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)


def assert_same_selections(method: str, sdpa_run, eager_run) -> None:
    """Two backends' ``(selections, real logits per row)`` agree; VisPruner's order-dependent
    de-duplication (docs/baselines.md) is held to 60 % overlap of its kept tokens."""
    import torch

    if method == "vispruner":
        for ours, theirs in zip(sdpa_run[0][0][2], eager_run[0][0][2]):
            assert len(set(ours[1]) & set(theirs[1])) >= 0.6 * len(ours[1])
        return
    assert sdpa_run[0] == eager_run[0]
    for sdpa_row, eager_row in zip(sdpa_run[1], eager_run[1]):
        assert torch.allclose(sdpa_row, eager_row, atol=1e-4)


def free_port() -> int:
    """A free TCP port for a launcher's rendezvous (torchrun, accelerate launch)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def save_tiny_shapes_llava2(path, answers_yes: bool = False) -> str:
    """A random shapes-llava-2 checkpoint (its 32 layers, its processor) saved at ``path``.

    ``answers_yes`` rewires it to answer "yes" to every question, through two generated
    tokens ("yes", then "</s>"): every layer adds nothing to the residual stream, every
    token but "yes" (image tokens included) embeds as one unit vector, "yes" as another,
    and the LM head maps the first to "yes" and the second to "</s>". So some questions
    are right, and which ones is known."""
    import torch
    from transformers import LlavaForConditionalGeneration

    from visiondrop.zoo.shapes_llava2 import shapes2_processor, shapes_llava2_config, word_list

    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(shapes_llava2_config())
    if answers_yes:
        words = word_list()
        yes, eos = words.index("yes"), words.index("</s>")
        with torch.no_grad():
            for layer in model.model.language_model.layers:
                layer.self_attn.o_proj.weight.zero_()
                layer.mlp.down_proj.weight.zero_()
            embeddings = model.model.language_model.embed_tokens.weight
            embeddings.zero_()
            embeddings[:, 0] = 1.0
            embeddings[yes] = 0.0
            embeddings[yes, 1] = 1.0
            model.model.multi_modal_projector.linear_2.weight.zero_()
            model.model.multi_modal_projector.linear_2.bias.zero_()
            model.model.multi_modal_projector.linear_2.bias[0] = 1.0
            model.lm_head.weight.zero_()
            model.lm_head.weight[yes, 0] = 1.0
            model.lm_head.weight[eos, 1] = 1.0
    model.save_pretrained(path)
    shapes2_processor().save_pretrained(path)
    return str(path)
