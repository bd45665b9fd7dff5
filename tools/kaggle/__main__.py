"""Runs the command line of tools.kaggle.commands: python -m tools.kaggle SUBCOMMAND ..."""
import sys

from tools.kaggle.commands import kaggle_cli

if __name__ == "__main__":
    sys.exit(kaggle_cli())
