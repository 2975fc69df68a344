"""Every ```python block of README.md and docs/*.md runs as written.

Each block runs in a fresh namespace, in a temporary working directory, and fails the test naming its file and
the line of its opening fence. A block that cannot run here (a download, a GPU) is marked in the markdown, on
the line right before its fence, with a visible comment that gives the reason:

    <!-- snippet: skip — downloads ViT-B/16 from the Hugging Face hub -->

and the test skips it, printing that reason. Shell blocks (```bash, ```sh, ```console) are not run.
"""

from __future__ import annotations

import dataclasses
import re
import traceback
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PYTHON = {"python", "py", "python3", "pycon"}
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
SKIP = re.compile(r"^\s*<!--\s*snippet:\s*skip\s*[—–:-]+\s*(?P<reason>.*?)\s*-->\s*$")


@dataclasses.dataclass(frozen=True)
class Snippet:
    page: str  # relative to the repository root
    line: int  # 1-based line of the opening fence
    code: str
    skip: str | None  # the reason given in the markdown, or None

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def snippets(text: str, page: str) -> list[Snippet]:
    """The ```python blocks of one markdown text, with the skip reason of the comment right before each."""
    lines = text.splitlines()
    out: list[Snippet] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.groups()
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        if lang.lower() in PYTHON:
            before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            skip = SKIP.match(before)
            body = [line[len(indent):] if line.startswith(indent) else line for line in lines[i + 1 : end]]
            out.append(Snippet(page, i + 1, "\n".join(body) + "\n", skip.group("reason") if skip else None))
        i = end + 1
    return out


def run_snippet(snippet: Snippet) -> None:
    """Runs the block in a fresh namespace (the caller sets the working directory); fails naming file and line."""
    code = compile(snippet.code, f"{snippet.where} (```python block)", "exec")
    try:
        exec(code, {"__name__": "__main__"})
    except BaseException as e:  # noqa: BLE001 - any failure of a documented snippet, SystemExit included
        pytest.fail(
            f"the ```python block at {snippet.where} raised {type(e).__name__}: {e}\n{traceback.format_exc()}",
            pytrace=False,
        )


ALL = [s for page in PAGES for s in snippets(page.read_text(), str(page.relative_to(ROOT)))]


@pytest.mark.parametrize("snippet", ALL, ids=[s.where for s in ALL])
def test_python_snippet_runs(snippet, tmp_path, monkeypatch):
    if snippet.skip is not None:
        print(f"{snippet.where}: skipped, as marked in the markdown: {snippet.skip}")
        pytest.skip(f"{snippet.where}: {snippet.skip}")
    monkeypatch.chdir(tmp_path)
    run_snippet(snippet)


def test_the_pages_have_python_snippets_to_run():
    pages = {s.page for s in ALL}
    assert {"README.md", "docs/models.md"} <= pages, pages
    assert all(s.code.strip() for s in ALL)


def test_a_failing_snippet_fails_naming_its_file_and_line():
    text = "# Page\n\ntext\n\n```python\nx = 1\nprint(images)\n```\n\n<!-- snippet: skip — needs a GPU -->\n```python\nraise SystemExit\n```\n"
    first, second = snippets(text, "docs/page.md")
    assert (first.line, first.skip, second.line, second.skip) == (5, None, 11, "needs a GPU")
    with pytest.raises(pytest.fail.Exception) as failed:
        run_snippet(first)
    assert "docs/page.md:5" in str(failed.value) and "NameError" in str(failed.value) and "images" in str(failed.value)
