"""``apply(..., cuda_graphs=...)`` on the CPU, in ``"frozen"`` mode: the graphs path
(layout keys, frozen host plans, the cache transplant, the session and report restore)
without the graph itself. Through the model's own forward and generate(), it must give
what the same calls give without the option, for new prompts of a seen layout, for a
changed layout, greedy and sampling. The CUDA graphs are checked on a GPU by
scripts/graphs_check.py (docs/benchmarks/README.md)."""

import copy
import inspect
import warnings

import pytest
import torch
from torch import nn

import visiondrop
from visiondrop.models import graphs
from visiondrop.testing import (
    IMAGE_TOKEN_ID,
    VIDEO_TOKEN_ID,
    image_prompt,
    llava_next_prompt,
    llava_onevision_prompt,
    tiny_llava_next,
    tiny_llava_onevision,
    tiny_video_llava,
    video_llava_prompt,
)

NEVER = {"suppress_tokens": [IMAGE_TOKEN_ID]}  # a random tiny model may sample its image token


def _prompts(model, lengths=(6, 6), seeds=(1, 2, 3)):
    return [image_prompt(model, list(lengths), seed=seed) for seed in seeds]


def _calls(model, handle, batches):
    """Per batch: prefill logits, kept indices of the last stage, greedy and sampled tokens."""
    results = []
    with torch.no_grad():
        for batch in batches:
            logits = model(**batch, use_cache=True, logits_to_keep=1).logits.clone()
            stages = handle.report.stages
            kept = [s.dominant.clone() for s in stages[-1].segments] if stages else []
            greedy = model.generate(**batch, max_new_tokens=4, min_new_tokens=4, do_sample=False, **NEVER)
            torch.manual_seed(7)
            sampled = model.generate(**batch, max_new_tokens=4, min_new_tokens=4, do_sample=True, **NEVER)
            results.append((logits, kept, greedy, sampled))
    return results


def _assert_same(expected, got):
    for (logits, kept, greedy, sampled), (g_logits, g_kept, g_greedy, g_sampled) in zip(expected, got, strict=True):
        torch.testing.assert_close(g_logits, logits)
        assert len(kept) == len(g_kept) and all(torch.equal(a, b) for a, b in zip(kept, g_kept))
        assert torch.equal(g_greedy, greedy) and torch.equal(g_sampled, sampled)


@pytest.mark.parametrize("method", ["visiondrop", "fastv", "visionzip", "none"])
def test_replays_give_what_eager_calls_give(model, method):
    batches = _prompts(model) + _prompts(model, lengths=(3, 3), seeds=(4,))  # two layouts
    options = {} if method == "none" else {"budget": 128}
    with visiondrop.apply(model, method, **options) as handle:
        expected = _calls(model, handle, batches)
    with visiondrop.apply(model, method, cuda_graphs="frozen", **options) as handle:
        _calls(model, handle, batches)  # first sight of every layout, then captures
        got = _calls(model, handle, batches)
        state = (handle.graphs.captures, handle.graphs.replays)
    _assert_same(expected, got)
    # forward and generate() have a layout each, per prompt layout: 4 captures; from the
    # second pass on every call replays
    assert state[0] == 4 and state[1] >= 3 * len(batches)


def test_llava_next_replays_give_what_eager_calls_give():
    model = tiny_llava_next(num_layers=8)
    batches = [llava_next_prompt(model, [5, 5], [[(40, 60)], [(40, 60)]], seed=s) for s in (1, 2)]
    batches.append(llava_next_prompt(model, [5, 5], [[(60, 30)], [(60, 30)]], seed=3))  # other image sizes
    with visiondrop.apply(model, "visiondrop", budget=150) as handle:
        expected = _calls(model, handle, batches)
    with visiondrop.apply(model, "visiondrop", budget=150, cuda_graphs="frozen") as handle:
        _calls(model, handle, batches)
        got = _calls(model, handle, batches)
        assert handle.graphs.captures == 4  # the image sizes are part of the layout
    _assert_same(expected, got)


