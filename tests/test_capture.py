"""capture_prefill on the CPU (graph=False): the frozen host-side plans must give what a
plain prefill gives for any text and pixels of the captured layout, and every call
that does not fit the layout is refused. The CUDA graph itself is checked on a GPU by
scripts/capture_check.py (docs/benchmarks/README.md)."""

import pytest
import torch

import visiondrop
from visiondrop.capture import CapturedPrefill, capture_prefill
from visiondrop.testing import IMAGE_TOKEN_ID, image_prompt, tiny_llava_next

METHODS = ["visiondrop", "fastv", "pdrop", "visionzip", "vispruner", "random"]


def _prompt(model, seed):
    batch = image_prompt(model, [6, 6], seed=seed)
    return batch["input_ids"], batch["pixel_values"]


@pytest.mark.parametrize("method", METHODS)
def test_frozen_prefill_matches_plain_prefill_for_new_text_and_pixels(model, method):
    ids, pixels = _prompt(model, seed=0)
    new_ids, new_pixels = _prompt(model, seed=1)  # same layout, other tokens and pixels
    assert not torch.equal(ids, new_ids) and torch.equal(ids == IMAGE_TOKEN_ID, new_ids == IMAGE_TOKEN_ID)
    with visiondrop.apply(model, method, budget=128) as handle, torch.no_grad():
        captured = capture_prefill(model, ids, pixels, graph=False)
        got = captured(new_ids, new_pixels)
        got_logits = got.logits.clone()
        got_kept = [s.dominant.clone() for s in handle.report.stages[-1].segments]
        expected = model(input_ids=new_ids, pixel_values=new_pixels, use_cache=True, logits_to_keep=1)
        expected_kept = [s.dominant for s in handle.report.stages[-1].segments]
    torch.testing.assert_close(got_logits, expected.logits)
    assert got.past_key_values.get_seq_length() == expected.past_key_values.get_seq_length()
    assert all(torch.equal(a, b) for a, b in zip(got_kept, expected_kept))


def test_host_side_plan_is_made_once(model, monkeypatch):
    ids, pixels = _prompt(model, seed=0)
    with visiondrop.apply(model, budget=32) as handle:
        adapter = handle.adapter
        calls = []
        original = adapter._image_segments
        monkeypatch.setattr(adapter, "_image_segments", lambda *a: calls.append(1) or original(*a))
        captured = capture_prefill(model, ids, pixels, graph=False, warmup=2)
        for seed in (1, 2):
            captured(*_prompt(model, seed))
        assert len(calls) == 1
        assert any(key[0] == "constant" for key in captured.plans)
        model(input_ids=ids, pixel_values=pixels)  # outside the captured calls: planned afresh
        assert len(calls) == 2


def test_generate_matches_transformers_generate(model):
    ids, pixels = _prompt(model, seed=3)
    with visiondrop.apply(model, budget=32), torch.no_grad():
        captured = capture_prefill(model, ids, pixels, graph=False)
        tokens = captured.generate(ids, pixels, max_new_tokens=5)
        expected = model.generate(input_ids=ids, pixel_values=pixels, attention_mask=torch.ones_like(ids),
                                  max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert torch.equal(tokens, expected[:, ids.shape[1]:])


def test_unpruned_model_can_be_captured(model):
    ids, pixels = _prompt(model, seed=4)
    with torch.no_grad():
        got = capture_prefill(model, ids, pixels, graph=False)(ids, pixels).logits
        expected = model(input_ids=ids, pixel_values=pixels, logits_to_keep=1).logits
    torch.testing.assert_close(got, expected)
    assert "get_placeholder_mask" not in vars(model.model)  # the instance override is gone


def test_calls_outside_the_layout_are_refused(model):
    ids, pixels = _prompt(model, seed=0)
    with visiondrop.apply(model, budget=32) as handle:
        captured = CapturedPrefill(model, ids, pixels, graph=False)
        moved = ids.clone()
        moved[0] = torch.roll(ids[0], 1)
        with pytest.raises(ValueError, match="placeholders are not where"):
            captured(moved, pixels)
        with pytest.raises(ValueError, match="input_ids: captured for shape"):
            captured(ids[:, 1:], pixels)
        with pytest.raises(ValueError, match="pixel_values"):
            captured(ids, pixels[:, :, :-1])
        with pytest.raises(ValueError, match="attention_mask"):
            captured(ids, pixels, attention_mask=torch.tensor([[0] + [1] * (ids.shape[1] - 1)] * 2))
        handle.remove()
        with pytest.raises(RuntimeError, match="handle changed"):
            captured(ids, pixels)


def test_bad_arguments_are_refused_before_running(model):
    ids, pixels = _prompt(model, seed=0)
    with pytest.raises(ValueError, match="warmup"):
        CapturedPrefill(model, ids, pixels, graph=False, warmup=0)
    with pytest.raises(ValueError, match="graph=True needs"):
        CapturedPrefill(model, ids, pixels, graph=True)
    with pytest.raises(ValueError, match="pixel_values"):
        CapturedPrefill(model, ids, pixels[:1], graph=False)
    with pytest.raises(ValueError, match="every row needs"):
        CapturedPrefill(model, torch.ones_like(ids), pixels, graph=False)
    with pytest.raises(ValueError, match="max_new_tokens"):
        CapturedPrefill(model, ids, pixels, graph=False).generate(ids, pixels, max_new_tokens=0)
    with pytest.raises(ValueError, match="model: capture_prefill supports"):
        CapturedPrefill(tiny_llava_next(), ids, pixels, graph=False)


def test_methods_with_data_dependent_shapes_are_refused(model):
    ids, pixels = _prompt(model, seed=0)
    with visiondrop.apply(model, "sparsevlm", budget=128):
        with pytest.raises(ValueError, match="method 'sparsevlm': its stages' shapes depend on the data"):
            CapturedPrefill(model, ids, pixels, graph=False)
