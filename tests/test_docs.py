"""The repository carries its own documentation: every `docs/...md#anchor` that
code, tests and markdown cite exists, and nothing cites files outside the
repository."""

import glob
import os
import re

from conftest import REPO

_CITATION = re.compile(r"docs/([A-Za-z0-9_/.-]+\.md)(#[a-z0-9-]+)?")
_OUTSIDE = re.compile(r"specs/[a-z_]+\.md|NOTES_TF\.md|\.\./shared")


def _sources():
    patterns = ["keras_darts/**/*.py", "tools/*.py", "setup.py", "tests/**/*.py", "*.md",
                "docs/**/*.md", "flags/*.cfg"]
    for pattern in patterns:
        for path in glob.glob(os.path.join(REPO, pattern), recursive=True):
            if not path.endswith("test_docs.py"):
                yield path


def _anchors(path):
    """GitHub's heading anchors of a markdown file."""
    anchors = set()
    for line in open(path, encoding="utf-8"):
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add("#" + re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return anchors


def test_every_cited_doc_and_anchor_exists():
    missing = []
    for path in _sources():
        text = open(path, encoding="utf-8").read()
        for page, anchor in _CITATION.findall(text):
            target = os.path.join(REPO, "docs", page)
            if not os.path.isfile(target):
                missing.append(f"{os.path.relpath(path, REPO)}: docs/{page}")
            elif anchor and anchor not in _anchors(target):
                missing.append(f"{os.path.relpath(path, REPO)}: docs/{page}{anchor}")
    assert not missing, "\n".join(missing)


def test_nothing_cites_files_outside_the_repository():
    outside = [f"{os.path.relpath(path, REPO)}: {m}" for path in _sources()
               for m in _OUTSIDE.findall(open(path, encoding="utf-8").read())]
    assert not outside, "\n".join(outside)


def test_readme_layout_matches_the_code():
    """Every path README's Layout table names exists, and every package folder is in it."""
    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    layout = readme[readme.index("## Layout"):]
    layout = layout[:layout.index("\n## ", 1) if "\n## " in layout[1:] else len(layout)]
    named = re.findall(r"`((?:keras_darts|tools|docs)/[^`]*)`", layout)
    assert named
    for path in named:
        assert os.path.exists(os.path.join(REPO, path.rstrip("/"))), path
    packages = {os.path.basename(os.path.dirname(p))
                for p in glob.glob(os.path.join(REPO, "keras_darts", "*", "__init__.py"))}
    for package in packages:
        assert f"keras_darts/{package}/" in layout, package
