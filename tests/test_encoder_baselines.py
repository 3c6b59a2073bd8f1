"""Encoder-stage baselines: VisionZip, VisPruner and the pool control, with VisPruner's
duplicate removal, on small hand-built tensors and the tiny random LLaVA-1.5."""

import math

import pytest
import torch

import visiondrop

# Importing a method's module registers it; Python runs a module once per process, so this stays
# right once visiondrop.methods imports them too.
import visiondrop.methods.pool
import visiondrop.methods.visionzip
import visiondrop.methods.vispruner  # noqa: F401
from visiondrop import Schedule
from visiondrop.core.diversity import remove_duplicates
from visiondrop.methods import get_method
from visiondrop.methods.base import EncoderStage, ModelGeometry
from visiondrop.methods.pool import pool_grid
from visiondrop.schedule import StageSpec
from visiondrop.testing import image_prompt

LLAVA = ModelGeometry(num_layers=32, encoder_tokens=577, llm_tokens=576, has_cls=True)


def plan(name, geometry=LLAVA, **options):
    return get_method(name).from_options(**options).plan(geometry)


def reduce(name, stage, **options):
    method = get_method(name).from_options(**options)
    return method.reduce_encoder(stage, method.plan(geometry_of(stage)).encoder)


def geometry_of(stage):
    tokens = stage.hidden.shape[1]
    return ModelGeometry(4, tokens, tokens - int(stage.has_cls), stage.has_cls)


def random_stage(images=2, tokens=17, heads=2, head_dim=4, width=6, has_cls=True, seed=0):
    generator = torch.Generator().manual_seed(seed)

    def draw(*shape):
        return torch.randn(*shape, generator=generator)

    return EncoderStage(hidden=draw(images, tokens, width), queries=3 * draw(images, heads, tokens, head_dim),
                        keys=3 * draw(images, heads, tokens, head_dim), scaling=0.5, has_cls=has_cls)


def cls_attention(stage):
    """``(S, N)`` attention of [CLS] to every token, summed over heads (the release's score)."""
    logits = stage.queries[:, :, :1] @ stage.keys.transpose(-1, -2) * stage.scaling
    return logits.softmax(-1)[:, :, 0].sum(1)


def reference_remove(features, order, keep, per_round=8):
    """The release's loop in plain Python on lists, one image."""

    def cos(a, b):
        dot = sum(x * y for x, y in zip(features[a], features[b]))
        return dot / math.sqrt(sum(x * x for x in features[a]) * sum(y * y for y in features[b]))

    current = list(order)
    while True:
        drop = min(per_round, len(current) - keep)
        if keep == 0 or drop <= 0:
            return [] if keep == 0 else current
        evens, odds = current[0::2], current[1::2]
        scores = {a: max(cos(a, b) for b in odds) for a in evens}
        ranked = sorted(evens, key=lambda a: -scores[a])  # stable: ties keep list order
        current = ranked[drop:] + odds


# ------------------------------------------------------------------ diversity


def test_remove_duplicates_hand_worked():
    # unit vectors at these angles; 2 nearly duplicates 0 (10 degrees apart), 4 duplicates 1 (5 degrees)
    angles = [0, 90, 10, 180, 95, 260]
    features = torch.tensor([[math.cos(math.radians(a)), math.sin(math.radians(a))] for a in angles])[None]
    order = torch.arange(6)[None]
    # round 1: evens 0, 2, 4 score ~0, .17, .996 against odds 1, 3, 5 -> drop 4; list [2, 0, 1, 3, 5]
    assert remove_duplicates(features, order, keep=5, per_round=1).tolist() == [[2, 0, 1, 3, 5]]
    # round 2 (odd length): evens 2, 1, 5 score .985, ~0, .17 against 0, 3 -> drop 2; list [5, 1, 0, 3]
    assert remove_duplicates(features, order, keep=4, per_round=1).tolist() == [[5, 1, 0, 3]]
    # round 3: evens 5, 0 score .17, ~0 against 1, 3 -> drop 5
    assert remove_duplicates(features, order, keep=3, per_round=1).tolist() == [[0, 1, 3]]
    # one round may drop at most every even: the odds remain
    assert remove_duplicates(features, order, keep=3, per_round=8).tolist() == [[1, 3, 5]]
    # features are normalised inside: scaling a token changes nothing
    scaled = features * torch.tensor([1.0, 5.0, 0.1, 2.0, 3.0, 7.0])[None, :, None]
    assert remove_duplicates(scaled, order, keep=4, per_round=1).tolist() == [[5, 1, 0, 3]]


