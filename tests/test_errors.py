"""Bad input: a clear error naming the parameter, before any compute."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import visiondrop
from visiondrop import Schedule
from visiondrop.testing import image_prompt


@pytest.mark.parametrize("budget, match", [
    (0, r"budget must be in \[1, 576\]"),
    (-3, r"budget must be in \[1, 576\]"),
    (577, r"budget must be in \[1, 576\]"),
    (12.5, "budget must be an int"),
])
def test_bad_budget(model, budget, match):
    with pytest.raises(ValueError, match=match):
        visiondrop.apply(model, budget=budget)
    assert not hasattr(model, "_visiondrop_handle")


@pytest.mark.parametrize("schedule, match", [
    (Schedule(encoder=(600, 0), llm=[(10, 0)] * 3), r"schedule.encoder dominant = 600 exceeds the 576"),
    (Schedule(encoder=(570, 10), llm=[(10, 0)] * 3), r"schedule.encoder contextual = 10 exceeds the 6"),
    (Schedule(encoder=(577, 0), llm=[(10, 0)] * 3), r"schedule.encoder dominant = 577 exceeds the 576"),
    (Schedule(encoder=(40, 8), llm=[(30, 5), (36, 0), (5, 0)]), r"schedule.llm\[1\] dominant = 36 exceeds the 35"),
    (Schedule(encoder=(40, 8), llm=[(40, 9), (5, 0), (5, 0)]), r"schedule.llm\[0\] contextual = 9 exceeds the 8"),
    (Schedule(encoder=(40, 8), llm=[(10, 0)] * 3, layers=(2, 4, 8)), r"schedule.layers\[2\] = 8 is out of range"),
    (Schedule(encoder=(40, 8), llm=[(10, 0)] * 3, layers=(2, 2, 4)), "strictly increasing"),
    (Schedule(encoder=(40, 8), llm=[(10, 0)] * 2, layers=(2, 4, 6)), "3 entries but schedule.llm has 2"),
])
def test_bad_schedule(model, schedule, match):
    with pytest.raises(ValueError, match=match):
        visiondrop.apply(model, schedule=schedule)


def test_budget_and_schedule_are_exclusive(model):
    with pytest.raises(ValueError, match="exactly one of budget"):
        visiondrop.apply(model)
    with pytest.raises(ValueError, match="exactly one of budget"):
        visiondrop.apply(model, budget=8, schedule=Schedule(llm=[(4, 0)]))


def test_entry_factor_below_one_is_refused(model):
    with pytest.raises(ValueError, match="entry_factor must be >= 1"):
        visiondrop.apply(model, budget=64, entry_factor=0.5)


def test_beam_search_refused_clearly_and_generate_restored(model):
    batch = image_prompt(model, [3])
    class_generate = type(model).generate
    with visiondrop.apply(model, budget=16), torch.no_grad():
        with pytest.raises(ValueError, match="num_beams=2: beam search"):
            model.generate(**batch, num_beams=2, max_new_tokens=2)
        with pytest.raises(ValueError, match="num_return_sequences=2"):
            model.generate(**batch, do_sample=True, num_return_sequences=2, max_new_tokens=2)
    assert "generate" not in vars(model) and type(model).generate is class_generate


def test_bad_options(model):
    with pytest.raises(ValueError, match="positions must be one of"):
        visiondrop.apply(model, budget=16, positions="shuffle")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['ratio'\]"):
        visiondrop.apply(model, budget=16, ratio=2)
    with pytest.raises(ValueError, match="unknown method 'tome'"):
        visiondrop.apply(model, method="tome", budget=16)


def test_unsupported_model_names_supported_ones():
    lm = LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, vocab_size=10))
    with pytest.raises(ValueError, match="LlamaForCausalLM is not supported; supported model classes: "
                                         "Gemma3ForConditionalGeneration, InternVLForConditionalGeneration") as caught:
        visiondrop.apply(lm, budget=8)
    assert all(name in str(caught.value) for name in visiondrop.supported_models())


def test_apply_twice_raises_and_remove_twice_is_harmless(model):
    handle = visiondrop.apply(model, budget=16)
    try:
        with pytest.raises(RuntimeError, match="already has an active visiondrop handle"):
            visiondrop.apply(model, budget=32)
    finally:
        handle.remove()
    handle.remove()
    visiondrop.apply(model, budget=32).remove()  # applies again once removed


def test_labels_are_refused(model):
    batch = image_prompt(model, [3])
    with visiondrop.apply(model, budget=16), pytest.raises(ValueError, match="labels"):
        model(**batch, labels=batch["input_ids"])


def test_inputs_embeds_with_images_refused(model):
    batch = image_prompt(model, [3])
    embeds = model.get_input_embeddings()(batch["input_ids"])
    with visiondrop.apply(model, budget=16), pytest.raises(ValueError, match="input_ids"), torch.no_grad():
        model(inputs_embeds=embeds, pixel_values=batch["pixel_values"], attention_mask=batch["attention_mask"])


def test_foreign_cache_refused(model):
    batch = image_prompt(model, [3])
    with torch.no_grad(), visiondrop.apply(model, budget=16):
        out = model(**batch, use_cache=True)
        model(**batch)  # a new prefill replaces the session of `out`
        step = {"input_ids": batch["input_ids"][:, -1:], "past_key_values": out.past_key_values}
        with pytest.raises(RuntimeError, match="does not continue the last pruned prefill"):
            model(**step)


def test_pruned_cache_after_text_only_prefill_refused(model):
    batch = image_prompt(model, [3])
    text_only = image_prompt(model, [4], images_per_row=[0])
    with torch.no_grad(), visiondrop.apply(model, budget=16):
        out = model(**batch, use_cache=True)
        model(**text_only)
        with pytest.raises(RuntimeError, match="does not continue"):
            model(input_ids=batch["input_ids"][:, -1:], past_key_values=out.past_key_values)
