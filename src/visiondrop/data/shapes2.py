"""ShapesVQA-2: cluttered synthetic visual question answering, deterministic by seed.

A scene is a 336 x 336 image (LLaVA-1.5's input size: 24 x 24 patches of 14 px) on
a textured background (one of :data:`BACKGROUNDS`: noisy gradient, stripes,
checker, soft blobs, speckle) with 5-12 coloured shapes of continuous size
(radius 8-56 px, classed small / medium / large) placed anywhere and drawn in
order, so later objects occlude earlier ones, plus 1-3 signs: light plates with a
coloured border and a short word printed in the 5 x 7 font of
:mod:`visiondrop.data.glyphs` at 1 or 2 px per font pixel.

Objects are named by their attributes, with the shortest description that is
unique in the scene: "circle", "red circle" or "large red circle". Every scene
comes with one question of each kind (when the scene allows it):

=========  ==================================================================  =================
kind       question                                                            answer
=========  ==================================================================  =================
exists     is there a red circle in the image ?  (POPE subsets: positive,      yes / no
           random, popular, adversarial; see :data:`EXISTS_SUBSETS`)
relation   is the red circle left of the large ring ?  (also right of, above,  yes / no
           below; asked only where the centres differ by > 24 px on that axis)
count      how many objects / red objects / circles are there ?                 0 ... 12
read       what word is on the blue sign ?                                     lamp, bear ...
choice     what colour is the small ring ? A. red B. cyan C. pink D. blue      A / B / C / D
           answer with the letter .
attribute  what colour is the triangle ? / what shape is the red object ? /    red / circle /
           what size is the blue square ?                                      small ...
caption    describe the image briefly .                                        a large red circle ,
                                                                               a small blue ring
                                                                               and a medium green
                                                                               square .
=========  ==================================================================  =================

Text is tokenised on whitespace (every token, "," "." "?" "A." included, stands
alone) and uses only the words of :func:`vocabulary`. :meth:`Scene.captions` gives
a few more descriptions of a scene (counts, sign words, a relation) for
contrastive pretraining of a vision tower; :data:`SYSTEM_PROMPT` is a LLaVA-style
system prompt in the same vocabulary.

Occlusion: an object is placed only where it stays at least
:data:`MIN_VISIBLE_FRACTION` visible (and :data:`MIN_VISIBLE_PIXELS`) and leaves
every earlier object so, retrying elsewhere and smaller otherwise. So no object
is hidden: every drawn object is asked about, counted and captioned, and its
visible pixels are recorded (:attr:`SceneObject.visible`). Signs lie on top of
everything and never overlap each other, so every sign is readable.

Everything is drawn with numpy from ``numpy.random.default_rng([seed, index])``
(questions from ``[seed, index, 1]``), so a scene depends only on its seed and
index and the held-out set is regenerated bit for bit (:func:`fingerprint`).

Why not ShapesVQA (v1, :mod:`visiondrop.data.shapes`): there each object sits in
its own cell of a 3 x 3 grid, questions name cells, and answers are one word. A
proxy model for judging visual-token pruning should spread its attention the way
real LLaVA does, so v2 has objects of very different size (a pruner must keep the
small ones), occlusion and clutter, objects found by their attributes rather than
by position, multiple-choice and caption answers of several tokens, and the
question mix of common benchmarks (POPE, counting, OCR, multiple choice).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from .glyphs import CHARACTERS, glyph
from .shapes import COLOURS, EXISTS_SUBSETS, IMAGE_SIZE, PATCH_SIZE, SHAPES, fingerprint  # noqa: F401 (ours too)
from .shapes import _shape_mask as shape_mask

NUM_PATCHES = IMAGE_SIZE // PATCH_SIZE  # per side: 24

# Radii are drawn from three bands with gaps between them, so the size class of an
# object is plain from the pixels; the class thresholds lie in the gaps.
SIZES = {"small": ((8.0, 16.0), 0.40), "medium": ((20.0, 32.0), 0.35), "large": ((38.0, 56.0), 0.25)}
SIZE_THRESHOLDS = (18.0, 35.0)  # radius below 18: small; from 35: large
MIN_VISIBLE_FRACTION = 0.4
MIN_VISIBLE_PIXELS = 50
PLACEMENT_TRIES = 30
RELATION_MARGIN = 24  # px between two centres along the asked axis
NOISE = 12.0  # sensor noise: uniform, this wide

# Short words spelled with the font's letters only (it has no C, D, G, I, N, O, S, W ...).
WORDS = ("bake", "bark", "bat", "beam", "bear", "beef", "belt", "bulb", "exam", "farm", "flat", "halt", "harp",
         "hat", "heat", "help", "herb", "hub", "hut", "kelp", "lake", "lamp", "leaf", "map", "mark", "melt",
         "mule", "park", "path", "pear", "plum", "pump", "raft", "rake", "tax", "tea", "tree", "tube", "year",
         "yak")
if not all(set(word.upper()) <= set(CHARACTERS) for word in WORDS):
    raise ValueError("a sign word uses a letter that the glyph font lacks")
BACKGROUNDS = ("gradient", "striped", "checkered", "blotchy", "speckled")
KINDS = ("exists", "relation", "count", "read", "choice", "attribute", "caption")
LETTERS = ("A", "B", "C", "D")
NUMBERS = tuple(str(n) for n in range(13))
REFER_FORMS = (("shape",), ("colour", "shape"), ("size", "colour", "shape"))

SYSTEM_PROMPT = ("a chat between a curious user and an artificial intelligence assistant . the assistant looks at "
                 "the image and gives helpful , detailed , and polite answers to the user 's questions .")

HELDOUT_SEED = 2027
HELDOUT_SCENES = 300  # x 7 kinds: about 2,100 questions (a few scenes allow no relation or choice)
TRAIN_SEED = 0


def size_of(radius: float) -> str:
    return "small" if radius < SIZE_THRESHOLDS[0] else "medium" if radius < SIZE_THRESHOLDS[1] else "large"


@dataclass(frozen=True)
class SceneObject:
    """One shape; a scene's objects are listed in drawing order (later on top)."""

    colour: str
    shape: str
    radius: float
    center: tuple[int, int]  # (x, y) pixels
    area: int  # pixels of the whole shape, also where it leaves the image
    visible: int  # pixels it shows in the final image

    @property
    def size(self) -> str:
        return size_of(self.radius)

    @property
    def visible_fraction(self) -> float:
        return self.visible / self.area

    @property
    def name(self) -> str:
        return f"{self.size} {self.colour} {self.shape}"