@pytest.mark.parametrize(("length", "keep", "per_round"),
                         [(9, 4, 8), (20, 7, 3), (33, 10, 8), (40, 1, 8), (17, 16, 8), (12, 2, 8), (31, 30, 1)])
def test_remove_duplicates_matches_plain_python_reference(length, keep, per_round):
    generator = torch.Generator().manual_seed(length)
    features = torch.randn(3, 50, 16, generator=generator)
    order = torch.stack([torch.randperm(50, generator=generator)[:length] for _ in range(3)])
    got = remove_duplicates(features, order, keep, per_round)
    assert got.shape == (3, keep)
    for row in range(3):
        expected = reference_remove(features[row].tolist(), order[row].tolist(), keep, per_round)
        assert got[row].tolist() == expected


def test_remove_duplicates_edge_cases():
    features, order = torch.randn(2, 10, 4), torch.stack([torch.arange(9), torch.arange(9).flip(0)])
    assert remove_duplicates(features, order, 0).shape == (2, 0)
    assert torch.equal(remove_duplicates(features, order, 9), order)
    assert torch.equal(remove_duplicates(features, order, 20), order)
    one_round = remove_duplicates(features, order, 8)
    assert one_round.shape == (2, 8) and torch.equal(one_round[:, 4:], order[:, 1::2])  # odds untouched
    with pytest.raises(ValueError, match="keep"):
        remove_duplicates(features, order, -1)


# ------------------------------------------------------------------ VisionZip


@pytest.mark.parametrize(("budget", "split"),
                         [(64, (54, 10)), (128, (108, 20)), (192, (162, 30)), (1, (1, 0)), (2, (1, 1)),
                          (576, (486, 90)), (16, (13, 3)), (100, (84, 16))])  # 2.5 and 15.6 round up
def test_visionzip_budget_split_follows_the_release(budget, split):
    assert plan("visionzip", budget=budget).encoder == StageSpec(*split)


def test_visionzip_explicit_split():
    assert plan("visionzip", dominant=191, contextual=30).encoder == StageSpec(191, 30)
    assert plan("visionzip", dominant=5, contextual=0).encoder == StageSpec(5, 0)


def test_visionzip_reduction_by_hand():
    stage = random_stage()
    reduction = reduce("visionzip", stage, dominant=4, contextual=1)
    scores = cls_attention(stage)
    for image in range(2):
        top = (scores[image, 1:].topk(3).indices + 1).tolist()
        assert reduction.dominant[image].tolist() == sorted([0, *top])  # CLS first, then ascending
        rest = [i for i in range(17) if i not in reduction.dominant[image].tolist()]
        hidden = stage.hidden[image]
        expected = hidden[rest[0]] + hidden[rest[1:]].mean(0)  # C = 1: target + mean of all the others
        assert torch.allclose(reduction.merge.tokens[image, 0], expected, atol=1e-6)
        assert reduction.merge.targets[image].tolist() == [rest[0]]


def test_visionzip_merges_by_head_averaged_keys():
    stage = random_stage(tokens=17)
    reduction = reduce("visionzip", stage, dominant=4, contextual=3)
    keys = torch.nn.functional.normalize(stage.keys.mean(1), dim=-1)
    for image in range(2):
        rest = [i for i in range(17) if i not in reduction.dominant[image].tolist()]  # 13 tokens
        targets = rest[0::4][:3]  # stride 13 // 3
        assert reduction.merge.targets[image].tolist() == targets
        members = {t: [] for t in targets}
        for i in rest:
            if i not in targets:
                members[targets[int((keys[image, targets] @ keys[image, i]).argmax())]].append(i)
        assert sum(map(len, members.values())) == 10 and min(map(len, members.values())) > 0
        for slot, t in enumerate(targets):
            expected = stage.hidden[image, t] + stage.hidden[image, members[t]].mean(0)
            assert torch.allclose(reduction.merge.tokens[image, slot], expected, atol=1e-6)


