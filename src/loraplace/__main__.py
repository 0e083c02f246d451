from loraplace.cli import main

main()
