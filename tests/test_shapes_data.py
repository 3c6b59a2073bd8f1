"""ShapesVQA (visiondrop.data.shapes): determinism, the committed held-out set, and
answers that follow from each scene's own metadata."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from visiondrop.data import shapes
from visiondrop.data.glyphs import glyph
from visiondrop.zoo.shapes_llava import PROMPT, image_token_id, pixel_values, shapes_processor, word_list

ROOT = Path(__file__).resolve().parents[1]
FIDELITY_JSON = ROOT / "docs" / "fidelity" / "fidelity.json"
PLACE = {place: cell for cell, place in enumerate(shapes.PLACES)}
PLURAL = {plural: shape for shape, (plural, _) in shapes.SHAPES.items()}
RELATION = re.compile(r"is the (\w+) (\w+) (left of|right of|above|below) the (\w+) (\w+) \?")
NUM_PATCHES = shapes.IMAGE_SIZE // shapes.PATCH_SIZE


@pytest.fixture(scope="module")
def heldout() -> list[shapes.Scene]:
    """The whole held-out set (about 3 s to render), shared by this module's tests."""
    return shapes.heldout()


def _questions(scene_list):
    return [(scene, q) for scene in scene_list for q in scene.questions]


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def _cell_of(scene: shapes.Scene, place: str):
    """The one object or tag in the cell named ``place``."""
    found = [item for item in [*scene.objects, *scene.tags] if item.cell == PLACE[place]]
    assert len(found) == 1, f"scene {scene.index}: {len(found)} items at {place}"
    return found[0]


