from __future__ import annotations

import sys

from interpreter.server import main

sys.exit(main())
