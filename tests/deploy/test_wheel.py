"""The wheel that ``deploy/Dockerfile`` installs: built from the same files, installed where the source is out of reach.

Tests and the demo run from an editable install, which sees every file of the checkout; the image sees only what the
wheel carries. So this test builds the wheel from exactly what the Dockerfile's build stage copies, checks that every
file under the packages made it in, installs it in a fresh virtual environment (no system site-packages, no source
tree on the path) and runs relance from a directory outside the checkout: the schema migrations on a new SQLite
database, every template in every language, the policy book, the rate table, the JSON schemas, the demo (ingest,
escalation and e-mails end to end) and the preview of a reminder.

Dependencies come from the package index through pip's cache, so a warm run takes well under a minute.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
PACKAGES = ("shared", "services")

# Run inside the installed environment: where the packages come from, and every resource they load at start-up.
LOAD_RESOURCES = """
import json, sys
from pathlib import Path
import yaml
import services, shared
from services.escalation.policy import PolicyLibrary
from services.escalation.worker import policy_books, real_rules
from services.notifier.render import LANGUAGES, TEMPLATES, load_templates
from services.notifier.sender import load_sender
from shared.config import load_settings

for package in (services, shared):
    print("package", Path(package.__file__).parent)
templates = load_templates()  # compiles every file and renders every template in every language
for language in LANGUAGES:
    for name in TEMPLATES:
        for part in ("subject.txt", "txt", "html"):
            templates.get(f"{language}/{name}.{part}")
print("templates", len(LANGUAGES) * len(TEMPLATES))
print("policies", sorted(PolicyLibrary.load(None).for_tenant("any").policies))
load_sender()
settings = load_settings(database_url="sqlite:///unused.db")
policy_books(settings)
real_rules(settings)
schemas = sorted((Path(shared.__file__).parent / "contracts" / "schema").iterdir())
for path in schemas:
    json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
print("schemas", len(schemas))
"""


def _build_context(destination: Path) -> None:
    """Copy what the Dockerfile's build stage (its first ``FROM``) copies from the build context."""
    stages = re.split(r"^FROM ", DOCKERFILE.read_text(encoding="utf-8"), flags=re.M)
    copies = [line.split()[1:-1] for line in stages[1].splitlines() if line.startswith("COPY ")]
    assert copies, f"no COPY line in the build stage of {DOCKERFILE}"
    destination.mkdir()
    for source in (name for names in copies for name in names):
        path = ROOT / source
        if path.is_dir():
            # Caches come along on purpose, as in a build context without .dockerignore: the wheel must drop them.
            shutil.copytree(path, destination / source)
        else:
            shutil.copy2(path, destination / source)


def _shipped_files() -> set[str]:
    """Every non-Python file under the packages in the checkout: what the running relance may open."""
    listed = subprocess.run(["git", "ls-files", "--", *PACKAGES], cwd=ROOT, capture_output=True, text=True, check=False)
    if listed.returncode == 0 and listed.stdout.strip():
        names = set(listed.stdout.split())
    else:  # not a git checkout (an unpacked sdist): every file but caches
        names = {
            str(p.relative_to(ROOT))
            for package in PACKAGES
            for p in (ROOT / package).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        }
    return {name for name in names if (ROOT / name).is_file()}


def _clean_environment(home: Path) -> dict[str, str]:
    """The caller's environment without relance settings or Python paths that could reach the checkout."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("RELANCE_", "PYTHON", "VIRTUAL_ENV"))}
    return {**keep, "HOME": os.environ.get("HOME", str(home)), "RELANCE_LOG_FORMAT": "console"}


def _run(
    command: list[str], cwd: Path, env: dict[str, str], timeout: float = 240, codes: tuple[int, ...] = (0,)
) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode in codes, f"{' '.join(command)} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.e2e
def test_the_image_wheel_carries_every_resource_and_runs_relance_outside_the_source_tree(tmp_path: Path) -> None:
    # Given the files the Dockerfile's build stage copies, with their caches, in a folder of their own
    context = tmp_path / "context"
    _build_context(context)
    env = _clean_environment(tmp_path)
    # When the wheel is built from them as the image builds it
    wheels = tmp_path / "wheels"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "--wheel-dir", str(wheels), str(context)],
        tmp_path,
        env,
    )
    (wheel,) = wheels.glob("relance-*.whl")
    # Then every file under the packages is inside, and no cache
    inside = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(_shipped_files() - inside)
    assert not missing, f"the wheel lacks {len(missing)} file(s) of the packages: {missing}"
    assert not [n for n in inside if "__pycache__" in n or n.endswith(".pyc")]

    # When it is installed, dependencies included, in a fresh virtual environment outside the checkout
    environment = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(environment)
    python, relance = environment / "bin" / "python", environment / "bin" / "relance"
    _run([str(python), "-m", "pip", "install", "-q", str(wheel)], tmp_path, env, timeout=600)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    # Then the packages are the installed ones and every resource loads from there
    loaded = _run([str(python), "-I", "-c", LOAD_RESOURCES], elsewhere, env)
    packages = [Path(line.split(" ", 1)[1]) for line in loaded.splitlines() if line.startswith("package ")]
    assert packages and all(p.is_relative_to(environment) for p in packages), loaded
    assert re.search(r"^templates [1-9]", loaded, re.M) and re.search(r"^schemas [1-9]", loaded, re.M), loaded

    # And the migrations build a new database, which the health check then accepts
    url = f"sqlite:///{elsewhere / 'ledger.db'}"
    assert "ledger schema at revision" in _run([str(relance), "db", "upgrade", "--database-url", url], elsewhere, env)
    _run([str(relance), "health", "--database-url", url], elsewhere, env)

    # And the demo asks for its extra, which a worker image does not carry, in one line
    bare = subprocess.run(
        [str(relance), "demo", "--out", "demo"], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120
    )
    assert bare.returncode == 69, bare
    assert bare.stderr.strip() == "relance demo needs its extra, which the workers do not: pip install 'relance[demo]'"
    _run([str(python), "-m", "pip", "install", "-q", f"{wheel}[demo]"], tmp_path, env, timeout=600)

    # And with it the demo runs end to end (ingest, escalation, reminders rendered and sent over SMTP, letters);
    # status 3 is a run that went as expected and reports a policy rule its dunning broke
    demo_command = [str(relance), "demo", "--customers", "40", "--months", "3", "--out", "demo"]
    demo = _run(demo_command, elsewhere, env, codes=(0, 3))
    assert "UNEXPECTED" not in demo and "Cadence and tone" in demo, demo
    assert list((elsewhere / "demo" / "mail").glob("*.eml")), demo

    # And a reminder of the demo's ledger previews from the installed templates, in both languages
    demo_url = f"sqlite:///{elsewhere / 'demo' / 'relance-demo.db'}"
    for language in ("fr", "en"):
        preview = [str(relance), "preview", "--tenant", "acme-fr", "--customer", "C-0040", "--level", "reminder_1"]
        shown = _run([*preview, "--lang", language, "--date", "2026-11-20", "--database-url", demo_url], elsewhere, env)
        assert f"({language}), version" in shown, shown
