"""LLaVA-OneVision on a tiny random model: every method, the release's crop layout,
transformers' downsized layout, multi-image and video rows, sliding-window layers, the
command line, and errors before compute.

Tiny geometry (visiondrop.testing.tiny_llava_onevision): SigLIP without [CLS], 56 px crops
of 4 x 4 patches, tile grids up to 3 x 3 (10 crops: budgets are multiples of 10, the
largest image plans 10 x 16 = 160 tokens) and "anyres_max_4", so the 3 x 3 image is
downsized by transformers (88 packed tokens: 16 + 8 x 8 + 8 newlines) as large images
are on the 7B (anyres_max_9 over up to 37 crops). Videos: 3 frames of 2 x 2 pooled
tokens + 1 newline = 13 tokens.
"""

import importlib.util

import numpy as np
import pytest
import torch
from helpers import assert_generate_matches_recompute, assert_same_selections, real_logits, selections
from PIL import Image

import visiondrop
from visiondrop import Schedule
from visiondrop.models.llava_onevision import BLENDED
from visiondrop.schedule import scale_stages
from visiondrop.testing import (
    llava_onevision_image_tokens,
    llava_onevision_prompt,
    llava_onevision_video_tokens,
    tiny_llava_onevision,
)

LARGEST = (168, 168)  # 3 x 3 tiles + base: the reference image (10 crops), downsized by transformers
WIDE = (56, 112)  # 1 x 2 tiles + base (3 crops), neither unpadded nor downsized
MULTI = [(100, 50), (60, 80)]  # a multi-image row: one crop + a newline each
UNITS, PER_CROP, LAYERS = 10, 16, 8
CASES = {  # method -> budgets feasible on the 8-layer LM (LLM-only: layer 0 keeps all 160)
    "visiondrop": [40, 80], "random": [40, 80], "pool": [40, 80],
    "fastv": [80, 120], "pdrop": [80, 120], "pdrop-visual": [80, 120], "sparsevlm": [80, 120],
}
# VisionZip and VisPruner score with [CLS] attention; SigLIP has no [CLS].
NEEDS_CLS = ["visionzip", "vispruner"]
METHODS = sorted(CASES)
TEXT_GUIDED = {"fastv", "pdrop", "sparsevlm"}
LLM_ONLY = {"fastv", "pdrop", "pdrop-visual", "sparsevlm"}


@pytest.fixture(scope="module")
def ov_model():
    return tiny_llava_onevision(seed=0)


@pytest.fixture(scope="module")
def ov_eager():
    return tiny_llava_onevision(seed=0, attn_implementation="eager")


@pytest.fixture(scope="module")
def ov_sliding():
    """Layers 4-7 attend within a 16-token window: every pruning stage but the first
    lands in a sliding layer, whose rebuilt masks must stay windowed."""
    return tiny_llava_onevision(seed=0, sliding_window=16)


def _media(method, *rows):
    """Rows for ``method``; a video row only where videos are supported (no encoder stage)."""
    return [row for row in rows if "video" not in row or method in LLM_ONLY]


def _rows_alone(batch, media):
    """Each row of a OneVision batch without its padding, with its own images and videos."""
    first_image = first_video = 0
    for row, items in enumerate(media):
        keep = batch["attention_mask"][row].bool()
        out = {key: batch[key][row][keep][None] for key in ("input_ids", "attention_mask")}
        images = sum(item != "video" for item in items)
        videos = len(items) - images
        if images:
            out["pixel_values"] = batch["pixel_values"][first_image:first_image + images]
            out["image_sizes"] = batch["image_sizes"][first_image:first_image + images]
            out["batch_num_images"] = torch.tensor([images])
        if videos:
            out["pixel_values_videos"] = batch["pixel_values_videos"][first_video:first_video + videos]
        first_image += images
        first_video += videos
        yield row, out


def test_every_registered_method_is_covered():
    assert sorted(visiondrop.available_methods()) == sorted(METHODS + NEEDS_CLS)


def test_packed_token_counts_of_the_tiny_geometry(ov_model):
    assert llava_onevision_image_tokens(ov_model, LARGEST) == 16 + 8 * 8 + 8  # downsized from 12 x 12
    assert llava_onevision_image_tokens(ov_model, WIDE) == 16 + 4 * 8 + 4
    assert llava_onevision_video_tokens(ov_model, 3) == 13


