"""ShapesVQA-2 (visiondrop.data.shapes2): determinism, answers that follow from each
scene's own objects and signs, the vocabulary, and the pixels."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from visiondrop.data import shapes2
from visiondrop.data.glyphs import CHARACTERS, glyph
from visiondrop.data.shapes import _shape_mask

NUM_PATCHES = shapes2.IMAGE_SIZE // shapes2.PATCH_SIZE
PLURAL = {plural: shape for shape, (plural, _) in shapes2.SHAPES.items()}
ATTRIBUTE = {**{c: "colour" for c in shapes2.COLOURS}, **{s: "shape" for s in shapes2.SHAPES},
             **{s: "size" for s in shapes2.SIZES}}
DESC = r"((?:\w+ ){0,2}\w+)"
RELATION = re.compile(rf"is the {DESC} (left of|right of|above|below) the {DESC} \?")
CHOICE = re.compile(rf"what colour is the {DESC} \? A\. (\w+) B\. (\w+) C\. (\w+) D\. (\w+) answer with the letter \.")
ATTRIBUTE_QUESTION = re.compile(rf"what (colour|shape|size) is the {DESC} \?")


@pytest.fixture(scope="module")
def heldout() -> list[shapes2.Scene]:
    """The whole held-out set (about 2 s to render), shared by this module's tests."""
    return shapes2.heldout()


def _questions(scene_list):
    return [(scene, q) for scene in scene_list for q in scene.questions]


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def _matching(scene: shapes2.Scene, description: str) -> list[int]:
    """Indices of the objects that every word of ``description`` fits."""
    words = description.split()
    assert all(w in ATTRIBUTE for w in words) and len({ATTRIBUTE[w] for w in words}) == len(words), description
    return [k for k, o in enumerate(scene.objects) if all(getattr(o, ATTRIBUTE[w]) == w for w in words)]


def _referent(scene: shapes2.Scene, description: str) -> shapes2.SceneObject:
    found = _matching(scene, description)
    assert len(found) == 1, f"scene {scene.index}: {description!r} fits {len(found)} objects"
    return scene.objects[found[0]]


def _caption(objects: list[shapes2.SceneObject]) -> str:
    """The three largest objects by radius, as the caption question answers them."""
    top = sorted(objects, key=lambda o: o.radius, reverse=True)[:3]
    phrases = [f"a {o.size} {o.colour} {o.shape}" for o in top]
    return " , ".join(phrases[:-1]) + " and " + phrases[-1] + " ."


def _expected_answer(scene: shapes2.Scene, q: shapes2.Question) -> str:
    """The answer recomputed from the scene's objects and signs, from the question text."""
    words, objects = q.text.split(), scene.objects
    if q.kind == "exists":
        assert words[:3] == ["is", "there", "a"] and words[5:] == ["in", "the", "image", "?"], q.text
        return _yes(any((o.colour, o.shape) == (words[3], words[4]) for o in objects))
    if q.kind == "relation":
        match = RELATION.fullmatch(q.text)
        assert match, q.text
        a, b = _referent(scene, match[1]), _referent(scene, match[3])
        axis = 0 if match[2] in ("left of", "right of") else 1
        assert abs(a.center[axis] - b.center[axis]) > shapes2.RELATION_MARGIN, f"{q.text}: too close to tell"
        before = a.center[axis] < b.center[axis]
        return _yes(before if match[2] in ("left of", "above") else not before)
    if q.kind == "count":
        assert words[:2] == ["how", "many"] and words[-3:] == ["are", "there", "?"], q.text
        what = words[2:-3]
        if what == ["objects"]:
            return str(len(objects))
        if len(what) == 2 and what[1] == "objects":
            return str(sum(o.colour == what[0] for o in objects))
        return str(sum(o.shape == PLURAL[what[0]] for o in objects))
    if q.kind == "read":
        assert words[:6] == ["what", "word", "is", "on", "the", words[5]] and words[6:] == ["sign", "?"], q.text
        signs = [s for s in scene.signs if s.colour == words[5]]
        assert len(signs) == 1, q.text
        return signs[0].word
    if q.kind == "choice":
        match = CHOICE.fullmatch(q.text)
        assert match and not any(ATTRIBUTE[w] == "colour" for w in match[1].split()), q.text
        options = [match[g] for g in range(2, 6)]
        assert len(set(options)) == 4 and set(options) <= set(shapes2.COLOURS), q.text
        return shapes2.LETTERS[options.index(_referent(scene, match[1]).colour)]
    if q.kind == "attribute":
        match = ATTRIBUTE_QUESTION.fullmatch(q.text)
        assert match, q.text
        asked, description = match[1], match[2]
        if asked == "shape":
            assert description.endswith(" object"), q.text
            description = description.removesuffix(" object")
        assert all(ATTRIBUTE[w] != asked for w in description.split()), f"{q.text}: names what it asks"
        return getattr(_referent(scene, description), asked)
    if q.kind == "caption":
        assert q.text == "describe the image briefly ."
        return _caption(objects)
    raise AssertionError(f"unknown kind {q.kind!r}")


