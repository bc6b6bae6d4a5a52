from billkit.cli import main

main()
