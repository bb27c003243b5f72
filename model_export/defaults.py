"""The tower that ``mindstream train`` and ``mindstream demo`` build when no model flag is
given, in one place (standard library only, so the CLI can import it without torch).

ComiRec-SA with K = 4 interests, trained by scoring the label and the sampled negatives by each
item's best interest (``interest_scoring="max"``, the score the serving merge ranks by): the
multi-interest configuration with the best validation HitRate@50 on lastfm and
ml-latest-small over seeds 0-2 (model_export/RESULTS.md). The ComiRec kinds score their
interests directly, as the paper does, so they have no head; MIND and YouTube-DNN keep the
two-layer head.
"""

from __future__ import annotations

KIND = "comirec_sa"
INTERESTS = 4
INTEREST_SCORING = "max"


def head_hidden(kind: str) -> int:
    """The head's hidden width for ``kind`` when none is given: -1 (no head) for the ComiRec
    kinds, 0 (= 4d) for the others."""
    return -1 if kind.startswith("comirec") else 0
