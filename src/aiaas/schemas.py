"""Wire types every domain shares: the strict request base and the ``Name`` type.

A request model subclasses :class:`StrictModel` (unknown fields are refused, 422) and uses
the constrained types below; a response model is ``XRead`` with ``from_attributes=True`` so
routes return ORM objects through ``response_model``.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

NAME_MAX = 200  # characters; name columns are String(200)
#: Unicode categories refused in a name: control, format (bidi overrides, zero-width
#: characters that make two names look alike), surrogate, private use, unassigned.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})


class StrictModel(BaseModel):
    """The base of every request body: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


def clean_name(value: str) -> str:
    """A display name: stripped, NFC-normalised, 1 to NAME_MAX characters, and no control
    or format character (NUL breaks PostgreSQL text, newlines forge logs, bidi controls
    make two names look alike)."""
    value = unicodedata.normalize("NFC", value.strip())
    if not value:
        raise ValueError("the name is empty")
    if len(value) > NAME_MAX:
        raise ValueError(f"the name is longer than {NAME_MAX} characters")
    for ch in value:
        if unicodedata.category(ch) in _FORBIDDEN_CATEGORIES:
            raise ValueError(f"the name contains a forbidden character {ch!r}")
    return value


#: The name of anything a user names (an API key, a dataset, next: a model, an endpoint).
Name = Annotated[str, Field(min_length=1, max_length=NAME_MAX), AfterValidator(clean_name)]
