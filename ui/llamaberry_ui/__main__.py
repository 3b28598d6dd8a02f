"""`python -m llamaberry_ui [options]`: the web UI, the same as `llamaberry ui [options]`.

The command line reads the options and builds the page; this module is only its other door.
"""

import sys

from llamaberry.cli import cli

cli.main(["ui", *sys.argv[1:]], prog_name="python -m llamaberry_ui")