def _expected_answer(scene: shapes.Scene, q: shapes.Question) -> str:
    """The answer recomputed from the scene's objects and tags, from the question text."""
    words = q.text.split()
    objects = scene.objects
    if q.kind == "exists":
        assert words[:3] == ["is", "there", "a"] and words[-1] == "?" and len(words) == 6, q.text
        return _yes(any((o.colour, o.shape) == (words[3], words[4]) for o in objects))
    if q.kind in ("colour", "shape"):
        assert q.text == f"what {q.kind} is the object at the {words[-2]} ?", q.text
        obj = _cell_of(scene, words[-2])
        assert isinstance(obj, shapes.SceneObject), f"{q.text}: the cell holds a tag, not an object"
        return obj.colour if q.kind == "colour" else obj.shape
    if q.kind == "count":
        assert words[:2] == ["how", "many"] and words[-3:] == ["are", "there", "?"], q.text
        what = words[2:-3]
        if what == ["objects"]:
            return str(len(objects))
        if len(what) == 2 and what[1] == "objects":
            assert what[0] in shapes.COLOURS, q.text
            return str(sum(o.colour == what[0] for o in objects))
        assert len(what) == 1 and what[0] in PLURAL, q.text
        return str(sum(o.shape == PLURAL[what[0]] for o in objects))
    if q.kind == "relation":
        match = RELATION.fullmatch(q.text)
        assert match, q.text
        by_name = {o.name: o for o in objects}
        a, b = f"{match[1]} {match[2]}", f"{match[4]} {match[5]}"
        assert a in by_name and b in by_name and a != b, f"{q.text}: not two distinct objects of the scene"
        (ax, ay), (bx, by) = [(by_name[n].cell % shapes.GRID, by_name[n].cell // shapes.GRID) for n in (a, b)]
        truth = {"left of": ax < bx, "right of": ax > bx, "above": ay < by, "below": ay > by}
        return _yes(truth[match[3]])
    if q.kind == "read":
        assert q.text == f"what is written at the {words[-2]} ?", q.text
        tag = _cell_of(scene, words[-2])
        assert isinstance(tag, shapes.Tag), f"{q.text}: the cell holds an object, not a tag"
        return tag.character
    raise AssertionError(f"unknown kind {q.kind!r}")


# ---------------------------------------------------------------- determinism


def _same_scene(a: shapes.Scene, b: shapes.Scene) -> bool:
    return (a.index == b.index and np.array_equal(a.image, b.image) and np.array_equal(a.owner, b.owner)
            and a.objects == b.objects and a.tags == b.tags and a.questions == b.questions)


@pytest.mark.parametrize(("seed", "index"),
                         [(shapes.HELDOUT_SEED, 0), (shapes.HELDOUT_SEED, 17), (shapes.TRAIN_SEED, 3)])
def test_render_scene_is_deterministic(seed, index):
    first = shapes.render_scene(seed, index)
    np.random.seed(12345)  # the global numpy state must not matter
    torch.manual_seed(12345)
    second = shapes.render_scene(seed, index)
    assert _same_scene(first, second)
    assert shapes.fingerprint([first]) == shapes.fingerprint([second])


def test_different_seeds_and_indices_give_different_scenes():
    base = shapes.render_scene(shapes.HELDOUT_SEED, 4)
    for other in (shapes.render_scene(shapes.HELDOUT_SEED + 1, 4), shapes.render_scene(shapes.HELDOUT_SEED, 5),
                  shapes.render_scene(shapes.TRAIN_SEED, 4)):
        assert not np.array_equal(base.image, other.image)
        assert [q.text for q in base.questions] != [q.text for q in other.questions]
        assert shapes.fingerprint([base]) != shapes.fingerprint([other])


def test_heldout_scenes_are_the_seeded_stream(heldout):
    assert len(heldout) == shapes.HELDOUT_SCENES
    assert [s.index for s in heldout] == list(range(shapes.HELDOUT_SCENES))
    for index in (0, 1, shapes.HELDOUT_SCENES - 1):
        assert _same_scene(heldout[index], shapes.render_scene(shapes.HELDOUT_SEED, index))
    assert all(q.scene == s.index for s in heldout for q in s.questions)


def test_heldout_fingerprint_matches_the_committed_benchmark(heldout):
    """The held-out set is regenerated bit for bit: the committed fidelity results
    were measured on exactly these pixels, questions and answers."""
    meta = json.loads(FIDELITY_JSON.read_text())["metadata"]
    assert meta["limit"] is None and meta["scenes"] == shapes.HELDOUT_SCENES
    assert shapes.fingerprint(heldout) == meta["fingerprint"], (
        "the ShapesVQA held-out set changed: docs/fidelity/fidelity.json (and the shipped model's training "
        "log) no longer describe it")


def test_fingerprint_covers_pixels_and_answers():
    scene = shapes.render_scene(shapes.HELDOUT_SEED, 0)
    reference = shapes.fingerprint([scene])
    image = scene.image.copy()
    image[100, 100, 0] ^= 1
    assert shapes.fingerprint([shapes.Scene(0, image, scene.owner, scene.objects, scene.tags,
                                            scene.questions)]) != reference
    wrong = [shapes.Question(q.scene, q.kind, q.text, "yes" if q.answer == "no" else "no", q.subset)
             if q.kind == "exists" else q for q in scene.questions]
    assert shapes.fingerprint([shapes.Scene(0, scene.image, scene.owner, scene.objects, scene.tags,
                                            wrong)]) != reference


# ---------------------------------------------------------------- questions and answers


def test_heldout_size_and_kinds_are_balanced(heldout):
    questions = [q for _, q in _questions(heldout)]
    assert len(questions) >= 2000
    counts = Counter(q.kind for q in questions)
    assert set(counts) == set(shapes.KINDS)
    assert set(counts.values()) == {len(heldout)}
    for scene in heldout:
        assert [q.kind for q in scene.questions] == list(shapes.KINDS)


def test_every_word_is_in_the_vocabulary(heldout):
    vocabulary = shapes.vocabulary()
    assert len(vocabulary) == len(set(vocabulary))
    words = set(vocabulary)
    for _, q in _questions(heldout):
        assert len(q.answer.split()) == 1 and q.answer == q.answer.strip(), q
        assert q.answer in words, q
        assert set(q.text.split()) <= words, q.text


def test_answers_follow_from_the_scene(heldout):
    wrong = [(scene.index, q.kind, q.text, q.answer, expected)
             for scene, q in _questions(heldout) if (expected := _expected_answer(scene, q)) != q.answer]
    assert not wrong, f"{len(wrong)} answers disagree with their scene, e.g. {wrong[:3]}"


def test_relation_answers_agree_with_the_pixels(heldout):
    """Relations are asked only where the pixels settle them: the objects' painted
    extents do not overlap along the asked axis, and their order gives the answer."""
    checked = 0
    for scene, q in _questions(heldout):
        if q.kind != "relation":
            continue
        match = RELATION.fullmatch(q.text)
        index = {o.name: k for k, o in enumerate(scene.objects)}
        (ya, xa), (yb, xb) = (np.nonzero(scene.owner == index[f"{match[g]} {match[g + 1]}"]) for g in (1, 4))
        a, b = (xa, xb) if match[3] in ("left of", "right of") else (ya, yb)
        assert a.max() < b.min() or b.max() < a.min(), f"scene {scene.index}: {q.text} is ambiguous in the image"
        before = a.max() < b.min()
        truth = before if match[3] in ("left of", "above") else not before
        assert q.answer == _yes(truth), (scene.index, q.text, q.answer)
        checked += 1
    assert checked == len(heldout)


def test_answers_are_not_degenerate(heldout):
    """Each kind's answers vary (a test set a constant answer could pass is useless)."""
    by_kind: dict[str, Counter] = {kind: Counter() for kind in shapes.KINDS}
    for _, q in _questions(heldout):
        by_kind[q.kind][q.answer] += 1
    for kind in ("exists", "relation"):
        assert set(by_kind[kind]) == {"yes", "no"}
        assert min(by_kind[kind].values()) >= 0.3 * len(heldout), (kind, by_kind[kind])
    for kind in ("colour", "shape", "count", "read"):
        assert max(by_kind[kind].values()) <= 0.5 * len(heldout), (kind, by_kind[kind])
    assert set(by_kind["colour"]) == set(shapes.COLOURS) and set(by_kind["shape"]) == set(shapes.SHAPES)


def test_exists_subsets(heldout):
    seen = Counter()
    for scene in heldout:
        present = {(o.colour, o.shape) for o in scene.objects}
        for q in scene.questions:
            if q.kind != "exists":
                assert q.subset == ""
                continue
            seen[q.subset] += 1
            asked = tuple(q.text.split()[3:5])
            if q.subset == "positive":
                assert q.answer == "yes" and asked in present, q
                continue
            assert q.subset in shapes.EXISTS_SUBSETS and q.answer == "no" and asked not in present, q
            if q.subset == "adversarial":
                assert any(asked[0] == c or asked[1] == s for c, s in present), f"{q}: shares nothing with {present}"
            if q.subset == "popular":
                absent = [(c, s) for c in shapes.COLOURS for s in shapes.SHAPES if (c, s) not in present]
                weight = {cs: shapes.COLOURS[cs[0]][1] * shapes.SHAPES[cs[1]][1] for cs in absent}
                third = sorted(weight.values(), reverse=True)[2]
                assert weight[asked] >= third, f"{q}: not among the three most frequent absent objects"
    assert set(seen) == set(shapes.EXISTS_SUBSETS)


# ---------------------------------------------------------------- pixels


def _cell_slices(cell: int) -> tuple[slice, slice]:
    left, top = (cell % shapes.GRID) * shapes.CELL, (cell // shapes.GRID) * shapes.CELL
    return slice(top, top + shapes.CELL), slice(left, left + shapes.CELL)


def test_images_are_uint8_336(heldout):
    for scene in heldout:
        assert scene.image.dtype == np.uint8 and scene.image.shape == (336, 336, 3)
        assert scene.owner.shape == (336, 336)
        assert np.asarray(scene.pil()).shape == (336, 336, 3)


def test_objects_and_tags_stay_in_their_own_cells(heldout):
    for scene in heldout:
        items = [*scene.objects, *scene.tags]
        assert 3 <= len(scene.objects) <= 6 and 1 <= len(scene.tags) <= 2
        assert len({item.cell for item in items}) == len(items), f"scene {scene.index}: two items share a cell"
        assert len({o.name for o in scene.objects}) == len(scene.objects), "an object name is ambiguous"
        assert set(np.unique(scene.owner).tolist()) == {-1, *range(len(items))}
        for k, item in enumerate(items):
            mine = scene.owner == k
            inside = np.zeros_like(mine)
            inside[_cell_slices(item.cell)] = True
            assert mine.any() and not (mine & ~inside).any(), f"scene {scene.index}: item {k} leaves cell {item.cell}"
            if isinstance(item, shapes.SceneObject):
                assert (scene.image[mine] == shapes.COLOURS[item.colour][0]).all()
                ys, xs = np.nonzero(mine)
                assert abs(xs.mean() - item.center[0]) < item.radius and abs(ys.mean() - item.center[1]) < item.radius


def test_tags_print_their_character(heldout):
    for scene in heldout[:60]:
        for tag in scene.tags:
            ink = glyph(tag.character, scale=3)
            h, w = ink.shape
            top, left = tag.center[1] - h // 2, tag.center[0] - w // 2
            pixels = scene.image[top:top + h, left:left + w]
            assert (pixels[ink] == 15).all() and (pixels[~ink] == 245).all(), (scene.index, tag)


def _cover(owner: np.ndarray, items: int) -> np.ndarray:
    """int ``(24, 24, items)``: pixels of each item in each patch."""
    p = shapes.PATCH_SIZE
    return np.stack([(owner == k).reshape(NUM_PATCHES, p, NUM_PATCHES, p).sum(axis=(1, 3)) for k in range(items)], -1)


def test_patch_owner_marks_only_covered_patches(heldout):
    need = 0.2 * shapes.PATCH_SIZE ** 2
    for scene in heldout:
        marks = scene.patch_owner()
        items = len(scene.objects) + len(scene.tags)
        assert marks.shape == (NUM_PATCHES, NUM_PATCHES)
        cover = _cover(scene.owner, items)
        background = marks == -1
        assert (cover[background].max(-1) < need).all(), f"scene {scene.index}: a covered patch is unmarked"
        rows, cols = np.nonzero(~background)
        ks = marks[rows, cols]
        assert ((ks >= 0) & (ks < items)).all()
        mine = cover[rows, cols, ks]
        assert (mine >= need).all(), f"scene {scene.index}: a patch is marked for an item covering too little of it"
        assert (mine == cover[rows, cols].max(-1)).all(), f"scene {scene.index}: not the item covering most"
        # every item of the scene is visible in some patch
        assert set(np.unique(marks).tolist()) == {-1, *range(items)}, scene.index


def test_patch_owner_threshold(heldout):
    scene = heldout[0]
    strict, loose = scene.patch_owner(0.9), scene.patch_owner(0.01)
    default = scene.patch_owner()
    assert (strict >= 0).sum() <= (default >= 0).sum() <= (loose >= 0).sum()
    assert ((strict >= 0) <= (default >= 0)).all() and ((default >= 0) <= (loose >= 0)).all()


# ---------------------------------------------------------------- the processor sees what pixel_values() computes


def test_processor_pixel_values_match(heldout):
    processor = shapes_processor()
    chosen = [heldout[0], heldout[7], heldout[123]]
    batch = processor(images=[s.pil() for s in chosen],
                      text=[PROMPT.format(question=s.questions[0].text) for s in chosen],
                      padding=True, return_tensors="pt")
    ours = pixel_values(np.stack([s.image for s in chosen]))
    assert batch["pixel_values"].shape == ours.shape == (3, 3, 336, 336)
    assert torch.allclose(batch["pixel_values"].float(), ours, atol=1e-5, rtol=0)
    assert torch.allclose(pixel_values(torch.from_numpy(chosen[1].image)[None]), ours[1:2], atol=0, rtol=0)


def test_processor_input_ids_for_the_prompt(heldout):
    processor = shapes_processor()
    ids = {word: i for i, word in enumerate(word_list())}
    assert ids["<image>"] == image_token_id()
    scene = heldout[3]
    for q in scene.questions:
        batch = processor(images=[scene.pil()], text=[PROMPT.format(question=q.text)], return_tensors="pt")
        expected = [ids["USER:"]] + [image_token_id()] * NUM_PATCHES ** 2 + [ids[w] for w in q.text.split()]
        expected.append(ids["ASSISTANT:"])
        assert batch["input_ids"][0].tolist() == expected, q.text
        assert batch["attention_mask"][0].tolist() == [1] * len(expected)
    unk = processor.tokenizer.unk_token_id
    assert all(processor.tokenizer.convert_tokens_to_ids(word) != unk for word in shapes.vocabulary())
