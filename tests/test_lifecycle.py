"""A pruned model through its whole life: copies, threads, calls that must stand alone,
and the generate() modes and caches a pruned prompt cannot serve (issue 18)."""

import copy
import threading

import pytest
import torch
from tiny_qwen2_5_vl import qwen_batch, tiny_qwen
from transformers import StaticCache

import visiondrop
from visiondrop.testing import image_prompt, llava_next_prompt, tiny_llava_next


@pytest.fixture(scope="module")
def next_model():
    return tiny_llava_next(seed=0)


@pytest.fixture(scope="module")
def qwen():
    return tiny_qwen(seed=0)


def _greedy(model, batch, steps=3):
    with torch.no_grad():
        return model.generate(**batch, max_new_tokens=steps, do_sample=False)[:, batch["input_ids"].shape[1]:]


def _llava_case(model):
    return model, image_prompt(model, [4, 2], seed=3), 16


def _next_case(next_model):
    return next_model, llava_next_prompt(next_model, [4], [[(224, 224)]], seed=3), 40


@pytest.mark.parametrize("case", ["llava", "next"])
def test_deepcopy_of_a_pruned_model_is_a_plain_model(model, next_model, case):
    original, batch, budget = _llava_case(model) if case == "llava" else _next_case(next_model)
    full_tokens = _greedy(original, batch)
    with torch.no_grad():
        full_logits = original(**batch).logits
    handle = visiondrop.apply(original, budget=budget)
    try:
        pruned_tokens = _greedy(original, batch)
        clone = copy.deepcopy(original)
        assert not hasattr(clone, "_visiondrop_handle") and "generate" not in vars(clone)
        assert _greedy(clone, batch).tolist() == full_tokens.tolist()
        with torch.no_grad():
            assert torch.equal(clone(**batch).logits, full_logits)  # every position: nothing pruned
        # the original still prunes, and the copy can be pruned on its own
        assert _greedy(original, batch).tolist() == pruned_tokens.tolist()
        with visiondrop.apply(clone, budget=budget):
            assert _greedy(clone, batch).tolist() == pruned_tokens.tolist()
    finally:
        handle.remove()
    assert _greedy(clone, batch).tolist() == full_tokens.tolist()


def test_deepcopy_keeps_the_users_own_hooks_in_order(model):
    calls = []
    first = model.register_forward_pre_hook(lambda module, args: calls.append("first"))
    handle = visiondrop.apply(model, budget=16)
    last = model.register_forward_pre_hook(lambda module, args: calls.append("last"))
    try:
        clone = copy.deepcopy(model)
        batch = image_prompt(model, [3])
        with torch.no_grad():
            clone(**batch)
            model(**batch)
        assert calls == ["first", "last", "first", "last"]
        assert handle.report is not None and handle.report.stages  # the original still pruned
    finally:
        handle.remove()
        first.remove()
        last.remove()


def test_hooks_added_while_detached_survive_reattaching(model):
    """guards.detached for a long time (the bench keeps graph handles detached between rounds):
    hooks others register meanwhile (transformers adds some on first use) stay, and ours come
    back where they were."""
    from visiondrop.models.guards import detached

    handle = visiondrop.apply(model, budget=16)
    try:
        ours = list(model.model._forward_pre_hooks)
        with detached(handle._hooks):
            assert not any(key in model.model._forward_pre_hooks for key in ours)
            added = model.model.register_forward_pre_hook(lambda module, args: None)
        keys = list(model.model._forward_pre_hooks)
        assert keys == ours + [added.id]
        added.remove()
    finally:
        handle.remove()


def test_threads_sharing_one_pruned_model_get_their_own_results(model):
    batches = [image_prompt(model, [2 + i % 3], seed=i) for i in range(8)]
    with visiondrop.apply(model, budget=16), torch.no_grad():
        expected = [model(**batch).logits for batch in batches]
        results, errors = [None] * 16, []

        def call(i):
            try:
                with torch.no_grad():
                    results[i] = model(**batches[i % 8]).logits
            except Exception as error:  # noqa: BLE001  (reported below)
                errors.append(repr(error))

        threads = [threading.Thread(target=call, args=(i,)) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    for i, logits in enumerate(results):
        assert torch.equal(logits, expected[i % 8]), i


def test_threads_calling_generate_get_their_own_tokens(model):
    batches = [image_prompt(model, [2 + i], seed=10 + i) for i in range(4)]
    with visiondrop.apply(model, budget=16):
        expected = [_greedy(model, batch) for batch in batches]
        results = [None] * 4
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, _greedy(model, batches[i])))
                   for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert [r.tolist() for r in results] == [e.tolist() for e in expected]


