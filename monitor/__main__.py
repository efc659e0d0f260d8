from mailwarden.monitor.cli import main

main()
