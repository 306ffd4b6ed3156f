"""Run loops: the search harness, the training of a genotype, and what they share."""
