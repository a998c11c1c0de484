"""`python -m voicecall.plugin.cli_main`: the CLI without the console script."""

from voicecall.plugin.cli import main

if __name__ == "__main__":
    main()
