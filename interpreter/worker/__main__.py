import sys

from interpreter.worker import main

sys.exit(main())
