"""stepwise: rationale corpora for distilling large language models into small ones."""

from __future__ import annotations

import os as _os

# The repository keeps the user's top-level folders (pipeline/, prompts/, storage/, api/) beside this package;
# installed, they live inside it. Either way they import as stepwise.pipeline, stepwise.storage, ...: from a
# source checkout this package also looks for its subpackages one folder up.
_here = _os.path.dirname(_os.path.abspath(__file__))
if not _os.path.isdir(_os.path.join(_here, "pipeline")):
    __path__.append(_os.path.dirname(_here))  # type: ignore[name-defined]
