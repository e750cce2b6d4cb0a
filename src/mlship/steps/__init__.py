"""The pipeline's steps, one CLI module each: `python -m mlship.steps.<step> --help`."""
