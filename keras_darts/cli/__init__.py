"""Command-line plumbing: every flag and its conversion to a config (`flags`), the
error and signal guard (`guard`)."""
