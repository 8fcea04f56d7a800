from ordertrail.cli import main

main()
