import sys

from livecode.cli import main

sys.exit(main())
