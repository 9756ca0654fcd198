from tests.app.golden import main

main()
