"""Labels: low-cardinality ``key=value`` pairs attached to sessions and usage."""

from __future__ import annotations

import re

LABEL_KEY_PATTERN = r"^[a-z][a-z0-9_.\-]{0,62}$"
LABEL_KEY_RE = re.compile(LABEL_KEY_PATTERN)
LABEL_VALUE_MAX = 200
MAX_LABELS = 32
