from llamaberry.cli import main

main()