def test_a_layout_is_captured_on_its_second_sight_and_a_changed_one_is_new(model):
    batch = image_prompt(model, [6, 6], seed=1)
    moved = image_prompt(model, [6, 6], seed=2)
    moved["input_ids"] = torch.roll(moved["input_ids"], 2, dims=1)  # same shape, placeholders elsewhere
    with visiondrop.apply(model, budget=64, cuda_graphs="frozen") as handle, torch.no_grad():
        graphed = handle.graphs
        model(**batch)
        assert (graphed.captures, graphed.replays) == (0, 0)  # unseen: eager
        model(**batch)
        assert (graphed.captures, graphed.replays) == (1, 1)
        model(**moved)
        assert (graphed.captures, graphed.replays) == (1, 1)  # a changed layout is unseen
        model(**batch)
        assert (graphed.captures, graphed.replays) == (1, 2)


@pytest.mark.parametrize("case", ["padded", "gradients", "no pixels", "labels", "embeddings"])
def test_calls_outside_a_fixed_layout_run_eagerly(model, case):
    batch = image_prompt(model, [6, 3] if case == "padded" else [6, 6], seed=1)
    if case == "no pixels":
        batch = {"input_ids": torch.randint(10, 100, (2, 9))}
    if case == "embeddings":  # a tensor argument that sends the call eagerly: never read as a truth value
        batch = {"inputs_embeds": model.get_input_embeddings()(torch.randint(10, 100, (2, 9)))}
    with visiondrop.apply(model, budget=64, cuda_graphs="frozen") as handle:
        for _ in range(3):
            if case == "gradients":
                model(**batch)
            elif case == "labels":
                with torch.no_grad(), pytest.raises(ValueError, match="labels"):
                    model(**batch, labels=batch["input_ids"])
            else:
                with torch.no_grad():
                    model(**batch)
        assert handle.graphs.captures == 0 and handle.graphs.replays == 0


def test_graphs_are_bounded_least_recently_used_first_out(model):
    layouts = [image_prompt(model, [n, n], seed=n) for n in (2, 3, 4)]
    with visiondrop.apply(model, budget=64, cuda_graphs="frozen", max_graphs=2) as handle, torch.no_grad():
        for batch in layouts + layouts:
            model(**batch)
        graphed = handle.graphs
        assert graphed.captures == 3 and len(graphed.graphs) == 2
        assert graphed.layout(dict(layouts[0])) not in graphed.graphs  # the oldest went first
        assert [graphed.layout(dict(b)) for b in layouts[1:]] == list(graphed.graphs)
        model(**layouts[0])  # evicted, it came back: captured again at once
        assert graphed.captures == 4 and graphed.layout(dict(layouts[1])) not in graphed.graphs


def test_the_wrapper_is_instance_scoped_and_removed_with_the_handle(model):
    before = inspect.signature(model.forward)
    handle = visiondrop.apply(model, budget=64, cuda_graphs="frozen")
    other = copy.deepcopy(model)  # a plain copy: neither the wrapper nor the hooks
    assert "forward" in vars(model) and "forward" not in vars(other)
    # generate() on transformers >= 5.23 pre-encodes images only when forward takes
    # mm_encoder_outputs: the wrapper does not, so the graph holds the vision tower
    params = inspect.signature(model.forward).parameters
    assert "mm_encoder_outputs" not in params and "logits_to_keep" in params and "pixel_values" in params
    assert "graphs:" in repr(handle)
    handle.remove()
    assert "forward" not in vars(model) and inspect.signature(model.forward) == before
    assert not hasattr(type(model).forward, "__signature__")  # the class is untouched