# ---------------------------------------------------------------- determinism


def _same_scene(a: shapes2.Scene, b: shapes2.Scene) -> bool:
    return ((a.seed, a.index, a.background) == (b.seed, b.index, b.background)
            and a.image.tobytes() == b.image.tobytes() and np.array_equal(a.owner, b.owner)
            and a.objects == b.objects and a.signs == b.signs and a.questions == b.questions)


@pytest.mark.parametrize(("seed", "index"), [(shapes2.HELDOUT_SEED, 0), (shapes2.HELDOUT_SEED, 17),
                                             (shapes2.TRAIN_SEED, 3)])
def test_render_scene_is_deterministic(seed, index):
    first = shapes2.render_scene(seed, index)
    np.random.seed(12345)  # the global numpy state must not matter
    np.random.random(10)
    second = shapes2.render_scene(seed, index)
    assert _same_scene(first, second)
    assert shapes2.fingerprint([first]) == shapes2.fingerprint([second])


def test_different_seeds_and_indices_give_different_scenes():
    base = shapes2.render_scene(shapes2.HELDOUT_SEED, 4)
    for other in (shapes2.render_scene(shapes2.HELDOUT_SEED + 1, 4), shapes2.render_scene(shapes2.HELDOUT_SEED, 5),
                  shapes2.render_scene(shapes2.TRAIN_SEED, 4)):
        assert not np.array_equal(base.image, other.image)
        assert [q.text for q in base.questions] != [q.text for q in other.questions]
        assert shapes2.fingerprint([base]) != shapes2.fingerprint([other])


def test_heldout_is_the_seeded_stream_and_its_fingerprint_is_stable(heldout):
    assert len(heldout) == shapes2.HELDOUT_SCENES
    assert [(s.seed, s.index) for s in heldout] == [(shapes2.HELDOUT_SEED, i) for i in range(shapes2.HELDOUT_SCENES)]
    assert shapes2.fingerprint(shapes2.heldout()) == shapes2.fingerprint(heldout)
    assert _same_scene(heldout[-1], next(shapes2.scenes(shapes2.HELDOUT_SEED, 1, start=shapes2.HELDOUT_SCENES - 1)))


def test_fingerprint_covers_pixels_and_answers():
    scene = shapes2.render_scene(shapes2.HELDOUT_SEED, 0)
    reference = shapes2.fingerprint([scene])
    image = scene.image.copy()
    image[100, 100, 0] ^= 1
    changed = shapes2.Scene(scene.seed, 0, image, scene.owner, scene.objects, scene.signs, scene.background,
                            scene.questions)
    assert shapes2.fingerprint([changed]) != reference
    wrong = [shapes2.Question(q.kind, q.text, "yes" if q.answer == "no" else "no", q.subset)
             if q.kind == "exists" else q for q in scene.questions]
    changed = shapes2.Scene(scene.seed, 0, scene.image, scene.owner, scene.objects, scene.signs, scene.background,
                            wrong)
    assert shapes2.fingerprint([changed]) != reference


# ---------------------------------------------------------------- questions and answers


def test_every_kind_is_asked_in_order(heldout):
    counts = Counter(q.kind for _, q in _questions(heldout))
    assert set(counts) == set(shapes2.KINDS)
    assert min(counts.values()) >= 0.9 * len(heldout), counts
    order = {kind: i for i, kind in enumerate(shapes2.KINDS)}
    for scene in heldout:
        kinds = [q.kind for q in scene.questions]
        assert kinds == sorted(set(kinds), key=order.get), (scene.index, kinds)
    assert shapes2.Question("read", "t", "a").to_dict() == {"kind": "read", "text": "t", "answer": "a", "subset": ""}


def test_answers_follow_from_the_scene(heldout):
    wrong = [(scene.index, q.kind, q.text, q.answer, expected)
             for scene, q in _questions(heldout) if (expected := _expected_answer(scene, q)) != q.answer]
    assert not wrong, f"{len(wrong)} answers disagree with their scene, e.g. {wrong[:3]}"


def test_more_question_sets_from_ask_are_right_too(heldout):
    rng = np.random.default_rng(7)
    sets = {scene.index: [tuple(shapes2.ask(rng, scene)) for _ in range(5)] for scene in heldout[:40]}
    assert all(len(set(drawn)) == 5 for drawn in sets.values()), "ask() repeats itself"
    drawn = [(heldout[index], q) for index, drawn in sets.items() for questions in drawn for q in questions]
    wrong = [(scene.index, q.text, q.answer) for scene, q in drawn if _expected_answer(scene, q) != q.answer]
    assert not wrong, wrong[:3]


