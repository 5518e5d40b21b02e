"""The README's two set-up commands exist, and CI runs the test one verbatim."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_commands():
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), re.S)
    return [b.strip() for b in blocks if b.strip().startswith("python3 -m venv")]


def test_readme_has_exactly_two_setup_commands_demo_and_tests():
    commands = readme_commands()
    assert len(commands) == 2
    demo, tests = commands
    assert "bbbanomaly demo" in demo and "pytest" in tests
    assert all("torch==" in c for c in commands)  # pinned: no multi-GB GPU wheel by accident


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert readme_commands()[1] in ci
