from rd3_harness.cli import main

main()
