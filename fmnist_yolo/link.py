"""Let the stock `yolo ... data=fashion-mnist` find our tree without downloading.

Ultralytics resolves a bare dataset name against its `datasets_dir` setting. We put a symbolic
link there to the prepared tree, and never replace anything a user already has at that name.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def ensure_link(tree: Path) -> Path | None:
    """`link_for_ultralytics`, remembered beside the tree so that re-runs skip importing Ultralytics."""
    tree = Path(tree).resolve()
    marker = tree.parent / f".{tree.name}.ultralytics"
    try:
        known = Path(marker.read_text().strip())
        if known.resolve() == tree:
            return known
    except OSError:
        pass
    found = link_for_ultralytics(tree)
    if found is not None:
        try:
            marker.write_text(f"{found}\n")
        except OSError:
            pass  # only a speed-up
    return found


def link_for_ultralytics(tree: Path, datasets_dir: Path | None = None) -> Path | None:
    """Link `<datasets_dir>/<tree name>` to `tree`.

    Returns:
        The path under `datasets_dir` that now resolves to `tree` (the link, or the tree itself when
        it already lives there), or None when something else holds that name and was left alone.

    Args:
        tree: the prepared tree.
        datasets_dir: Ultralytics' dataset directory (default: its `datasets_dir` setting).
    """
    if datasets_dir is None:
        from ultralytics.utils import SETTINGS

        datasets_dir = Path(SETTINGS["datasets_dir"])
    tree = Path(tree).resolve()
    link = Path(datasets_dir) / tree.name
    if link.resolve() == tree:
        return link  # already linked, or the tree itself lives there
    if link.exists() or link.is_symlink():
        print(
            f"Note: {link} already exists and is not this tree, so it was left alone; "
            f"`yolo ... data={tree.name}` uses it. Pass data={tree} to use this tree.",
            file=sys.stderr,
        )
        return None
    try:
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(tree, link, target_is_directory=True)
    except OSError as e:
        print(f"Note: could not link {link} -> {tree} ({e.strerror}); pass data={tree} to yolo.", file=sys.stderr)
        return None
    print(
        f"Linked {link} -> {tree} so that `yolo classify train data={tree.name}` finds it "
        f"(Ultralytics' datasets_dir; undo with: rm {link})",
        file=sys.stderr,
    )
    return link
