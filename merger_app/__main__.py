"""`python -m merger_app` opens the window, like `merger-app`."""

import sys

from merger_app.main import main

sys.exit(main())
