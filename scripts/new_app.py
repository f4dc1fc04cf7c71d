"""Make a new app from template-app/: `python scripts/new_app.py NAME DEST`.

DEST becomes a self-contained app that builds on its own (`cd DEST && make up`):

- the template's files, named NAME (containers `NAME-backend`, `NAME-worker`, image `NAME:latest`, the API title);
- `Dockerfile`: this repository's image recipe, with every path inside DEST, so the image holds DEST's own code
  (`backend/src`) and is built from DEST alone (compose's build context is `.`);
- `vendor/scalr_queue/`: the scalr_queue source the image installs (`pyproject.toml`, `README.md`, the package),
  copied from this repository; replace it with a release when you upgrade.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template-app"
PLACEHOLDER = "myapp"
NAME = re.compile(r"^[a-z][a-z0-9-]{0,40}$")
VENDORED = ("pyproject.toml", "README.md", "scalr_queue")
VENDOR_DIR = Path("vendor") / "scalr_queue"
# The repository's Dockerfile reads scalr_queue from the repository root and the app from template-app/; the app's
# own reads both from inside the app. Every line must be found: a changed Dockerfile fails here, not at build time.
DOCKERFILE_LINES = {
    "# Build stage: wheels for scalr_queue (this repository) and the backend's requirements.\n": (
        "# Build stage: wheels for scalr_queue (vendor/scalr_queue) and the backend's requirements.\n"
    ),
    "COPY pyproject.toml README.md ./\n": f"COPY {VENDOR_DIR.as_posix()}/ ./\n",
    "COPY scalr_queue ./scalr_queue\n": "",
    "COPY template-app/backend/requirements.txt ./requirements.txt\n": (
        "COPY backend/requirements.txt ./requirements.txt\n"
    ),
    "COPY --chown=app:app template-app/backend/src ./src\n": "COPY --chown=app:app backend/src ./src\n",
}
COMPOSE_BUILD = (
    "    build:  # the scalr_queue repository's Dockerfile (an app made by scripts/new_app.py builds from its own)\n"
    "      context: ..\n",
    "    build:  # this directory and its Dockerfile: the image holds this app's code\n      context: .\n",
)
DOCKERIGNORE = """.venv
.git
**/__pycache__
**/*.pyc
.pytest_cache
.mypy_cache
.ruff_cache
.env
"""


def app_dockerfile(text: str) -> str:
    """The repository's Dockerfile with every path inside the new app."""
    for old, new in DOCKERFILE_LINES.items():
        if old not in text:
            raise SystemExit(f"error: Dockerfile no longer has {old.strip()!r}: update scripts/new_app.py")
        text = text.replace(old, new)
    return text


def new_app(name: str, dest: Path) -> Path:
    if not NAME.match(name):
        raise SystemExit(
            f"error: app name {name!r}: use lowercase letters, digits and dashes, starting with a letter"
        )
    if dest.exists():
        raise SystemExit(f"error: {dest} exists already; choose a new directory")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(TEMPLATE, dest, ignore=ignore)
    for path in dest.rglob("*"):
        if path.is_file():
            text = path.read_text()
            if PLACEHOLDER in text:
                path.write_text(text.replace(PLACEHOLDER, name))
    compose = dest / "docker-compose.yml"
    text = compose.read_text()
    if COMPOSE_BUILD[0] not in text:
        raise SystemExit("error: template-app/docker-compose.yml's build section changed: update new_app.py")
    compose.write_text(text.replace(*COMPOSE_BUILD))
    (dest / "Dockerfile").write_text(app_dockerfile((ROOT / "Dockerfile").read_text()))
    (dest / ".dockerignore").write_text(DOCKERIGNORE)
    vendor = dest / VENDOR_DIR
    vendor.mkdir(parents=True)
    for entry in VENDORED:
        source = ROOT / entry
        if source.is_dir():
            shutil.copytree(source, vendor / entry, ignore=ignore)
        else:
            shutil.copy2(source, vendor / entry)
    return dest


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python scripts/new_app.py NAME DEST")
    created = new_app(sys.argv[1], Path(sys.argv[2]))
    print(f"created {created}: cd {created} && make up")
    print(
        "it joins the shared Redis (scalr-redis on the network scalr): `docker compose up -d scalr-redis` here"
    )
