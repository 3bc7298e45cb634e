"""opensam3: SAM 3 as practical Python software."""
