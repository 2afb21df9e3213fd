from diffcli.cli import main

main()
