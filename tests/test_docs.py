"""Docs that cannot rot: generated sections match the code, and the README starts right."""

from __future__ import annotations

from pathlib import Path

import pytest

from pilothouse import reference

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("relative", "section"), sorted(reference.SECTIONS.items()))
def test_generated_doc_sections_match_the_code(relative: str, section: str) -> None:
    path = ROOT / relative
    assert path.read_text() == reference.rendered(path, section), (
        f"{relative} is stale: run `python -m pilothouse.reference`"
    )


def test_the_readme_starts_with_the_run_and_test_commands() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert lines[0] == "```bash"
    assert lines[1].endswith("pilothouse serve")
    assert lines[2] == "bash .ci/run"
    assert lines[3] == "```"
    assert (ROOT / ".ci" / "run").read_text().count("pytest") >= 1
