"""`python -m nncc build model.py ...`, the same as the `nncc` command."""
import sys

from nncc.cli import main

sys.exit(main())