@pytest.mark.parametrize("method", METHODS)
def test_largest_image_averages_the_budget_and_others_their_share(ov_model, method):
    media = [[LARGEST], [WIDE], MULTI, []]
    batch = llava_onevision_prompt(ov_model, [4, 6, 3, 5], media)
    for budget in CASES[method]:
        with torch.no_grad(), visiondrop.apply(ov_model, method, budget=budget) as handle:
            ov_model(**batch)
        report, schedule = handle.report, handle.schedule
        counts = report.layer_visual_tokens
        # planned per crop and multiplied by 10: rounding shows up to 10 / 2 times; LLM-only
        # methods see transformers' packed layout (88 tokens, not 160) and keep its share
        share = llava_onevision_image_tokens(ov_model, LARGEST) / (UNITS * PER_CROP) if method in LLM_ONLY else 1.0
        assert abs(report.average_visual_tokens(0) - budget * share) <= UNITS / 2 + 1, (method, budget, counts[0])
        entry = int(counts[0, 0])
        if method in LLM_ONLY:
            assert entry == llava_onevision_image_tokens(ov_model, LARGEST)
            scaled = Schedule(llm=scale_stages(schedule.llm, UNITS * PER_CROP, entry), layers=schedule.layers)
            expected = scaled.tokens_per_layer(LAYERS, entry)
        else:
            per_crop = schedule.encoder.total
            expected = schedule.tokens_per_layer(LAYERS, UNITS * per_crop)
            assert counts[1, 0] == 3 * per_crop and counts[2, 0] == 2 * per_crop
        if method != "sparsevlm":  # its recycled tokens follow from how many it pruned, not the plan
            assert counts[0].tolist() == expected
        assert counts[3].eq(0).all()
        ratio = counts[1].float() / counts[0].float()
        wide = (llava_onevision_image_tokens(ov_model, WIDE) / entry) if method in LLM_ONLY else 3 / UNITS
        assert torch.allclose(ratio, torch.full_like(ratio, wide), atol=0.06), ratio.tolist()


@pytest.mark.parametrize("method", METHODS)
def test_remove_restores_bit_identical_outputs(ov_model, method):
    batch = llava_onevision_prompt(ov_model, [5, 9], [[LARGEST], MULTI])
    with torch.no_grad():
        before = ov_model(**batch).logits
        handle = visiondrop.apply(ov_model, method, budget=CASES[method][0])
        pruned = ov_model(**batch).logits
        handle.remove()
        after = ov_model(**batch).logits
    assert not torch.equal(pruned[:, -1], before[:, -1])
    assert torch.equal(before, after)
    assert "pack_image_features" not in vars(ov_model.model)
    assert "get_video_features" not in vars(ov_model.model)


@pytest.mark.parametrize("method", METHODS)
def test_eager_and_sdpa_select_the_same_tokens(ov_model, ov_eager, method):
    batch = llava_onevision_prompt(ov_model, [5, 9, 4], _media(method, [LARGEST], MULTI, ["video"]))
    runs = []
    for m in (ov_model, ov_eager):
        with torch.no_grad(), visiondrop.apply(m, method, budget=CASES[method][1]) as handle:
            logits = m(**batch).logits
        rows = range(batch["input_ids"].shape[0])
        runs.append((selections(handle.report), [real_logits(logits, handle.report.output_mask, r) for r in rows]))
    assert_same_selections(method, *runs)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("sliding", [False, True], ids=["full", "sliding"])
def test_cached_generate_equals_full_recompute(ov_model, ov_sliding, method, sliding):
    model = ov_sliding if sliding else ov_model
    media = _media(method, [WIDE], [LARGEST], MULTI, ["video"])
    batch = llava_onevision_prompt(model, [5, 9, 3, 4][:len(media)], media, seed=3)
    with torch.no_grad(), visiondrop.apply(model, method, budget=CASES[method][1]) as handle:
        assert_generate_matches_recompute(model, handle, batch, 4, method in TEXT_GUIDED)
    if handle.schedule.llm:  # the layers after the first stage run on rebuilt masks of their own type
        later = model.config.text_config.layer_types[min(handle.schedule.resolved_layers(LAYERS)):]
        assert ("sliding_attention" in later) == sliding


