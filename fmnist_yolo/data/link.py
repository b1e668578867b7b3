"""Let the stock `yolo ... data=fashion-mnist` find our tree without downloading.

Ultralytics resolves a bare dataset name against its `datasets_dir` setting. We put a symbolic
link there to the prepared tree, and never replace anything a user already has at that name.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def ensure_link(tree: Path) -> Path | None:
    """`link_for_ultralytics`, remembered beside the tree so that re-runs skip importing Ultralytics.

    The memo holds the settings file Ultralytics used and its mtime: a changed `YOLO_CONFIG_DIR` or
    `yolo settings datasets_dir=...` makes us look again.
    """
    tree = Path(tree).resolve()
    marker = tree.parent / f".{tree.name}.ultralytics.json"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        memo = json.loads(marker.read_text())
        settings = Path(memo["settings"])
        if (
            memo["config_dir"] == os.environ.get("YOLO_CONFIG_DIR")
            and settings.stat().st_mtime_ns == memo["mtime_ns"]
            and Path(memo["link"]).resolve() == tree
        ):
            return Path(memo["link"])
    from ultralytics.utils import SETTINGS

    found = link_for_ultralytics(tree, Path(SETTINGS["datasets_dir"]))
    if found is not None:
        memo = {"config_dir": os.environ.get("YOLO_CONFIG_DIR"), "settings": str(SETTINGS.file),
                "mtime_ns": SETTINGS.file.stat().st_mtime_ns, "link": str(found)}  # fmt: skip
        with contextlib.suppress(OSError):  # only a speed-up
            marker.write_text(json.dumps(memo) + "\n")
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
        log.info(
            f"Note: {link} already exists and is not this tree, so it was left alone; "
            f"`yolo ... data={tree.name}` uses it. Pass data={tree} to use this tree."
        )
        return None
    try:
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(tree, link, target_is_directory=True)
    except OSError as e:
        log.warning(f"Note: could not link {link} -> {tree} ({e.strerror}); pass data={tree} to yolo.")
        return None
    log.info(
        f"Linked {link} -> {tree} so that `yolo classify train data={tree.name}` finds it "
        f"(Ultralytics' datasets_dir; undo with: rm {link})"
    )
    return link
