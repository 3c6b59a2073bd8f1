"""What every reader needs: checked paths, JSON / JSONL with errors that name the file
and the line or key, lazy image and frame loaders that raise :class:`DataFormatError`,
and the coercion of options that arrive as strings from ``--data key=value``."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..base import DataFormatError, Dataset, Sample

__all__ = ["DataFormatError", "Dataset", "Sample", "ListDataset", "ImageFile", "Base64Image", "Frames",
           "as_bool", "as_int", "require_dir", "require_file", "read_json", "read_jsonl", "need", "unique_id"]


class ListDataset(Dataset):
    """A reader that parses and checks its files when constructed and keeps the samples
    (their images stay on disk until asked for)."""

    _samples: list[Sample]

    def samples(self) -> Iterator[Sample]:
        return iter(self._samples)

    def __len__(self) -> int:
        return len(self._samples)


def require_file(path, parameter: str) -> Path:
    if path is None or str(path) == "":
        raise ValueError(f"{parameter}: a path is needed")
    path = Path(path).expanduser()
    if not path.is_file():
        what = "a folder, not a file" if path.is_dir() else "no such file"
        raise DataFormatError(f"{path}: {what} (given as {parameter})")
    return path


def require_dir(path, parameter: str) -> Path:
    if path is None or str(path) == "":
        raise ValueError(f"{parameter}: a path is needed")
    path = Path(path).expanduser()
    if not path.is_dir():
        what = "a file, not a folder" if path.is_file() else "no such folder"
        raise DataFormatError(f"{path}: {what} (given as {parameter})")
    return path


def read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8-sig") as stream:
            return json.load(stream)
    except json.JSONDecodeError as error:
        raise DataFormatError(f"{path}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})"
                              ) from None
    except UnicodeDecodeError as error:
        raise DataFormatError(f"{path}: not UTF-8 text ({error.reason})") from None


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` of each non-blank line."""
    try:
        with open(path, encoding="utf-8-sig") as stream:
            lines = stream.readlines()
    except UnicodeDecodeError as error:
        raise DataFormatError(f"{path}: not UTF-8 text ({error.reason})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataFormatError(f"{path}:{number}: not a JSON line ({error.msg}); expected one JSON object "
                                  "per line") from None
        if not isinstance(value, dict):
            raise DataFormatError(f"{path}:{number}: expected a JSON object, got {type(value).__name__}")
        yield number, value


def need(item: Any, keys: Iterable[str], where: str) -> None:
    """``item`` is a JSON object with every key in ``keys``; else an error naming ``where``."""
    if not isinstance(item, dict):
        raise DataFormatError(f"{where}: expected a JSON object, got {type(item).__name__}")
    missing = [key for key in keys if key not in item]
    if missing:
        raise DataFormatError(f"{where}: missing key{'s' if len(missing) > 1 else ''} "
                              f"{', '.join(repr(k) for k in missing)}")


def unique_id(ids: set[str], value: str, where: str) -> str:
    if value in ids:
        raise DataFormatError(f"{where}: id {value!r} appears twice")
    ids.add(value)
    return value


def as_bool(value, parameter: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{parameter}: expected true or false, got {value!r}")


def as_int(value, parameter: str, minimum: int | None = None) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{parameter}: expected an integer, got {value!r}") from None
    if isinstance(value, float) and value != number:
        raise ValueError(f"{parameter}: expected an integer, got {value!r}")
    if minimum is not None and number < minimum:
        raise ValueError(f"{parameter}: must be >= {minimum}, got {number}")
    return number


class ImageFile:
    """A lazy image: calling it opens the file as PIL RGB; a missing or unreadable file
    raises :class:`DataFormatError` naming the path."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __call__(self):
        from ...inputs import InputError, load_image

        if not self.path.is_file():
            raise DataFormatError(f"{self.path}: image not found")
        try:
            return load_image(str(self.path))
        except InputError as error:
            raise DataFormatError(f"{self.path}: not a readable image ({error})") from None

    def __repr__(self) -> str:
        return f"ImageFile({str(self.path)!r})"


class Base64Image:
    """A lazy image held as base64 text (MMBench's TSV)."""

    def __init__(self, data: str, where: str) -> None:
        self.data = data
        self.where = where

    def __call__(self):
        from PIL import Image

        try:
            raw = base64.b64decode(self.data, validate=False)
            return Image.open(io.BytesIO(raw)).convert("RGB")
        except (ValueError, OSError) as error:
            raise DataFormatError(f"{self.where}: the image column is not a base64-encoded image ({error})"
                                  ) from None

    def __repr__(self) -> str:
        return f"Base64Image({self.where!r})"


class Frames:
    """Lazy video frames (:func:`visiondrop.inputs.load_frames`): a folder of frame
    images or a ``.npy`` array, ``frames`` of them sampled evenly."""

    def __init__(self, candidates: list[Path], frames: int) -> None:
        self.candidates = candidates
        self.frames = frames

    def __call__(self):
        from ...inputs import InputError, load_frames

        for path in self.candidates:
            if path.is_dir() or (path.suffix == ".npy" and path.is_file()):
                try:
                    return load_frames(str(path), self.frames)
                except InputError as error:
                    raise DataFormatError(f"{path}: {str(error).partition(': ')[2]}") from None
        tried = " or ".join(str(p) for p in self.candidates)
        raise DataFormatError(f"{tried}: video not found (a folder of frame images or a .npy array of "
                              "(frames, height, width, 3) uint8 is read; extract the frames of .mp4/.avi files)")

    def __repr__(self) -> str:
        return f"Frames({[str(p) for p in self.candidates]!r}, {self.frames})"
