"""`python -m llamaberry_ui`: the web UI, with the same options as `llamaberry ui`."""

from llamaberry_ui.app import main

main()
