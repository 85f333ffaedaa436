from octbench.cli import main

main()
