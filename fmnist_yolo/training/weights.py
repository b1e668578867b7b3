"""Where the model comes from: a weights file, a name found in the project or Ultralytics' weights, a download,
or, offline, the same architecture from scratch (recorded as not pretrained)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..checkpoints import check_classifier, load_checkpoint, warn_if_untrusted
from ..config import WEIGHTS_DIR
from ..errors import ConfigError, FmnistError, warn

WEIGHTS_URL = "https://github.com/ultralytics/assets/releases/download/v8.4.0/{}"  # Ultralytics' release assets


@dataclass
class Weights:
    """Where the model comes from."""

    model: str  # what YOLO() is given
    pretrained: bool
    source: str  # a sentence for the provenance
    tried: list[str] = field(default_factory=list)


def starting_weights(model: str, strict: bool = False) -> Weights:
    """A path, a name found locally (./weights, Ultralytics' weights_dir) or downloaded; else the YAML.

    Offline without the file, warn once and train the same architecture from scratch, unless `strict`.
    A weights file is checked before training: a damaged file, or one that is not a classification checkpoint,
    is a one-line error.
    """
    from ultralytics.utils import SETTINGS

    p = Path(str(model))
    if p.suffix in (".yaml", ".yml"):
        return Weights(str(model), False, f"architecture {p.name}, random initialisation")
    if p.is_file():
        return _checked(p, f"weights file {p.resolve()}")
    if p.suffix != ".pt":
        raise ConfigError(f"{model}: model must be a .pt weights file or a .yaml architecture")
    if len(p.parts) > 1:
        raise ConfigError(f"{model}: model file not found")
    tried = []
    for d in (WEIGHTS_DIR, Path(SETTINGS["weights_dir"])):
        candidate = d / p.name
        tried.append(str(candidate.absolute()))
        if candidate.is_file():
            return _checked(candidate, f"weights file {candidate.resolve()}", tried)
    url = WEIGHTS_URL.format(p.name)
    try:
        from ultralytics.utils.downloads import attempt_download_asset

        got = Path(attempt_download_asset(WEIGHTS_DIR / p.name))
        if got.is_file():
            return _checked(got, f"downloaded {url}", tried)
        tried.append(f"download of {url} (no such asset)")
    except Exception as e:  # offline, DNS, HTTP: Ultralytics raises ConnectionError and others
        tried.append(f"download of {url} ({type(e).__name__})")
    if strict:
        raise FmnistError(f"{model}: pretrained weights not available (tried {'; '.join(tried)})")
    arch = p.with_suffix(".yaml").name
    warn(f"pretrained {p.name} is not available (tried {'; '.join(tried)}). Training {arch} from scratch "
         f"(recorded as pretrained: false). To fine-tune instead, put {p.name} in {WEIGHTS_DIR}/ (from {url}) or pass "
         f"model=/path/to/{p.name}; strict_weights=True makes this an error.")  # fmt: skip
    return Weights(arch, False, f"{arch} from scratch: {p.name} unavailable", tried)


def _checked(path: Path, source: str, tried: list[str] | None = None) -> Weights:
    """A weights file that loads as a classification checkpoint (checked now, not mid-way through Ultralytics)."""
    warn_if_untrusted(path)
    check_classifier(path, load_checkpoint(path))
    return Weights(str(path), True, source, tried or [])
