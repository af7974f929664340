from saga._cli import main

main()
