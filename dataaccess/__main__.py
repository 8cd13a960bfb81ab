"""`python -m dataaccess doctor`: see dataaccess/doctor."""

import sys

from dataaccess.doctor.cli import main

sys.exit(main())