def test_references_are_the_shortest_unique_description(heldout):
    checked = 0
    for scene, q in _questions(heldout):
        if q.kind != "relation":
            continue
        for description in RELATION.fullmatch(q.text).group(1, 3):
            obj = _referent(scene, description)
            form = tuple(ATTRIBUTE[w] for w in description.split())
            assert form in shapes2.REFER_FORMS, q.text
            shorter = shapes2.REFER_FORMS[:shapes2.REFER_FORMS.index(form)]
            assert all(len(_matching(scene, " ".join(getattr(obj, a) for a in f))) > 1 for f in shorter), q.text
            checked += 1
    assert checked >= len(heldout)


def test_answers_are_not_degenerate(heldout):
    by_kind: dict[str, Counter] = {kind: Counter() for kind in shapes2.KINDS}
    for _, q in _questions(heldout):
        by_kind[q.kind][q.answer] += 1
    for kind in ("exists", "relation"):
        assert set(by_kind[kind]) == {"yes", "no"}
        assert min(by_kind[kind].values()) >= 0.3 * sum(by_kind[kind].values()), (kind, by_kind[kind])
    assert set(by_kind["choice"]) == set(shapes2.LETTERS)
    for kind in ("count", "read", "choice", "attribute"):
        assert max(by_kind[kind].values()) <= 0.4 * sum(by_kind[kind].values()), (kind, by_kind[kind])
    assert len(by_kind["caption"]) == len(heldout), "two scenes share a caption"
    assert all(len(answer.split()) > 8 for answer in by_kind["caption"])


def test_exists_subsets(heldout):
    seen = Counter()
    for scene, q in _questions(heldout):
        if q.kind != "exists":
            assert q.subset == ""
            continue
        seen[q.subset] += 1
        present = {(o.colour, o.shape) for o in scene.objects}
        asked = tuple(q.text.split()[3:5])
        if q.subset == "positive":
            assert q.answer == "yes" and asked in present, q
            continue
        assert q.subset in shapes2.EXISTS_SUBSETS and q.answer == "no" and asked not in present, q
        if q.subset == "adversarial":
            assert any(asked[0] == c or asked[1] == s for c, s in present), f"{q}: shares nothing with {present}"
        if q.subset == "popular":
            absent = [(c, s) for c in shapes2.COLOURS for s in shapes2.SHAPES if (c, s) not in present]
            weight = {cs: shapes2.COLOURS[cs[0]][1] * shapes2.SHAPES[cs[1]][1] for cs in absent}
            third = sorted(weight.values(), reverse=True)[2]
            assert weight[asked] >= third, f"{q}: not among the three most frequent absent objects"
    assert set(seen) == set(shapes2.EXISTS_SUBSETS)


# ---------------------------------------------------------------- vocabulary and captions


def test_vocabulary_covers_every_word(heldout):
    vocabulary = shapes2.vocabulary()
    assert vocabulary == sorted(set(vocabulary)) and vocabulary == shapes2.vocabulary()
    words = set(vocabulary)
    prompt = shapes2.SYSTEM_PROMPT.split()
    assert 30 <= len(prompt) <= 40 and set(prompt) <= words
    rng = np.random.default_rng(3)
    for scene in heldout[:200]:
        texts = [t for q in [*scene.questions, *shapes2.ask(rng, scene)] for t in (q.text, q.answer)]
        for text in texts + scene.captions():
            assert text == " ".join(text.split()), f"{text!r}: tokens not separated by single spaces"
            assert set(text.split()) <= words, f"{text!r}: {set(text.split()) - words} not in the vocabulary"


def test_sign_words_are_printable_single_tokens():
    assert len(shapes2.WORDS) == len(set(shapes2.WORDS)) >= 30
    others = set(shapes2.vocabulary()) - set(shapes2.WORDS)
    for word in shapes2.WORDS:
        assert word == word.lower() and set(word.upper()) <= set(CHARACTERS), word
        assert word not in others, f"{word!r} is also a question word"


def test_captions(heldout):
    for scene in heldout[:100]:
        captions = scene.captions()
        assert 3 <= len(captions) <= 5 and len(set(captions)) == len(captions), captions
        assert captions[0] == _caption(scene.objects)
        assert captions[1].split()[:2] == [str(len(scene.objects)), "objects"], captions[1]
        assert scene.background in captions[1]
        for sign in scene.signs:
            assert f"the {sign.colour} sign says {sign.word}" in captions[2]
        assert sum(int(w) for w in captions[3].split() if w.isdigit()) == len(scene.objects), captions[3]