# ------------------------------------------------------------------ VisPruner


def expected_vispruner(stage, total, ratio):
    """The release's selection, one image at a time, with the plain Python loop."""
    scores = cls_attention(stage)[:, 1:] / stage.queries.shape[1]
    kept = []
    for image in range(scores.shape[0]):
        order = sorted(range(scores.shape[1]), key=lambda j: -scores[image, j].item())
        important = int(total * ratio)
        patches = stage.hidden[image, 1:].tolist()
        diverse = reference_remove(patches, order[important:], total - important)
        kept.append(sorted(j + 1 for j in order[:important] + diverse))
    return kept


@pytest.mark.parametrize(("total", "ratio"), [(7, 0.5), (6, 0.5), (9, 0.75), (5, 0.0), (16, 0.5), (1, 0.5)])
def test_vispruner_matches_the_release_selection(total, ratio):
    stage = random_stage(tokens=26, seed=total)  # 25 patches: an even T_imp leaves an odd residual
    reduction = reduce("vispruner", stage, budget=total, important_ratio=ratio)
    assert reduction.dominant.tolist() == expected_vispruner(stage, total, ratio)
    assert reduction.merge.tokens.shape == (2, 0, 6) and reduction.merge.merged_into.eq(-1).all()


def test_vispruner_ratio_one_is_top_attention():
    stage = random_stage(tokens=26, seed=3)
    reduction = reduce("vispruner", stage, budget=8, important_ratio=1.0)
    top = cls_attention(stage)[:, 1:].topk(8).indices + 1
    assert torch.equal(reduction.dominant, top.sort(dim=1).values)


# ------------------------------------------------------------------ pool


def test_pool_grid_choice():
    assert pool_grid(64, 24) == (8, 8)
    assert pool_grid(576, 24) == (24, 24)
    assert pool_grid(192, 24) == (12, 16)
    assert pool_grid(8, 4) == (2, 4)
    assert pool_grid(96, 24) == (8, 12)
    assert pool_grid(191, 24) is None  # prime
    assert pool_grid(50, 24) == (5, 10)
    assert pool_grid(3, 24) == (1, 3)
    assert pool_grid(22, 24) is None  # 2 x 11: too elongated
    assert pool_grid(5, 24) is None  # 1 x 5: too elongated
    assert pool_grid(29, 24) is None  # 1 x 29: wider than the grid


def test_pool_cells_on_a_4x4_grid():
    stage = random_stage(tokens=17, width=3)
    reduction = reduce("pool", stage, budget=4)
    assert reduction.dominant.shape == (2, 0)
    merged = reduction.merge.merged_into
    assert merged[0].tolist() == [-1, 0, 0, 1, 1, 0, 0, 1, 1, 2, 2, 3, 3, 2, 2, 3, 3]
    assert torch.equal(merged[1], merged[0])
    assert reduction.merge.targets[0].tolist() == [6, 8, 14, 16]  # patches (1,1), (1,3), (3,1), (3,3), +1 for CLS
    grid = stage.hidden[:, 1:].view(2, 4, 4, 3)
    for cell, (r, c) in enumerate([(0, 0), (0, 2), (2, 0), (2, 2)]):
        expected = grid[:, r : r + 2, c : c + 2].reshape(2, 4, 3).mean(1)
        assert torch.allclose(reduction.merge.tokens[:, cell], expected, atol=1e-6)
    # budget 8: 2 x 4 cells of 2 x 1 patches
    wide = reduce("pool", stage, budget=8)
    assert wide.merge.merged_into[0, 1:].tolist() == [0, 1, 2, 3] * 2 + [4, 5, 6, 7] * 2
    assert torch.allclose(wide.merge.tokens[:, 5], grid[:, 2:4, 1].mean(1), atol=1e-6)