def test_a_failed_call_does_not_block_the_next(model):
    batch = image_prompt(model, [3])
    with visiondrop.apply(model, budget=16), torch.no_grad():
        with pytest.raises(ValueError, match="labels"):
            model(**batch, labels=batch["input_ids"])
        with pytest.raises(RuntimeError):
            model(input_ids=batch["input_ids"])  # placeholders without pixels
        done = threading.Event()
        worker = threading.Thread(target=lambda: (model(**batch), done.set()))
        worker.start()
        worker.join(timeout=120)
        assert done.is_set()


def test_placeholders_without_pixels_are_refused_after_an_image_call_too(model):
    batch = image_prompt(model, [3])
    without_pixels = {k: v for k, v in batch.items() if k != "pixel_values"}
    with visiondrop.apply(model, budget=16) as handle, torch.no_grad():
        with pytest.raises(RuntimeError, match="encoder stage saw 0"):
            model(**without_pixels)
        model(**batch)
        report = handle.report
        with pytest.raises(RuntimeError, match="encoder stage saw 0"):
            model(**without_pixels)
        assert handle.report is not report  # the earlier image's report is not passed off as this call's


def test_text_only_call_after_an_image_call_leaves_no_stale_encoder_state(model):
    batch = image_prompt(model, [3])
    with visiondrop.apply(model, budget=16) as handle, torch.no_grad():
        model(**batch)
        assert handle.adapter._pending is not None
        model(input_ids=torch.tensor([[5, 6, 7]]))
        assert handle.adapter._pending is None


@pytest.mark.parametrize("kwargs, match", [
    (dict(prompt_lookup_num_tokens=2), "prompt_lookup_num_tokens: assisted decoding"),
    (dict(assistant_early_exit=2), "assistant_early_exit: assisted decoding"),
    (dict(cache_implementation="static"), "cache_implementation='static'"),
    (dict(cache_implementation="offloaded_static"), "cache_implementation='offloaded_static'"),
])
def test_generate_modes_a_pruned_prompt_cannot_serve_are_refused_up_front(model, kwargs, match):
    batch = image_prompt(model, [3])
    with visiondrop.apply(model, budget=16), torch.no_grad():
        with pytest.raises(ValueError, match=match):
            model.generate(**batch, max_new_tokens=2, **kwargs)


def test_assistant_model_is_refused_up_front(model):
    batch = image_prompt(model, [3])
    with visiondrop.apply(model, budget=16), torch.no_grad():
        with pytest.raises(ValueError, match="assistant_model: assisted decoding"):
            model.generate(**batch, max_new_tokens=2, assistant_model=model)


def test_a_static_cache_object_is_refused_naming_it(model):
    batch = image_prompt(model, [3])
    cache = StaticCache(config=model.config.text_config, max_cache_len=1024)
    with visiondrop.apply(model, budget=16), torch.no_grad():
        with pytest.raises(ValueError, match="past_key_values: a StaticCache cannot hold a pruned prompt"):
            model(**batch, past_key_values=cache)
        with pytest.raises(ValueError, match="past_key_values: a StaticCache"):
            model.generate(**batch, past_key_values=cache, max_new_tokens=2)


def test_static_cache_refused_on_qwen(qwen):
    batch = qwen_batch([[("image", (1, 4, 6))]], [3])
    with visiondrop.apply(qwen, budget=4), torch.no_grad():
        with pytest.raises(ValueError, match="cache_implementation='static'"):
            qwen.generate(**batch, max_new_tokens=2, cache_implementation="static")


def test_the_default_cache_still_generates(model):
    batch = image_prompt(model, [3])
    with visiondrop.apply(model, budget=16):
        explicit = model.generate(**batch, max_new_tokens=3, do_sample=False, cache_implementation="dynamic")
        assert explicit[:, batch["input_ids"].shape[1]:].tolist() == _greedy(model, batch).tolist()


@pytest.mark.parametrize("positions", ["keep", "reindex"])
def test_gapped_positions_without_mask_or_cache_are_not_packed_sequences(model, positions):
    # "keep" hands the LM position ids with gaps; with no 2-D mask and no cache,
    # transformers >= 5.25 would take each gap for the start of a packed sequence
    batch = image_prompt(model, [5, 5])
    del batch["attention_mask"]  # no padding: the pruned forward passes no mask on
    with visiondrop.apply(model, budget=32, positions=positions), torch.no_grad():
        cached = model(**batch, use_cache=True).logits
        uncached = model(**batch, use_cache=False).logits
    assert torch.allclose(cached, uncached, atol=1e-5)


def test_gapped_mrope_positions_without_mask_or_cache_are_not_packed_sequences(qwen):
    batch = qwen_batch([[("image", (1, 8, 8))], [("image", (1, 8, 8))]], [3, 3])
    del batch["attention_mask"]
    with visiondrop.apply(qwen, budget=4, positions="keep"), torch.no_grad():
        cached = qwen(**batch, use_cache=True).logits
        uncached = qwen(**batch, use_cache=False).logits
    assert torch.allclose(cached, uncached, atol=1e-5)
