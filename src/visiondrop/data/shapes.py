"""ShapesVQA: synthetic visual question answering, deterministic by seed.

A scene is a 336 x 336 image (LLaVA-1.5's input size: 24 x 24 patches of 14 px)
with a cluttered, textured background and 3-6 coloured shapes plus 1-2 small
printed characters, each in its own cell of a 3 x 3 grid. Most patches show only
background, as in real photos, so a good pruner can drop them; the small shapes
and characters are fine detail that aggressive pruning loses.

Every scene comes with one question of each kind, answered by one word:

=========  ============================================================  ==========
kind       question                                                      answer
=========  ============================================================  ==========
exists     is there a red circle ?  (POPE-style negatives: random,        yes / no
           popular, adversarial; see :data:`EXISTS_SUBSETS`)
colour     what colour is the object at the top-left ?                   red ...
shape      what shape is the object at the center ?                      circle ...
count      how many objects / red objects / circles are there ?           0 ... 6
relation   is the red circle left of the blue square ?                   yes / no
           (by grid cell: "left of" = a column further left, "above" = a row
           higher; asked only along an axis where the two cells differ, so
           the pixels agree with the answer)
read       what is written at the bottom ?                               A, 7 ...
=========  ============================================================  ==========

Everything is drawn with numpy from ``numpy.random.default_rng([seed, index])``
(shapes by exact pixel tests, characters from the bitmap font in
:mod:`visiondrop.data.glyphs`), so a scene depends only on its seed and index: the
held-out set is regenerated bit for bit (:func:`heldout_fingerprint`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from .glyphs import CHARACTERS, glyph

IMAGE_SIZE = 336
PATCH_SIZE = 14
GRID = 3
CELL = IMAGE_SIZE // GRID
PLACES = ("top-left", "top", "top-right", "left", "center", "right", "bottom-left", "bottom", "bottom-right")

# Frequencies are uneven on purpose: POPE's "popular" negatives ask about the
# objects seen most often in the data.
COLOURS = {
    "red": ((220, 38, 38), 0.22),
    "blue": ((40, 90, 230), 0.18),
    "green": ((34, 160, 60), 0.15),
    "yellow": ((240, 210, 30), 0.12),
    "orange": ((250, 140, 20), 0.10),
    "purple": ((150, 60, 200), 0.09),
    "cyan": ((30, 200, 220), 0.08),
    "pink": ((245, 120, 185), 0.06),
}
SHAPES = {
    "circle": ("circles", 0.26),
    "square": ("squares", 0.20),
    "triangle": ("triangles", 0.16),
    "diamond": ("diamonds", 0.14),
    "cross": ("crosses", 0.12),
    "ring": ("rings", 0.12),
}
SIZES = {"small": (11, 15), "large": (26, 36)}  # half-extent in pixels, inclusive range
KINDS = ("exists", "colour", "shape", "count", "relation", "read")
EXISTS_SUBSETS = ("positive", "random", "popular", "adversarial")
RELATIONS = ("left of", "right of", "above", "below")

HELDOUT_SEED = 2026
HELDOUT_SCENES = 340  # x 6 kinds = 2,040 questions
TRAIN_SEED = 0


@dataclass(frozen=True)
class SceneObject:
    colour: str
    shape: str
    size: str
    cell: int
    center: tuple[int, int]  # (x, y) pixels
    radius: int

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass(frozen=True)
class Tag:
    """A small white label with one printed character."""

    character: str
    cell: int
    center: tuple[int, int]


@dataclass(frozen=True)
class Question:
    scene: int
    kind: str
    text: str
    answer: str
    subset: str = ""  # exists: positive/random/popular/adversarial

    def to_dict(self) -> dict:
        return {"scene": self.scene, "kind": self.kind, "text": self.text, "answer": self.answer,
                "subset": self.subset}


@dataclass
class Scene:
    index: int
    image: np.ndarray  # uint8 (336, 336, 3)
    owner: np.ndarray  # int8 (336, 336): -1 background, i < len(objects) object i, else tag
    objects: list[SceneObject]
    tags: list[Tag]
    questions: list[Question] = field(default_factory=list)

    def pil(self):
        from PIL import Image

        return Image.fromarray(self.image)

    def patch_owner(self, min_cover: float = 0.2) -> np.ndarray:
        """int ``(24, 24)``: the object/tag covering most of each patch (at least
        ``min_cover`` of its pixels), -1 for background."""
        n = IMAGE_SIZE // PATCH_SIZE
        items = len(self.objects) + len(self.tags)
        blocks = self.owner.reshape(n, PATCH_SIZE, n, PATCH_SIZE).transpose(0, 2, 1, 3).reshape(n, n, -1)
        counts = np.stack([(blocks == i).sum(-1) for i in range(items)], -1)
        best = counts.argmax(-1)
        covered = counts.max(-1) >= max(1.0, min_cover * PATCH_SIZE * PATCH_SIZE)
        return np.where(covered, best, -1)


def _cell_box(cell: int) -> tuple[int, int]:
    return (cell % GRID) * CELL, (cell // GRID) * CELL


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return (np.abs(dx) <= 0.85 * r) & (np.abs(dy) <= 0.85 * r)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= 1.15 * r
    if shape == "triangle":  # apex up, base at 0.8 r below the centre
        return (dy <= 0.8 * r) & (dy >= -r) & (np.abs(dx) <= 0.95 * (dy + r) / 1.8)
    if shape == "cross":
        arm = 0.34 * r
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= r))
    if shape == "ring":
        d2 = dx * dx + dy * dy
        return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    raise ValueError(f"unknown shape {shape!r}")


def _background(rng: np.random.Generator) -> np.ndarray:
    """A muted, textured, cluttered background (float64 RGB)."""
    grey = rng.uniform(80, 165)
    tint = rng.uniform(-18, 18, size=3)
    coarse = rng.uniform(-28, 28, size=(6, 6))
    # Bilinear upsampling of a coarse random field: slow shading across the image.
    axis = np.linspace(0, 5, IMAGE_SIZE)
    i0 = np.minimum(axis.astype(int), 4)
    t = axis - i0
    rows = coarse[i0] * (1 - t)[:, None] + coarse[i0 + 1] * t[:, None]
    field_ = rows[:, i0] * (1 - t)[None, :] + rows[:, i0 + 1] * t[None, :]
    image = grey + tint[None, None, :] + field_[..., None]
    image = image + rng.uniform(-12, 12, size=(IMAGE_SIZE, IMAGE_SIZE, 1)) + rng.uniform(-5, 5, size=image.shape)
    # Clutter: thin muted strokes and specks, never saturated like the objects.
    ys, xs = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] + 0.5
    for _ in range(int(rng.integers(10, 22))):
        x0, y0 = rng.uniform(0, IMAGE_SIZE, size=2)
        angle, length = rng.uniform(0, np.pi), rng.uniform(20, 90)
        x1, y1 = x0 + length * np.cos(angle), y0 + length * np.sin(angle)
        width = rng.uniform(0.8, 2.0)
        vx, vy = x1 - x0, y1 - y0
        # Only the stroke's bounding box can be near it.
        box = (slice(max(0, int(min(y0, y1) - 3)), max(0, int(max(y0, y1) + 4))),
               slice(max(0, int(min(x0, x1) - 3)), max(0, int(max(x0, x1) + 4))))
        bx, by = xs[box], ys[box]
        t_ = np.clip(((bx - x0) * vx + (by - y0) * vy) / (vx * vx + vy * vy), 0, 1)
        near = (bx - x0 - t_ * vx) ** 2 + (by - y0 - t_ * vy) ** 2 <= width * width
        shade = grey + rng.uniform(-45, 45) + rng.uniform(-12, 12, size=3)
        image[box][near] = shade
    return image


def _place_in_cell(rng: np.random.Generator, cell: int, half_w: float, half_h: float) -> tuple[int, int]:
    left, top = _cell_box(cell)
    margin = 4
    x = rng.uniform(left + margin + half_w, left + CELL - margin - half_w)
    y = rng.uniform(top + margin + half_h, top + CELL - margin - half_h)
    return int(round(x)), int(round(y))


def _weighted(rng: np.random.Generator, table: dict) -> str:
    names = list(table)
    weights = np.array([table[n][1] for n in names])
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def render_scene(seed: int, index: int) -> Scene:
    """Draw scene ``index`` of the stream ``seed`` and ask its six questions."""
    rng = np.random.default_rng([seed, index])
    image = _background(rng)
    owner = np.full((IMAGE_SIZE, IMAGE_SIZE), -1, dtype=np.int8)
    num_objects = int(rng.integers(3, 7))
    num_tags = 1 + int(rng.random() < 0.4)
    cells = rng.permutation(GRID * GRID)[: num_objects + num_tags].tolist()
    ys, xs = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] + 0.5

    objects: list[SceneObject] = []
    taken: set[tuple[str, str]] = set()
    for cell in cells[:num_objects]:
        while True:  # every colour-shape pair at most once, so names are unambiguous
            colour, shape = _weighted(rng, COLOURS), _weighted(rng, SHAPES)
            if (colour, shape) not in taken:
                break
        taken.add((colour, shape))
        size = "small" if rng.random() < 0.4 else "large"
        radius = int(rng.integers(SIZES[size][0], SIZES[size][1] + 1))
        center = _place_in_cell(rng, cell, radius, radius)
        box = (slice(center[1] - radius - 2, center[1] + radius + 3),
               slice(center[0] - radius - 2, center[0] + radius + 3))
        mask = _shape_mask(shape, xs[box] - center[0], ys[box] - center[1], radius)
        image[box][mask] = COLOURS[colour][0]
        owner[box][mask] = len(objects)
        objects.append(SceneObject(colour, shape, size, cell, center, radius))

    tags: list[Tag] = []
    for cell in cells[num_objects:]:
        character = CHARACTERS[int(rng.integers(len(CHARACTERS)))]
        ink = glyph(character, scale=3)
        h, w = ink.shape
        pad = 3
        center = _place_in_cell(rng, cell, w / 2 + pad, h / 2 + pad)
        top, left = center[1] - h // 2, center[0] - w // 2
        box = (slice(top - pad, top + h + pad), slice(left - pad, left + w + pad))
        image[box] = 245.0
        owner[box] = len(objects) + len(tags)
        patch = image[top:top + h, left:left + w]
        patch[ink] = 15.0
        tags.append(Tag(character, cell, center))

    scene = Scene(index, np.clip(np.rint(image), 0, 255).astype(np.uint8), owner, objects, tags)
    scene.questions = _ask(np.random.default_rng([seed, index, 1]), scene)
    return scene


def _ask(rng: np.random.Generator, scene: Scene) -> list[Question]:
    objects, i = scene.objects, scene.index
    present = {(o.colour, o.shape) for o in objects}
    questions = []

    # exists (POPE): half positive; negatives random, popular or adversarial.
    subset = "positive" if rng.random() < 0.5 else EXISTS_SUBSETS[1 + int(rng.integers(3))]
    absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present]
    if subset == "positive":
        obj = objects[int(rng.integers(len(objects)))]
        colour, shape = obj.colour, obj.shape
    elif subset == "random":
        colour, shape = absent[int(rng.integers(len(absent)))]
    elif subset == "popular":
        absent.sort(key=lambda cs: -COLOURS[cs[0]][1] * SHAPES[cs[1]][1])
        colour, shape = absent[int(rng.integers(3))]
    else:  # adversarial: one attribute of a present object swapped
        near = [cs for cs in absent if any(cs[0] == c or cs[1] == s for c, s in present)]
        colour, shape = near[int(rng.integers(len(near)))]
    questions.append(Question(i, "exists", f"is there a {colour} {shape} ?",
                              "yes" if subset == "positive" else "no", subset))

    obj = objects[int(rng.integers(len(objects)))]
    questions.append(Question(i, "colour", f"what colour is the object at the {PLACES[obj.cell]} ?", obj.colour))
    obj = objects[int(rng.integers(len(objects)))]
    questions.append(Question(i, "shape", f"what shape is the object at the {PLACES[obj.cell]} ?", obj.shape))

    variant = int(rng.integers(3))
    if variant == 0:
        text, answer = "how many objects are there ?", len(objects)
    elif variant == 1:
        colour = objects[int(rng.integers(len(objects)))].colour if rng.random() < 0.8 else _weighted(rng, COLOURS)
        text, answer = f"how many {colour} objects are there ?", sum(o.colour == colour for o in objects)
    else:
        shape = objects[int(rng.integers(len(objects)))].shape if rng.random() < 0.8 else _weighted(rng, SHAPES)
        text, answer = f"how many {SHAPES[shape][0]} are there ?", sum(o.shape == shape for o in objects)
    questions.append(Question(i, "count", text, str(answer)))

    a, b = (objects[int(k)] for k in rng.choice(len(objects), size=2, replace=False))
    (ax, ay), (bx, by) = divmod(a.cell, GRID)[::-1], divmod(b.cell, GRID)[::-1]
    truth = {"left of": ax < bx, "right of": ax > bx, "above": ay < by, "below": ay > by}
    # Only ask along an axis where the two cells differ: every object lies inside its
    # cell, so the answer is then also plain from the pixels (no "neither" case).
    askable = [r for r in RELATIONS if (ax != bx if r in ("left of", "right of") else ay != by)]
    want = rng.random() < 0.5
    pool = [r for r in askable if truth[r] == want]
    relation = pool[int(rng.integers(len(pool)))]
    questions.append(Question(i, "relation", f"is the {a.name} {relation} the {b.name} ?",
                              "yes" if truth[relation] else "no"))

    tag = scene.tags[int(rng.integers(len(scene.tags)))]
    questions.append(Question(i, "read", f"what is written at the {PLACES[tag.cell]} ?", tag.character))
    return questions


def scenes(seed: int, count: int, start: int = 0) -> Iterator[Scene]:
    for index in range(start, start + count):
        yield render_scene(seed, index)


def heldout(num_scenes: int = HELDOUT_SCENES) -> list[Scene]:
    """The fixed held-out set: scenes 0..339 of seed 2026, six questions each."""
    return list(scenes(HELDOUT_SEED, num_scenes))


def fingerprint(scene_list: list[Scene]) -> str:
    """SHA-256 over every image's pixels and every question and answer."""
    digest = hashlib.sha256()
    for scene in scene_list:
        digest.update(scene.image.tobytes())
        for q in scene.questions:
            digest.update(f"{q.kind}|{q.subset}|{q.text}|{q.answer}\n".encode())
    return digest.hexdigest()


def vocabulary() -> list[str]:
    """Every word a ShapesVQA question or answer uses, in a fixed order."""
    words = ["is", "there", "a", "what", "colour", "shape", "the", "object", "at", "how", "many", "objects",
             "are", "of", "written", "?"]
    words += list(PLACES) + ["left", "right", "above", "below"]
    words += list(COLOURS) + list(SHAPES) + [plural for plural, _ in SHAPES.values()]
    words += ["yes", "no"] + [str(d) for d in range(10)] + [c for c in CHARACTERS if not c.isdigit()]
    seen: dict[str, None] = {}
    for word in words:
        seen.setdefault(word, None)
    return list(seen)