@dataclass(frozen=True)
class Sign:
    """A light plate with a coloured border and one printed word."""

    word: str
    colour: str
    scale: int  # image pixels per font pixel
    box: tuple[int, int, int, int]  # plate: top, left, height, width
    text_at: tuple[int, int]  # top, left of the word's bitmap

    @property
    def center(self) -> tuple[int, int]:
        top, left, height, width = self.box
        return left + width // 2, top + height // 2


@dataclass(frozen=True)
class Question:
    kind: str
    text: str
    answer: str  # one or more whitespace-separated tokens
    subset: str = ""  # exists: positive/random/popular/adversarial

    def to_dict(self) -> dict:
        return {"kind": self.kind, "text": self.text, "answer": self.answer, "subset": self.subset}


@dataclass
class Scene:
    seed: int
    index: int
    image: np.ndarray  # uint8 (336, 336, 3)
    owner: np.ndarray  # int8 (336, 336): -1 background, i < len(objects) object i, else sign
    objects: list[SceneObject]
    signs: list[Sign]
    background: str = ""
    questions: list[Question] = field(default_factory=list)

    def pil(self):
        from PIL import Image

        return Image.fromarray(self.image)

    def patch_owner(self, min_cover: float = 0.2) -> np.ndarray:
        """int ``(24, 24)``: the object (or sign, numbered after the objects) covering
        most of each patch, if at least ``min_cover`` of its pixels, else -1."""
        items = len(self.objects) + len(self.signs)
        blocks = self.owner.reshape(NUM_PATCHES, PATCH_SIZE, NUM_PATCHES, PATCH_SIZE).transpose(0, 2, 1, 3)
        blocks = blocks.reshape(NUM_PATCHES * NUM_PATCHES, -1).astype(np.int64) + 1  # background -> 0
        offsets = np.arange(NUM_PATCHES * NUM_PATCHES)[:, None] * (items + 1)
        counts = np.bincount((blocks + offsets).ravel(), minlength=offsets.size * (items + 1))
        counts = counts.reshape(-1, items + 1)[:, 1:]
        best = counts.argmax(-1)
        covered = counts.max(-1) >= max(1.0, min_cover * PATCH_SIZE * PATCH_SIZE)
        return np.where(covered, best, -1).reshape(NUM_PATCHES, NUM_PATCHES)

    def captions(self) -> list[str]:
        """3-5 different short descriptions of the scene (contrastive pretraining)."""
        return _captions(self)


