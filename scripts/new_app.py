"""Make a new app from template-app/: `python scripts/new_app.py NAME DEST`.

Copies the template to DEST and names the app NAME (container names `NAME-backend`, `NAME-worker`, the API title).
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent.parent / "template-app"
PLACEHOLDER = "myapp"
NAME = re.compile(r"^[a-z][a-z0-9-]{0,40}$")


def new_app(name: str, dest: Path) -> Path:
    if not NAME.match(name):
        raise SystemExit(
            f"error: app name {name!r}: use lowercase letters, digits and dashes, starting with a letter"
        )
    if dest.exists():
        raise SystemExit(f"error: {dest} exists already; choose a new directory")
    shutil.copytree(TEMPLATE, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for path in dest.rglob("*"):
        if path.is_file():
            text = path.read_text()
            if PLACEHOLDER in text:
                path.write_text(text.replace(PLACEHOLDER, name))
    return dest


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python scripts/new_app.py NAME DEST")
    created = new_app(sys.argv[1], Path(sys.argv[2]))
    print(f"created {created}: cd {created} && make up")
