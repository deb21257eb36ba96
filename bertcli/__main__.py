from bertcli.cli.app import main

main()
