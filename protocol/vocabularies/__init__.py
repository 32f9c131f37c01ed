"""The four other seed APIs' requests and responses, mapped onto our protocol (pure).

Each module is one API, by the name users pass (``orch.submit_as("modelslab", ...)``,
``orchestrator run --vocabulary modelslab``): :mod:`.akiio`, :mod:`.modelslab`,
:mod:`.imagetoimage` (the image-to-image form API) and :mod:`.stablecog`. :mod:`.base`
says how a request becomes a plan and an outcome a response.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from ..errors import UsageError
from .akiio import AkiVocabulary
from .base import ImageInput, Outcome, OutputImage, Plan, Vocabulary
from .imagetoimage import ImageToImageVocabulary
from .modelslab import ModelsLabVocabulary
from .stablecog import StablecogVocabulary

__all__ = [
    "VOCABULARIES",
    "ImageInput",
    "Outcome",
    "OutputImage",
    "Plan",
    "Vocabulary",
    "vocabulary",
]

#: Every vocabulary by name.
VOCABULARIES: Final[Mapping[str, Vocabulary[Any]]] = MappingProxyType(
    {
        v.name: v
        for v in (
            AkiVocabulary(),
            ModelsLabVocabulary(),
            ImageToImageVocabulary(),
            StablecogVocabulary(),
        )
    }
)


def vocabulary(name: str) -> Vocabulary[Any]:
    """The vocabulary of that name; raises UsageError listing the names."""
    try:
        return VOCABULARIES[name]
    except KeyError:
        names = ", ".join(VOCABULARIES)
        raise UsageError(f"unknown vocabulary {name!r}: choose one of {names}") from None