def test_pool_overlapping_cells_without_cls():
    stage = random_stage(tokens=25, width=3, has_cls=False)
    reduction = reduce("pool", stage, budget=4)
    grid = stage.hidden.view(2, 5, 5, 3)
    # adaptive pooling of 5 patches into 2 cells: patches 0..2 and 2..4 (patch 2 in both)
    for cell, (rows, cols) in enumerate([((0, 3), (0, 3)), ((0, 3), (2, 5)), ((2, 5), (0, 3)), ((2, 5), (2, 5))]):
        expected = grid[:, rows[0] : rows[1], cols[0] : cols[1]].reshape(2, -1, 3).mean(1)
        assert torch.allclose(reduction.merge.tokens[:, cell], expected, atol=1e-6)
    # each patch goes to the cell holding its centre (patch 2's centre, 2.5 of 5, is in cell 1)
    assert reduction.merge.merged_into[0].view(5, 5).tolist() == [[0, 0, 1, 1, 1]] * 2 + [[2, 2, 3, 3, 3]] * 3
    assert reduction.merge.targets[0].tolist() == [6, 8, 16, 18]  # centres (1,1), (1,3), (3,1), (3,3)


def test_pool_refuses_a_budget_without_a_grid_and_names_the_nearest():
    with pytest.raises(ValueError, match=r"budget=191 .*\[190, 192\]"):
        plan("pool", budget=191)
    assert plan("pool", budget=192).encoder == StageSpec(0, 192)


# ------------------------------------------------------------------ on the tiny model

CASES = [("visionzip", 64, (54, 10)), ("vispruner", 63, (63, 0)), ("pool", 64, (0, 64))]


@pytest.mark.parametrize(("name", "budget", "split"), CASES)
def test_every_layer_sees_exactly_budget_tokens_and_remove_restores(model, name, budget, split):
    batch = image_prompt(model, [5, 3, 7], images_per_row=[1, 0, 2])
    with torch.no_grad():
        before = model(**batch).logits
        with visiondrop.apply(model, name, budget=budget) as handle:
            pruned = model(**batch).logits
        after = model(**batch).logits
    counts = handle.report.layer_visual_tokens
    assert counts[0].eq(budget).all() and counts[1].eq(0).all() and counts[2].eq(2 * budget).all()
    real = handle.report.output_mask.sum(1)
    assert real.tolist() == (batch["attention_mask"].sum(1) - torch.tensor([1, 0, 2]) * (576 - budget)).tolist()
    assert pruned.shape[1] == before.shape[1]  # the text-only row keeps its length
    assert torch.equal(after, before)
    stage, = handle.report.stages
    assert (stage.name, stage.tokens_in, stage.dominant, stage.contextual) == ("encoder", 577, *split)
    assert len(stage.segments) == 3
    for seg in stage.segments:
        assert len(seg.dominant) + len(seg.targets) == budget
        assert seg.dominant.tolist() == sorted(set(seg.dominant.tolist()))
        if name == "visionzip":
            assert seg.dominant[0] == 0 and seg.output_patches[0] == -1  # CLS first, and it reaches the LLM
        else:
            assert (seg.output_patches >= 0).all() and seg.merged_into[0] == -1  # CLS never kept nor pooled


@pytest.mark.parametrize(("name", "budget", "split"), CASES)
def test_batch_rows_equal_rows_run_alone(model, name, budget, split):
    batch = image_prompt(model, [5, 11], seed=4)
    with torch.no_grad(), visiondrop.apply(model, name, budget=budget, positions="keep") as handle:
        out = model(**batch).logits
        mask = handle.report.output_mask
        for row in range(2):
            keep = batch["attention_mask"][row].bool()
            alone = model(input_ids=batch["input_ids"][row][keep][None], pixel_values=batch["pixel_values"][row][None],
                          attention_mask=batch["attention_mask"][row][keep][None]).logits
            assert torch.allclose(out[row][mask[row].bool()], alone[0], atol=1e-4), f"row {row}"


