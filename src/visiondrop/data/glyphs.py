"""A 5 x 7 bitmap font for the characters that ShapesVQA scenes print.

Drawn from bitmaps in code rather than a system or Pillow font, so the rendered
pixels do not depend on the Pillow version or the fonts a machine has installed.
Letters that a 5 x 7 grid confuses with a digit (O/0, I/1, S/5, Z/2) are left out.
"""

from __future__ import annotations

import numpy as np

_ROWS = {
    "0": "01110 10001 10011 10101 11001 10001 01110",
    "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111",
    "3": "11110 00001 00001 01110 00001 00001 11110",
    "4": "00010 00110 01010 10010 11111 00010 00010",
    "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110",
    "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110",
    "9": "01110 10001 10001 01111 00001 00010 01100",
    "A": "01110 10001 10001 11111 10001 10001 10001",
    "B": "11110 10001 10001 11110 10001 10001 11110",
    "E": "11111 10000 10000 11110 10000 10000 11111",
    "F": "11111 10000 10000 11110 10000 10000 10000",
    "H": "10001 10001 10001 11111 10001 10001 10001",
    "K": "10001 10010 10100 11000 10100 10010 10001",
    "L": "10000 10000 10000 10000 10000 10000 11111",
    "M": "10001 11011 10101 10101 10001 10001 10001",
    "P": "11110 10001 10001 11110 10000 10000 10000",
    "R": "11110 10001 10001 11110 10100 10010 10001",
    "T": "11111 00100 00100 00100 00100 00100 00100",
    "U": "10001 10001 10001 10001 10001 10001 01110",
    "X": "10001 10001 01010 00100 01010 10001 10001",
    "Y": "10001 10001 01010 00100 00100 00100 00100",
}

CHARACTERS: tuple[str, ...] = tuple(_ROWS)


def glyph(character: str, scale: int) -> np.ndarray:
    """Bool ``(7 * scale, 5 * scale)`` bitmap of ``character`` (True = ink)."""
    try:
        rows = _ROWS[character]
    except KeyError:
        raise ValueError(f"character must be one of {''.join(CHARACTERS)}, got {character!r}") from None
    bitmap = np.array([[bit == "1" for bit in row] for row in rows.split()], dtype=bool)
    return bitmap.repeat(scale, axis=0).repeat(scale, axis=1)