# ---------------------------------------------------------------- pixels


def test_images_are_uint8_336(heldout):
    for scene in heldout[:20]:
        assert scene.image.dtype == np.uint8 and scene.image.shape == (336, 336, 3)
        assert scene.owner.shape == (336, 336)
        assert np.asarray(scene.pil()).shape == (336, 336, 3)
    assert {scene.background for scene in heldout} == set(shapes2.BACKGROUNDS)


def test_objects_vary_in_size_and_number(heldout):
    sizes = Counter(o.size for scene in heldout[:100] for o in scene.objects)
    assert set(sizes) == {"small", "medium", "large"} and min(sizes.values()) >= 0.1 * sum(sizes.values()), sizes
    assert all(o.size == shapes2.size_of(o.radius) and 8 <= o.radius <= 56 for s in heldout for o in s.objects)
    counts = Counter(len(scene.objects) for scene in heldout)
    assert min(counts) >= 5 and max(counts) == 12, counts
    assert {len(scene.signs) for scene in heldout} == {1, 2, 3}


def _full_mask(obj: shapes2.SceneObject) -> np.ndarray:
    """The object's whole shape on the image grid, as if nothing covered it."""
    axis = np.arange(shapes2.IMAGE_SIZE, dtype=np.float32)
    return _shape_mask(obj.shape, (axis - obj.center[0])[None, :], (axis - obj.center[1])[:, None], obj.radius)


def test_occlusion_follows_drawing_order(heldout):
    """An object shows exactly where its shape is not covered by a later object or a
    sign, stays visible enough, and some objects are partly hidden."""
    occluded = 0
    for scene in heldout[:60]:
        n = len(scene.objects)
        assert set(np.unique(scene.owner).tolist()) == {-1, *range(n + len(scene.signs))}
        for k, obj in enumerate(scene.objects):
            full, mine = _full_mask(obj), scene.owner == k
            assert not (mine & ~full).any() and mine.sum() == obj.visible, (scene.index, k)
            assert (scene.owner[full & ~mine] > k).all(), f"scene {scene.index}: object {k} drawn over a later one"
            assert obj.visible_fraction >= shapes2.MIN_VISIBLE_FRACTION and obj.visible >= shapes2.MIN_VISIBLE_PIXELS
            occluded += bool((full & ~mine).any())
    assert occluded >= 30, f"only {occluded} objects are partly covered"


def test_objects_show_their_colour(heldout):
    palette = {name: np.array(rgb, dtype=float) for name, (rgb, _) in shapes2.COLOURS.items()}
    for scene in heldout[:60]:
        for k, obj in enumerate(scene.objects):
            mean = scene.image[scene.owner == k].mean(0)
            nearest = min(palette, key=lambda name: np.abs(palette[name] - mean).sum())
            assert nearest == obj.colour, (scene.index, k, obj, mean)


def test_signs_print_their_word(heldout):
    for scene in heldout[:60]:
        assert len({s.colour for s in scene.signs}) == len(scene.signs)
        for sign in scene.signs:
            letters = [glyph(c.upper(), sign.scale) for c in sign.word]
            h, w = letters[0].shape
            top, left = sign.text_at
            for i, ink in enumerate(letters):
                pixels = scene.image[top:top + h, left + i * (w + sign.scale):left + i * (w + sign.scale) + w]
                luminance = pixels.astype(float).mean(-1)
                assert (luminance[ink] < 80).all() and (luminance[~ink] > 200).all(), (scene.index, sign, i)
            box_top, box_left, height, width = sign.box
            border = scene.image[box_top, box_left:box_left + width].astype(float)
            assert np.abs(border - shapes2.COLOURS[sign.colour][0]).max() <= 10, (scene.index, sign)


def _cover(owner: np.ndarray, items: int) -> np.ndarray:
    """int ``(24, 24, items)``: pixels of each item in each patch."""
    p = shapes2.PATCH_SIZE
    return np.stack([(owner == k).reshape(NUM_PATCHES, p, NUM_PATCHES, p).sum(axis=(1, 3)) for k in range(items)], -1)


def test_patch_owner_marks_only_covered_patches(heldout):
    need = 0.2 * shapes2.PATCH_SIZE ** 2
    for scene in heldout[:100]:
        marks = scene.patch_owner()
        items = len(scene.objects) + len(scene.signs)
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


def test_patch_owner_threshold(heldout):
    scene = heldout[0]
    strict, loose, default = scene.patch_owner(0.9), scene.patch_owner(0.01), scene.patch_owner()
    assert (strict >= 0).sum() < (default >= 0).sum() < (loose >= 0).sum()
    assert ((strict >= 0) <= (default >= 0)).all() and ((default >= 0) <= (loose >= 0)).all()