@pytest.mark.parametrize("method", METHODS)
def test_batch_rows_of_different_media_equal_rows_alone(ov_model, method):
    media = _media(method, [LARGEST], [WIDE], MULTI, [], ["video"], [(112, 112), "video"])
    batch = llava_onevision_prompt(ov_model, [5, 4, 7, 3, 6, 2][:len(media)], media, seed=5)
    with torch.no_grad(), visiondrop.apply(ov_model, method, budget=CASES[method][1]) as handle:
        out = ov_model(**batch).logits
        mask, report = handle.report.output_mask, handle.report
        for row, alone_batch in _rows_alone(batch, media):
            alone = ov_model(**alone_batch).logits
            assert torch.allclose(real_logits(out, mask, row), alone[0], atol=1e-4), f"row {row}"
            if media[row]:
                alone_sel = [[s.dominant.tolist() for s in st.segments] for st in handle.report.stages]
                batch_sel = [[s.dominant.tolist() for s in st.rows(row)] for st in report.stages]
                assert alone_sel == batch_sel, f"row {row}"


def test_release_layout_tiles_in_spatial_order_then_contextual(ov_model):
    batch = llava_onevision_prompt(ov_model, [4], [[LARGEST]])
    with torch.no_grad(), visiondrop.apply(ov_model, "visiondrop", budget=80) as handle:
        ov_model(**batch)
    encoder, first_llm = handle.report.stages[0], handle.report.stages[1]
    spec = handle.schedule.encoder
    crops = encoder.segments
    assert len(crops) == UNITS and spec.contextual > 0
    assert all(p >= 0 for record in crops for p in record.output_patches.tolist())  # no [CLS]
    entry = first_llm.segments[0].input_patches.tolist()
    assert entry[:spec.total] == crops[0].output_patches.tolist()
    side = 4

    def spatial(patch_id):  # row-major over the 3 x 3 tiled grid of 12 x 12 patches
        tile, patch = divmod(patch_id, PER_CROP)
        row, col = divmod(tile - 1, 3)
        return (row * side + patch // side) * 3 * side + col * side + patch % side

    tiles = [tile * PER_CROP + p for tile, record in enumerate(crops[1:], start=1)
             for p in record.output_patches[:spec.dominant].tolist()]
    contextual = [tile * PER_CROP + p for tile, record in enumerate(crops[1:], start=1)
                  for p in record.output_patches[spec.dominant:].tolist()]
    assert entry[spec.total:] == sorted(tiles, key=spatial) + contextual


def test_llm_only_methods_see_transformers_layout_with_documented_ids(ov_model):
    batch = llava_onevision_prompt(ov_model, [4, 4, 4], [[LARGEST], [WIDE], ["video"]])
    with torch.no_grad(), visiondrop.apply(ov_model, "fastv", budget=80) as handle:
        ov_model(**batch)
    largest, wide, video = (s.input_patches.tolist() for s in handle.report.stages[0].segments)
    base = list(range(PER_CROP))
    assert largest[:PER_CROP] == base
    assert sorted(set(largest[PER_CROP:])) == [BLENDED, -2]  # downsized 8 x 8 grid, 8 newlines
    assert largest.count(-2) == 8 and largest.count(BLENDED) == 64
    grid = []
    for row in range(4):  # 1 x 2 tiles of 4 x 4 patches: 4 rows of 8, a newline after each
        grid += [(1 + col // 4) * PER_CROP + row * 4 + col % 4 for col in range(8)] + [-2]
    assert wide == base + grid
    assert video == list(range(3 * 4)) + [-2]


def test_video_keeps_the_reference_share_of_its_tokens(ov_model):
    """A video keeps the reference image's share of its tokens at every LLM stage."""
    batch = llava_onevision_prompt(ov_model, [4], [["video"]], frames=5)
    with torch.no_grad(), visiondrop.apply(ov_model, "pdrop", budget=80) as handle:
        ov_model(**batch)
    counts = handle.report.layer_visual_tokens[0].tolist()
    tokens = llava_onevision_video_tokens(ov_model, 5)
    scaled = scale_stages(handle.schedule.llm, UNITS * PER_CROP, tokens)
    assert counts == Schedule(llm=scaled, layers=handle.schedule.layers).tokens_per_layer(LAYERS, tokens)
    assert counts[0] == 21 and counts[-1] < counts[0]


@pytest.mark.parametrize("method", ["visiondrop", "random", "pool"])
def test_video_with_an_encoder_stage_is_refused_before_the_tower_runs(ov_model, method):
    calls = []
    hook = ov_model.model.vision_tower.register_forward_pre_hook(lambda *a: calls.append(1))
    batch = llava_onevision_prompt(ov_model, [4, 3], [["video"], [WIDE]])
    try:
        with visiondrop.apply(ov_model, method, budget=40):
            with pytest.raises(ValueError, match=f"video: method '{method}' prunes in the vision encoder"):
                ov_model(**batch)
            video_only = llava_onevision_prompt(ov_model, [4], [["video"]])
            with pytest.raises(ValueError, match="LLM-only method"):
                ov_model.generate(**video_only, max_new_tokens=2, do_sample=False)
    finally:
        hook.remove()
    assert calls == []
    with torch.no_grad(), visiondrop.apply(ov_model, "visiondrop", budget=80, encoder_stage=False) as handle:
        ov_model.generate(**video_only, max_new_tokens=2, do_sample=False)
    assert handle.schedule.encoder is None and handle.report.layer_visual_tokens[0, 0] == 13


def test_newline_end_adds_one_unpruned_token_per_image(ov_model):
    batch = llava_onevision_prompt(ov_model, [4, 4], [[LARGEST], MULTI])
    lengths = {}
    for newline in ("drop", "end"):
        with torch.no_grad(), visiondrop.apply(ov_model, "visiondrop", budget=40, newline=newline) as handle:
            ov_model(**batch)
            generated = ov_model.generate(**batch, max_new_tokens=2, do_sample=False)
        lengths[newline] = handle.report.output_mask.sum(1)
        assert generated.shape[1] == batch["input_ids"].shape[1] + 2
        assert handle.report.layer_visual_tokens[0, 0] == UNITS * handle.schedule.encoder.total  # newline not visual
    assert (lengths["end"] - lengths["drop"]).tolist() == [1, 2]
    with pytest.raises(ValueError, match="newline"):
        visiondrop.apply(ov_model, "visiondrop", budget=40, newline="row")


@pytest.mark.parametrize("sliding", [False, True], ids=["full", "sliding"])
def test_llm_only_keep_everything_is_a_no_op(ov_model, ov_sliding, sliding):
    model = ov_sliding if sliding else ov_model
    batch = llava_onevision_prompt(model, [4, 6, 3], [[LARGEST], MULTI, ["video", WIDE]])
    with torch.no_grad():
        before = model(**batch).logits
        # per crop: 16 of 16 tokens; every segment keeps all of its packed tokens, and the
        # sliding layers after the stage get windowed masks rebuilt for the new sequence
        with visiondrop.apply(model, "visiondrop", schedule=Schedule(llm=((PER_CROP, 0),), layers=(2,))) as handle:
            after = model(**batch).logits
    assert handle.report.stages[0].layer == 2
    assert torch.allclose(before, after, atol=1e-5)


def test_errors_before_compute(ov_model):
    with pytest.raises(ValueError, match="multiple of 10"):
        visiondrop.apply(ov_model, "visiondrop", budget=45)
    with pytest.raises(ValueError, match="budget"):
        visiondrop.apply(ov_model, "visiondrop", budget=170)
    with pytest.raises(ValueError, match="positions='keep' is not supported on LLaVA-OneVision"):
        visiondrop.apply(ov_model, "visiondrop", budget=40, positions="keep")
    for method in NEEDS_CLS:
        with pytest.raises(ValueError, match=r"\[CLS\]"):
            visiondrop.apply(ov_model, method, budget=40)
    with pytest.raises(ValueError, match="encoder_score='cls'"):
        visiondrop.apply(ov_model, "visiondrop", budget=40, encoder_score="cls")
    assert getattr(ov_model, "_visiondrop_handle", None) is None
    batch = llava_onevision_prompt(ov_model, [4], [[LARGEST]])
    with torch.no_grad(), visiondrop.apply(ov_model, "fastv", budget=80, positions="keep") as handle:
        ov_model.generate(**batch, max_new_tokens=2, do_sample=False)  # no encoder stage: fine
    assert handle.report.layer_visual_tokens[0, 0] == 88
    batch["image_sizes"] = torch.tensor([[56, 56]])  # fewer tokens than the placeholders
    with visiondrop.apply(ov_model, "visiondrop", budget=40), pytest.raises(ValueError, match="image_sizes"):
        ov_model(**batch)
    multi = llava_onevision_prompt(ov_model, [4], [MULTI])
    del multi["batch_num_images"]  # read as two anyres images: their placeholders do not match
    with visiondrop.apply(ov_model, "fastv", budget=80), pytest.raises(ValueError, match="image_sizes"):
        ov_model(**multi)


def test_siglip_scores_are_mean_attention_received(ov_model):
    """The encoder stage ranks each crop's patches by the mean attention they receive
    from all of the crop's patches (paper, Visual Query Selection)."""
    batch = llava_onevision_prompt(ov_model, [4], [[WIDE]])
    layer = ov_model.model.vision_tower.encoder.layers[-1]
    captured = {}
    hook = layer.register_forward_pre_hook(lambda m, a, k: captured.update(hidden=a[0] if a else k["hidden_states"]),
                                           with_kwargs=True)
    try:
        with torch.no_grad(), visiondrop.apply(ov_model, "visiondrop", schedule=Schedule(encoder=(6, 0))) as handle:
            ov_model(**batch)
    finally:
        hook.remove()
    attention = layer.self_attn
    with torch.no_grad():
        x = layer.layer_norm1(captured["hidden"])
        heads = attention.num_heads

        def split(t):
            return t.view(*t.shape[:2], heads, -1).transpose(1, 2)

        q, k = split(attention.q_proj(x)), split(attention.k_proj(x))
        probs = (q @ k.transpose(-1, -2) * attention.scale).softmax(-1)
        received = probs.mean(dim=(1, 2))  # (crops, N): mean over heads and over querying tokens
    expected = received.topk(6, dim=1).indices.sort(dim=1).values
    chosen = torch.stack([s.dominant for s in handle.report.stages[0].segments])
    assert chosen.tolist() == expected.tolist()


@pytest.fixture(scope="module")
def ov_checkpoint(tmp_path_factory):
    from visiondrop.testing import load_tiny_onevision_processor, save_tiny_onevision_checkpoint

    path = tmp_path_factory.mktemp("tiny-llava-onevision")
    save_tiny_onevision_checkpoint(path)
    try:
        load_tiny_onevision_processor(path)
    except ImportError as error:  # transformers < 5.23 loads OneVision's image processor with torchvision only
        pytest.skip(f"OneVision's processor cannot load here: {str(error).strip().splitlines()[0]}")
    image = tmp_path_factory.mktemp("img-ov") / "tall.png"
    Image.fromarray((np.random.default_rng(2).random((160, 150, 3)) * 255).astype("uint8")).save(image)
    return str(path), str(image)


def test_cli_generate_on_a_onevision_checkpoint(ov_checkpoint, capsys, monkeypatch):
    import transformers

    from visiondrop.cli import main
    from visiondrop.testing import load_tiny_onevision_processor

    path, image = ov_checkpoint
    if importlib.util.find_spec("torchvision") is None:
        # AutoProcessor also loads OneVision's video processor, which needs torchvision.
        original = transformers.AutoProcessor.from_pretrained
        monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained",
                            lambda name, *a, **k: load_tiny_onevision_processor(name) if str(name) == path
                            else original(name, *a, **k))
    code = main(["generate", "--model", path, "--image", image, "--prompt", "what is this ?",
                 "--budget", "40", "--max-new-tokens", "3", "--device", "cpu"])
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0, captured.err
    # budget 40 over 10 crops: 4 per crop, 6 (5 + 1) enter the LLM from each; the processor
    # tiles this 160 x 150 image 3 x 3 (a base + 9 tiles): 60 at LM entry
    assert "16 -> 5 dominant + 1 contextual" in out
    assert "tokens per layer (row 0): [60, 60, 40, 40, 30, 30, 20, 20]" in out
    assert main(["generate", "--model", path, "--image", image, "--prompt", "x", "--budget", "42",
                 "--device", "cpu"]) == 2
    assert "multiple of 10" in capsys.readouterr().err