def test_a_failed_capture_warns_and_runs_eagerly(model, monkeypatch):
    batch = image_prompt(model, [6, 6], seed=1)
    with visiondrop.apply(model, budget=64) as handle, torch.no_grad():
        expected = model(**batch).logits

    def broken(*args, **kwargs):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(graphs, "PrefillGraph", broken)
    with visiondrop.apply(model, budget=64, cuda_graphs="frozen") as handle, torch.no_grad():
        model(**batch)
        with pytest.warns(RuntimeWarning, match="could not capture this prompt layout"):
            got = model(**batch).logits
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # once per layout
            model(**batch)
        assert handle.graphs.captures == 0
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize(("options", "message"), [
    ({"cuda_graphs": "yes"}, "cuda_graphs must be True, False or 'frozen'"),
    ({"cuda_graphs": 1}, "cuda_graphs must be True, False or 'frozen'"),
    ({"cuda_graphs": True}, "cuda_graphs=True needs the model on a CUDA device"),
    ({"cuda_graphs": "frozen", "max_graphs": 0}, "max_graphs must be an int >= 1"),
    ({"cuda_graphs": "frozen", "max_graphs": 2.0}, "max_graphs must be an int >= 1"),
])
def test_bad_graph_options_are_refused_before_any_hook(model, options, message):
    with pytest.raises(ValueError, match=message):
        visiondrop.apply(model, budget=64, **options)
    assert "forward" not in vars(model) and not model._forward_pre_hooks


def test_methods_whose_shapes_follow_the_text_are_refused(model):
    with pytest.raises(ValueError, match="cuda_graphs: method 'sparsevlm'"):
        visiondrop.apply(model, "sparsevlm", budget=128, cuda_graphs="frozen")


def test_unsupported_models_are_refused_by_name():
    class Qwen2_5_VLForConditionalGeneration(nn.Module):  # only the class name matters here
        pass

    method = visiondrop.methods.get_method("visiondrop").from_options(budget=64)
    with pytest.raises(ValueError, match="cuda_graphs: supported on .* not Qwen2_5_VLForConditionalGeneration"):
        graphs.check_graph_options(Qwen2_5_VLForConditionalGeneration(), method, True, 8)


def test_method_none_keeps_every_token(model):
    batch = image_prompt(model, [6, 6], seed=1)
    with torch.no_grad():
        expected = model(**batch).logits
        with visiondrop.apply(model, "none") as handle:
            got = model(**batch).logits
            assert handle.report.stages == [] and bool(handle.report.output_mask.all())
    torch.testing.assert_close(got, expected)
    with pytest.raises(ValueError, match="budget: method 'none' keeps every visual token"):
        visiondrop.apply(model, "none", budget=64)


def test_video_llava_replays_images_and_videos():
    model = tiny_video_llava(num_layers=16, image_size=70)
    both = ["image", "video"]
    batches = [video_llava_prompt(model, [5, 5], [both, both], seed=s) for s in (1, 2)]
    never = {"suppress_tokens": [IMAGE_TOKEN_ID, VIDEO_TOKEN_ID]}
    with torch.no_grad():
        with visiondrop.apply(model, "visiondrop", budget=24):
            expected = [model.generate(**b, max_new_tokens=3, do_sample=False, **never) for b in batches]
        with visiondrop.apply(model, "visiondrop", budget=24, cuda_graphs="frozen") as handle:
            for _ in range(2):
                got = [model.generate(**b, max_new_tokens=3, do_sample=False, **never) for b in batches]
            assert handle.graphs.captures == 1 and handle.graphs.replays == 3
    assert all(torch.equal(a, b) for a, b in zip(expected, got))


def test_llava_onevision_replays_with_an_encoder_stage_and_refuses_without():
    model = tiny_llava_onevision(num_layers=8)
    batches = [llava_onevision_prompt(model, [5, 5], [[(168, 168)], [(168, 168)]], seed=s) for s in (1, 2)]
    with torch.no_grad():
        with visiondrop.apply(model, "visiondrop", budget=80):
            expected = [model(**b).logits for b in batches]
        with visiondrop.apply(model, "visiondrop", budget=80, cuda_graphs="frozen") as handle:
            for _ in range(2):
                got = [model(**b).logits for b in batches]
            assert handle.graphs.captures == 1 and handle.graphs.replays == 3
    for a, b in zip(expected, got):
        torch.testing.assert_close(b, a)
    # without an encoder stage transformers packs the crops, copying from host memory
    with pytest.raises(ValueError, match="cuda_graphs: on LLaVA-OneVision only methods with an encoder stage"):
        visiondrop.apply(model, "fastv", budget=120, cuda_graphs="frozen")
