from msekit.cli import main

main()