def test_selections_match_the_towers_own_attention_maps(eager_model):
    """What the releases read: ``attentions[-2]`` and ``hidden_states[-2]`` of the tower."""
    batch = image_prompt(eager_model, [5, 6], seed=7)
    with torch.no_grad():
        tower = eager_model.model.vision_tower(batch["pixel_values"], output_attentions=True,
                                               output_hidden_states=True)
        with visiondrop.apply(eager_model, "visionzip", budget=64) as handle:
            eager_model(**batch)
        zipped = handle.report.stages[0].segments
        with visiondrop.apply(eager_model, "vispruner", budget=64, important_ratio=0.75) as handle:
            eager_model(**batch)
        pruned = handle.report.stages[0].segments
    attention, hidden = tower.attentions[-2][:, :, 0], tower.hidden_states[-2]
    for image in range(2):
        top = attention[image, :, 1:].sum(0).topk(53).indices + 1
        assert zipped[image].dominant.tolist() == sorted([0, *top.tolist()])
        remaining = [i for i in range(577) if i not in zipped[image].dominant.tolist()]
        assert zipped[image].targets.tolist() == remaining[::52][:10]  # stride (577 - 54) // 10
        order = attention[image, :, 1:].mean(0).argsort(descending=True)
        # The diverse step is chaotic under rounding (a near-tie flips the next round's even/odd split),
        # so it runs in our precision here; its logic is checked against plain Python above.
        diverse = remove_duplicates(hidden[image : image + 1, 1:], order[None, 48:], 16)[0]
        assert pruned[image].dominant.tolist() == sorted((torch.cat([order[:48], diverse]) + 1).tolist())


def test_pool_on_an_encoder_without_cls(siglip_model):
    batch = image_prompt(siglip_model, [5])
    with torch.no_grad(), visiondrop.apply(siglip_model, "pool", budget=64) as handle:
        siglip_model(**batch)
    seg = handle.report.stages[0].segments[0]
    assert handle.report.layer_visual_tokens.eq(64).all()
    assert seg.merged_into.view(16, 16)[::2, ::2].flatten().tolist() == list(range(64))  # 8 x 8 cells of 2 x 2


@pytest.mark.parametrize("name", ["visionzip", "vispruner"])
def test_encoder_without_cls_is_refused(siglip_model, name):
    with pytest.raises(ValueError, match=r"needs an encoder with a \[CLS\] token"):
        visiondrop.apply(siglip_model, name, budget=64)
    assert getattr(siglip_model, "_visiondrop_handle", None) is None


BAD_OPTIONS = [
    *[(name, options, parameter) for name in ("visionzip", "vispruner", "pool") for options, parameter in [
        ({"budget": 0}, "budget"),
        ({"budget": 577}, "budget"),
        ({"budget": None}, "budget"),
        ({"budget": 8.0}, "budget"),
        ({"budget": 64, "schedule": Schedule(encoder=(64, 0))}, "schedule"),
        ({"budget": 64, "positions": "bogus"}, "positions"),
    ]],
    ("visionzip", {"budget": 64, "dominant": 54, "contextual": 10}, "budget"),
    ("visionzip", {"dominant": 54}, "contextual"),
    ("visionzip", {"dominant": 0, "contextual": 10}, "dominant"),
    ("visionzip", {"dominant": 54, "contextual": -1}, "contextual"),
    ("visionzip", {"dominant": 500, "contextual": 77}, "dominant \\+ contextual"),
    ("vispruner", {"budget": 64, "important_ratio": 1.5}, "important_ratio"),
    ("vispruner", {"budget": 64, "important_ratio": -0.1}, "important_ratio"),
    ("vispruner", {"budget": 64, "important_ratio": "0.5"}, "important_ratio"),
    ("vispruner", {"budget": 577, "important_ratio": 1.0}, "budget"),
    ("pool", {"budget": 191}, "budget"),
    ("pool", {"budget": 5}, "budget"),
]


@pytest.mark.parametrize(("name", "options", "parameter"), BAD_OPTIONS)
def test_bad_options_raise_naming_the_parameter(model, name, options, parameter):
    with pytest.raises(ValueError, match=parameter):
        visiondrop.apply(model, name, **options)
    assert getattr(model, "_visiondrop_handle", None) is None  # nothing was installed


def test_registered():
    methods = visiondrop.available_methods()
    for name in ("visionzip", "vispruner", "pool"):
        assert methods.get(name) and get_method(name).name == name
