"""The ```python blocks of README.md, for the tests that run every one of them.

A block that needs something the plain test environment lacks says so in its first line,
a comment the reader sees: ``# needs CaImAn ...`` (run by ``tests/test_real_caiman_readme.py``
in a real CaImAn environment) or ``# needs a SLURM cluster ...`` (its dask-jobqueue part
run by ``tests/test_readme.py``). Every other block runs in ``tests/test_readme.py`` on the
shipped files. Paths written ``/abs/path/NAME`` are a user's files: the tests put a shipped
file (or a fresh result) there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"

NEEDS = ("CaImAn", "a SLURM cluster")
"""What a block may say it needs (``# needs <what>`` in its first line)."""

_FENCE = re.compile(r"^( *)```python\n(.*?)^\1```", re.M | re.S)
_NEEDS = re.compile(r"#\s*needs\s+(.+)$")


@dataclass(frozen=True)
class Block:
    """One ```python block: where it starts, its code, what it needs (None: nothing)."""

    line: int
    code: str
    needs: str | None

    @property
    def id(self) -> str:
        return f"README.md:{self.line}"


def readme_blocks(path: Path = README) -> list[Block]:
    """Every ```python block of ``path``, in order.

    Raises
    ------
    ValueError
        A block says it needs something not in :data:`NEEDS` (a test would not run it).
    """
    text = path.read_text(encoding="utf-8")
    blocks = []
    for match in _FENCE.finditer(text):
        indent = len(match.group(1))
        code = "\n".join(line[indent:] for line in match.group(2).splitlines()) + "\n"
        first = code.lstrip().splitlines()[0] if code.strip() else ""
        found = _NEEDS.match(first)
        needs = None
        if found:
            needs = next((what for what in NEEDS if found.group(1).startswith(what)), None)
            if needs is None:
                line = text[: match.start()].count("\n") + 1
                raise ValueError(f"README.md:{line}: '{first}': a block may need only {NEEDS}")
        line = text[: match.start()].count("\n") + 1
        blocks.append(Block(line, code, needs))
    return blocks
