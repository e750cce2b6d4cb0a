import sys

from mlship.serving.main import main

sys.exit(main())