# ---------------------------------------------------------------- backgrounds

_AXIS = np.arange(IMAGE_SIZE, dtype=np.float32) + 0.5
_X, _Y = _AXIS[None, :], _AXIS[:, None]

# Images are built channel first, (3, 336, 336) float32: numpy broadcasts a colour
# over a plane far faster than over a trailing axis of 3.


def _muted(rng: np.random.Generator) -> np.ndarray:
    """A greyish colour: saturated ones are reserved for the objects."""
    return (rng.uniform(75, 185) + rng.uniform(-22, 22, size=3)).astype(np.float32)


def _partner(rng: np.random.Generator, base: np.ndarray) -> np.ndarray:
    """A second colour mostly lighter or darker than ``base``: moderate contrast."""
    return (base + rng.uniform(-45, 45) + rng.uniform(-12, 12, size=3)).astype(np.float32)


def _along(rng: np.random.Generator) -> np.ndarray:
    angle = rng.uniform(0, np.pi)
    return _X * np.float32(np.cos(angle)) + _Y * np.float32(np.sin(angle))


def _shading(rng: np.random.Generator, cells: int = 5, amplitude: float = 20.0) -> np.ndarray:
    """Slow (336, 336) light variation: a coarse random field, bilinearly upsampled."""
    coarse = rng.uniform(-amplitude, amplitude, size=(cells + 1, cells + 1)).astype(np.float32)
    axis = np.linspace(0, cells, IMAGE_SIZE, dtype=np.float32)
    i0 = np.minimum(axis.astype(int), cells - 1)
    t = axis - i0
    rows = coarse[i0] * (1 - t)[:, None] + coarse[i0 + 1] * t[:, None]
    return rows[:, i0] * (1 - t)[None, :] + rows[:, i0 + 1] * t[None, :]


