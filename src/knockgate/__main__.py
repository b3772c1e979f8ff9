from knockgate.cli import main

main()
