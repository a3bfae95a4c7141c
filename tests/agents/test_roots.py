"""Confinement of agent file access to the configured roots (no server needed)."""

from __future__ import annotations

import pytest

from refinery.agent.roots import ForbiddenPath, Roots


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("inside\n")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "s.txt").write_text("outside\n")
    (root / "docs" / "link-out").symlink_to(secret / "s.txt")
    (root / "docs" / "link-in").symlink_to(root / "docs" / "a.txt")
    return Roots.of([root]), root, secret


def test_inside_paths_and_links_within_the_root_are_allowed(tree):
    roots, root, _ = tree
    assert roots.check(str(root / "docs" / "a.txt")) == (root / "docs" / "a.txt").resolve()
    assert roots.check(str(root / "docs" / "link-in")) == (root / "docs" / "a.txt").resolve()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root, secret: secret / "s.txt", "outside the allowed roots"),
        (lambda root, secret: root / "docs" / ".." / "docs" / "a.txt", "'..'"),
        (lambda root, secret: root / "docs" / "link-out", "symlink leads outside"),
        (lambda root, secret: "docs/a.txt", "absolute path"),
        (lambda root, secret: "", "empty path"),
    ],
)
def test_refusals_say_why(tree, make, message):
    roots, root, secret = tree
    with pytest.raises(ForbiddenPath, match=message):
        roots.check(str(make(root, secret)))


def test_walking_a_folder_refuses_a_link_that_leads_out(tree):
    roots, root, _ = tree
    with pytest.raises(ForbiddenPath, match="inside the folder leads outside"):
        list(roots.walk(root / "docs"))
