"""File-name labels for per-word heat maps: the word itself, made safe for a file name and unique.

`attention.maps_to_images` labels each heat map with its word so that `core.save_image` with
`{label}` in its path writes `word_circle.png` rather than `word_3.png`: a user looking at the output
folder sees which map is which without counting the prompt's words.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^\w\-]+")


def safe_label(word: str) -> str:
    """`word` with every run of characters other than letters, digits, '_' and '-' replaced by '_'
    (no path separators, no leading dots), or "word" when nothing is left."""
    return _UNSAFE.sub("_", word).strip("_") or "word"


def word_labels(words: list[str]) -> tuple[str, ...]:
    """One safe label per word; a repeated label gets `_2`, `_3`, ... so no file overwrites another."""
    seen: dict[str, int] = {}
    taken = {safe_label(w) for w in words}
    labels = []
    for word in words:
        base = safe_label(word)
        count = seen.get(base, 0) + 1
        seen[base] = count
        label = base if count == 1 else f"{base}_{count}"
        while count > 1 and label in taken:  # "a", "a", "a_2": the second "a" must not become "a_2"
            count += 1
            seen[base] = count
            label = f"{base}_{count}"
        taken.add(label)
        labels.append(label)
    return tuple(labels)