def _blend(a: np.ndarray, b: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """(3, 336, 336): colour ``a`` where ``weight`` is 0, ``b`` where it is 1."""
    return a[:, None, None] + weight.astype(np.float32)[None] * (b - a)[:, None, None]


def _gradient(rng: np.random.Generator) -> np.ndarray:
    a, u = _muted(rng), _along(rng)
    return _blend(a, _partner(rng, a), (u - u.min()) / (u.max() - u.min()))


def _striped(rng: np.random.Generator) -> np.ndarray:
    a, u, period = _muted(rng), _along(rng), rng.uniform(8, 40)
    wave = 0.5 + 0.5 * np.sin(u * np.float32(2 * np.pi / period))
    return _blend(a, _partner(rng, a), wave if rng.random() < 0.5 else wave > 0.5)


def _checkered(rng: np.random.Generator) -> np.ndarray:
    a, cell, angle = _muted(rng), rng.uniform(10, 42), rng.uniform(0, np.pi / 2)
    c, s = np.float32(np.cos(angle) / cell), np.float32(np.sin(angle) / cell)
    parity = (np.floor(_X * c + _Y * s) + np.floor(_Y * c - _X * s)) % 2
    return _blend(a, _partner(rng, a), parity)


def _blotchy(rng: np.random.Generator) -> np.ndarray:
    image = np.broadcast_to(_muted(rng)[:, None, None], (3, IMAGE_SIZE, IMAGE_SIZE)).copy()
    for _ in range(int(rng.integers(4, 9))):
        (x, y), width = rng.uniform(0, IMAGE_SIZE, size=2), rng.uniform(20, 70)
        # A Gaussian blob is separable: an outer product of two 1-d profiles.
        blob = np.exp(-((_X - x) ** 2) / (2 * width**2)) * np.exp(-((_Y - y) ** 2) / (2 * width**2))
        here = image[:, int(y), int(x)].copy()
        image += blob[None] * (_partner(rng, here) - here)[:, None, None]
    return image


def _speckled(rng: np.random.Generator) -> np.ndarray:
    a, size = _muted(rng), int(rng.integers(2, 5))
    n = -(-IMAGE_SIZE // size)
    specks = (rng.random((n, n)) < rng.uniform(0.08, 0.3)).repeat(size, 0).repeat(size, 1)
    return _blend(a, _partner(rng, a), specks[:IMAGE_SIZE, :IMAGE_SIZE])


_PAINTERS = {"gradient": _gradient, "striped": _striped, "checkered": _checkered, "blotchy": _blotchy,
             "speckled": _speckled}


def _background(rng: np.random.Generator) -> tuple[str, np.ndarray]:
    family = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    image = _PAINTERS[family](rng)
    image += _shading(rng)[None]
    return family, image


# ---------------------------------------------------------------- objects and signs


def _weighted(rng: np.random.Generator, table: dict) -> str:
    names = list(table)
    cumulative = np.cumsum([table[n][1] for n in names])
    return names[min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right")), len(names) - 1)]


def _need(area) -> np.ndarray:
    return np.maximum(MIN_VISIBLE_FRACTION * np.asarray(area), MIN_VISIBLE_PIXELS)


def _fit(owner: np.ndarray, visible: np.ndarray, areas: np.ndarray, shape: str, radius: float,
         cx: int, cy: int):
    """``(box, mask, area, covered)`` if the shape, drawn on top of the objects but under
    the signs, stays visible enough and leaves every object so; else None."""
    r = int(np.ceil(1.15 * radius)) + 1  # the diamond reaches 1.15 radius
    dx = np.arange(-r, r + 1, dtype=np.float32)
    full = shape_mask(shape, dx[None, :], dx[:, None], radius)
    area = int(full.sum())
    y0, y1, x0, x1 = max(cy - r, 0), min(cy + r + 1, IMAGE_SIZE), max(cx - r, 0), min(cx + r + 1, IMAGE_SIZE)
    box = (slice(y0, y1), slice(x0, x1))
    region = owner[box]
    mask = full[y0 - cy + r:y1 - cy + r, x0 - cx + r:x1 - cx + r] & (region >= -1)  # signs are <= -2
    if mask.sum() < _need(area):
        return None
    covered = np.bincount(region[mask & (region >= 0)], minlength=len(visible))
    if (visible - covered < _need(areas)).any():
        return None
    return box, mask, area, covered


def _place_objects(rng: np.random.Generator, image: np.ndarray, owner: np.ndarray) -> list[SceneObject]:
    placed: list[tuple] = []  # (colour, shape, radius, center, area)
    visible, areas = np.zeros(0, np.int64), np.zeros(0, np.int64)
    for _ in range(int(rng.integers(5, 13))):
        colour, shape, size = _weighted(rng, COLOURS), _weighted(rng, SHAPES), _weighted(rng, SIZES)
        rgb = np.array(COLOURS[colour][0], np.float32) + rng.uniform(-12, 12, size=3).astype(np.float32)
        start = list(SIZES).index(size)
        for attempt in range(PLACEMENT_TRIES):
            # Crowded scenes: after every third of the tries, fall back to a smaller class.
            band = SIZES[list(SIZES)[max(0, start - attempt * 3 // PLACEMENT_TRIES)]][0]
            radius = round(float(rng.uniform(*band)), 1)
            cx, cy = (int(v) for v in rng.integers(0, IMAGE_SIZE, size=2))
            fit = _fit(owner, visible, areas, shape, radius, cx, cy)
            if fit is not None:
                break
        else:
            continue
        box, mask, area, covered = fit
        # Light from the top left: a shaded shape rather than a flat stencil.
        dy, dx = (np.arange(s.start, s.stop, dtype=np.float32) - c for s, c in zip(box, (cy, cx)))
        shade = 1 - 0.12 * (dx[None, :] + dy[:, None]) / (2 * radius)
        image[(slice(None), *box)][:, mask] = rgb[:, None] * shade[mask][None]
        owner[box][mask] = len(placed)
        visible = np.append(visible - covered, mask.sum())
        areas = np.append(areas, area)
        placed.append((colour, shape, radius, (cx, cy), area))
    return [SceneObject(c, s, r, xy, a, int(v)) for (c, s, r, xy, a), v in zip(placed, visible)]


def word_bitmap(word: str, scale: int) -> np.ndarray:
    """Bool bitmap of ``word`` in capitals, one font pixel of space between letters."""
    gap = np.zeros((7 * scale, scale), dtype=bool)
    parts = [part for letter in word.upper() for part in (glyph(letter, scale), gap)]
    return np.concatenate(parts[:-1], axis=1)


def _reserve_signs(rng: np.random.Generator, owner: np.ndarray) -> list[Sign]:
    """Place 1-3 signs apart from each other; their pixels are marked -2, -3, ... in
    ``owner`` so that objects go under them."""
    count = int(rng.integers(1, 4))
    colours = [list(COLOURS)[int(k)] for k in rng.choice(len(COLOURS), size=count, replace=False)]
    words = [WORDS[int(k)] for k in rng.choice(len(WORDS), size=count, replace=False)]
    signs: list[Sign] = []
    for word, colour in zip(words, colours):
        scale = 1 if rng.random() < 0.6 else 2
        ink_h, ink_w = word_bitmap(word, scale).shape
        inset = 2 + 3 * scale  # border (2 px) and padding
        height, width = ink_h + 2 * inset, ink_w + 2 * inset
        for _ in range(20):
            top, left = int(rng.integers(2, IMAGE_SIZE - height - 1)), int(rng.integers(2, IMAGE_SIZE - width - 1))
            if (owner[top - 2:top + height + 2, left - 2:left + width + 2] == -1).all():
                break
        else:
            continue
        owner[top:top + height, left:left + width] = -2 - len(signs)
        signs.append(Sign(word, colour, scale, (top, left, height, width), (top + inset, left + inset)))
    return signs


def _paint_sign(rng: np.random.Generator, image: np.ndarray, sign: Sign) -> None:
    top, left, height, width = sign.box
    image[:, top:top + height, left:left + width] = np.array(COLOURS[sign.colour][0])[:, None, None]
    plate = rng.uniform(225, 250) + rng.uniform(-6, 6, size=3)
    image[:, top + 2:top + height - 2, left + 2:left + width - 2] = plate[:, None, None]
    ink = word_bitmap(sign.word, sign.scale)
    text = image[:, sign.text_at[0]:sign.text_at[0] + ink.shape[0], sign.text_at[1]:sign.text_at[1] + ink.shape[1]]
    text[:, ink] = rng.uniform(15, 55)


def render_scene(seed: int, index: int) -> Scene:
    """Draw scene ``index`` of the stream ``seed`` and ask one question of each kind."""
    rng = np.random.default_rng([seed, index])
    background, image = _background(rng)
    owner = np.full((IMAGE_SIZE, IMAGE_SIZE), -1, dtype=np.int8)
    signs = _reserve_signs(rng, owner)
    objects = _place_objects(rng, image, owner)
    for k, sign in enumerate(signs):
        _paint_sign(rng, image, sign)
        owner[owner == -2 - k] = len(objects) + k
    # Sensor noise; its +0.5 makes the truncating cast below round to nearest.
    image += rng.random((3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32) * np.float32(NOISE) + np.float32(0.5 - NOISE / 2)
    pixels = np.ascontiguousarray(np.clip(image, 0, 255).astype(np.uint8).transpose(1, 2, 0))
    scene = Scene(seed, index, pixels, owner, objects, signs, background)
    scene.questions = ask(np.random.default_rng([seed, index, 1]), scene)
    return scene


# ---------------------------------------------------------------- text


def refer(objects: list[SceneObject], k: int, forms=REFER_FORMS) -> str | None:
    """The first of ``forms`` (attribute names) that describes object ``k`` and no
    other, as words ("red circle"); None if none does."""
    for form in forms:
        words = tuple(getattr(objects[k], name) for name in form)
        if sum(tuple(getattr(o, name) for name in form) == words for o in objects) == 1:
            return " ".join(words)
    return None


def _pick(rng: np.random.Generator, items: list):
    return items[int(rng.integers(len(items)))]


def _join(phrases: list[str]) -> str:
    return phrases[0] if len(phrases) == 1 else " , ".join(phrases[:-1]) + " and " + phrases[-1]


def _counted(number: int, singular: str, plural: str) -> str:
    return f"{number} {singular if number == 1 else plural}"


def _ask_exists(rng: np.random.Generator, scene: Scene) -> Question:
    present = {(o.colour, o.shape) for o in scene.objects}
    absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present]
    subset = "positive" if present and rng.random() < 0.5 else EXISTS_SUBSETS[1 + int(rng.integers(3))]
    if subset == "positive":
        colour, shape = _pick(rng, sorted(present))
    elif subset == "popular":  # the most frequent objects of the data that this scene lacks
        absent.sort(key=lambda cs: -COLOURS[cs[0]][1] * SHAPES[cs[1]][1])
        colour, shape = absent[int(rng.integers(3))]
    else:
        near = [cs for cs in absent if any(cs[0] == c or cs[1] == s for c, s in present)]
        subset = "adversarial" if subset == "adversarial" and near else "random"
        colour, shape = _pick(rng, near if subset == "adversarial" else absent)
    return Question("exists", f"is there a {colour} {shape} in the image ?",
                    "yes" if subset == "positive" else "no", subset)


def _ask_relation(rng: np.random.Generator, scene: Scene) -> Question | None:
    objects = scene.objects
    names = {k: name for k in range(len(objects)) if (name := refer(objects, k))}
    pairs = [(a, b) for a in names for b in names
             if a != b and max(abs(p - q) for p, q in zip(objects[a].center, objects[b].center)) > RELATION_MARGIN]
    if not pairs:
        return None
    a, b = _pick(rng, pairs)
    (ax, ay), (bx, by) = objects[a].center, objects[b].center
    axis = _pick(rng, [k for k, d in enumerate((bx - ax, by - ay)) if abs(d) > RELATION_MARGIN])
    before, after = ("left of", "right of") if axis == 0 else ("above", "below")
    want = bool(rng.random() < 0.5)
    a_first = (ax, ay)[axis] < (bx, by)[axis]
    relation = before if a_first == want else after
    return Question("relation", f"is the {names[a]} {relation} the {names[b]} ?", "yes" if want else "no")


def _ask_count(rng: np.random.Generator, scene: Scene) -> Question:
    objects = scene.objects
    variant = int(rng.integers(3))
    if variant == 0 or not objects:
        return Question("count", "how many objects are there ?", str(len(objects)))
    if variant == 1:  # mostly a colour of the scene, sometimes any (answer 0)
        colour = _pick(rng, objects).colour if rng.random() < 0.8 else _weighted(rng, COLOURS)
        return Question("count", f"how many {colour} objects are there ?",
                        str(sum(o.colour == colour for o in objects)))
    shape = _pick(rng, objects).shape if rng.random() < 0.8 else _weighted(rng, SHAPES)
    return Question("count", f"how many {SHAPES[shape][0]} are there ?", str(sum(o.shape == shape for o in objects)))


def _ask_read(rng: np.random.Generator, scene: Scene) -> Question | None:
    if not scene.signs:
        return None
    sign = _pick(rng, scene.signs)
    return Question("read", f"what word is on the {sign.colour} sign ?", sign.word)


def _ask_choice(rng: np.random.Generator, scene: Scene) -> Question | None:
    objects = scene.objects
    names = {k: name for k in range(len(objects)) if (name := refer(objects, k, (("shape",), ("size", "shape"))))}
    if not names:
        return None
    k = _pick(rng, sorted(names))
    others = [c for c in COLOURS if c != objects[k].colour]
    options = [objects[k].colour] + [others[int(i)] for i in rng.choice(len(others), size=3, replace=False)]
    order = rng.permutation(4)
    listed = " ".join(f"{letter}. {options[int(i)]}" for letter, i in zip(LETTERS, order))
    return Question("choice", f"what colour is the {names[k]} ? {listed} answer with the letter .",
                    LETTERS[int(np.flatnonzero(order == 0)[0])])


# Attribute asked -> descriptions that avoid it, and the words around the description.
_ATTRIBUTE_FORMS = {
    "colour": ((("shape",), ("size", "shape")), "what colour is the {} ?"),
    "shape": ((("colour",), ("size", "colour")), "what shape is the {} object ?"),
    "size": ((("shape",), ("colour", "shape")), "what size is the {} ?"),
}


def _ask_attribute(rng: np.random.Generator, scene: Scene) -> Question | None:
    objects = scene.objects
    for attribute in rng.permutation(list(_ATTRIBUTE_FORMS)).tolist():
        forms, template = _ATTRIBUTE_FORMS[attribute]
        names = {k: name for k in range(len(objects)) if (name := refer(objects, k, forms))}
        if names:
            k = _pick(rng, sorted(names))
            return Question("attribute", template.format(names[k]), getattr(objects[k], attribute))
    return None


def largest(objects: list[SceneObject], count: int = 3) -> list[int]:
    """Indices of the ``count`` largest objects by radius, largest first (ties: drawn first)."""
    return sorted(range(len(objects)), key=lambda k: (-objects[k].radius, k))[:count]


def _caption(scene: Scene) -> str:
    return _join([f"a {scene.objects[k].size} {scene.objects[k].colour} {scene.objects[k].shape}"
                  for k in largest(scene.objects)]) + " ."


def _ask_caption(rng: np.random.Generator, scene: Scene) -> Question | None:
    return Question("caption", "describe the image briefly .", _caption(scene)) if scene.objects else None


_ASKERS = {"exists": _ask_exists, "relation": _ask_relation, "count": _ask_count, "read": _ask_read,
           "choice": _ask_choice, "attribute": _ask_attribute, "caption": _ask_caption}


def ask(rng: np.random.Generator, scene: Scene) -> list[Question]:
    """One question of each kind of :data:`KINDS` that the scene allows, in that order;
    call again with the same generator for more (training draws several sets)."""
    return [q for kind in KINDS if (q := _ASKERS[kind](rng, scene)) is not None]


def _relation_caption(scene: Scene) -> str | None:
    """The two largest nameable objects whose centres are apart, in words."""
    objects = scene.objects
    named = [k for k in largest(objects, len(objects)) if refer(objects, k)]
    for i, a in enumerate(named):
        for b in named[i + 1:]:
            dx, dy = np.subtract(objects[b].center, objects[a].center)
            if max(abs(dx), abs(dy)) > RELATION_MARGIN:
                relation = ("left of" if dx > 0 else "right of") if abs(dx) >= abs(dy) else (
                    "above" if dy > 0 else "below")
                return f"the {refer(objects, a)} is {relation} the {refer(objects, b)} ."
    return None


def _captions(scene: Scene) -> list[str]:
    objects = scene.objects
    shapes = Counter(o.shape for o in objects)
    texts = [
        _caption(scene),
        f"{_counted(len(objects), 'object', 'objects')} and {_counted(len(scene.signs), 'sign', 'signs')} "
        f"on a {scene.background} background .",
        _join([f"the {s.colour} sign says {s.word}" for s in scene.signs]) + " .",
        _join([_counted(n, shape, SHAPES[shape][0]) for shape, n in sorted(shapes.items(), key=lambda i: -i[1])])
        + " .",
        _relation_caption(scene),
    ]
    return [text for text in texts if text]


# ---------------------------------------------------------------- sets


def scenes(seed: int, count: int, start: int = 0) -> Iterator[Scene]:
    for index in range(start, start + count):
        yield render_scene(seed, index)


def heldout(num_scenes: int = HELDOUT_SCENES) -> list[Scene]:
    """The fixed held-out set: scenes 0..299 of seed 2027, one question of each kind."""
    return list(scenes(HELDOUT_SEED, num_scenes))


def vocabulary() -> list[str]:
    """Every word of any question, answer, caption or the system prompt, sorted."""
    words = set(SYSTEM_PROMPT.split())
    words |= set("is there a in the image ? left right of above below how many objects object are what word on "
                 "sign signs says colour shape size describe briefly . , and answer with letter yes no "
                 "background".split())
    words |= set(COLOURS) | set(SHAPES) | {plural for plural, _ in SHAPES.values()} | set(SIZES)
    words |= set(NUMBERS) | set(WORDS) | set(BACKGROUNDS) | set(LETTERS) | {f"{x}." for x in LETTERS}
    return sorted(words)

