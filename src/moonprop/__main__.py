from moonprop.cli import main

main()
