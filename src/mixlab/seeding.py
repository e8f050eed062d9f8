"""Seeds derived from names: every random stream in mixlab is seeded as ``derive_seed(seed, *tags)``.

The lowest layer (no mixlab imports), so data loaders, methods and the engine share one definition.
"""
from __future__ import annotations

import hashlib


def derive_seed(*parts: int | str) -> int:
    """A deterministic 63-bit seed from parts (stable across processes, unlike ``hash``)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
