"""Data sets: synthetic, those that scikit-learn ships, and readers of standard formats."""
