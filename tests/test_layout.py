"""Guards on the repository layout that DESIGN.md fixes."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOP_LEVEL_PACKAGES = ["fleet_protocol", "smartpark", "model_store", "compression", "edge_agent"]


def test_platform_folder_is_not_a_package():
    # `platform` is a stdlib module; a platform/__init__.py would shadow it for every import.
    assert not (REPO / "platform" / "__init__.py").exists()
    assert (REPO / "platform" / "fleet_server" / "__init__.py").exists()


def test_no_top_level_package_shadows_the_stdlib():
    names = {p.name for p in REPO.iterdir() if (p / "__init__.py").exists()} | {p.stem for p in REPO.glob("*.py")}
    assert set(TOP_LEVEL_PACKAGES) <= names
    assert not names & set(sys.stdlib_module_names), names & set(sys.stdlib_module_names)


def test_required_top_level_layout_exists():
    for name in ["platform", "edge_agent", "model_store", "compression", "tests", "helm", "manage.py", "docs"]:
        assert (REPO / name).exists(), name


def test_agent_imports_without_django_or_torch():
    # The agent extra installs neither; importing the agent and smartpark's numpy parts must not pull them in.
    code = (
        "import sys, edge_agent.cli, edge_agent.agent, edge_agent.enroll, fleet_protocol;"
        "import smartpark.analytics, smartpark.decode, smartpark.geometry, smartpark.metrics, smartpark.scenes;"
        "bad = [m for m in ('django', 'torch') if m in sys.modules];"
        "sys.exit(f'agent imported {bad}' if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr + result.stdout
