"""python -m chat_lesson.bench ..."""

import sys

from . import main

sys.exit(main())
