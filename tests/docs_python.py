"""Runs the ```python blocks of one docs page: ``python tests/docs_python.py docs/PAGE.md`` (tests/test_docs.py does).

The rules the docs follow, as pytest-examples does for pydantic-settings' docs:

- The blocks of a page run in order, in one namespace and one event loop, in a fresh process whose working
  directory is a throwaway app directory on ``sys.path``, against the test's Redis (``REDIS_URL``).
- Top-level ``await`` works, as in ``python -m asyncio``.
- A block whose first line names a file under ``src/`` (``# src/worker.py``, or ``# backend/src/worker.py`` as in
  the template app, optionally followed by ``: a remark``) also goes into that file, after what the page's earlier blocks put there. The test writes
  these files before the page runs; when there is a ``src/worker.py``, a worker serves it
  (``python -m scalr_queue.worker src.worker``) and ``SCALR_QUEUE_TASKS=src.worker`` checks enqueued names.
- Functions named ``test_*`` that a block defines are called right after it (awaited if async), as pytest would.
- A block whose first line is ``# not run: <why>`` is skipped. The reason is required; such blocks are rare
  (tests/test_docs.py counts them).
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
import sys
import traceback
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
FILE_LINE = re.compile(r"# (?:backend/)?(src/[\w/]+\.py)(?::.*)?")
NOT_RUN = "# not run:"


@dataclass(frozen=True)
class PythonBlock:
    page: Path
    line: int  # of the block's first line of code, in the page
    code: str
    file: str | None  # "src/worker.py": the block also goes into that file
    not_run: str | None  # why the block is not run (None: it runs)

    @property
    def where(self) -> str:
        return f"{self.page.name}:{self.line}"


def python_blocks(page: Path) -> list[PythonBlock]:
    """The page's ```python blocks, in order; ValueError for a ``# not run:`` marker without a reason."""
    text = page.read_text()
    blocks = []
    for match in BLOCK.finditer(text):
        line = text.count("\n", 0, match.start(1)) + 1
        code = match.group(1)
        first = code.split("\n", 1)[0].strip()
        file = FILE_LINE.fullmatch(first)
        not_run = first[len(NOT_RUN) :].strip() if first.startswith(NOT_RUN) else None
        if not_run == "":
            raise ValueError(f"{page.name}:{line}: '{NOT_RUN}' needs a reason after the colon")
        blocks.append(PythonBlock(page, line, code, file.group(1) if file else None, not_run))
    return blocks


def page_files(blocks: list[PythonBlock]) -> dict[str, str]:
    """The files the page's blocks add up to: ``{"src/worker.py": its code}``."""
    files: dict[str, str] = {}
    for block in blocks:
        if block.file and block.not_run is None:
            files[block.file] = files.get(block.file, "") + block.code + "\n"
    return files


async def run_blocks(blocks: list[PythonBlock]) -> None:
    """Run the blocks in one namespace on this loop; the first failure raises, naming its page and line."""
    import scalr_queue

    module = types.ModuleType("docs_page")
    sys.modules[module.__name__] = module
    namespace: dict[str, Any] = module.__dict__
    called: set[object] = set()
    try:
        for block in blocks:
            if block.not_run is not None:
                continue
            source = "\n" * (block.line - 1) + block.code  # tracebacks show the page's own line numbers
            code = compile(source, str(block.page), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            outcome = eval(code, namespace)
            if inspect.isawaitable(outcome):
                await outcome
            for name, value in list(namespace.items()):
                if name.startswith("test_") and inspect.isfunction(value) and value not in called:
                    called.add(value)
                    result = value()
                    if inspect.isawaitable(result):
                        await result
    finally:
        await scalr_queue.close()


def main(page: str) -> int:
    blocks = python_blocks(Path(page))
    try:
        asyncio.run(run_blocks(blocks))
    except BaseException:
        print(f"a python block of {page} failed:\n{traceback.format_exc()}", file=sys.stderr)
        return 1
    print(f"{page}: {sum(b.not_run is None for b in blocks)} python block(s) ran")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
